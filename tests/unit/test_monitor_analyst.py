"""The analyst and its hand-off, in one process: the analyst outlives failures and keeps its
heartbeat, the hand-off never waits and is bounded in bytes and count, a drift verdict is
logged once per change, and health tells when the analyst is gone."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest
from prometheus_client import REGISTRY

from mlmodel_operator.api import DriftSettings
from mlmodel_operator.monitor.analyst import Analyst
from mlmodel_operator.monitor.drift import CheckResult, DriftDetector
from mlmodel_operator.monitor.handoff import Channel, Reader, Writer, channel_sizes
from mlmodel_operator.monitor.payloads import Exchange
from mlmodel_operator.monitor.proxy import Proxy
from mlmodel_operator.monitor.settings import MODEL_VERSION_ENV, MonitorSettings

SETTINGS = DriftSettings.model_validate({"window_size": 50, "check_interval_seconds": 5})


def sample(name: str, **labels: str) -> float:
    # These analysts run without a version, as a sidecar whose pod has no version label.
    return REGISTRY.get_sample_value(name, {"version": "", **labels}) or 0.0


def exchange(rows: list[list[float]]) -> Exchange:
    body = b'{"inputs": [{"name": "x", "shape": [%d, 2], "datatype": "FP64", "data": %s}]}' % (
        len(rows),
        str(rows).encode(),
    )
    return Exchange("v2", 200, body, None)


class BrokenDetector(DriftDetector):
    """A detector with a bug in its check, standing for any failure nobody foresaw."""

    def check(self, now: float | None = None) -> CheckResult:
        super().check(now)
        raise ZeroDivisionError("a bug")


def pair(capacity: int = 2**20, notices: int = 100) -> tuple[Channel, Writer, Reader]:
    """Both ends of one channel in this process (the analyst's and a worker's)."""
    shared = Channel(capacity, notices)
    shared.sender.setblocking(False)
    shared.receiver.setblocking(False)
    return shared, Writer(shared), Reader(shared)


def test_the_analyst_outlives_a_failing_check_and_keeps_its_heartbeat(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = "broken"
    _, writer, reader = pair()
    analyst = Analyst(model, SETTINGS, [reader])
    analyst.detector = BrokenDetector(SETTINGS)
    for attempt in range(3):
        beat = sample("mlmodel_drift_worker_heartbeat_timestamp_seconds", model=model)
        assert writer.offer(exchange([[1.0, 2.0]] * 60)) is None
        analyst.round(pause=0)
        errors = sample("mlmodel_drift_worker_errors_total", model=model, stage="check")
        assert errors == attempt + 1
        assert sample("mlmodel_drift_worker_heartbeat_timestamp_seconds", model=model) >= beat
    # Logged with its traceback once, however often it happens.
    assert sum(r.exc_info is not None for r in caplog.records) == 1


def test_exchanges_arrive_whole_and_in_order_across_the_ring_end() -> None:
    _, writer, reader = pair(capacity=4096, notices=100)
    sent = []
    for i in range(40):  # ~2.5 times round the ring, one taken after each offer
        body = bytes([i]) * (100 + 37 * i % 300)
        answer = None if i % 3 else b'{"outputs": []}' * (i % 5)
        item = Exchange("v1" if i % 2 else "v2", 200 + i, body, answer, str(i), None)
        assert writer.offer(item) is None
        sent.append(item)
        assert reader.take() == item
    assert reader.take() is None
    assert writer.queued() == (0, 0)


def test_the_hand_off_never_waits_and_is_bounded_in_bytes_and_count() -> None:
    capacity = 64 * 1024
    _, writer, reader = pair(capacity=capacity, notices=1000)
    payload = exchange([[1.0, 2.0]] * 300)  # about 8 KB
    reasons = [writer.offer(payload) for _ in range(100)]  # nobody reads: it fills
    assert writer.queued()[0] <= capacity
    assert reasons.count(None) == writer.queued()[1] > 0
    assert {r for r in reasons if r is not None} <= {"sampled", "queue_full"}
    # What was kept is all there, and once taken, the room is back.
    while reader.take() is not None:
        pass
    assert writer.queued() == (0, 0)
    assert writer.offer(payload) is None
    _, counted, _ = pair(capacity=capacity, notices=4)
    assert [counted.offer(exchange([[1.0, 2.0]])) for _ in range(6)].count(None) <= 4


def test_too_large_and_analyst_gone_are_reasons_not_errors() -> None:
    shared, writer, _ = pair(capacity=2**20)
    assert writer.offer(Exchange("v2", 200, b"x" * (2**19 + 1), None)) == "too_large"
    shared.receiver.close()  # the analyst's end, as when its process exits
    assert writer.offer(exchange([[1.0, 2.0]])) == "analyst_down"


def test_each_worker_gets_its_share_of_the_bounds() -> None:
    sizes = channel_sizes(32 * 2**20, 1000, 4)
    assert sizes.capacity == 8 * 2**20 and sizes.max_notices == 250
    assert channel_sizes(2**20, 10, 64).capacity == 2**20  # a floor that a payload fits in


def test_drift_is_logged_once_per_change(caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(7)
    reference = {"0": rng.normal(size=2000).tolist(), "1": rng.normal(size=2000).tolist()}
    analyst = Analyst("logged", SETTINGS, [])
    analyst.detector = DriftDetector(SETTINGS, reference)
    caplog.set_level(logging.INFO, logger="mlmodel_operator.monitor.analyst")
    for shift in (3.0, 3.0, 3.0, 0.0, 0.0, 3.0):
        rows = rng.normal(shift, 1, size=(60, 2)).tolist()
        analyst.ingest(exchange(rows))
        analyst.check()
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("drift detected") for m in messages) == 2
    assert messages.count("drift no longer detected") == 1


def test_health_fails_once_the_analyst_is_gone() -> None:
    settings = MonitorSettings(model_name="health", upstream="http://127.0.0.1:9", drift=SETTINGS)
    shared, writer, _ = pair()
    proxy = Proxy(settings, writer, shared.analyst_alive)
    assert asyncio.run(proxy.healthz(None)).status == 200  # type: ignore[arg-type]
    shared.set_analyst_alive(False)  # what the supervisor does when the analyst exits
    assert asyncio.run(proxy.healthz(None)).status == 503  # type: ignore[arg-type]


def test_metrics_carry_the_pods_model_version() -> None:
    settings = MonitorSettings(
        model_name="versioned", model_version="v2", upstream="http://127.0.0.1:9"
    )
    Proxy(settings).drop("too_large")
    dropped = "mlmodel_drift_dropped_payloads_total"
    assert sample(dropped, model="versioned", version="v2", reason="too_large") == 1
    assert sample(dropped, model="versioned", reason="too_large") == 0


def test_the_environment_sets_the_version_even_empty() -> None:
    text = '{"model_name": "m", "upstream": "http://127.0.0.1:9", "model_version": "file"}'
    assert MonitorSettings.load(text, {}).model_version == "file"
    assert MonitorSettings.load(text, {MODEL_VERSION_ENV: "v2"}).model_version == "v2"
    # A pod without the version label: the downward API gives "", and the pod has no version.
    assert MonitorSettings.load(text, {MODEL_VERSION_ENV: ""}).model_version == ""


def test_request_series_exist_at_zero_before_the_first_request() -> None:
    settings = MonitorSettings(
        model_name="fresh", model_version="v3", upstream="http://127.0.0.1:9", protocol="v1"
    )
    Proxy(settings)
    for status in ("2xx", "3xx", "4xx", "5xx"):
        labels = {"model": "fresh", "version": "v3", "protocol": "v1", "status_class": status}
        assert REGISTRY.get_sample_value("mlmodel_requests_total", labels) == 0.0
    count = {"model": "fresh", "version": "v3", "protocol": "v1"}
    assert REGISTRY.get_sample_value("mlmodel_request_duration_seconds_count", count) == 0.0


def test_a_batch_of_payloads_gives_the_windows_one_at_a_time_would() -> None:
    """The analyst merges a batch's columns before the detector sees them: the live baseline is
    still exactly the first window_size values, and the values after it fill the window."""
    rng = np.random.default_rng(3)
    rows = [rng.normal(size=(1, 2)).tolist() for _ in range(120)]
    one_by_one, batched = Analyst("a", SETTINGS, []), Analyst("b", SETTINGS, [])
    one_by_one.detector, batched.detector = DriftDetector(SETTINGS), DriftDetector(SETTINGS)
    for row in rows:
        one_by_one.ingest(exchange(row))
    batched.ingest(*(exchange(row) for row in rows))
    for key, feature in one_by_one.detector.features.items():
        twin = batched.detector.features[key]
        assert feature.reference is not None and twin.reference is not None
        assert list(twin.reference.sorted_values) == list(feature.reference.sorted_values)
        assert list(twin.window) == list(feature.window) and len(twin.window) == 50


def test_a_sequential_alarm_sets_the_drift_metrics_naming_detector_and_feature() -> None:
    model = "sequential"
    # A baseline of 1,000: a reference of a few dozen values cannot hold thresholds low.
    settings = DriftSettings(window_size=1000)
    analyst = Analyst(model, settings, [])
    analyst.detector = DriftDetector(settings)
    rng = np.random.default_rng(6)
    analyst.ingest(exchange(rng.normal(0, 1, size=(1000, 2)).tolist()))  # the live baseline
    analyst.ingest(exchange(rng.normal(0, 1, size=(20, 2)).tolist()))
    assert sample("mlmodel_drift_detected", model=model) == 0
    # x[1] moves by 2 sigma: a chart fires within a few dozen samples, before any check.
    shifted = np.column_stack([rng.normal(0, 1, 100), rng.normal(2, 1, 100)])
    analyst.ingest(exchange(shifted.tolist()))
    labels = {"model": model, "direction": "input", "feature": "x[1]"}
    alarms = {
        chart: sample("mlmodel_drift_alarms_total", detector=chart, **labels)
        for chart in ("cusum_mean", "cusum_scale")
    }
    assert sum(alarms.values()) >= 1
    # Set at ingest: no windowed check has run.
    assert sample("mlmodel_drift_last_check_timestamp_seconds", model=model) == 0
    held = [
        chart
        for chart in alarms
        if sample("mlmodel_drift_detector_detected", detector=chart, **labels) == 1
    ]
    assert len(held) == 1
    assert sample("mlmodel_drift_feature_detected", **labels) == 1
    assert sample("mlmodel_drift_feature_detected", **{**labels, "feature": "x[0]"}) == 0
    assert sample("mlmodel_drift_detected", model=model) == 1
