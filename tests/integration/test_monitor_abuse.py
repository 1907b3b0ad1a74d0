"""The sidecar under abuse, with real parts: every odd request goes through a real
`mlmodel-monitor` to the real KServe model server behind it. Clients must always get their own
answers, the drift analyst must outlive every payload, memory must stay bounded in bytes, and the
metrics must add up to what was sent."""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from abuse_requests import (
    BAD_PAYLOADS,
    FEATURES,
    INFER,
    ODD_REQUESTS,
    PeakMemory,
    aborted_upload,
    mixed_client,
    padded,
    request,
    stalled_upload,
)
from kube_helpers import wait_until
from monitor_procs import (
    MODEL,
    metric,
    model_server,
    post,
    raw_exchange,
    read_answer,
    start_sidecar,
    v2_body,
)


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("abuse")


@pytest.fixture(scope="module")
def model_port(tmp: Path) -> Iterator[int]:
    with model_server(tmp) as port:
        yield port


@pytest.fixture(scope="module")
def sidecar(tmp: Path, model_port: int) -> Iterator[dict]:
    server, config = start_sidecar(tmp, model_port, "abuse", body_timeout_seconds=2)
    yield config
    server.close()


def counted_by_class(port: int) -> Counter[str]:
    return Counter(
        {
            status_class: metric(port, "mlmodel_requests_total", status_class=status_class)
            for status_class in ("2xx", "4xx", "5xx")
        }
    )


def test_every_client_gets_its_own_answer_amid_odd_requests(sidecar: dict, tmp: Path) -> None:
    port, metrics_port = sidecar["listen_port"], sidecar["metrics_port"]
    before = counted_by_class(metrics_port)
    clients, rounds = 8, len(ODD_REQUESTS)
    with ThreadPoolExecutor(clients) as pool:
        answers = [
            a
            for part in pool.map(lambda c: mixed_client(port, c, rounds), range(clients))
            for a in part
        ]
    assert [a for a in answers if not a[1]] == []  # not one answer mixed up
    sent = Counter(f"{status // 100}xx" for status, _ in answers)
    wait_until(
        lambda: counted_by_class(metrics_port) - before == sent,
        what=f"the requests sent to be counted by status class: {dict(sent)}",
        timeout=30,
    )
    assert metric(metrics_port, "mlmodel_drift_worker_errors_total") == 0
    assert metric(metrics_port, "mlmodel_client_aborts_total", phase="request") >= clients
    assert metric(metrics_port, "mlmodel_refused_requests_total", reason="bad_request") >= clients
    assert '"level": "ERROR"' not in (tmp / "abuse.log").read_text()


def last_check(port: int) -> float:
    return metric(port, "mlmodel_drift_last_check_timestamp_seconds", model=MODEL)


@pytest.mark.parametrize("name", list(BAD_PAYLOADS))
def test_drift_still_checks_after_a_bad_payload(sidecar: dict, name: str) -> None:
    port, metrics_port = sidecar["listen_port"], sidecar["metrics_port"]
    post(port, INFER, BAD_PAYLOADS[name])
    checked = last_check(metrics_port)
    # 60 rows: more new samples than the window, so a check is due at once.
    assert post(port, INFER, v2_body(FEATURES[::2][:60]))[0] == 200
    wait_until(lambda: last_check(metrics_port) > checked, what="another drift check", timeout=30)
    assert metric(metrics_port, "mlmodel_drift_worker_errors_total") == 0


@pytest.mark.parametrize(
    ("name", "csv"),
    [
        ("ragged", "0,1,2,3\n5.1,3.5,1.4\n4.9,3.0,1.4,0.2,9\n" * 40),
        ("no-numbers", "0,1,2,3\n" + "a,b,c,d\n" * 80),
    ],
)
def test_a_bad_reference_leaves_drift_checking(
    tmp: Path, model_port: int, name: str, csv: str
) -> None:
    reference = tmp / f"{name}.csv"
    reference.write_text(csv)
    drift = {"window_size": 60, "check_interval_seconds": 5, "reference_uri": str(reference)}
    server, config = start_sidecar(tmp, model_port, f"ref-{name}", drift=drift)
    try:
        metrics_port = config["metrics_port"]
        for _ in range(2):  # the first window may become the live reference of some features
            assert post(config["listen_port"], INFER, v2_body(FEATURES[::2][:60]))[0] == 200
        wait_until(lambda: last_check(metrics_port) > 0, what="a drift check", timeout=30)
        assert metric(metrics_port, "mlmodel_drift_reference_available", source="uri") == 1
        assert metric(metrics_port, "mlmodel_drift_worker_errors_total") == 0
    finally:
        server.close()


def test_client_aborts_are_499_not_server_errors(sidecar: dict, tmp: Path) -> None:
    metrics_port = sidecar["metrics_port"]
    aborts = metric(metrics_port, "mlmodel_client_aborts_total")
    server_errors = metric(metrics_port, "mlmodel_requests_total", status_class="5xx")
    for _ in range(3):
        aborted_upload(sidecar["listen_port"], "")
    wait_until(
        lambda: metric(metrics_port, "mlmodel_client_aborts_total") == aborts + 3,
        what="the aborts to be counted",
        timeout=30,
    )
    assert metric(metrics_port, "mlmodel_requests_total", status_class="5xx") == server_errors
    assert "Traceback" not in (tmp / "abuse.log").read_text()


def test_answers_match_direct_ones_for_odd_heads(sidecar: dict, model_port: int) -> None:
    """HEAD keeps the model server's Content-Length; a non-ASCII header, 1,200 headers and a
    10 KB query pass as they do when sent directly."""
    probes = [
        request("HEAD", f"/v2/models/{MODEL}"),
        request("POST", INFER, v2_body(FEATURES[:1]), "X-Note: 5 €"),
        request("POST", INFER, v2_body(FEATURES[:1]), *(f"X-{i}: {i}" for i in range(1200))),
        request("POST", f"{INFER}?pad={'q' * 10_000}", v2_body(FEATURES[:1])),
    ]
    for probe in probes:
        method = probe.split(b" ", 1)[0].decode()
        answers = []
        for port in (model_port, sidecar["listen_port"]):
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.sendall(probe)
                status, headers, body = read_answer(sock, method)
            answers.append((status, headers.get("content-length"), body))
        assert answers[0] == answers[1], probe[:60]


def test_parser_refusals_are_counted(sidecar: dict) -> None:
    metrics_port = sidecar["metrics_port"]
    before = metric(metrics_port, "mlmodel_requests_total", protocol="other", status_class="4xx")
    for data in (b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"):
        assert raw_exchange(sidecar["listen_port"], data)[0] == 400
    after = metric(metrics_port, "mlmodel_requests_total", protocol="other", status_class="4xx")
    assert after == before + 2


def test_body_timeout_and_connection_cap(tmp: Path, model_port: int) -> None:
    server, config = start_sidecar(
        tmp, model_port, "capped", body_timeout_seconds=1, max_connections=3
    )
    port, metrics_port = config["listen_port"], config["metrics_port"]
    try:
        assert stalled_upload(port, "") == [(408, True)]
        assert metric(metrics_port, "mlmodel_refused_requests_total", reason="body_timeout") == 1
        held = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(3)]
        wait_until(
            lambda: metric(metrics_port, "mlmodel_client_connections") == 3,
            what="three connections open",
            timeout=30,
        )
        status, headers, _ = raw_exchange(port, request("GET", "/v2/health/ready"))
        assert (status, headers.get("connection")) == (503, "close")
        assert (
            metric(metrics_port, "mlmodel_refused_requests_total", reason="connection_limit") == 1
        )
        held.pop().close()
        wait_until(
            lambda: raw_exchange(port, request("GET", "/v2/health/ready"))[0] == 200,
            what="a connection to be served again",
            timeout=30,
        )
        for sock in held:
            sock.close()
    finally:
        server.close()


def test_memory_stays_bounded_under_a_flood_of_large_bodies(tmp: Path, model_port: int) -> None:
    """Bodies of up to 64 MiB, many at once: the sidecar's processes' peak memory stays under
    its container's memory limit (256Mi), as bodies wait for room in the byte budget."""
    server, config = start_sidecar(tmp, model_port, "flood", max_body_bytes=64 * 2**20)
    assert server.proc is not None
    port, metrics_port = config["listen_port"], config["metrics_port"]

    # 24 MiB bodies pass through only; 3 MiB ones are also handed to the analyst.
    bodies = [padded(24 * 2**20), padded(3 * 2**20), padded(3 * 2**20)] * 8
    try:
        with PeakMemory(server.proc.pid) as memory, ThreadPoolExecutor(12) as pool:
            statuses = list(pool.map(lambda b: post(port, INFER, b)[0], bodies))
        assert all(status < 500 for status in statuses), statuses
        assert memory.peak < 256 * 2**20, f"{memory.peak / 2**20:.0f} MiB"
        # The level is published once a second.
        wait_until(
            lambda: metric(metrics_port, "mlmodel_buffered_bytes") == 0,
            what="the buffers to be given back",
            timeout=10,
        )
    finally:
        server.close()
