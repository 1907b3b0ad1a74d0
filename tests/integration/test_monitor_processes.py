"""The sidecar's processes, for real: proxy workers sharing one port, the analyst in its own
process, and the supervisor serving one metrics endpoint for all of them, in front of the real
KServe model server."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from kube_helpers import wait_until
from monitor_procs import MODEL, metric, model_server, post, start_sidecar
from procs import Server, free_port, http_status

ECHO = "/v2/models/echo/infer"
# The analyst runs only on CPU nothing else wants (SCHED_IDLE): on a busy machine it can fall
# far behind, and what waits for it waits long.
ANALYST = 180


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("processes")


@pytest.fixture(scope="module")
def model_port(tmp: Path) -> Iterator[int]:
    with model_server(tmp) as port:
        yield port


def children(pid: int) -> dict[int, str]:
    """The sidecar's child processes and their names (mlmodel-proxy-N, mlmodel-analyst)."""
    found = {}
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            found[int(child)] = Path(f"/proc/{child}/comm").read_text().strip()
        except OSError:
            continue
    return found


def echo_body(rows: np.ndarray, name: str = "x") -> bytes:
    tensor = {"name": name, "shape": list(rows.shape), "datatype": "FP64", "data": rows.tolist()}
    return json.dumps({"inputs": [tensor]}).encode()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        assert response.status == 200
        return response.read().decode("utf-8")


def test_every_request_is_analysed_or_counted_as_dropped_under_a_flood(
    tmp: Path, model_port: int
) -> None:
    """100 KB payloads as fast as 16 clients can send them, to an analyst that is frozen and
    whose hand-off is small: every request is answered by the model, and each payload is either
    analysed (once the analyst goes on) or dropped with a reason, none lost without a count."""
    server, config = start_sidecar(
        tmp,
        model_port,
        "flood",
        drift={"window_size": 1000, "check_interval_seconds": 5},
        queue_bytes=2**20,
        queue_size=16,
    )
    assert server.proc is not None
    port, metrics_port = config["listen_port"], config["metrics_port"]
    (analyst,) = (pid for pid, name in children(server.proc.pid).items() if "analyst" in name)
    image = echo_body(np.round(np.random.default_rng(0).random((1, 3, 64, 64)), 4))
    total = 400
    try:
        # The analyst frozen outright: the proxy must not wait for it at all.
        os.kill(analyst, signal.SIGSTOP)
        with ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(lambda _: post(port, ECHO, image)[0], range(total)))
        assert statuses == [200] * total
        labels = {"model": MODEL, "protocol": "v2", "status_class": "2xx"}
        assert metric(metrics_port, "mlmodel_requests_total", **labels) == total
        dropped = "mlmodel_drift_dropped_payloads_total"
        assert metric(metrics_port, dropped, reason="sampled") > total / 2
        os.kill(analyst, signal.SIGCONT)

        def accounted() -> float:
            analysed = metric(metrics_port, "mlmodel_drift_analysed_payloads_total")
            dropped = metric(metrics_port, "mlmodel_drift_dropped_payloads_total")
            return analysed + dropped

        wait_until(
            lambda: accounted() == total, what="every payload accounted for", timeout=ANALYST
        )
        assert metric(metrics_port, "mlmodel_drift_analysed_payloads_total") > 0
        # Wider than the feature budget: the image's features past it were never read. The
        # analyst counts a payload as it takes it and what it rejected once it has read it.
        wait_until(
            lambda: metric(metrics_port, "mlmodel_drift_rejected_values_total",
                           reason="over_budget") > 0,
            what="the values past the budget to be counted",
            timeout=ANALYST,
        )  # fmt: skip
    finally:
        server.close()


def test_outputs_are_watched_beside_64_and_more_input_features(tmp: Path, model_port: int) -> None:
    server, config = start_sidecar(
        tmp, model_port, "wide", drift={"window_size": 50, "check_interval_seconds": 5}
    )
    port, metrics_port = config["listen_port"], config["metrics_port"]
    rng = np.random.default_rng(1)
    try:
        for _ in range(3):  # a baseline window, then a window to compare
            assert post(port, ECHO, echo_body(rng.normal(size=(50, 100))))[0] == 200
        samples = "mlmodel_drift_window_samples"
        wait_until(
            lambda: metric(metrics_port, samples, direction="output", feature="x[0]") > 0,
            what="the echoed outputs to be checked",
            timeout=ANALYST,
        )
        text = scrape(metrics_port)
        for direction in ("input", "output"):
            features = {
                sample.labels["feature"]
                for family in text_string_to_metric_families(text)
                if family.name == samples
                for sample in family.samples
                if sample.labels["direction"] == direction
            }
            assert features == {f"x[{j}]" for j in range(64)}, direction
    finally:
        server.close()


def test_hostile_feature_names_never_break_the_metrics_endpoint(tmp: Path, model_port: int) -> None:
    server, config = start_sidecar(
        tmp,
        model_port,
        "hostile",
        drift={"window_size": 50, "check_interval_seconds": 5},
        max_body_bytes=4 * 2**20,
        max_capture_bytes=4 * 2**20,
    )
    port, metrics_port = config["listen_port"], config["metrics_port"]
    one = np.zeros((50, 1))
    try:
        # Names as JSON escapes: a lone surrogate, control characters, 10 KB of text; each
        # sent three times, a baseline window and two to check.
        for name in ("\\ud800", "\\u0000\\u0007\\u001b[2J\\n", "n" * 10_000):
            body = echo_body(one, "NAME").replace(b"NAME", name.encode())
            for _ in range(3):
                post(port, ECHO, body)
        # Then 100,000 distinct names, 10,000 tensors a request.
        for batch in range(10):
            tensors = [
                {"name": f"f{batch}-{i}", "shape": [1], "datatype": "FP64", "data": [1.0]}
                for i in range(10_000)
            ]
            status, _, _ = post(port, ECHO, json.dumps({"inputs": tensors}).encode())
            assert status == 200
        wait_until(
            lambda: metric(metrics_port, "mlmodel_drift_analysed_payloads_total") >= 19,
            what="the payloads to be analysed",
            timeout=ANALYST,
        )
        time.sleep(1)  # a scrape after the analyst has written what those payloads gave it
        text = scrape(metrics_port)
        features: dict[str, set[str]] = {"input": set(), "output": set()}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                for value in sample.labels.values():
                    assert value.isprintable() and len(value) <= 64, repr(value)
                if "feature" in sample.labels:
                    features[sample.labels["direction"]].add(sample.labels["feature"])
        # At most the budget of series however many names came; the rest were counted out.
        assert len(features["input"]) <= 64 and len(features["output"]) <= 64
        rejected = "mlmodel_drift_rejected_values_total"
        assert metric(metrics_port, rejected, reason="over_budget") >= 2 * 10 * (10_000 - 64)
        assert metric(metrics_port, rejected, reason="overflow") > 0
        # The names that could be read are there, made safe; the surrogate's payload was not.
        assert "n" * 64 in features["input"]
        assert "\ufffd\ufffd\ufffd[2J\ufffd" in features["input"]
    finally:
        server.close()


def test_the_workers_counts_add_up_on_the_one_metrics_endpoint(tmp: Path, model_port: int) -> None:
    directory = tmp / "metrics-files"
    server, config = start_sidecar(
        tmp, model_port, "workers", env={"PROMETHEUS_MULTIPROC_DIR": str(directory)}, workers=2
    )
    assert server.proc is not None
    port, metrics_port = config["listen_port"], config["metrics_port"]
    proxies = [pid for pid, name in children(server.proc.pid).items() if "proxy" in name]
    assert len(proxies) == 2
    body = b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}]}'
    total = 300
    try:
        with ThreadPoolExecutor(8) as pool:  # a connection each: the kernel spreads them
            statuses = list(pool.map(lambda _: post(port, f"/v2/models/{MODEL}/infer", body)[0],
                                     range(total)))  # fmt: skip
        assert statuses == [200] * total
        per_worker = {}
        for pid in proxies:
            counts = MmapedDict.read_all_values_from_file(str(directory / f"counter_{pid}.db"))
            per_worker[pid] = sum(
                value
                for key, value, *_ in counts
                if key.startswith('["mlmodel_requests", "mlmodel_requests_total"')
            )
        assert all(count > 0 for count in per_worker.values()), per_worker
        assert sum(per_worker.values()) == total
        labels = {"model": MODEL, "protocol": "v2", "status_class": "2xx"}
        assert metric(metrics_port, "mlmodel_requests_total", **labels) == total
        count = metric(metrics_port, "mlmodel_request_duration_seconds_count", model=MODEL)
        assert count == total
    finally:
        server.close()
    assert not any(Path(f"/proc/{pid}").exists() for pid in proxies)


def test_a_dead_analyst_fails_health_and_stop_never_waits_for_a_stuck_one(
    tmp: Path, model_port: int
) -> None:
    server, config = start_sidecar(tmp, model_port, "analyst-dies")
    assert server.proc is not None
    port, metrics_port = config["listen_port"], config["metrics_port"]
    (analyst,) = (pid for pid, name in children(server.proc.pid).items() if "analyst" in name)
    assert http_status(f"http://127.0.0.1:{port}/healthz") == 200
    os.kill(analyst, signal.SIGKILL)
    wait_until(
        lambda: http_status(f"http://127.0.0.1:{port}/healthz") == 503,
        what="/healthz to fail",
        timeout=10,
    )
    beat = metric(metrics_port, "mlmodel_drift_worker_heartbeat_timestamp_seconds")
    body = b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}]}'
    # Requests are still served, and their payloads counted as dropped with the reason.
    assert post(port, f"/v2/models/{MODEL}/infer", body)[0] == 200
    wait_until(
        lambda: metric(metrics_port, "mlmodel_drift_dropped_payloads_total", reason="analyst_down"),
        what="the payload to be counted as dropped",
        timeout=10,
    )
    time.sleep(1.5)
    assert metric(metrics_port, "mlmodel_drift_worker_heartbeat_timestamp_seconds") == beat
    server.close()

    # A stuck analyst (stopped outright) cannot hold the sidecar's stop up.
    server, _ = start_sidecar(tmp, model_port, "analyst-stuck")
    assert server.proc is not None
    family = children(server.proc.pid)
    (analyst,) = (pid for pid, name in family.items() if "analyst" in name)
    os.kill(analyst, signal.SIGSTOP)
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=30) == 0
    wait_until(
        lambda: not any(Path(f"/proc/{pid}").exists() for pid in family),
        what="every child to be gone",
        timeout=10,
    )


def test_requests_in_flight_are_answered_when_the_sidecar_is_stopped(tmp: Path) -> None:
    """SIGTERM while a slow inference is in flight: its client still gets the answer, then the
    sidecar exits and leaves no process behind."""
    faults = Path(__file__).parent / "servers" / "v2_faults.py"
    upstream_port = free_port()
    slow = Server(
        [sys.executable, str(faults), str(upstream_port), "--delay", "3"], tmp / "slow.log"
    ).start()
    try:
        slow.wait_for(f"http://127.0.0.1:{upstream_port}/v2/health/ready")
        server, config = start_sidecar(tmp, upstream_port, "draining")
        assert server.proc is not None
        family = children(server.proc.pid)
        body = b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1]}]}'
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(post, config["listen_port"], f"/v2/models/{MODEL}/infer", body)
            time.sleep(1)  # the request is at the model server now
            server.proc.send_signal(signal.SIGTERM)
            status, _, data = answer.result(timeout=30)
        assert status == 200 and b'"outputs"' in data
        assert server.proc.wait(timeout=30) == 0
        assert not any(Path(f"/proc/{pid}").exists() for pid in family)
    finally:
        slow.close()
