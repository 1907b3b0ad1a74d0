"""Ground truth through the real sidecar (two proxy workers) in front of the real KServe model
server: prediction ids, feedback sent on between the workers, exact accuracy counters, TTL
expiry, the store's byte bound and a flood of unknown ids."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_iris

from kube_helpers import wait_until
from mlmodel_operator.monitor.feedback import MAX_ENTRIES
from mlmodel_operator.monitor.prediction_id import Holder, holder_of, prediction_id
from monitor_procs import MODEL, metric, model_server, start_sidecar, v2_body
from procs import free_port

INFER = f"/v2/models/{MODEL}/infer"
FEEDBACK = f"/v2/models/{MODEL}/feedback"


def consecutive_ports(count: int) -> int:
    """A base port with `count` free ports from it (for the workers' feedback ports)."""
    while True:
        base = free_port()
        if base + count < 65536 and all(_free(base + i) for i in range(1, count)):
            return base


def _free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def request(port: int, method: str, path: str, body: bytes, headers: dict | None = None) -> tuple:
    # A new connection each time: the kernel spreads connections over the proxy workers.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(
        method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})}
    )
    response = conn.getresponse()
    data = response.read()
    found = {k.lower(): v for k, v in response.getheaders()}
    conn.close()
    return response.status, found, data


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ground-truth")


@pytest.fixture(scope="module")
def model_port(tmp: Path) -> Iterator[int]:
    with model_server(tmp) as port:
        yield port


def truth_sidecar(tmp: Path, model_port: int, name: str, **truth: object) -> tuple:
    settings = {"task": "classification", "feedback_port_base": consecutive_ports(2), **truth}
    return start_sidecar(tmp, model_port, name, drift=None, workers=2, ground_truth=settings)


@pytest.fixture(scope="module")
def sidecar(tmp: Path, model_port: int) -> Iterator[dict]:
    server, config = truth_sidecar(tmp, model_port, "truth")
    yield config
    server.close()


def predict(port: int, rows: np.ndarray, request_id: str, headers: dict | None = None) -> tuple:
    status, found, data = request(port, "POST", INFER, v2_body(rows, request_id), headers)
    assert status == 200, data
    return found["x-prediction-id"], json.loads(data)["outputs"][0]["data"]


def send_feedback(port: int, body: object) -> dict:
    status, _, data = request(port, "POST", FEEDBACK, json.dumps(body).encode())
    assert status == 200, data
    return json.loads(data)


def test_accuracy_is_exact_with_feedback_reaching_either_worker(sidecar: dict) -> None:
    port, metrics_port = sidecar["listen_port"], sidecar["metrics_port"]
    features, labels = load_iris(return_X_y=True)
    rng = np.random.default_rng(7)
    picked = rng.choice(len(features), 60, replace=False)
    # Noise makes some answers wrong, so that accuracy is neither 0 nor 1.
    noisy = features[picked] + rng.normal(0, 0.6, (60, 4))
    ids, predicted = [], []
    for i, row in enumerate(noisy):
        prediction, data = predict(port, row[None, :], f"acc-{i}")
        ids.append(prediction)
        predicted.append(data[0])
    holders = [holder_of(p) for p in ids]
    assert all(h is not None and h.address == "127.0.0.1" for h in holders)
    # Both workers answered, so feedback reaching one is sent on to the other.
    assert {h.worker for h in holders if h} == {0, 1}
    assert all(p.endswith(f".acc-{i}") for i, p in enumerate(ids))
    truth = [int(labels[k]) for k in picked]
    right = sum(int(p == t) for p, t in zip(predicted, truth, strict=True))
    assert 0 < right < 60
    summaries = [
        send_feedback(
            port,
            [
                {"id": p, "truth": t}
                for p, t in zip(ids[i : i + 15], truth[i : i + 15], strict=True)
            ],
        )
        for i in range(0, 60, 15)
    ]
    assert sum(s["matched"] for s in summaries) == 60
    assert all(s["unreachable"] == s["invalid"] == 0 for s in summaries)
    assert metric(metrics_port, "mlmodel_labelled_predictions_total", model=MODEL) == 60
    assert metric(metrics_port, "mlmodel_correct_predictions_total", model=MODEL) == right
    # Sent again: duplicates, counted, and nothing relabelled.
    again = send_feedback(port, {"feedback": [{"id": ids[0], "truth": truth[0]}]})
    assert again["duplicate"] == 1 and again["matched"] == 0
    assert metric(metrics_port, "mlmodel_labelled_predictions_total", model=MODEL) == 60


def test_own_ids_are_kept_and_bad_entries_do_not_fail_the_batch(sidecar: dict) -> None:
    port, metrics_port = sidecar["listen_port"], sidecar["metrics_port"]
    features, _ = load_iris(return_X_y=True)
    from_header, _ = predict(port, features[:1], "body-id", {"x-request-id": "hdr-1"})
    assert from_header.endswith(".hdr-1")
    batch, data = predict(port, features[[0, 50, 100]], "batch-1")
    assert batch.endswith(".batch-1") and len(data) == 3
    gone = prediction_id(Holder("10.255.0.1", 0, int(time.time())), "elsewhere")
    unknown = prediction_id(Holder("127.0.0.1", 1, int(time.time())), "never-made")
    before = metric(metrics_port, "mlmodel_feedback_entries_total", model=MODEL, outcome="invalid")
    summary = send_feedback(
        port,
        [
            {"id": batch, "truth": [0, 1, 2]},  # one truth per row of the batch
            {"id": from_header, "truth": [0, 1]},  # does not fit the single row: invalid
            {"id": "not-ours", "truth": 1},
            {"truth": 1},
            {"id": gone, "truth": 1},  # a pod that is not the model's: never contacted
            {"id": unknown, "truth": 1},
        ],
    )
    assert summary == {
        "matched": 1,
        "duplicate": 0,
        "late": 0,
        "unmatched": 1,
        "invalid": 3,
        "unreachable": 1,
    }
    after = metric(metrics_port, "mlmodel_feedback_entries_total", model=MODEL, outcome="invalid")
    assert after - before == 3
    status, _, data = request(port, "POST", FEEDBACK, b"{not json")
    assert status == 400 and b"not JSON" in data


def test_a_flood_of_unknown_ids_is_counted_and_refused_past_the_limit(sidecar: dict) -> None:
    port = sidecar["listen_port"]
    now = int(time.time())
    flood = [
        {"id": prediction_id(Holder("127.0.0.1", i % 2, now), f"flood-{i}"), "truth": 1}
        for i in range(MAX_ENTRIES)
    ]
    summary = send_feedback(port, flood)
    assert summary["unmatched"] == MAX_ENTRIES
    status, _, data = request(port, "POST", FEEDBACK, json.dumps(flood + flood[:1]).encode())
    assert status == 400 and b"at most" in data
    features, _ = load_iris(return_X_y=True)
    assert predict(port, features[:1], "after-flood")[0]


def test_predictions_past_the_ttl_expire_and_their_truth_is_late(
    tmp: Path, model_port: int
) -> None:
    server, config = truth_sidecar(tmp, model_port, "ttl", ttl_seconds=1)
    try:
        port, metrics_port = config["listen_port"], config["metrics_port"]
        features, _ = load_iris(return_X_y=True)
        prediction, _ = predict(port, features[:1], "short-lived")
        wait_until(
            lambda: (
                metric(metrics_port, "mlmodel_unlabelled_predictions_total", reason="expired") >= 1
            ),
            what="the prediction to expire",
        )
        assert send_feedback(port, [{"id": prediction, "truth": 0}])["late"] == 1
    finally:
        server.close()


def test_the_store_is_bounded_in_bytes(tmp: Path, model_port: int) -> None:
    bound = 8 * 1024
    server, config = truth_sidecar(tmp, model_port, "bounded", max_pending_bytes=bound)
    try:
        port, metrics_port = config["listen_port"], config["metrics_port"]
        features, _ = load_iris(return_X_y=True)
        ids = [predict(port, features[:1], f"many-{i}")[0] for i in range(120)]

        def published() -> bool:
            return (
                metric(metrics_port, "mlmodel_unlabelled_predictions_total", reason="evicted") > 0
            )

        wait_until(published, what="evictions to be counted")
        held = metric(metrics_port, "mlmodel_pending_predictions_bytes", model=MODEL)
        assert 0 < held <= 2 * bound  # each of the two workers holds at most `bound`
        summary = send_feedback(port, [{"id": p, "truth": 0} for p in ids])
        assert summary["matched"] + summary["late"] + summary["unmatched"] == 120
        assert 0 < summary["matched"] < 120
    finally:
        server.close()
