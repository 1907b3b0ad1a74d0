"""The sidecar's listening socket: aiohttp's HTTP/1.1 server with a cap on client connections,
the parser limits from the settings, and requests refused by the parser counted like any other.

aiohttp has no connection cap and answers a request its parser refuses (bad request line or
headers, a line or header over the limits) without calling any handler, logging an ERROR with
a traceback. Here connections over the cap get 503 and are closed, and parser refusals are
counted and logged at DEBUG: they are the client's fault, and anyone can send them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from mlmodel_operator.monitor import metrics
from mlmodel_operator.monitor.settings import MonitorSettings

log = logging.getLogger(__name__)
OVER_CAPACITY = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: text/plain\r\n"
    b"Content-Length: 29\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n\r\n"
    b"too many connections to serve"
)
LINGER_SECONDS = 2.0
# (protocol label, status, reason) of a request the sidecar answered itself
CountRefused = Callable[[str, int, str], None]


class _CountingRequestHandler(web.RequestHandler):
    def __init__(
        self,
        manager: web.Server,
        *,
        count_refused: CountRefused,
        on_lost: Callable[[], None],
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self._count_refused = count_refused
        self._on_lost: Callable[[], None] | None = on_lost

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        if self._on_lost is not None:
            self._on_lost()
            self._on_lost = None

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status != 400:  # not the parser: let aiohttp log it as the error it is
            self._count_refused("other", status, "internal")
            return super().handle_error(request, status, exc, message)
        self._count_refused("other", 400, "bad_request")
        log.debug("refused a request from %s: %s", request.remote, message)
        response = web.Response(status=400, text=f"Bad Request: {message}")
        response.force_close()
        return response


class _OverCapacity(asyncio.Protocol):
    """Answers 503 at once and closes. Closing a socket with unread data in it would reset the
    connection and lose the answer, so it reads and discards until the client closes its side,
    for LINGER_SECONDS at most."""

    def connection_made(self, transport: Any) -> None:  # uvloop's is no asyncio.Transport
        transport.write(OVER_CAPACITY)
        if transport.can_write_eof():
            transport.write_eof()
        asyncio.get_running_loop().call_later(LINGER_SECONDS, transport.close)

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        return False  # the transport closes itself


class CappedListener:
    """A protocol factory for loop.create_server: aiohttp's request handler for up to
    max_connections client connections at once, _OverCapacity beyond."""

    def __init__(
        self, server: web.Server, settings: MonitorSettings, count_refused: CountRefused
    ) -> None:
        self.server = server
        self.settings = settings
        self.count_refused = count_refused
        self.open = 0
        self._gauge = metrics.OPEN_CONNECTIONS.labels(settings.model_name, settings.model_version)

    def __call__(self) -> asyncio.Protocol:
        if self.open >= self.settings.max_connections:
            self.count_refused("other", 503, "connection_limit")
            return _OverCapacity()
        self._changed(+1)
        return _CountingRequestHandler(
            self.server,
            count_refused=self.count_refused,
            on_lost=lambda: self._changed(-1),
            loop=asyncio.get_running_loop(),
            access_log=None,
            keepalive_timeout=self.settings.keepalive_timeout_seconds,
            max_line_size=self.settings.max_request_line_bytes,
            max_field_size=self.settings.max_header_field_bytes,
            max_headers=self.settings.max_headers,
        )

    def _changed(self, delta: int) -> None:
        self.open += delta
        self._gauge.set(self.open)


async def listen(
    runner: web.AppRunner, settings: MonitorSettings, count_refused: CountRefused
) -> asyncio.Server:
    """Serve the runner's application on the settings' address until the server is closed."""
    assert runner.server is not None, "runner.setup() first"
    return await asyncio.get_running_loop().create_server(
        CappedListener(runner.server, settings, count_refused),
        settings.listen_host,
        settings.listen_port,
        reuse_address=True,
        # Each worker process binds the port; the kernel spreads connections among them.
        reuse_port=settings.workers > 1,
    )
