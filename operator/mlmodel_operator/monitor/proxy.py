"""The reverse proxy in front of the model server: every request passes through unchanged
(method, path, query, headers, body; status, headers, body and streaming of the answer), timed
and counted; inference payloads are handed to the drift worker after the answer is sent."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from aiohttp import web

from mlmodel_operator.monitor import metrics
from mlmodel_operator.monitor.payloads import protocol_of
from mlmodel_operator.monitor.settings import MonitorSettings
from mlmodel_operator.monitor.upstream import Response, UpstreamError, UpstreamPool
from mlmodel_operator.monitor.worker import DriftWorker

# Hop-by-hop headers (RFC 9110 section 7.6.1) belong to one connection, not the message; the
# length headers are recomputed for the connection they go out on.
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "host",
}
READY_CACHE_SECONDS = 1.0
READY_TIMEOUT_SECONDS = 2.0


def _forwardable(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in headers if k.lower() not in HOP_BY_HOP]


def status_class(status: int) -> str:
    return f"{status // 100}xx"


class Proxy:
    def __init__(self, settings: MonitorSettings, drift: DriftWorker | None) -> None:
        self.settings = settings
        self.drift = drift
        self.upstream = UpstreamPool.for_url(settings.upstream)
        self.timeout = settings.upstream_timeout_seconds
        self.model = settings.model_name
        self._ready_at = 0.0
        self._ready = False
        # Labelled children looked up once: .labels() costs a lock and a dict lookup per call.
        self._in_flight = metrics.IN_FLIGHT.labels(self.model)
        self._timers = {
            protocol: (
                metrics.LATENCY.labels(self.model, protocol),
                metrics.REQUEST_SIZE.labels(self.model, protocol),
                metrics.RESPONSE_SIZE.labels(self.model, protocol),
            )
            for protocol in ("v2", "v1", "other")
        }

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.max_body_bytes)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_route("*", "/{tail:.*}", self.forward)
        app.on_cleanup.append(self._close)
        return app

    async def _close(self, app: web.Application) -> None:
        await self.upstream.close()

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(self, request: web.Request) -> web.Response:
        """Ready only while the model server is: its own readiness endpoint answers 200."""
        now = time.monotonic()
        if now - self._ready_at > READY_CACHE_SECONDS:
            self._ready = await self._upstream_ready()
            self._ready_at = now
        if self._ready:
            return web.Response(text="ready")
        return web.Response(status=503, text="model server not ready")

    async def _upstream_ready(self) -> bool:
        path = self.settings.upstream_ready_path
        try:
            async with asyncio.timeout(READY_TIMEOUT_SECONDS):
                if path is None:
                    _, writer = await asyncio.open_connection(
                        self.upstream.host, self.upstream.port
                    )
                    writer.close()
                    return True
                response = await self.upstream.request("GET", path, [], b"")
                await response.read()
                return response.status == 200
        except (UpstreamError, OSError, TimeoutError):
            return False

    async def forward(self, request: web.Request) -> web.StreamResponse:
        start = time.perf_counter()
        protocol = protocol_of(request.method, request.path)
        track = self.settings.performance_tracking
        capture = self.drift is not None and protocol != "other"
        if track:
            self._in_flight.inc()
        status, sent = 502, 0
        body = b""
        captured: bytes | None = None
        try:
            body = await request.read()
            response, sent, captured = await self._exchange(request, body, capture)
            status = response.status
            return response
        except web.HTTPException as err:  # e.g. 413 for a body over the limit
            status = err.status
            raise
        finally:
            if track:
                latency, request_size, response_size = self._timers[protocol]
                latency.observe(time.perf_counter() - start)
                self._in_flight.dec()
                metrics.REQUESTS.labels(self.model, protocol, status_class(status)).inc()
                request_size.observe(len(body))
                response_size.observe(sent)
            if capture and self.drift is not None:
                self.drift.submit(protocol, status, body, captured)

    async def _exchange(
        self, request: web.Request, body: bytes, capture: bool
    ) -> tuple[web.StreamResponse, int, bytes | None]:
        """Send the request upstream and relay the answer; (response, bytes sent, captured)."""
        headers = _forwardable(request.headers.items())
        peer = request.remote or ""
        forwarded = request.headers.get("X-Forwarded-For")
        headers.append(("X-Forwarded-For", f"{forwarded}, {peer}" if forwarded else peer))
        upstream: Response | None = None
        try:
            async with asyncio.timeout(self.timeout):
                upstream = await self.upstream.request(
                    request.method, request.rel_url.raw_path_qs, headers, body
                )
                length = upstream.content_length
                if length is not None and length <= self.settings.max_capture_bytes:
                    # Small answers with a known length: read whole, send in one write.
                    payload = await upstream.read()
                    response = web.Response(status=upstream.status, body=payload)
                    response.headers.extend(_forwardable(upstream.headers))
                    return response, len(payload), payload if capture else None
        except TimeoutError:
            if upstream is not None:
                upstream.abort()  # the answer may still come: the connection is unusable
            metrics.UPSTREAM_ERRORS.labels(self.model, "timeout").inc()
            return web.Response(status=504, text="model server timed out"), 0, None
        except UpstreamError as err:
            metrics.UPSTREAM_ERRORS.labels(self.model, "connect").inc()
            return web.Response(status=502, text=f"model server unreachable: {err}"), 0, None
        return await self._stream(request, upstream, capture)

    async def _stream(
        self, request: web.Request, upstream: Response, capture: bool
    ) -> tuple[web.StreamResponse, int, bytes | None]:
        response = web.StreamResponse(status=upstream.status)
        response.headers.extend(_forwardable(upstream.headers))
        if upstream.content_length is not None:
            response.content_length = upstream.content_length
        await response.prepare(request)
        sent = 0
        kept: list[bytes] | None = [] if capture else None
        chunks = upstream.iter_chunks()
        try:
            while True:
                try:
                    # Each chunk may take up to the timeout: a stream may run for long.
                    chunk = await asyncio.wait_for(anext(chunks), self.timeout)
                except StopAsyncIteration:
                    break
                await response.write(chunk)
                sent += len(chunk)
                if kept is not None:
                    kept.append(chunk)
                    if sent > self.settings.max_capture_bytes:
                        kept = None  # too large to analyse; it still passes through
        except (UpstreamError, TimeoutError):
            # Headers are already out: all that is left is to cut the connection short.
            metrics.UPSTREAM_ERRORS.labels(self.model, "broken").inc()
            upstream.abort()
            if request.transport is not None:
                request.transport.close()
            return response, sent, None
        await response.write_eof()
        return response, sent, b"".join(kept) if kept is not None else None
