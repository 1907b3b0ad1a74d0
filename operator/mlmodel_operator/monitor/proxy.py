"""The reverse proxy in front of the model server: every request passes through unchanged
(method, path, query, headers, body; status, headers, body and streaming of the answer), timed
and counted; inference payloads are handed to the drift worker after the answer is sent."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
from aiohttp import web

from mlmodel_operator.monitor import metrics
from mlmodel_operator.monitor.payloads import protocol_of
from mlmodel_operator.monitor.settings import MonitorSettings
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
SESSION = web.AppKey("session", aiohttp.ClientSession)


def _forwardable(headers: Any) -> list[tuple[str, str]]:
    return [(k, v) for k, v in headers.items() if k.lower() not in HOP_BY_HOP]


def status_class(status: int) -> str:
    return f"{status // 100}xx"


class Proxy:
    def __init__(self, settings: MonitorSettings, drift: DriftWorker | None) -> None:
        self.settings = settings
        self.drift = drift
        self.upstream = settings.upstream.rstrip("/")
        self.model = settings.model_name
        self._ready_at = 0.0
        self._ready = False

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.max_body_bytes)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_route("*", "/{tail:.*}", self.forward)
        app.cleanup_ctx.append(self._session)
        return app

    async def _session(self, app: web.Application):  # type: ignore[no-untyped-def]
        timeout = aiohttp.ClientTimeout(total=self.settings.upstream_timeout_seconds, connect=5)
        # Bytes pass through as they are: no decompression, no headers the client did not send.
        session = aiohttp.ClientSession(
            timeout=timeout,
            auto_decompress=False,
            skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60),
        )
        app[SESSION] = session
        yield
        await session.close()

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(self, request: web.Request) -> web.Response:
        """Ready only while the model server is: its own readiness endpoint answers 200."""
        now = time.monotonic()
        if now - self._ready_at > READY_CACHE_SECONDS:
            self._ready = await self._upstream_ready(request.app[SESSION])
            self._ready_at = now
        if self._ready:
            return web.Response(text="ready")
        return web.Response(status=503, text="model server not ready")

    async def _upstream_ready(self, session: aiohttp.ClientSession) -> bool:
        path = self.settings.upstream_ready_path
        try:
            if path is None:
                host, _, port = self.upstream.removeprefix("http://").partition(":")
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, int(port or 80)), timeout=2
                )
                writer.close()
                return True
            async with session.get(
                self.upstream + path, timeout=aiohttp.ClientTimeout(total=2)
            ) as response:
                await response.read()
                return response.status == 200
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False

    async def forward(self, request: web.Request) -> web.StreamResponse:
        start = time.perf_counter()
        protocol = protocol_of(request.method, request.path)
        track = self.settings.performance_tracking
        capture = self.drift is not None and protocol != "other"
        if track:
            metrics.IN_FLIGHT.labels(self.model).inc()
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
                metrics.IN_FLIGHT.labels(self.model).dec()
                metrics.REQUESTS.labels(self.model, protocol, status_class(status)).inc()
                metrics.LATENCY.labels(self.model, protocol).observe(time.perf_counter() - start)
                metrics.REQUEST_SIZE.labels(self.model, protocol).observe(len(body))
                metrics.RESPONSE_SIZE.labels(self.model, protocol).observe(sent)
            if capture and self.drift is not None:
                self.drift.submit(protocol, status, body, captured)

    async def _exchange(
        self, request: web.Request, body: bytes, capture: bool
    ) -> tuple[web.StreamResponse, int, bytes | None]:
        """Send the request upstream and relay the answer; (response, bytes sent, captured)."""
        session = request.app[SESSION]
        headers = _forwardable(request.headers)
        peer = request.remote or ""
        forwarded = request.headers.get("X-Forwarded-For")
        headers.append(("X-Forwarded-For", f"{forwarded}, {peer}" if forwarded else peer))
        try:
            upstream = await session.request(
                request.method,
                self.upstream + request.rel_url.raw_path_qs,
                headers=headers,
                data=body if body else None,
                allow_redirects=False,
            )
        except TimeoutError:
            metrics.UPSTREAM_ERRORS.labels(self.model, "timeout").inc()
            return web.Response(status=504, text="model server timed out"), 0, None
        except aiohttp.ClientError as err:
            metrics.UPSTREAM_ERRORS.labels(self.model, "connect").inc()
            return web.Response(status=502, text=f"model server unreachable: {err}"), 0, None

        async with upstream:
            out_headers = _forwardable(upstream.headers)
            length = upstream.content_length
            if length is not None and length <= self.settings.max_capture_bytes:
                # Small answers with a known length: read whole, send in one write.
                try:
                    payload = await upstream.read()
                except (aiohttp.ClientError, TimeoutError):
                    metrics.UPSTREAM_ERRORS.labels(self.model, "broken").inc()
                    return web.Response(status=502, text="model server broke off"), 0, None
                response = web.Response(status=upstream.status, body=payload)
                response.headers.extend(out_headers)
                return response, len(payload), payload if capture else None
            return await self._stream(request, upstream, out_headers, capture)

    async def _stream(
        self,
        request: web.Request,
        upstream: aiohttp.ClientResponse,
        headers: list[tuple[str, str]],
        capture: bool,
    ) -> tuple[web.StreamResponse, int, bytes | None]:
        response = web.StreamResponse(status=upstream.status)
        response.headers.extend(headers)
        if upstream.content_length is not None:
            response.content_length = upstream.content_length
        await response.prepare(request)
        sent = 0
        kept: list[bytes] | None = [] if capture else None
        try:
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
                sent += len(chunk)
                if kept is not None:
                    kept.append(chunk)
                    if sent > self.settings.max_capture_bytes:
                        kept = None  # too large to analyse; it still passes through
        except (aiohttp.ClientError, TimeoutError):
            # Headers are already out: all that is left is to cut the connection short.
            metrics.UPSTREAM_ERRORS.labels(self.model, "broken").inc()
            request.transport and request.transport.close()  # type: ignore[func-returns-value]
            return response, sent, None
        await response.write_eof()
        return response, sent, b"".join(kept) if kept is not None else None
