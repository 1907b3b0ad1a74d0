"""The drift worker: a background thread that reads payloads, fills the detector's windows and
runs the checks, so that none of it happens on the request path.

The proxy hands it payloads without ever waiting: what waits is bounded in count and in bytes,
and beyond either bound payloads are dropped and counted. No payload and no reference can stop
the thread: a failure is logged with its traceback (once per kind), counted, and the thread
goes on. Its heartbeat metric shows it is alive and not stuck, for an alert to watch.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from mlmodel_operator.api import DriftSettings
from mlmodel_operator.monitor import metrics
from mlmodel_operator.monitor.drift import CheckResult, DriftDetector
from mlmodel_operator.monitor.payloads import Exchange, UnreadablePayload, parse
from mlmodel_operator.monitor.reference import ReferenceUnavailable, load_reference

log = logging.getLogger(__name__)
POLL_SECONDS = 1.0  # the longest the thread waits for a payload: its heartbeat's period


class DriftWorker:
    def __init__(
        self,
        model: str,
        settings: DriftSettings,
        queue_size: int = 1000,
        queue_bytes: int = 32 * 2**20,
        *,
        version: str = "",
    ) -> None:
        self.model = model
        self.version = version
        self.settings = settings
        self.queue: queue.Queue[Exchange] = queue.Queue(maxsize=queue_size)
        self.queue_bytes = queue_bytes
        self.detector: DriftDetector | None = None
        self.source = "uri" if settings.reference_uri else "live"
        self._queued_bytes = 0
        self._queued_gauge = metrics.DRIFT_QUEUED_BYTES.labels(model, version)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._logged_failures: set[tuple[str, str]] = set()
        self._drifted = False
        self._thread = threading.Thread(target=self._run, name="drift-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """Never blocks for long: the thread sees the flag within POLL_SECONDS, whatever is
        queued, and a thread stuck in a check is left behind (it is a daemon)."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2 * POLL_SECONDS)

    def submit(self, exchange: Exchange) -> None:
        """Called on the request path: never blocks."""
        size = exchange.size
        with self._lock:
            if self._queued_bytes + size > self.queue_bytes:
                self.drop("queue_full")
                return
            self._queued_bytes += size
        try:
            self.queue.put_nowait(exchange)
        except queue.Full:
            self._dequeued(size)
            self.drop("queue_full")
            return
        self._queued_gauge.set(self._queued_bytes)

    def drop(self, reason: str) -> None:
        metrics.DROPPED_PAYLOADS.labels(self.model, self.version, reason).inc()

    def _dequeued(self, size: int) -> None:
        with self._lock:
            self._queued_bytes -= size
        self._queued_gauge.set(self._queued_bytes)

    # --- the thread --------------------------------------------------------------------------

    def _run(self) -> None:
        retry_at = 0.0
        heartbeat = metrics.DRIFT_WORKER_HEARTBEAT.labels(self.model, self.version)
        while not self._stopping.is_set():
            heartbeat.set(time.time())
            due_to_load = self.detector is None and time.monotonic() >= retry_at
            if due_to_load and not self._guarded("reference", self._load_detector):
                metrics.DRIFT_REFERENCE_AVAILABLE.labels(self.model, self.version, self.source).set(
                    0
                )
                retry_at = time.monotonic() + self.settings.check_interval_seconds
            try:
                exchange: Exchange | None = self.queue.get(timeout=POLL_SECONDS)
            except queue.Empty:
                exchange = None
            if exchange is not None:
                self._dequeued(exchange.size)
                if self.detector is not None:
                    self._guarded("ingest", self._ingest, exchange)
            if self.detector is not None and self.detector.due():
                self._guarded("check", self._check)

    def _guarded(self, stage: str, step: Callable[..., bool | None], *args: object) -> bool:
        """Run one step; False when it failed. Any failure is logged and counted, never raised:
        the thread must outlive every payload and every reference."""
        try:
            return step(*args) is not False
        except Exception as err:
            metrics.DRIFT_WORKER_ERRORS.labels(self.model, self.version, stage).inc()
            kind = (stage, type(err).__name__)
            if kind in self._logged_failures:
                log.debug("drift %s failed again: %r", stage, err)
            else:
                self._logged_failures.add(kind)
                log.exception("drift %s failed (logged once per kind; the worker goes on)", stage)
            return False

    def _load_detector(self) -> bool:
        reference = None
        if self.settings.reference_uri:
            try:
                reference = load_reference(self.settings.reference_uri)
            except ReferenceUnavailable as err:
                log.warning("drift: reference unavailable: %s (retrying)", err)
                return False
        self.detector = DriftDetector(self.settings, reference)
        metrics.DRIFT_REFERENCE_AVAILABLE.labels(self.model, self.version, self.source).set(1)
        if reference is None:
            log.info("drift: no reference_uri; the first window of live traffic is the reference")
        return True

    def _ingest(self, exchange: Exchange) -> None:
        assert self.detector is not None
        try:
            inputs, outputs = parse(exchange)
        except UnreadablePayload:
            metrics.UNREADABLE_PAYLOADS.labels(self.model, self.version, exchange.protocol).inc()
            return
        if exchange.status != 200:
            return  # a request the model refused says nothing about the data it serves
        before = dict(self.detector.rejected)
        self.detector.add("input", inputs)
        self.detector.add("output", outputs)
        for reason, count in self.detector.rejected.items():
            if count > before.get(reason, 0):
                metrics.REJECTED_VALUES.labels(self.model, self.version, reason).inc(
                    count - before.get(reason, 0)
                )

    def _check(self) -> None:
        assert self.detector is not None
        result = self.detector.check()
        for feature in result.features:
            labels = (self.model, self.version, feature.direction, feature.feature, feature.method)
            metrics.DRIFT_SCORE.labels(*labels).set(feature.score)
            metrics.DRIFT_P_VALUE.labels(*labels).set(feature.p_value)
            feature_labels = (self.model, self.version, feature.direction, feature.feature)
            metrics.DRIFT_FEATURE_DETECTED.labels(*feature_labels).set(int(feature.drifted))
            metrics.DRIFT_WINDOW_SAMPLES.labels(*feature_labels).set(feature.samples)
        metrics.DRIFT_DETECTED.labels(self.model, self.version).set(int(result.drifted))
        metrics.DRIFT_LAST_CHECK.labels(self.model, self.version).set(result.checked_at)
        self._log_transition(result)

    def _log_transition(self, result: CheckResult) -> None:
        """Checks come every window: the log says when the verdict changes, not each time."""
        if result.drifted and not self._drifted:
            drifted = [f"{f.direction}:{f.feature}" for f in result.features if f.drifted]
            log.warning("drift detected in %s", ", ".join(drifted))
        elif self._drifted and not result.drifted and result.features:
            log.info("drift no longer detected")
        if result.features:
            self._drifted = result.drifted
