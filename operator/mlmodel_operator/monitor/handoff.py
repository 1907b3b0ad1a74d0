"""The hand-off of exchanges from a proxy worker to the analyst process, which never makes the
proxy wait and never makes it parse.

One channel per proxy worker: a ring of anonymous shared memory, mapped before the processes
fork, holds the bodies; a Unix datagram socket pair carries a short notice per exchange (where
its bodies lie, their lengths, protocol, status and the binary-extension headers as received).
The worker copies the bodies into the ring (a memcpy) and sends the notice without blocking;
the analyst copies them out and gives the space back by moving the ring's tail. The send is a
system call, so the bodies are in memory before the notice can be read; the datagram queue
wakes the analyst, which needs no polling.

A worker keeps its head to itself; the analyst alone writes the tail and the consumed count,
and the supervisor alone writes the analyst's liveness flag: each word has one writer, so no
lock is shared between the processes. When the ring or the notice queue fills, the sampler
keeps an even share (sampling.py); what does not fit is dropped and counted.
"""

from __future__ import annotations

import errno
import mmap
import socket
import struct
from dataclasses import dataclass

from mlmodel_operator.monitor.payloads import Exchange
from mlmodel_operator.monitor.sampling import EvenSampler

# tail (bytes consumed, ever) and consumed (notices consumed, ever), written by the analyst;
# then one byte, the analyst's liveness (1/0), written by the supervisor
_STATE = struct.Struct("<QQ")
_ALIVE = _STATE.size
DATA_OFFSET = 64
# start, end, protocol, status, request length, response length (-1: none), then the lengths
# of the two Inference-Header-Content-Length values (0xFFFF: absent) and their bytes
_NOTICE = struct.Struct("<QQBHIqHH")
MAX_HEADER_VALUE = 64  # longer values cannot be valid lengths: they are cut, and stay invalid
NOTICE_MAX = _NOTICE.size + 2 * MAX_HEADER_VALUE
_ABSENT = 0xFFFF
PROTOCOLS = ("v2", "v1", "openai")


def _encode_header(value: str | None) -> bytes | None:
    if value is None:
        return None
    return value[:MAX_HEADER_VALUE].encode("utf-8", "surrogateescape")[:MAX_HEADER_VALUE]


class Channel:
    """The shared parts of one worker's hand-off, made by the supervisor before it forks."""

    def __init__(self, capacity: int, max_notices: int) -> None:
        self.capacity = capacity
        self.max_notices = max_notices
        # Anonymous and MAP_SHARED: the children of a fork share it; no file, nothing to clean.
        self.memory = mmap.mmap(-1, DATA_OFFSET + capacity)
        self.sender, self.receiver = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.set_analyst_alive(True)

    def set_analyst_alive(self, alive: bool) -> None:
        self.memory[_ALIVE] = 1 if alive else 0

    def analyst_alive(self) -> bool:
        return self.memory[_ALIVE] == 1

    def writer(self) -> Writer:
        self.receiver.close()
        self.sender.setblocking(False)
        self._touch(write=True)
        return Writer(self)

    def reader(self) -> Reader:
        self.sender.close()
        self.receiver.setblocking(False)
        self._touch(write=False)
        return Reader(self)

    def _touch(self, write: bool) -> None:
        """Fault every page of the ring into this process now, not on the request path: the
        first pass round a fresh ring cost 88 us per 100 KB exchange against 9 us later
        (bench/handoff_cost.py). The ring's bytes are within queue_bytes either way. Only the
        writer writes (a byte back as it was, before it hands anything over): the analyst
        reads, since a worker may already be writing while it starts."""
        for offset in range(DATA_OFFSET, len(self.memory), mmap.PAGESIZE):
            if write:
                self.memory[offset] = self.memory[offset]
            else:
                self.memory[offset]  # the read is the point

    def close(self) -> None:
        self.sender.close()
        self.receiver.close()


class Writer:
    """A proxy worker's end: offer() copies an exchange in, or says why it was dropped."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.memory = channel.memory
        self.capacity = channel.capacity
        self.largest = channel.capacity // 2  # larger exchanges would block the ring for long
        self.head = 0
        self.sent = 0
        self.sampler = EvenSampler()

    def queued(self) -> tuple[int, int]:
        """(bytes, notices) handed over and not yet taken by the analyst."""
        tail, consumed = _STATE.unpack_from(self.memory, 0)
        return self.head - tail, self.sent - consumed

    def offer(self, exchange: Exchange) -> str | None:
        """Hand the exchange over; None when handed over, else the reason it was dropped:
        too_large, sampled (kept out so the analyst keeps up with an even share), queue_full,
        analyst_down."""
        request, response = exchange.request_body, exchange.response_body
        size = len(request) + (len(response) if response is not None else 0)
        if size > self.largest:
            return "too_large"
        queued_bytes, queued_notices = self.queued()
        fill = max(queued_bytes / self.capacity, queued_notices / self.channel.max_notices)
        if not self.sampler.keep(fill):
            return "sampled"
        start = self.head
        position = start % self.capacity
        if position + size > self.capacity:  # bodies are contiguous: skip the ring's end
            start += self.capacity - position
            position = 0
        tail = self.head - queued_bytes
        if start + size - tail > self.capacity or queued_notices >= self.channel.max_notices:
            return "queue_full"
        at = DATA_OFFSET + position
        self.memory[at : at + len(request)] = request
        if response is not None:
            self.memory[at + len(request) : at + size] = response
        notice = self._notice(exchange, start, start + size)
        try:
            self.channel.sender.send(notice)
        except BlockingIOError:
            return "queue_full"
        except OSError as err:
            if err.errno in (errno.ECONNREFUSED, errno.ENOTCONN, errno.EPIPE):
                return "analyst_down"
            raise
        self.head = start + size
        self.sent += 1
        return None

    @staticmethod
    def _notice(exchange: Exchange, start: int, end: int) -> bytes:
        request_header = _encode_header(exchange.request_json_length)
        response_header = _encode_header(exchange.response_json_length)
        response = exchange.response_body
        return (
            _NOTICE.pack(
                start,
                end,
                PROTOCOLS.index(exchange.protocol),
                exchange.status,
                len(exchange.request_body),
                -1 if response is None else len(response),
                _ABSENT if request_header is None else len(request_header),
                _ABSENT if response_header is None else len(response_header),
            )
            + (request_header or b"")
            + (response_header or b"")
        )


class Reader:
    """The analyst's end of one worker's channel."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.memory = channel.memory
        self.capacity = channel.capacity
        self.socket = channel.receiver
        self.consumed = 0

    def take(self) -> Exchange | None:
        """The next exchange, or None when none is waiting. The ring space is given back
        before the exchange is returned: it is a copy."""
        try:
            notice = self.socket.recv(NOTICE_MAX)
        except BlockingIOError:
            return None
        exchange, end = decode(notice, self.memory, self.capacity)
        self.consumed += 1
        _STATE.pack_into(self.memory, 0, end, self.consumed)
        return exchange


def decode(notice: bytes, memory: mmap.mmap, capacity: int) -> tuple[Exchange, int]:
    """The exchange a notice points at (copied out of the ring), and the ring position after it."""
    fields = _NOTICE.unpack_from(notice, 0)
    start, end, protocol, status, request_length, response_length, h1, h2 = fields
    at = DATA_OFFSET + start % capacity
    request = memory[at : at + request_length]
    response = None
    if response_length >= 0:
        response = memory[at + request_length : at + request_length + response_length]
    offset = _NOTICE.size
    headers: list[str | None] = []
    for length in (h1, h2):
        if length == _ABSENT:
            headers.append(None)
        else:
            headers.append(notice[offset : offset + length].decode("utf-8", "surrogateescape"))
            offset += length
    exchange = Exchange(PROTOCOLS[protocol], status, request, response, headers[0], headers[1])
    return exchange, end


@dataclass(frozen=True)
class ChannelSizes:
    capacity: int
    max_notices: int


def channel_sizes(queue_bytes: int, queue_size: int, workers: int) -> ChannelSizes:
    """Each worker's share of the hand-off's bounds, so that the bytes and notices waiting for
    the analyst stay within queue_bytes and queue_size whatever the number of workers."""
    return ChannelSizes(
        capacity=max(2**20, queue_bytes // workers), max_notices=max(16, queue_size // workers)
    )
