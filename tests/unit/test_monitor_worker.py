"""The drift worker's thread: it outlives failures, bounds what waits for it in bytes, never
hangs on stop, logs a drift verdict once per change, and health tells when it is gone."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import pytest
from prometheus_client import REGISTRY

from kube_helpers import wait_until
from mlmodel_operator.api import DriftSettings
from mlmodel_operator.monitor.drift import CheckResult, DriftDetector
from mlmodel_operator.monitor.payloads import Exchange
from mlmodel_operator.monitor.proxy import Proxy
from mlmodel_operator.monitor.settings import MODEL_VERSION_ENV, MonitorSettings
from mlmodel_operator.monitor.worker import DriftWorker

SETTINGS = DriftSettings.model_validate({"window_size": 50, "check_interval_seconds": 5})


def sample(name: str, **labels: str) -> float:
    # These workers are started without a version, as a sidecar whose pod has no version label.
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


def test_the_worker_outlives_a_failing_check_and_keeps_its_heartbeat(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = "broken"
    worker = DriftWorker(model, SETTINGS)
    worker.detector = BrokenDetector(SETTINGS)
    worker.start()
    try:
        for _ in range(3):
            errors = sample("mlmodel_drift_worker_errors_total", model=model, stage="check")
            worker.submit(exchange([[1.0, 2.0]] * 60))
            wait_until(
                lambda e=errors: (
                    sample("mlmodel_drift_worker_errors_total", model=model, stage="check") > e
                ),
                what="the failure to be counted",
                timeout=30,
            )
        beat = sample("mlmodel_drift_worker_heartbeat_timestamp_seconds", model=model)
        wait_until(
            lambda: sample("mlmodel_drift_worker_heartbeat_timestamp_seconds", model=model) > beat,
            what="another heartbeat",
            timeout=30,
        )
        assert worker.alive()
        # Logged with its traceback once, however often it happens.
        assert sum(r.exc_info is not None for r in caplog.records) == 1
    finally:
        worker.stop()


def test_stop_returns_with_a_dead_worker_and_a_full_queue() -> None:
    worker = DriftWorker("stopped", SETTINGS, queue_size=2)
    worker.start()
    worker.stop()
    assert not worker.alive()
    for _ in range(3):
        worker.submit(exchange([[1.0, 2.0]]))
    assert worker.queue.full()
    worker.stop()  # the worker is gone and the queue full: must not wait for room


def test_what_waits_is_bounded_in_bytes() -> None:
    model = "bytes"
    payload = exchange([[1.0, 2.0]] * 100)
    worker = DriftWorker(model, SETTINGS, queue_size=1000, queue_bytes=3 * payload.size)
    for _ in range(5):
        worker.submit(payload)  # not started: nothing is taken off the queue
    assert worker.queue.qsize() == 3
    assert sample("mlmodel_drift_dropped_payloads_total", model=model, reason="queue_full") == 2
    assert sample("mlmodel_drift_queued_bytes", model=model) == 3 * payload.size


def test_drift_is_logged_once_per_change(caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(7)
    reference = {"0": rng.normal(size=2000).tolist(), "1": rng.normal(size=2000).tolist()}
    worker = DriftWorker("logged", SETTINGS)
    worker.detector = DriftDetector(SETTINGS, reference)
    caplog.set_level(logging.INFO, logger="mlmodel_operator.monitor.worker")
    for shift in (3.0, 3.0, 3.0, 0.0, 0.0, 3.0):
        rows = rng.normal(shift, 1, size=(60, 2)).tolist()
        worker._ingest(exchange(rows))
        worker._check()
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("drift detected") for m in messages) == 2
    assert messages.count("drift no longer detected") == 1


def test_health_fails_once_the_drift_thread_is_gone() -> None:
    settings = MonitorSettings(model_name="health", upstream="http://127.0.0.1:9", drift=SETTINGS)
    worker = DriftWorker("health", SETTINGS)
    proxy = Proxy(settings, worker)
    worker.start()
    assert asyncio.run(proxy.healthz(None)).status == 200  # type: ignore[arg-type]
    worker.stop()
    assert asyncio.run(proxy.healthz(None)).status == 503  # type: ignore[arg-type]


def test_metrics_carry_the_pods_model_version() -> None:
    worker = DriftWorker("versioned", SETTINGS, version="v2")
    worker.drop("too_large")
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
    Proxy(settings, None)
    for status in ("2xx", "3xx", "4xx", "5xx"):
        labels = {"model": "fresh", "version": "v3", "protocol": "v1", "status_class": status}
        assert REGISTRY.get_sample_value("mlmodel_requests_total", labels) == 0.0
    count = {"model": "fresh", "version": "v3", "protocol": "v1"}
    assert REGISTRY.get_sample_value("mlmodel_request_duration_seconds_count", count) == 0.0
