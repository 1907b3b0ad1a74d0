"""The analyst: the process that reads the payloads the proxy workers hand over, fills the
detector's windows and runs the checks. It shares no interpreter and no lock with the request
path, and runs at the lowest CPU priority (SCHED_IDLE, nice 19), so it only takes CPU the proxy
and the model server leave idle; when that is not enough, the workers sample what they hand
over (sampling.py).

No payload and no reference can stop it: a failure is logged with its traceback (once per
kind), counted, and the loop goes on. Its heartbeat metric shows it is alive and not stuck, for
an alert to watch; the supervisor marks it dead for /healthz when it exits.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence

import numpy as np

from mlmodel_operator.api import DriftSettings
from mlmodel_operator.monitor import drift_page, metrics
from mlmodel_operator.monitor.drift import DriftDetector
from mlmodel_operator.monitor.handoff import Reader
from mlmodel_operator.monitor.payloads import Columns, Exchange, UnreadablePayload, parse
from mlmodel_operator.monitor.reference import ReferenceUnavailable, load_reference

log = logging.getLogger(__name__)
# It wakes on a timer and drains what waits, rather than on each notice: a wake-up per request
# would cost the proxy a context switch per request and share its core's caches with analysis.
DRAIN_SECONDS = 0.02
BATCH = 256  # exchanges taken from one channel before the heartbeat and checks come round
# At most this share of one core: under a CPU limit the container's processes share one CFS
# quota, and an analyst that used all the idle time could get the proxy workers throttled.
# What it cannot take in is sampled by the workers.
DUTY = 0.5
NICENESS = 19


class Analyst:
    def __init__(
        self,
        model: str,
        settings: DriftSettings,
        readers: Sequence[Reader],
        *,
        version: str = "",
    ) -> None:
        self.model = model
        self.version = version
        self.settings = settings
        self.readers = list(readers)
        self.detector: DriftDetector | None = None
        self.source = "uri" if settings.reference_uri else "live"
        self._logged_failures: set[tuple[str, str]] = set()
        self._drifted = False  # the verdict last published: windowed or sequential
        self._windowed: dict[tuple[str, str], bool] = {}  # the last windowed test, per feature
        self._held: set[tuple[str, str, str]] = set()  # (direction, feature, detector) at 1
        self._last_alarms: dict[tuple[str, str], tuple[object, float]] = {}  # for the drift page
        self._heartbeat = metrics.DRIFT_WORKER_HEARTBEAT.labels(model, version)
        self._analysed = metrics.ANALYSED_PAYLOADS.labels(model, version)

    def run(self, stopping: Callable[[], bool]) -> None:
        retry_at = 0.0
        while not stopping():
            self.round(retry_at)
            if self.detector is None and time.monotonic() >= retry_at:
                retry_at = time.monotonic() + self.settings.check_interval_seconds

    def round(self, retry_at: float = 0.0, pause: float = DRAIN_SECONDS) -> None:
        """One turn of the loop: heartbeat, the reference when due, waiting payloads, a check
        when due."""
        started = time.process_time()
        self._heartbeat.set(time.time())
        due_to_load = self.detector is None and time.monotonic() >= retry_at
        if due_to_load and not self._guarded("reference", self._load_detector):
            available = metrics.DRIFT_REFERENCE_AVAILABLE
            available.labels(self.model, self.version, self.source).set(0)
        taken: list[Exchange] = []
        for reader in self.readers:
            for _ in range(BATCH):
                exchange = reader.take()
                if exchange is None:
                    break
                taken.append(exchange)
        if taken:
            self._analysed.inc(len(taken))
            if self.detector is not None:
                self._guarded("ingest", self.ingest, *taken)
        if self.detector is not None and self.detector.due():
            self._guarded("check", self.check)
        if taken:
            time.sleep((time.process_time() - started) * (1 - DUTY) / DUTY)
        else:
            time.sleep(pause)

    def _guarded(self, stage: str, step: Callable[..., bool | None], *args: object) -> bool:
        """Run one step; False when it failed. Any failure is logged and counted, never raised:
        the analyst must outlive every payload and every reference."""
        try:
            return step(*args) is not False
        except Exception as err:
            metrics.DRIFT_WORKER_ERRORS.labels(self.model, self.version, stage).inc()
            kind = (stage, type(err).__name__)
            if kind in self._logged_failures:
                log.debug("drift %s failed again: %r", stage, err)
            else:
                self._logged_failures.add(kind)
                log.exception("drift %s failed (logged once per kind; the analyst goes on)", stage)
            return False

    def _load_detector(self) -> bool:
        reference = None
        if self.settings.reference_uri:
            try:
                reference = load_reference(self.settings.reference_uri)
            except ReferenceUnavailable as err:
                log.warning("drift: reference unavailable: %s (retrying)", err)
                return False
        self.detector = DriftDetector(self.settings, reference, self.settings.max_features)
        metrics.DRIFT_REFERENCE_AVAILABLE.labels(self.model, self.version, self.source).set(1)
        if reference is None:
            log.info("drift: no reference_uri; the first window of live traffic is the reference")
        return True

    def ingest(self, *exchanges: Exchange) -> None:
        """Add the exchanges' values to the windows. Their columns are merged first, so that
        the detector's work per feature is paid once per batch, not once per payload: single
        row payloads would otherwise cost a call per feature each."""
        assert self.detector is not None
        inputs: Columns = {}
        outputs: Columns = {}
        wide_in: dict[str, list[np.ndarray]] = {}
        wide_out: dict[str, list[np.ndarray]] = {}
        over_budget = 0
        for exchange in exchanges:
            try:
                parsed = parse(exchange, self.settings.max_features)
            except UnreadablePayload:
                unreadable = metrics.UNREADABLE_PAYLOADS
                unreadable.labels(self.model, self.version, exchange.protocol).inc()
                continue
            if exchange.status != 200:
                continue  # a request the model refused says nothing about the data it serves
            _merge(inputs, parsed.inputs)
            _merge(outputs, parsed.outputs)
            _merge_wide(wide_in, parsed.wide_inputs)
            _merge_wide(wide_out, parsed.wide_outputs)
            over_budget += parsed.over_budget
        before = dict(self.detector.rejected)
        self.detector.add("input", inputs)
        self.detector.add("output", outputs)
        self.detector.add_wide("input", _stacked(wide_in))
        self.detector.add_wide("output", _stacked(wide_out))
        for reason, count in self.detector.rejected.items():
            if count > before.get(reason, 0):
                metrics.REJECTED_VALUES.labels(self.model, self.version, reason).inc(
                    count - before.get(reason, 0)
                )
        if over_budget:
            metrics.REJECTED_VALUES.labels(self.model, self.version, "over_budget").inc(over_budget)
        for alarm in self.detector.take_alarms():
            direction, feature = alarm.feature
            labels = (self.model, self.version, direction, feature, alarm.detector)
            metrics.DRIFT_ALARMS.labels(*labels).inc()
            self._last_alarms[alarm.feature] = (alarm, time.time())
        self._publish()

    def check(self) -> None:
        assert self.detector is not None
        result = self.detector.check()
        for feature in result.features:
            labels = (self.model, self.version, feature.direction, feature.feature, feature.method)
            metrics.DRIFT_SCORE.labels(*labels).set(feature.score)
            metrics.DRIFT_P_VALUE.labels(*labels).set(feature.p_value)
            feature_labels = (self.model, self.version, feature.direction, feature.feature)
            metrics.DRIFT_WINDOW_SAMPLES.labels(*feature_labels).set(feature.samples)
            self._windowed[(feature.direction, feature.feature)] = feature.drifted
        metrics.DRIFT_LAST_CHECK.labels(self.model, self.version).set(result.checked_at)
        self._publish()
        if (path := drift_page.snapshot_path()) is not None:
            page = drift_page.snapshot(
                self.detector, result.features, self._held, self._last_alarms,
                model=self.model, version=self.version, checked_at=result.checked_at,
            )  # fmt: skip
            self._guarded("page", drift_page.save, page, path)

    def _publish(self) -> None:
        """The combined verdict, per detector, per feature and for the model: drifted when
        either detector holds it so. The log says when the model's verdict changes."""
        assert self.detector is not None
        held = {(d, f, "windowed") for (d, f), drifted in self._windowed.items() if drifted}
        held |= {
            (v.direction, v.feature, v.detector)
            for v in self.detector.sequential_verdicts()
            if v.drifted
        }
        for key in self._held - held:
            metrics.DRIFT_DETECTOR_DETECTED.labels(self.model, self.version, *key).set(0)
        for key in held - self._held:
            metrics.DRIFT_DETECTOR_DETECTED.labels(self.model, self.version, *key).set(1)
        features = {(d, f) for d, f, _ in held | self._held} | set(self._windowed)
        drifted_features = {(d, f) for d, f, _ in held}
        for direction, feature in features:
            flag = int((direction, feature) in drifted_features)
            labels = (self.model, self.version, direction, feature)
            metrics.DRIFT_FEATURE_DETECTED.labels(*labels).set(flag)
        drifted = bool(held)
        metrics.DRIFT_DETECTED.labels(self.model, self.version).set(int(drifted))
        if drifted and not self._drifted:
            named = [f"{d}:{f} ({detector})" for d, f, detector in sorted(held)]
            log.warning("drift detected in %s", ", ".join(named))
        elif self._drifted and not drifted:
            log.info("drift no longer detected")
        self._held, self._drifted = held, drifted


def _merge(into: Columns, columns: Columns) -> None:
    for name, values in columns.items():
        column = into.get(name)
        if column is None:
            into[name] = values
        else:
            column.extend(values)


def _merge_wide(into: dict[str, list[np.ndarray]], tensors: dict[str, np.ndarray] | None) -> None:
    for name, rows in (tensors or {}).items():
        into.setdefault(name, []).append(rows)


def _stacked(tensors: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    """One array per tensor name; rows of another width than the first are left to the
    detector, which counts them, one batch at a time."""
    out = {}
    for name, batches in tensors.items():
        width = batches[0].shape[1]
        out[name] = np.concatenate([b for b in batches if b.shape[1] == width])
    return out


def lower_priority() -> None:
    """Yield the CPU to the proxy workers and the model server whenever they want it.

    SCHED_IDLE rather than nice 19 alone: the scheduler preempts a SCHED_IDLE task at once when
    any other task wakes, whereas a nice 19 task may finish its slice first, which showed as
    added latency at low concurrency on a 2-core machine. Both are allowed without privileges.
    """
    try:
        os.nice(NICENESS)
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (OSError, AttributeError) as err:  # a seccomp profile may refuse: analysis still runs
        log.warning("cannot lower the analyst's CPU priority: %s", err)
