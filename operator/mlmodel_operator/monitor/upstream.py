"""A lean HTTP/1.1 client for the one model server in the pod, over pooled keep-alive
connections on asyncio streams.

The sidecar sends every request to the same loopback address, so it needs none of a general
client's machinery (cookies, redirects, proxies, TLS, tracing); what it needs is little work per
request. Bodies and headers pass as bytes, untouched (no decompression).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

MAX_HEAD_BYTES = 64 * 1024
NO_BODY_STATUSES = {204, 304}


class UpstreamError(Exception):
    """The model server could not be reached or broke off its answer."""


@dataclass
class Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    content_length: int | None
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
        """Close the connection: the answer was not (or not wholly) read."""
        self._keep_alive = False
        self.release()

    def release(self) -> None:
        """Give the connection back to the pool if it can carry another request."""
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

    def put_back(self, conn: _Connection) -> None:
        if len(self._idle) < self.max_idle and not conn.writer.is_closing():
            conn.reused = True
            self._idle.append(conn)
        else:
            conn.close()

    async def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()

    async def request(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes
    ) -> Response:
        head = [f"{method} {target} HTTP/1.1", f"Host: {self.host_header}"]
        head += [f"{k}: {v}" for k, v in headers]
        if body or method in ("POST", "PUT", "PATCH"):
            head.append(f"Content-Length: {len(body)}")
        message = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        while True:
            conn = self._idle.pop() if self._idle else await self._connect()
            try:
                conn.writer.write(message)
                await conn.writer.drain()
                raw = await conn.reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError) as err:
                conn.close()
                if conn.reused:
                    # The server closed an idle keep-alive connection before reading this
                    # request: nothing reached it, so sending again on a new one is safe.
                    continue
                raise UpstreamError(f"the model server closed the connection: {err}") from err
            return self._response(method, raw, conn)

    def _response(self, method: str, raw: bytes, conn: _Connection) -> Response:
        lines = raw.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        status_text, _, reason = rest.partition(" ")
        headers = []
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers.append((name.strip(), value.strip()))
        lowered = {k.lower(): v for k, v in headers}
        status = int(status_text)
        keep_alive = version == "HTTP/1.1" and lowered.get("connection", "").lower() != "close"
        chunked = "chunked" in lowered.get("transfer-encoding", "").lower()
        length = None if chunked else lowered.get("content-length")
        content_length = int(length) if length is not None else None
        if method == "HEAD" or status in NO_BODY_STATUSES or 100 <= status < 200:
            content_length, chunked = 0, False
        return Response(
            status=status,
            reason=reason,
            headers=headers,
            content_length=content_length,
            chunked=chunked,
            _conn=conn,
            _pool=self,
            _keep_alive=keep_alive,
        )
