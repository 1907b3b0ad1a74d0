"""The sidecar with real parts: the KServe model server serving a scikit-learn model behind it,
and a real Prometheus scraping it."""

from __future__ import annotations

import asyncio
import http.client
import json
import shutil
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from sklearn.datasets import load_iris

from kube_helpers import wait_until
from monitor_procs import (
    MODEL,
    metric,
    model_server,
    post,
    start_model_server,
    start_sidecar,
    v1_body,
    v2_body,
)
from procs import Server, free_port, http_status


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("monitor")


@pytest.fixture(scope="module")
def reference_csv(tmp: Path) -> Path:
    features, _ = load_iris(return_X_y=True)
    path = tmp / "reference.csv"
    rows = ["0,1,2,3"] + [",".join(map(str, row)) for row in features]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def model_port(tmp: Path) -> Iterator[int]:
    with model_server(tmp) as port:
        yield port


@pytest.fixture(scope="module")
def sidecar(tmp: Path, model_port: int, reference_csv: Path) -> Iterator[dict]:
    drift = {"window_size": 60, "check_interval_seconds": 5, "reference_uri": str(reference_csv)}
    server, config = start_sidecar(tmp, model_port, "sidecar", drift=drift)
    yield config
    server.close()


@pytest.mark.parametrize(
    ("path", "make_body"),
    [(f"/v2/models/{MODEL}/infer", v2_body), (f"/v1/models/{MODEL}:predict", v1_body)],
    ids=["v2", "v1"],
)
def test_inference_through_the_sidecar_is_identical_to_direct(
    sidecar: dict, model_port: int, path: str, make_body: Any
) -> None:
    features, _ = load_iris(return_X_y=True)
    body = make_body(features[::10])
    direct = post(model_port, path, body)
    proxied = post(sidecar["listen_port"], path, body)
    assert direct[0] == proxied[0] == 200
    assert proxied[2] == direct[2]
    for header in ("content-type", "content-length", "server"):
        assert proxied[1].get(header) == direct[1].get(header)


def test_other_paths_and_errors_pass_through_unchanged(sidecar: dict, model_port: int) -> None:
    for method, path in [("GET", f"/v2/models/{MODEL}"), ("GET", "/v2/models/nope"), ("GET", "/")]:
        answers = []
        for port in (model_port, sidecar["listen_port"]):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request(method, path)
            response = conn.getresponse()
            answers.append((response.status, response.read()))
            conn.close()
        assert answers[0] == answers[1]
    bad = b'{"inputs": [{"name": "x", "shape": [2, 2], "data": [1]}]}'
    before = metric(sidecar["metrics_port"], "mlmodel_unreadable_payloads_total", protocol="v2")
    direct = post(model_port, f"/v2/models/{MODEL}/infer", bad)
    proxied = post(sidecar["listen_port"], f"/v2/models/{MODEL}/infer", bad)
    assert (proxied[0], proxied[2]) == (direct[0], direct[2])
    assert proxied[0] >= 400
    wait_until(
        lambda: (
            metric(sidecar["metrics_port"], "mlmodel_unreadable_payloads_total", protocol="v2")
            > before
        ),
        what="the unreadable payload to be counted",
        timeout=10,
    )


def test_a_body_over_the_limit_is_refused(sidecar: dict) -> None:
    status, _, _ = post(sidecar["listen_port"], f"/v2/models/{MODEL}/infer", b"x" * (2**20 + 1))
    assert status == 413
    assert metric(sidecar["metrics_port"], "mlmodel_requests_total", status_class="4xx") >= 1


def test_performance_metrics(sidecar: dict) -> None:
    features, _ = load_iris(return_X_y=True)
    for _ in range(5):
        post(sidecar["listen_port"], f"/v2/models/{MODEL}/infer", v2_body(features[:4]))
    port = sidecar["metrics_port"]
    labels = {"model": MODEL, "protocol": "v2"}
    assert metric(port, "mlmodel_requests_total", status_class="2xx", **labels) >= 5
    assert metric(port, "mlmodel_request_duration_seconds_count", **labels) >= 5
    assert metric(port, "mlmodel_request_duration_seconds_bucket", le="30.0", **labels) >= 5
    assert metric(port, "mlmodel_request_size_bytes_sum", **labels) > 0
    assert metric(port, "mlmodel_response_size_bytes_sum", **labels) > 0
    assert metric(port, "mlmodel_requests_in_flight", model=MODEL) == 0


@pytest.fixture
def drift_sidecar(tmp: Path, model_port: int, reference_csv: Path) -> Iterator[dict]:
    """A sidecar whose first traffic is the test's: the other tests' requests (the same few
    flowers again and again) are a real change against the reference, which the sequential
    detector would rightly report."""
    drift = {"window_size": 60, "check_interval_seconds": 5, "reference_uri": str(reference_csv)}
    server, config = start_sidecar(tmp, model_port, "sidecar-drift", drift=drift)
    yield config
    server.close()


def test_drift_is_detected_on_shifted_inputs(drift_sidecar: dict, tmp: Path) -> None:
    sidecar = drift_sidecar
    port = sidecar["metrics_port"]
    features, _ = load_iris(return_X_y=True)
    rng = np.random.default_rng(7)
    for _ in range(3):  # like the reference: no drift
        rows = features[rng.integers(0, len(features), 60)]
        post(sidecar["listen_port"], f"/v2/models/{MODEL}/infer", v2_body(rows))
    wait_until(
        lambda: metric(port, "mlmodel_drift_last_check_timestamp_seconds", model=MODEL) > 0,
        what="a drift check",
        timeout=15,
    )
    assert metric(port, "mlmodel_drift_detected", model=MODEL) == 0
    assert metric(port, "mlmodel_drift_reference_available", source="uri") == 1
    for _ in range(3):  # petal lengths two centimetres longer
        rows = features[rng.integers(0, len(features), 60)] + np.array([0, 0, 2.0, 0])
        post(sidecar["listen_port"], f"/v2/models/{MODEL}/infer", v2_body(rows))
    wait_until(
        lambda: metric(port, "mlmodel_drift_detected", model=MODEL) == 1,
        what="drift to be detected",
        timeout=15,
    )
    assert metric(port, "mlmodel_drift_feature_detected", direction="input", feature="x[2]") == 1
    assert metric(port, "mlmodel_drift_score", direction="input", feature="x[2]", method="ks") > 0.5
    # Outputs are watched too: the shifted flowers are classified differently.
    assert metric(port, "mlmodel_drift_window_samples", direction="output", feature="predict") > 0
    # More checks that find the same drift: the log says it once, when it began.
    for _ in range(3):
        checked = metric(port, "mlmodel_drift_last_check_timestamp_seconds", model=MODEL)
        rows = features[rng.integers(0, len(features), 60)] + np.array([0, 0, 2.0, 0])
        post(sidecar["listen_port"], f"/v2/models/{MODEL}/infer", v2_body(rows))
        wait_until(
            lambda c=checked: (
                metric(port, "mlmodel_drift_last_check_timestamp_seconds", model=MODEL) > c
            ),
            what="another check",
            timeout=15,
        )
    assert metric(port, "mlmodel_drift_detected", model=MODEL) == 1
    assert (tmp / "sidecar-drift.log").read_text().count("drift detected") == 1


def flowers(rng: np.random.Generator, count: int) -> np.ndarray:
    """Iris flowers with a little noise: as many distinct values as a reference of thousands
    of rows wants."""
    features, _ = load_iris(return_X_y=True)
    return features[rng.integers(0, len(features), count)] + rng.normal(0, 0.05, (count, 4))


def test_the_sequential_detector_names_the_chart_and_the_feature(
    tmp: Path, model_port: int
) -> None:
    rng = np.random.default_rng(12)
    reference = tmp / "reference-2000.csv"
    rows = ["0,1,2,3"] + [",".join(map(str, row)) for row in flowers(rng, 2000)]
    reference.write_text("\n".join(rows) + "\n")
    drift = {"window_size": 1000, "check_interval_seconds": 5, "reference_uri": str(reference)}
    server, config = start_sidecar(tmp, model_port, "sidecar-sequential", drift=drift)
    port, path = config["metrics_port"], f"/v2/models/{MODEL}/infer"
    try:
        for _ in range(4):  # like the reference
            post(config["listen_port"], path, v2_body(flowers(rng, 50)))
        wait_until(
            lambda: metric(port, "mlmodel_drift_analysed_payloads_total", model=MODEL) == 4,
            what="the analyst to take the payloads",
            timeout=15,
        )
        assert metric(port, "mlmodel_drift_alarms_total", model=MODEL) == 0
        for _ in range(4):  # petal lengths one centimetre longer
            shifted = flowers(rng, 50) + np.array([0, 0, 1.0, 0])
            post(config["listen_port"], path, v2_body(shifted))
        wait_until(
            lambda: metric(port, "mlmodel_drift_detected", model=MODEL) == 1,
            what="drift to be detected",
            timeout=15,
        )
        feature = {"direction": "input", "feature": "x[2]"}
        charts = ("cusum_mean", "cusum_scale")
        alarms = {
            c: metric(port, "mlmodel_drift_alarms_total", detector=c, **feature) for c in charts
        }
        assert sum(alarms.values()) >= 1
        held = [
            c
            for c in charts
            if metric(port, "mlmodel_drift_detector_detected", detector=c, **feature)
        ]
        assert len(held) == 1
        assert metric(port, "mlmodel_drift_feature_detected", **feature) == 1
        log = (tmp / "sidecar-sequential.log").read_text()
        assert f"drift detected in input:x[2] ({held[0]})" in log
    finally:
        server.close()


def test_model_server_down_gives_502_and_not_ready_then_recovers(tmp: Path) -> None:
    port = free_port()
    model = start_model_server(tmp, port)
    server, config = start_sidecar(tmp, port, "sidecar-recovery")
    ready_url = f"http://127.0.0.1:{config['listen_port']}/readyz"
    try:
        wait_until(lambda: http_status(ready_url) == 200, what="readyz", timeout=10)
        model.close()
        status, _, _ = post(config["listen_port"], f"/v1/models/{MODEL}:predict", b"{}")
        assert status == 502
        wait_until(lambda: http_status(ready_url) == 503, what="readyz to fail", timeout=10)
        assert metric(config["metrics_port"], "mlmodel_upstream_errors_total", kind="connect") >= 1
        model = start_model_server(tmp, port)
        wait_until(lambda: http_status(ready_url) == 200, what="readyz to recover", timeout=10)
        features, _ = load_iris(return_X_y=True)
        status, _, _ = post(
            config["listen_port"], f"/v1/models/{MODEL}:predict", v1_body(features[:2])
        )
        assert status == 200
    finally:
        server.close()
        model.close()


def test_unreachable_reference_keeps_performance_tracking(tmp: Path, model_port: int) -> None:
    drift = {
        "window_size": 60,
        "check_interval_seconds": 5,
        "reference_uri": "http://127.0.0.1:9/x.csv",
    }
    server, config = start_sidecar(tmp, model_port, "sidecar-noref", drift=drift)
    try:
        port = config["metrics_port"]
        wait_until(
            lambda: (
                "mlmodel_drift_reference_available{"
                in urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
            ),
            what="the reference to be tried",
            timeout=10,
        )
        assert metric(port, "mlmodel_drift_reference_available", source="uri") == 0
        features, _ = load_iris(return_X_y=True)
        status, _, _ = post(
            config["listen_port"], f"/v1/models/{MODEL}:predict", v1_body(features[:2])
        )
        assert status == 200
        assert metric(port, "mlmodel_requests_total", status_class="2xx") >= 1
        assert "reference unavailable" in (tmp / "sidecar-noref.log").read_text()
    finally:
        server.close()


def test_streaming_responses_are_relayed_as_they_come(tmp: Path) -> None:
    """An upstream that sends its second chunk only after the client has received the first:
    the exchange completes only if the sidecar relays chunks as they arrive."""
    first_chunk_seen = threading.Event()
    port = free_port()

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Model": "m"})
        await response.prepare(request)
        await response.write(b"data: one\n\n")
        await asyncio.get_running_loop().run_in_executor(None, first_chunk_seen.wait, 20)
        await response.write(b"data: two\n\n")
        await response.write_eof()
        return response

    async def ready(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_get("/stream", stream)
    app.router.add_get("/v2/health/ready", ready)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server, config = start_sidecar(tmp, port, "sidecar-stream")
    try:
        conn = http.client.HTTPConnection("127.0.0.1", config["listen_port"], timeout=30)
        conn.request("GET", "/stream")
        response = conn.getresponse()
        assert response.getheader("Content-Type") == "text/event-stream"
        assert response.getheader("X-Model") == "m"
        assert response.getheader("Transfer-Encoding") == "chunked"
        assert response.read1() == b"data: one\n\n"
        first_chunk_seen.set()
        assert response.read() == b"data: two\n\n"
    finally:
        first_chunk_seen.set()
        server.close()
        loop.call_soon_threadsafe(loop.stop)


@pytest.fixture(scope="module")
def prometheus(tmp: Path, sidecar: dict) -> Iterator[int]:
    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed (Debian package prometheus; .ci/run installs it)"
    port = free_port()
    config = tmp / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s}\n"
        "scrape_configs:\n"
        "- job_name: mlmodel-sidecar\n"
        f"  static_configs: [{{targets: ['127.0.0.1:{sidecar['metrics_port']}']}}]\n"
    )
    server = Server(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        tmp / "prometheus.log",
    ).start()
    server.wait_for(f"http://127.0.0.1:{port}/-/ready")
    yield port
    server.close()


def test_prometheus_scrapes_the_sidecar(prometheus: int, sidecar: dict) -> None:
    features, _ = load_iris(return_X_y=True)
    for _ in range(3):
        post(sidecar["listen_port"], f"/v1/models/{MODEL}:predict", v1_body(features[:3]))

    def query() -> float | None:
        q = urllib.parse.quote(f'sum(mlmodel_requests_total{{model="{MODEL}",protocol="v1"}})')
        answer = json.load(
            urllib.request.urlopen(f"http://127.0.0.1:{prometheus}/api/v1/query?query={q}")
        )
        result = answer["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    value = wait_until(
        lambda: (v := query()) is not None and v >= 3 and v, what="a scrape", timeout=30
    )
    assert value >= 3
