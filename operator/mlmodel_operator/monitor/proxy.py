"""The reverse proxy in front of the model server: every request passes through unchanged
(method, path, query, headers, body; status, headers, body and streaming of the answer), timed
and counted; with drift detection on, inference payloads are handed over to the analyst
process after the answer is sent (handoff.py: a copy into shared memory and one datagram; no
parsing here).

OpenAI API answers are the exception: their tokens and timings must be counted exactly, not
sampled, so the proxy reads them itself as they pass (llm_meter.py), chunk by chunk for a
stream, and hands the analyst only the facts (lengths and finish reason), never the text.

The bodies it holds are bounded in bytes (ByteBudget), a body must arrive within
body_timeout_seconds, and a client that goes away is counted apart (status 499), not as a
failure of the model server.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict
from prometheus_client import Counter

from mlmodel_operator.monitor import metrics
from mlmodel_operator.monitor.binary import HEADER as BINARY_HEADER
from mlmodel_operator.monitor.budget import ByteBudget, Hold
from mlmodel_operator.monitor.feedback_service import LOOPBACK, FeedbackService
from mlmodel_operator.monitor.ground_truth import parse_answer, read_rows
from mlmodel_operator.monitor.handoff import Writer
from mlmodel_operator.monitor.ledger import Ledger
from mlmodel_operator.monitor.llm_meter import LLMMetrics, Reading
from mlmodel_operator.monitor.openai import drift_features, endpoint_of
from mlmodel_operator.monitor.payload_events import Origin
from mlmodel_operator.monitor.payload_log import Copy, PayloadLog
from mlmodel_operator.monitor.payloads import Exchange, protocol_of
from mlmodel_operator.monitor.prediction_id import (
    PREDICTION_ID_HEADER,
    REQUEST_ID_HEADER,
    Holder,
    own_id,
    prediction_id,
)
from mlmodel_operator.monitor.settings import MonitorSettings
from mlmodel_operator.monitor.upstream import Response, UpstreamError, UpstreamPool

log = logging.getLogger(__name__)

# Hop-by-hop headers (RFC 9110 section 7.6.1) belong to one connection, not the message; the
# length headers are recomputed for the connection they go out on. Expect is answered by the
# sidecar itself (100 Continue), which sends the model server the whole body at once.
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "host",
    "expect",
}
READY_CACHE_SECONDS = 1.0
PUBLISH_SECONDS = 1.0
READY_TIMEOUT_SECONDS = 2.0
CLIENT_CLOSED = 499  # nginx's status for a request whose client went away
Body = bytes | bytearray


def _forwardable(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in headers if k.lower() not in HOP_BY_HOP]


# The classes of the final answers the sidecar relays or gives itself (no 1xx is final).
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx")


def status_class(status: int) -> str:
    return f"{status // 100}xx"


class Refused(Exception):
    """The sidecar answers the request itself, and closes the connection: its body may be
    partly unread."""

    def __init__(self, status: int, reason: str, text: str) -> None:
        super().__init__(text)
        self.status, self.reason = status, reason

    def response(self) -> web.Response:
        response = web.Response(status=self.status, text=str(self))
        response.force_close()
        return response


class BodyTimeout(Exception):
    pass


@dataclass
class Outcome:
    """What one request came to, for the metrics and the analyst."""

    status: int = 502
    phase: str = "request"  # request while its body is read, then response
    received: int = 0
    sent: int = 0
    exchange: Exchange | None = None
    llm: Reading | None = None  # an OpenAI API request
    prediction: str | None = None  # its x-prediction-id
    copy: Copy | None = None  # the answer as kept for payload logging


class Proxy:
    def __init__(
        self,
        settings: MonitorSettings,
        handoff: Writer | None = None,
        analyst_alive: Callable[[], bool] = lambda: True,
        worker: int = 0,
    ) -> None:
        self.settings = settings
        self.worker = worker
        self.handoff = handoff
        self.analyst_alive = analyst_alive
        self.upstream = UpstreamPool.for_url(settings.upstream)
        self.timeout = settings.upstream_timeout_seconds
        self.model = settings.model_name
        self.version = settings.model_version
        self.budget = ByteBudget(settings.max_buffered_bytes)
        self._ready_at = 0.0
        self._ready = False
        # Labelled children looked up once: .labels() costs a lock and a dict lookup per call.
        self._in_flight = metrics.IN_FLIGHT.labels(self.model, self.version)
        self._timers = {
            protocol: (
                metrics.LATENCY.labels(self.model, self.version, protocol),
                metrics.REQUEST_SIZE.labels(self.model, self.version, protocol),
                metrics.RESPONSE_SIZE.labels(self.model, self.version, protocol),
            )
            for protocol in ("v2", "v1", "openai", "other")
        }
        self._llm = LLMMetrics(self.model, self.version)
        self._buffered = metrics.BUFFERED_BYTES.labels(self.model, self.version)
        self._queued = metrics.DRIFT_QUEUED_BYTES.labels(self.model, self.version)
        self._publisher: asyncio.Task[None] | None = None
        self.ledger: Ledger | None = None
        self.feedback: FeedbackService | None = None
        address = settings.pod_ip or LOOPBACK
        if settings.ground_truth is not None:
            self.ledger = Ledger(settings.ground_truth, self.model, self.version)
            self.feedback = FeedbackService(settings.ground_truth, self.ledger, address, worker)
        self.payload_log: PayloadLog | None = None
        if settings.payload_logging is not None:
            origin = Origin(self.model, self.version, settings.namespace)
            self.payload_log = PayloadLog(settings.payload_logging, origin)
        self._dropped: dict[str, Counter] = {}
        if settings.performance_tracking:
            # Every status class at zero from the start, for the model's protocol: a series
            # that appears with its first request would have that request missed by
            # increase(), and a canary's first 5xx are what its analysis must count.
            for status in STATUS_CLASSES:
                metrics.REQUESTS.labels(self.model, self.version, settings.protocol, status)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.max_body_bytes)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        if self.feedback is not None:
            app.router.add_post(f"/v2/models/{self.model}/feedback", self.feedback.receive)
        app.router.add_route("*", "/{tail:.*}", self.forward, expect_handler=self.expect)
        app.on_startup.append(self._start_publishing)
        app.on_cleanup.append(self._close)
        if self.payload_log is not None:
            app.on_startup.append(self.payload_log.start)
            app.on_cleanup.append(self.payload_log.close)
        return app

    async def _start_publishing(self, app: web.Application) -> None:
        self._publisher = asyncio.create_task(self._publish())

    async def _publish(self) -> None:
        """Levels that change several times per request (bytes held, bytes waiting for the
        analyst) are written to their gauges once a second rather than at each change: each
        write costs the request path a memory-mapped update, and scrapes come far less often."""
        while True:
            self._buffered.set(self.budget.used)
            if self.handoff is not None:
                self._queued.set(self.handoff.queued()[0])
            if self.ledger is not None:
                self.ledger.publish()
            await asyncio.sleep(PUBLISH_SECONDS)

    async def _close(self, app: web.Application) -> None:
        if self._publisher is not None:
            self._publisher.cancel()
        if self.feedback is not None:
            await self.feedback.close()
        await self.upstream.close()

    async def healthz(self, request: web.Request) -> web.Response:
        # An analyst that died cannot come back: restarting the container is the cure.
        if self.handoff is not None and not self.analyst_alive():
            return web.Response(status=503, text="drift analyst stopped")
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

    # --- forwarding --------------------------------------------------------------------------

    def _too_large(self, request: web.BaseRequest) -> Refused | None:
        length = request.content_length
        if length is not None and length > self.settings.max_body_bytes:
            return Refused(413, "body_too_large", "request body over the limit")
        return None

    async def expect(self, request: web.Request) -> web.StreamResponse | None:
        """Expect: 100-continue. A body over the limit is refused before the client sends it;
        otherwise the client is told to go on (the model server gets the body whole). Other
        expectations are ignored, as the model servers do."""
        refused = self._too_large(request)
        if refused is not None:
            self.count_refused(
                protocol_of(request.method, request.path), refused.status, refused.reason
            )
            return refused.response()
        expect = request.headers.get("Expect", "").lower()
        if request.version >= (1, 1) and expect == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0  # the answer itself is still to come
        return None

    async def forward(self, request: web.Request) -> web.StreamResponse:
        start = time.perf_counter()
        protocol = protocol_of(request.method, request.path)
        # A scrape of the model server's own metrics (an endpoint picker reads vLLM's through
        # this port, many times a second) is relayed, not counted as a request to the model.
        track = self.settings.performance_tracking and not self._is_scrape(request)
        if track:
            self._in_flight.inc()
        outcome = Outcome()
        if protocol == "openai" and (track or self.handoff is not None):
            endpoint = endpoint_of(request.method, request.path)
            assert endpoint is not None
            outcome.llm = Reading(endpoint, start, self.settings.max_capture_bytes)
        hold = self.budget.hold()
        body: Body = b""
        try:
            refused = self._too_large(request)
            if refused is not None:
                raise refused
            body = await self._read_body(request, hold)
            outcome.phase, outcome.received = "response", len(body)
            return await self._exchange(request, protocol, body, hold, outcome)
        except Refused as refused:
            outcome.status = refused.status
            metrics.REFUSED_REQUESTS.labels(self.model, self.version, refused.reason).inc()
            return refused.response()
        except ConnectionError as err:
            # Not a failure of the model server nor of the sidecar: counted apart, not logged.
            outcome.status = CLIENT_CLOSED
            metrics.CLIENT_ABORTS.labels(self.model, self.version, outcome.phase).inc()
            log.debug("client went away during the %s: %r", outcome.phase, err)
            # Returned, not raised: aiohttp would take an exception for a failure of its own.
            # Nobody is left to read it.
            return web.Response(status=CLIENT_CLOSED)
        except Exception:
            outcome.status = 500
            log.exception("cannot relay %s %s", request.method, request.path)
            return web.Response(status=500, text="sidecar error")
        finally:
            hold.release()
            if track:
                self._in_flight.dec()
                self._count(protocol, outcome, time.perf_counter() - start)
            if outcome.exchange is not None:
                # Once the answer is out: aiohttp writes it after this returns.
                asyncio.get_running_loop().call_soon(self._hand_over, outcome.exchange)
            if outcome.copy is not None and self.payload_log is not None:
                # Once the answer is out, like the hand-over above.
                asyncio.get_running_loop().call_soon(
                    self.payload_log.log, outcome.copy, body, outcome.status
                )
            if outcome.llm is not None and outcome.llm.answered:
                asyncio.get_running_loop().call_soon(self._read_llm, outcome, body)

    def _is_scrape(self, request: web.Request) -> bool:
        path = self.settings.upstream_metrics_path
        return path is not None and request.method == "GET" and request.path == path

    def _read_llm(self, outcome: Outcome, body: Body) -> None:
        """Count what an OpenAI exchange came to, and hand its facts to the analyst."""
        assert outcome.llm is not None
        aborted = outcome.status == CLIENT_CLOSED
        completion = outcome.llm.completion(body, aborted)
        if self.settings.performance_tracking:
            self._llm.record(completion)
        if self.handoff is not None and outcome.status == 200 and not aborted:
            inputs, outputs = drift_features(completion)
            exchange = Exchange("openai", 200, orjson.dumps(inputs), orjson.dumps(outputs))
            self._hand_over(exchange)

    def _hand_over(self, exchange: Exchange) -> None:
        assert self.handoff is not None
        reason = self.handoff.offer(exchange)
        if reason is not None:
            self.drop(reason)

    def drop(self, reason: str) -> None:
        """Count a payload that is not analysed, with the reason."""
        counter = self._dropped.get(reason)
        if counter is None:
            counter = metrics.DROPPED_PAYLOADS.labels(self.model, self.version, reason)
            self._dropped[reason] = counter
        counter.inc()

    def count_refused(self, protocol: str, status: int, reason: str) -> None:
        """A request the sidecar answered itself, before or instead of the handler."""
        metrics.REFUSED_REQUESTS.labels(self.model, self.version, reason).inc()
        self._count(protocol, Outcome(status), 0.0)

    def _count(self, protocol: str, outcome: Outcome, seconds: float) -> None:
        if not self.settings.performance_tracking:
            return
        latency, request_size, response_size = self._timers[protocol]
        latency.observe(seconds)
        metrics.REQUESTS.labels(
            self.model, self.version, protocol, status_class(outcome.status)
        ).inc()
        request_size.observe(outcome.received)
        response_size.observe(outcome.sent)

    async def _read_body(self, request: web.Request, hold: Hold) -> Body:
        """The whole request body, within body_timeout_seconds and the byte budget."""
        length = request.content_length
        if length is not None and request.content.is_eof() and hold.try_take(length):
            # All of it came with the head (small bodies do): nothing to wait for.
            return await request.read()
        deadline = asyncio.get_running_loop().time() + self.settings.body_timeout_seconds
        if length is not None:
            try:
                async with asyncio.timeout_at(deadline):
                    await hold.take(length)
            except TimeoutError:
                raise Refused(503, "busy", "sidecar busy: no room for the body") from None
        try:
            async with asyncio.timeout_at(deadline):
                if length is not None:
                    return await self._read_known(request, length)
                return await self._read_chunked(request, hold)
        except TimeoutError:
            raise Refused(408, "body_timeout", "request body not received in time") from None

    @staticmethod
    async def _read_known(request: web.Request, length: int) -> bytearray:
        # Filled in place: joining chunks would hold the body twice for a moment.
        body = bytearray(length)
        view, filled = memoryview(body), 0
        while filled < length:
            chunk = await request.content.readany()
            if not chunk:
                raise ConnectionResetError("the body ended early")
            view[filled : filled + len(chunk)] = chunk[: length - filled]
            filled += len(chunk)
        return body

    async def _read_chunked(self, request: web.Request, hold: Hold) -> bytearray:
        body = bytearray()
        while chunk := await request.content.readany():
            if len(body) + len(chunk) > self.settings.max_body_bytes:
                raise Refused(413, "body_too_large", "request body over the limit")
            await hold.take(len(chunk))
            body += chunk
        return body

    async def _exchange(
        self, request: web.Request, protocol: str, body: Body, hold: Hold, outcome: Outcome
    ) -> web.StreamResponse:
        """Send the request upstream and relay the answer."""
        headers = _forwardable(request.headers.items())
        peer = request.remote or ""
        forwarded = request.headers.get("X-Forwarded-For")
        headers.append(("X-Forwarded-For", f"{forwarded}, {peer}" if forwarded else peer))
        upstream: Response | None = None
        try:
            try:
                async with asyncio.timeout(self.timeout):
                    upstream = await self.upstream.request(
                        request.method, request.rel_url.raw_path_qs, headers, body
                    )
                    outcome.status = upstream.status
                    length = upstream.content_length
                    if (
                        length is not None
                        and length <= self.settings.max_capture_bytes
                        and hold.try_take(length)
                    ):
                        # Small answers with a known length: read whole, send in one write.
                        payload = await upstream.read()
                        outcome.sent = len(payload)
                        if outcome.llm is not None:
                            outcome.llm.begin(upstream.headers)
                            outcome.llm.chunk(payload, time.perf_counter())
                        outcome.exchange = self._capture(protocol, body, request, upstream, payload)
                        self._identify(request, protocol, outcome, payload)
                        if self.payload_log is not None:
                            outcome.copy = self.payload_log.copy(
                                request, outcome.prediction, upstream.headers, payload
                            )
                        return self._relayed(request, upstream, payload, outcome.prediction)
            except TimeoutError:
                metrics.UPSTREAM_ERRORS.labels(self.model, self.version, "timeout").inc()
                outcome.status = 504
                return web.Response(status=504, text="model server timed out")
            except UpstreamError as err:
                metrics.UPSTREAM_ERRORS.labels(self.model, self.version, "connect").inc()
                outcome.status = 502
                return web.Response(status=502, text=f"model server unreachable: {err}")
            return await self._stream(request, protocol, body, upstream, hold, outcome)
        finally:
            if upstream is not None:
                upstream.abort()  # closes the connection unless the answer was read whole

    def _identify(
        self, request: web.Request, protocol: str, outcome: Outcome, payload: bytes | None
    ) -> None:
        """Give an inference answer its prediction id and, with ground truth on, keep its
        prediction (after the answer is out). `payload` is None for an answer streamed on."""
        if not self.settings.prediction_ids or protocol == "other" or request.method != "POST":
            return
        document = None
        own = request.headers.get(REQUEST_ID_HEADER)
        if payload is not None and outcome.status == 200 and (own is None or self.ledger):
            # The answer is parsed here for the id it echoes; its prediction is read after the
            # answer is out.
            document = parse_answer(payload)
        answered = document.get("id") if document is not None else None
        holder = Holder(self.settings.pod_ip or LOOPBACK, self.worker, int(time.time()))
        outcome.prediction = prediction_id(holder, own_id(own, answered))
        if self.ledger is None or outcome.status != 200:
            return
        if payload is None:
            self.ledger.unlabelled("streamed")
        else:
            asyncio.get_running_loop().call_soon(
                self._record, outcome.prediction, document, protocol
            )

    def _record(self, prediction: str, document: dict[str, Any] | None, protocol: str) -> None:
        assert self.ledger is not None and self.settings.ground_truth is not None
        truth = self.settings.ground_truth
        answer = read_rows(document, protocol, truth.task, truth.output)
        if answer.rows is None:
            self.ledger.unlabelled(answer.problem or "unreadable")
        else:
            self.ledger.record(prediction, answer.rows)

    def _relayed(
        self, request: web.Request, upstream: Response, payload: bytes, prediction: str | None
    ) -> web.Response:
        headers = CIMultiDict(_forwardable(upstream.headers))
        if prediction is not None:
            headers[PREDICTION_ID_HEADER] = prediction
        if request.method == "HEAD" and upstream.declared_length is not None:
            # No body follows a HEAD answer, but its Content-Length is the GET answer's.
            headers["Content-Length"] = str(upstream.declared_length)
        return web.Response(
            status=upstream.status, reason=upstream.reason or None, body=payload, headers=headers
        )

    def _capture(
        self,
        protocol: str,
        body: Body,
        request: web.Request,
        upstream: Response,
        payload: bytes | None,
    ) -> Exchange | None:
        """The exchange for the analyst, when drift is on and the body is small enough;
        `payload` is None when the answer was too large to keep."""
        if self.handoff is None or protocol in ("other", "openai"):
            return None
        if len(body) > self.settings.max_capture_bytes:
            self.drop("too_large")
            return None
        return Exchange(
            protocol,
            upstream.status,
            body,
            payload,
            request_json_length=request.headers.get(BINARY_HEADER),
            response_json_length=_header(upstream.headers, BINARY_HEADER),
        )

    async def _stream(
        self,
        request: web.Request,
        protocol: str,
        body: Body,
        upstream: Response,
        hold: Hold,
        outcome: Outcome,
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason or None)
        response.headers.extend(_forwardable(upstream.headers))
        if upstream.content_length is not None:
            response.content_length = upstream.content_length
        self._identify(request, protocol, outcome, None)
        if outcome.prediction is not None:
            response.headers[PREDICTION_ID_HEADER] = outcome.prediction
        if self.payload_log is not None:
            outcome.copy = self.payload_log.copy(request, outcome.prediction, upstream.headers)
        capture = self.handoff is not None and protocol not in ("other", "openai")
        kept: list[bytes] | None = [] if capture else None
        chunks = upstream.iter_chunks()
        llm = outcome.llm
        if llm is not None:
            llm.begin(upstream.headers)
        await response.prepare(request)
        try:
            while True:
                try:
                    # Each chunk may take up to the timeout: a stream may run for long.
                    chunk = await asyncio.wait_for(anext(chunks), self.timeout)
                except StopAsyncIteration:
                    break
                await response.write(chunk)
                outcome.sent += len(chunk)
                if outcome.copy is not None:
                    outcome.copy.add(chunk)  # a reference, after the chunk went out
                if llm is not None:
                    # When the chunk went out: what the client sees, not when it arrived.
                    llm.chunk(chunk, time.perf_counter())
                if kept is not None:
                    fits = outcome.sent <= self.settings.max_capture_bytes
                    if fits and hold.try_take(len(chunk)):
                        kept.append(chunk)
                    else:
                        kept = None  # too large to analyse; it still passes through
        except (UpstreamError, TimeoutError):
            # Headers are already out: all that is left is to cut the connection short.
            metrics.UPSTREAM_ERRORS.labels(self.model, self.version, "broken").inc()
            if request.transport is not None:
                request.transport.close()
            return response
        await response.write_eof()
        payload = b"".join(kept) if kept is not None else None
        outcome.exchange = self._capture(protocol, body, request, upstream, payload)
        return response


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    lowered = name.lower()
    return next((v for k, v in headers if k.lower() == lowered), None)
