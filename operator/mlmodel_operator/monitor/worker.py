"""The drift worker: a background thread that reads payloads, fills the detector's windows and
runs the checks, so that none of it happens on the request path. The proxy hands it payloads
with a non-blocking put; when it falls behind, payloads are dropped and counted."""

from __future__ import annotations

import logging
import queue
import threading
import time

from mlmodel_operator.api import DriftSettings
from mlmodel_operator.monitor import metrics
from mlmodel_operator.monitor.drift import DriftDetector
from mlmodel_operator.monitor.payloads import UnreadablePayload, parse
from mlmodel_operator.monitor.reference import ReferenceUnavailable, load_reference

log = logging.getLogger(__name__)
# protocol, response status, request body, response body
Payload = tuple[str, int, bytes, bytes | None]


class DriftWorker:
    def __init__(self, model: str, settings: DriftSettings, queue_size: int = 1000) -> None:
        self.model = model
        self.settings = settings
        self.queue: queue.Queue[Payload | None] = queue.Queue(maxsize=queue_size)
        self.detector: DriftDetector | None = None
        self.source = "uri" if settings.reference_uri else "live"
        self._thread = threading.Thread(target=self._run, name="drift-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.queue.put(None)
        self._thread.join(timeout=5)

    def submit(
        self, protocol: str, status: int, request_body: bytes, response_body: bytes | None
    ) -> None:
        """Called on the request path: never blocks."""
        try:
            self.queue.put_nowait((protocol, status, request_body, response_body))
        except queue.Full:
            metrics.DROPPED_PAYLOADS.labels(self.model).inc()

    # --- the thread --------------------------------------------------------------------------

    def _load_detector(self) -> bool:
        reference = None
        if self.settings.reference_uri:
            try:
                reference = load_reference(self.settings.reference_uri)
            except ReferenceUnavailable as err:
                metrics.DRIFT_REFERENCE_AVAILABLE.labels(self.model, self.source).set(0)
                log.warning("drift: reference unavailable: %s (retrying)", err)
                return False
        self.detector = DriftDetector(self.settings, reference)
        metrics.DRIFT_REFERENCE_AVAILABLE.labels(self.model, self.source).set(1)
        if reference is None:
            log.info("drift: no reference_uri; the first window of live traffic is the reference")
        return True

    def _run(self) -> None:
        retry_at = 0.0
        while True:
            due_to_load = self.detector is None and time.monotonic() >= retry_at
            if due_to_load and not self._load_detector():
                retry_at = time.monotonic() + self.settings.check_interval_seconds
            try:
                item = self.queue.get(timeout=1.0)
            except queue.Empty:
                item = ()  # type: ignore[assignment]
            if item is None:
                return
            if item and self.detector is not None:
                self._ingest(*item)
            if self.detector is not None and self.detector.due():
                self._check()

    def _ingest(
        self, protocol: str, status: int, request_body: bytes, response_body: bytes | None
    ) -> None:
        assert self.detector is not None
        try:
            inputs, outputs = parse(protocol, request_body, response_body)
        except UnreadablePayload:
            metrics.UNREADABLE_PAYLOADS.labels(self.model, protocol).inc()
            return
        if status != 200:
            return  # a request the model refused says nothing about the data it serves
        before = dict(self.detector.rejected)
        self.detector.add("input", inputs)
        self.detector.add("output", outputs)
        for reason, count in self.detector.rejected.items():
            if count > before.get(reason, 0):
                metrics.REJECTED_VALUES.labels(self.model, reason).inc(
                    count - before.get(reason, 0)
                )

    def _check(self) -> None:
        assert self.detector is not None
        result = self.detector.check()
        for feature in result.features:
            labels = (self.model, feature.direction, feature.feature, feature.method)
            metrics.DRIFT_SCORE.labels(*labels).set(feature.score)
            metrics.DRIFT_P_VALUE.labels(*labels).set(feature.p_value)
            metrics.DRIFT_FEATURE_DETECTED.labels(
                self.model, feature.direction, feature.feature
            ).set(int(feature.drifted))
            metrics.DRIFT_WINDOW_SAMPLES.labels(self.model, feature.direction, feature.feature).set(
                feature.samples
            )
        metrics.DRIFT_DETECTED.labels(self.model).set(int(result.drifted))
        metrics.DRIFT_LAST_CHECK.labels(self.model).set(result.checked_at)
        if result.drifted:
            drifted = [f"{f.direction}:{f.feature}" for f in result.features if f.drifted]
            log.warning("drift detected in %s", ", ".join(drifted))
