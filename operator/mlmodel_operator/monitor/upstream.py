"""A lean HTTP/1.1 client for the one model server in the pod, over pooled keep-alive
connections on asyncio streams.

The sidecar sends every request to the same loopback address, so it needs none of a general
client's machinery (cookies, redirects, proxies, TLS, tracing); what it needs is little work per
request. Bodies and headers pass as bytes, untouched (no decompression).

A connection goes back to the pool only after its response was read to the end: anything left
unread would be taken for the answer to the next request sent on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

MAX_HEAD_BYTES = 64 * 1024
WRITE_SLICE_BYTES = 2**20
NO_BODY_STATUSES = {204, 304}
SWITCHING_PROTOCOLS = 101


class UpstreamError(Exception):
    """The model server could not be reached or broke off its answer."""


def head_text(raw: bytes) -> str:
    """An answer's head as text that aiohttp writes back as the same bytes when they are UTF-8.

    aiohttp's writer encodes header text as UTF-8 and drops lone surrogates, so a head that is
    not UTF-8 (obsolete Latin-1 text) is decoded as Latin-1: its characters survive, in UTF-8.
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def encode_head(lines: list[str]) -> bytes:
    """The request head as bytes. aiohttp's parser decodes header bytes as UTF-8 with
    surrogateescape, so this gives back exactly the bytes the client sent."""
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")


@dataclass
class Head:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    keep_alive: bool
    chunked: bool
    declared_length: int | None  # the Content-Length header, even where no body follows


def parse_head(raw: bytes) -> Head:
    """The status line and headers of one response; ValueError if they are malformed."""
    lines = head_text(raw).split("\r\n")
    version, _, rest = lines[0].partition(" ")
    status_text, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or len(status_text) != 3:
        raise ValueError(f"bad status line {lines[0][:100]!r}")
    headers = []
    for line in lines[1:]:
        if line:
            name, sep, value = line.partition(":")
            if not sep:
                raise ValueError(f"bad header line {line[:100]!r}")
            headers.append((name.strip(), value.strip()))
    lowered = {k.lower(): v for k, v in headers}
    length = lowered.get("content-length")
    if length is not None and not length.isdigit():
        raise ValueError(f"bad Content-Length {length[:20]!r}")
    return Head(
        status=int(status_text),
        reason=reason,
        headers=headers,
        keep_alive=version == "HTTP/1.1" and lowered.get("connection", "").lower() != "close",
        chunked="chunked" in lowered.get("transfer-encoding", "").lower(),
        declared_length=int(length) if length is not None else None,
    )


def is_interim(status: int) -> bool:
    """1xx answers other than 101 come before the final one (100 Continue, 103 Early Hints)."""
    return 100 <= status < 200 and status != SWITCHING_PROTOCOLS


@dataclass
class Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    content_length: int | None  # bytes of body to read; 0 when none follows (HEAD, 204, 304)
    declared_length: int | None  # the Content-Length header as the model server sent it
    chunked: bool
    _conn: _Connection
    _pool: UpstreamPool
    _keep_alive: bool
    _done: bool = field(default=False)

    async def read(self) -> bytes:
        parts = [chunk async for chunk in self.iter_chunks()]
        return b"".join(parts)

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        reader = self._conn.reader
        try:
            if self.content_length is not None:
                if self.content_length:
                    yield await reader.readexactly(self.content_length)
            elif self.chunked:
                while True:
                    size_line = await reader.readuntil(b"\r\n")
                    size = int(size_line.split(b";", 1)[0].strip(), 16)
                    if size == 0:
                        # Trailer section: lines until an empty one.
                        while (await reader.readuntil(b"\r\n")) != b"\r\n":
                            pass
                        break
                    data = await reader.readexactly(size)
                    await reader.readexactly(2)
                    yield data
            else:
                # Delimited by the end of the connection.
                self._keep_alive = False
                while chunk := await reader.read(65536):
                    yield chunk
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, OSError) as err:
            self.abort()
            raise UpstreamError(f"the model server broke off its answer: {err}") from err
        self.release()

    def abort(self) -> None:
        """Close the connection unless the answer was read to the end; safe to call twice."""
        self._keep_alive = False
        self.release()

    def release(self) -> None:
        """Give the connection back to the pool if it can carry another request. Called only
        once the body was read to the end, or through abort(), which closes it."""
        if self._done:
            return
        self._done = True
        if self._keep_alive:
            self._pool.put_back(self._conn)
        else:
            self._conn.close()


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    reused: bool = False

    def close(self) -> None:
        self.writer.close()

    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()


class UpstreamPool:
    def __init__(self, host: str, port: int, max_idle: int = 64) -> None:
        self.host, self.port = host, port
        self.host_header = f"{host}:{port}"
        self.max_idle = max_idle
        self._idle: list[_Connection] = []

    @classmethod
    def for_url(cls, url: str) -> UpstreamPool:
        hostport = url.removeprefix("http://").split("/", 1)[0]
        host, _, port = hostport.partition(":")
        return cls(host, int(port or 80))

    async def _connect(self) -> _Connection:
        try:
            reader, writer = await asyncio.open_connection(
                self.host, self.port, limit=MAX_HEAD_BYTES
            )
        except OSError as err:
            raise UpstreamError(f"cannot connect to the model server: {err}") from err
        return _Connection(reader, writer)

    async def _checkout(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if conn.usable():
                return conn
            conn.close()  # the model server closed it while it was idle
        return await self._connect()

    def put_back(self, conn: _Connection) -> None:
        if len(self._idle) < self.max_idle and conn.usable():
            conn.reused = True
            self._idle.append(conn)
        else:
            conn.close()

    async def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()

    async def request(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes | bytearray,
    ) -> Response:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host_header}"]
        lines += [f"{k}: {v}" for k, v in headers]
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        head = encode_head(lines)
        while True:
            conn = await self._checkout()
            try:
                await self._send(conn.writer, head, body)
                head_of_answer = await self._final_head(conn.reader)
            except (asyncio.IncompleteReadError, ConnectionError) as err:
                conn.close()
                nothing_back = not isinstance(err, asyncio.IncompleteReadError) or not err.partial
                if conn.reused and nothing_back:
                    # The server closed an idle keep-alive connection before reading this
                    # request: nothing reached it, so sending again on a new one is safe.
                    continue
                raise UpstreamError(f"the model server closed the connection: {err}") from err
            except (asyncio.LimitOverrunError, ValueError, OSError) as err:
                conn.close()
                raise UpstreamError(f"bad answer from the model server: {err}") from err
            return self._response(method, head_of_answer, conn)

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, head: bytes, body: bytes | bytearray) -> None:
        if len(body) <= WRITE_SLICE_BYTES:
            # One write, one packet: the model server reads the request in one go.
            writer.write(head + body)
        else:
            # A slice at a time: joining would copy the body, and the transport copies what
            # the socket has not taken yet, so one write would hold a large body twice.
            writer.write(head)
            view = memoryview(body)
            for start in range(0, len(view), WRITE_SLICE_BYTES):
                writer.write(view[start : start + WRITE_SLICE_BYTES])
                await writer.drain()
        await writer.drain()

    @staticmethod
    async def _final_head(reader: asyncio.StreamReader) -> Head:
        """The head of the final answer, after any interim 1xx ones (which carry no body)."""
        while True:
            head = parse_head(await reader.readuntil(b"\r\n\r\n"))
            if not is_interim(head.status):
                return head

    def _response(self, method: str, head: Head, conn: _Connection) -> Response:
        if head.status == SWITCHING_PROTOCOLS:
            # Upgrade is never forwarded, so this answer cannot be relayed.
            conn.close()
            raise UpstreamError("the model server switched protocols unasked")
        content_length = None if head.chunked else head.declared_length
        chunked = head.chunked
        if method == "HEAD" or head.status in NO_BODY_STATUSES:
            content_length, chunked = 0, False
        return Response(
            status=head.status,
            reason=head.reason,
            headers=head.headers,
            content_length=content_length,
            declared_length=head.declared_length,
            chunked=chunked,
            _conn=conn,
            _pool=self,
            _keep_alive=head.keep_alive,
        )
