"""A closed-loop HTTP/1.1 load generator: N keep-alive connections, each sending the same
request again as soon as its answer is in, spread over a few processes so that the generator is
not what limits a fast server. Raw asyncio protocols (uvloop where installed) keep its own cost
per request near 20 us, well under a Python client library's.

    run_load("127.0.0.1", port, request_bytes, connections=64, seconds=8.0) -> Load
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from array import array
from dataclasses import dataclass

WARM_UP_SECONDS = 1.0


@dataclass
class Load:
    requests: int  # answered 2xx after the warm-up
    errors: int
    seconds: float
    latencies: list[float]  # seconds, of the requests answered 2xx after the warm-up
    served: int = 0  # every answer, the warm-up's too (what the server's CPU was spent on)

    def __add__(self, other: Load) -> Load:
        return Load(
            self.requests + other.requests,
            self.errors + other.errors,
            self.seconds + other.seconds,
            self.latencies + other.latencies,
            self.served + other.served,
        )

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def request_bytes(path: str, body: bytes, host: str = "127.0.0.1") -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class _Client(asyncio.Protocol):
    def __init__(self, request: bytes, record: list[float], state: dict) -> None:
        self.request, self.record, self.state = request, record, state
        self.buffer = bytearray()
        self.expected: int | None = None
        self.status = 0
        self.sent_at = 0.0
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.send()

    def send(self) -> None:
        if time.perf_counter() >= self.state["end"]:
            assert self.transport is not None
            self.transport.close()
            return
        self.sent_at = time.perf_counter()
        assert self.transport is not None
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.expected is None:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
                self.status = int(head[0].split(" ", 2)[1])
                lengths = [h for h in head if h.lower().startswith("content-length:")]
                length = int(lengths[0].split(":", 1)[1]) if lengths else 0
                del self.buffer[: end + 4]
                self.expected = length
            if len(self.buffer) < self.expected:
                return
            del self.buffer[: self.expected]
            self.expected = None
            now = time.perf_counter()
            self.state["served"] += 1
            if now >= self.state["start"]:
                if 200 <= self.status < 300:
                    self.record.append(now - self.sent_at)
                else:
                    self.state["errors"] += 1
            self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        if time.perf_counter() < self.state["end"]:
            self.state["errors"] += 1
        if not self.closed.done():
            self.closed.set_result(None)


async def _run(
    host: str, port: int, request: bytes, connections: int, seconds: float, warm_up: float
) -> tuple:
    loop = asyncio.get_running_loop()
    now = time.perf_counter()
    state = {"start": now + warm_up, "end": now + warm_up + seconds, "errors": 0, "served": 0}
    record: list[float] = []
    clients = []
    for _ in range(connections):
        _, client = await loop.create_connection(
            lambda: _Client(request, record, state), host, port
        )
        clients.append(client)
    await asyncio.gather(*(c.closed for c in clients))
    return array("d", record).tobytes(), state["errors"], state["served"]


def _process(out, *args: object) -> None:  # type: ignore[no-untyped-def]
    try:
        import uvloop

        result = uvloop.run(_run(*args))  # type: ignore[arg-type]
    except ImportError:
        result = asyncio.run(_run(*args))  # type: ignore[arg-type]
    out.send(result)


def default_processes() -> int:
    """Load generator processes: a quarter of the cores, 1 to 4."""
    return max(1, min(4, (os.cpu_count() or 1) // 4))


def run_load(
    host: str,
    port: int,
    request: bytes,
    connections: int,
    seconds: float,
    processes: int | None = None,
    warm_up: float = WARM_UP_SECONDS,
) -> Load:
    processes = min(connections, processes or default_processes())
    context = multiprocessing.get_context("fork")
    pipes, workers = [], []
    for i in range(processes):
        share = connections // processes + (1 if i < connections % processes else 0)
        receive, send = context.Pipe(duplex=False)
        args = (send, host, port, request, share, seconds, warm_up)
        worker = context.Process(target=_process, args=args)
        worker.start()
        pipes.append(receive)
        workers.append(worker)
    latencies: list[float] = []
    errors = served = 0
    for receive in pipes:
        raw, failed, answered = receive.recv()
        values = array("d")
        values.frombytes(raw)
        latencies.extend(values)
        errors += failed
        served += answered
    for worker in workers:
        worker.join()
    return Load(len(latencies), errors, seconds, latencies, served)
