"""Payload logging in a proxy worker: each sampled request and its answer become CloudEvents
(payload_events.py), queued (payload_queue.py) and delivered to the sink by background tasks
(payload_delivery.py). The request path never waits for any of it: the proxy keeps a reference
to the answer's body as it passes (`Copy`, bounded by max_capture_bytes and by the queue's
bytes), and once the answer is out, `log` makes the events and queues them or, without room,
drops and counts them.

Every byte held for payload logging (bodies kept for their events, events queued and in
delivery) is taken from one budget of max_queued_bytes per worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable

import aiohttp
from aiohttp import web

from mlmodel_operator.monitor import metrics
from mlmodel_operator.monitor.budget import ByteBudget, Hold
from mlmodel_operator.monitor.payload_delivery import (
    MAX_ATTEMPTS,
    Authorization,
    Sink,
    Verdict,
    backoff,
    parse_retry_after,
    verdict,
)
from mlmodel_operator.monitor.payload_events import (
    BATCH_CONTENT_TYPE,
    KINDS,
    Body,
    Exchange,
    Origin,
    encode_batch,
    encode_binary,
    encode_structured,
    make_events,
    sampled,
)
from mlmodel_operator.monitor.payload_queue import EventQueue, Queued
from mlmodel_operator.monitor.settings import PayloadLoggingSettings

log = logging.getLogger(__name__)

# Deliveries in flight at once per worker: a sink that takes its time on one POST does not stop
# the others.
SENDERS = 4
# At shutdown, events still queued get this long to go out (within the worker's 25 s).
FLUSH_SECONDS = 2.0
PUBLISH_SECONDS = 1.0
DROP_REASONS = ("queue_full", "too_large", "rejected", "retries_exhausted", "shutdown")


def _content_type(headers: Iterable[tuple[str, str]]) -> str | None:
    return next((v for k, v in headers if k.lower() == "content-type"), None)


class Copy:
    """One exchange's answer as kept for its events while it passes: a reference to each chunk
    up to max_capture_bytes, each byte taken from the payload log's budget."""

    def __init__(
        self,
        hold: Hold,
        cap: int,
        keep: bool,
        prediction: str,
        endpoint: str,
        request_type: str | None,
        response_type: str | None,
    ) -> None:
        self.hold, self.cap, self.keep = hold, cap, keep
        self.prediction = prediction
        self.endpoint = endpoint
        self.request_type = request_type
        self.response_type = response_type
        self.answered_at = time.time()
        self.chunks: list[bytes] = []
        self.kept = self.size = 0
        # Why the exchange's events are dropped (queue_full: no room left in the budget,
        # too_large: more than the whole budget), or None.
        self.dropped: str | None = None

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if not self.keep or self.dropped or self.kept >= self.cap:
            return
        part = chunk if self.kept + len(chunk) <= self.cap else chunk[: self.cap - self.kept]
        if not self.hold.try_take(len(part)):
            whole = self.hold.size + len(part) > self.hold.budget.capacity
            self.dropped = "too_large" if whole else "queue_full"
            self.chunks = []
            self.hold.release()
            return
        self.chunks.append(part)
        self.kept += len(part)

    def answer(self) -> Body:
        data = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        return Body(bytes(data), self.response_type, self.size)


class PayloadLog:
    def __init__(self, settings: PayloadLoggingSettings, origin: Origin) -> None:
        self.settings = settings
        self.origin = origin
        self.kinds = KINDS[settings.mode]
        self.binary = settings.batch_size == 1
        self.budget = ByteBudget(settings.max_queued_bytes)
        self.queue = EventQueue(self.budget, settings.batch_size, settings.batch_interval_seconds)
        self.sink = Sink(
            settings.url, Authorization(settings.authorization_file), settings.timeout_seconds
        )
        labels = (origin.model, origin.version)
        self._sent = metrics.PAYLOAD_EVENTS_SENT.labels(*labels)
        # Every reason at zero from the start, so that increase() sees the first drops.
        self._dropped = {r: metrics.PAYLOAD_EVENTS_DROPPED.labels(*labels, r) for r in DROP_REASONS}
        self._queued = metrics.PAYLOAD_QUEUED_BYTES.labels(*labels)
        self._failing_gauge = metrics.PAYLOAD_LOGGING_FAILING.labels(*labels)
        self._failing_gauge.set(0)
        self._failing = False
        self._tasks: list[asyncio.Task[None]] = []

    # --- on the request path: only references and counts ---------------------------------------

    def copy(
        self,
        request: web.BaseRequest,
        prediction: str | None,
        headers: Iterable[tuple[str, str]],
        payload: bytes | None = None,
    ) -> Copy | None:
        """A Copy for an answer being relayed, if its prediction is logged; `payload` is the
        whole answer when it was read at once (else the proxy adds a stream's chunks)."""
        if prediction is None or not sampled(prediction, self.settings.sample_percent):
            return None
        copy = Copy(
            self.budget.hold(),
            self.settings.max_capture_bytes,
            "response" in self.kinds,
            prediction,
            request.path,
            request.headers.get("Content-Type"),
            _content_type(headers),
        )
        if payload is not None:
            copy.add(payload)
        return copy

    # --- after the answer is out -----------------------------------------------------------------

    def log(self, copy: Copy, body: bytes | bytearray, status: int) -> None:
        """Make the exchange's events and queue them, or drop and count them."""
        try:
            self._log(copy, body, status)
        finally:
            copy.hold.release()

    def _log(self, copy: Copy, body: bytes | bytearray, status: int) -> None:
        count = len(self.kinds)
        if copy.dropped:
            self._drop(copy.dropped, count)
            return
        cap = self.settings.max_capture_bytes
        request = Body(
            bytes(body[:cap]) if "request" in self.kinds else b"", copy.request_type, len(body)
        )
        exchange = Exchange(
            copy.prediction,
            copy.endpoint,
            status,
            request,
            copy.answer(),
            copy.answered_at,
            time.time(),
        )
        copy.chunks = []
        items: list[tuple[bytes, dict[str, str] | None]] = []
        for event, data in make_events(exchange, self.origin, self.settings.mode):
            if self.binary:
                headers, encoded = encode_binary(event)
                items.append((encoded, headers))
            else:
                items.append((encode_structured(event, data), None))
        copy.hold.release()  # the encoded events take its place
        if sum(len(encoded) for encoded, _ in items) > self.budget.capacity:
            self._drop("too_large", count)
        elif not self.queue.offer(items):
            self._drop("queue_full", count)

    def _drop(self, reason: str, count: int) -> None:
        self._dropped[reason].inc(count)

    # --- delivery ------------------------------------------------------------------------------

    async def start(self, app: web.Application | None = None) -> None:
        self._tasks = [asyncio.create_task(self._send_forever()) for _ in range(SENDERS)]
        self._tasks.append(asyncio.create_task(self._publish()))

    async def close(self, app: web.Application | None = None) -> None:
        """Give the events still queued FLUSH_SECONDS to go out, then drop (and count) the rest."""
        self.queue.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FLUSH_SECONDS):
                while self.budget.used:
                    await asyncio.sleep(0.05)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._drop("shutdown", self.queue.clear())
        self._queued.set(self.budget.used)
        await self.sink.close()

    async def _publish(self) -> None:
        # A level that changes with every event: written once a second, not at each change.
        while True:
            self._queued.set(self.budget.used)
            await asyncio.sleep(PUBLISH_SECONDS)

    async def _send_forever(self) -> None:
        while True:
            batch = await self.queue.take()
            try:
                await self._deliver(batch)
            except asyncio.CancelledError:
                self._drop("shutdown", len(batch))
                raise
            except Exception:  # a bug here must not stop delivery for good
                log.exception("payload delivery failed")
                self._drop("retries_exhausted", len(batch))
            finally:
                self.queue.done(batch)

    async def _deliver(self, batch: list[Queued]) -> None:
        if batch[0].headers is not None:
            headers, body = batch[0].headers, batch[0].body
        else:
            headers = {"Content-Type": BATCH_CONTENT_TYPE}
            body = encode_batch([item.body for item in batch])
            # The joined body takes the events' place (and their bytes in the budget): the
            # memory held stays what the budget counts while the batch is retried.
            batch[:] = [Queued(b"", None, item.size, item.queued_at) for item in batch]
        for attempt in range(MAX_ATTEMPTS):
            retry_after = None
            try:
                status, after = await self.sink.post(headers, body)
                result, problem = verdict(status), f"HTTP {status}"
                retry_after = parse_retry_after(after, time.time())
            except (OSError, aiohttp.ClientError, TimeoutError) as err:
                result, problem = Verdict.retry, self._describe(err)
            if result == Verdict.sent:
                self._sent.inc(len(batch))
                self._set_failing(False, "")
                return
            self._set_failing(True, problem)
            if result == Verdict.rejected:
                self._drop("rejected", len(batch))
                return
            if attempt + 1 < MAX_ATTEMPTS:
                await asyncio.sleep(backoff(attempt, retry_after))
        self._drop("retries_exhausted", len(batch))

    def _describe(self, err: BaseException) -> str:
        if isinstance(err, TimeoutError):
            return f"no answer within {self.settings.timeout_seconds:g} s"
        return f"{type(err).__name__}: {err}"

    def _set_failing(self, failing: bool, problem: str) -> None:
        if failing == self._failing:
            return
        self._failing = failing
        self._failing_gauge.set(1 if failing else 0)
        # Logged when it starts and when it ends, not at every attempt.
        if failing:
            log.warning("payload sink %s: delivery failing (%s)", self.settings.url, problem)
        else:
            log.info("payload sink %s: delivering again", self.settings.url)
