"""The sidecar under abuse, with real parts: every odd request goes through a real
`mlmodel-monitor` to the real KServe model server behind it. Clients must always get their own
answers, the drift worker must outlive every payload, memory must stay bounded in bytes, and the
metrics must add up to what was sent."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import pytest
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
from sklearn.datasets import load_iris

from kube_helpers import wait_until

INFER = f"/v2/models/{MODEL}/infer"
FEATURES, _ = load_iris(return_X_y=True)


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


def request(method: str, target: str, body: bytes = b"", *headers: str) -> bytes:
    head = [f"{method} {target} HTTP/1.1", "Host: model", *headers]
    if body or method == "POST":
        head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def answer_id(body: bytes) -> str | None:
    try:
        return json.loads(body).get("id")
    except ValueError:
        return None


def tensor(name: str, data: object, shape: object, datatype: str = "FP64") -> dict:
    return {"name": name, "shape": shape, "datatype": datatype, "data": data}


def nested_tensor(depth: int) -> bytes:
    """A tensor whose data is nested `depth` lists deep (json.dumps itself cannot nest so)."""
    data = "[" * depth + "1.0" + "]" * depth
    return b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": %s}]}' % (
        data.encode()
    )


# Payloads that each stopped the drift worker for good.
BAD_PAYLOADS = {
    "100k-deep JSON": b"[" * 100_000 + b"]" * 100_000,
    "shape an int": json.dumps({"inputs": [tensor("x", [5.1, 3.5, 1.4, 0.2], 4)]}).encode(),
    "400-digit int in a second tensor": json.dumps(
        {
            "inputs": [
                tensor("x", [5.1, 3.5, 1.4, 0.2], [1, 4]),
                tensor("y", [10**400], [1], "INT64"),
            ]
        }
    ).encode(),
    "data nested 990 deep": nested_tensor(990),
}


# --- odd requests: each returns how many requests it sent (for the metrics to add up) --------


def expect_continue(port: int, request_id: str) -> int:
    """curl's Expect: 100-continue: the head, then the body once told to go on."""
    body = v2_body(FEATURES[:2], request_id)
    head = request("POST", INFER, b"", "Expect: 100-continue").replace(
        b"Content-Length: 0", f"Content-Length: {len(body)}".encode()
    )
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        interim = b""
        while not interim.endswith(b"\r\n\r\n"):
            interim += sock.recv(1)
        assert interim.startswith(b"HTTP/1.1 100 ")
        sock.sendall(body)
        status, _, answer = read_answer(sock)
    assert (status, answer_id(answer)) == (200, request_id)
    return 1


def pipelined(port: int, request_id: str) -> int:
    """Two requests in one write, answered in order on one connection."""
    first, second = f"{request_id}-a", f"{request_id}-b"
    data = request("POST", INFER, v2_body(FEATURES[:1], first)) + request(
        "POST", INFER, v2_body(FEATURES[1:2], second)
    )
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        reader = sock.makefile("rb")
        answers = [answer_id(read_length_delimited(reader)) for _ in range(2)]
    assert answers == [first, second]
    return 2


def read_length_delimited(reader: BinaryIO) -> bytes:
    """The body of the next answer on a connection (http.client reads one answer only)."""
    length = 0
    while (line := reader.readline()) != b"\r\n":
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    return reader.read(length)


def chunked(port: int, request_id: str) -> int:
    body = v2_body(FEATURES[:3], request_id)
    head = [f"POST {INFER} HTTP/1.1", "Host: model", "Content-Type: application/json"]
    head.append("Transfer-Encoding: chunked")
    chunks = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in (body[:10], body[10:]))
    status, _, answer = raw_exchange(
        port, ("\r\n".join(head) + "\r\n\r\n").encode() + chunks + b"0\r\n\r\n"
    )
    assert (status, answer_id(answer)) == (200, request_id)
    return 1


def head_request(port: int, _: str) -> int:
    raw_exchange(port, request("HEAD", f"/v2/models/{MODEL}"))
    return 1


def euro_header(port: int, request_id: str) -> int:
    data = request("POST", INFER, v2_body(FEATURES[:1], request_id), "X-Note: 5 €")
    status, _, answer = raw_exchange(port, data)
    assert (status, answer_id(answer)) == (200, request_id)
    return 1


def many_headers(port: int, request_id: str) -> int:
    extra = [f"X-Extra-{i}: {i}" for i in range(1200)]
    status, _, answer = raw_exchange(
        port, request("POST", INFER, v2_body(FEATURES[:1], request_id), *extra)
    )
    assert (status, answer_id(answer)) == (200, request_id)
    return 1


def long_query(port: int, request_id: str) -> int:
    target = f"{INFER}?pad={'q' * 10_000}"
    status, _, answer = raw_exchange(
        port, request("POST", target, v2_body(FEATURES[:1], request_id))
    )
    assert (status, answer_id(answer)) == (200, request_id)
    return 1


def bad_request_line(port: int, _: str) -> int:
    status, _, _ = raw_exchange(port, b"GARBAGE\r\n\r\n")
    assert status == 400
    return 1


def huge_declared_body(port: int, _: str) -> int:
    """Refused at once: the body is never sent, so an answer can only come before it."""
    head = request("POST", INFER).replace(b"Content-Length: 0", b"Content-Length: 1073741824")
    status, _, _ = raw_exchange(port, head)
    assert status == 413
    return 1


def aborted_upload(port: int, _: str) -> int:
    head = request("POST", INFER).replace(b"Content-Length: 0", b"Content-Length: 1000")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + b'{"inputs": ')
    return 1


def stalled_upload(port: int, _: str) -> int:
    """Half a body, then nothing: answered 408 once the body timeout runs out."""
    head = request("POST", INFER).replace(b"Content-Length: 0", b"Content-Length: 1000")
    status, _, _ = raw_exchange(port, head + b'{"inputs": ')
    assert status == 408
    return 1


def bad_payload(name: str) -> Callable[[int, str], int]:
    def send(port: int, _: str) -> int:
        raw_exchange(port, request("POST", INFER, BAD_PAYLOADS[name]))
        return 1

    return send


ODD_REQUESTS = [
    expect_continue,
    pipelined,
    chunked,
    head_request,
    euro_header,
    many_headers,
    long_query,
    bad_request_line,
    huge_declared_body,
    aborted_upload,
    stalled_upload,
    *(bad_payload(name) for name in BAD_PAYLOADS),
]


def requests_total(port: int) -> float:
    return metric(port, "mlmodel_requests_total", model=MODEL)


def test_every_client_gets_its_own_answer_amid_odd_requests(sidecar: dict, tmp: Path) -> None:
    port, metrics_port = sidecar["listen_port"], sidecar["metrics_port"]
    before = requests_total(metrics_port)
    clients, rounds = 8, len(ODD_REQUESTS)

    def client(c: int) -> tuple[int, int]:
        """Valid requests on one keep-alive connection, an odd request between each two."""
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mixed_up, sent = 0, 0
        for i in range(rounds):
            request_id = f"client{c}-{i}"
            body = v2_body(FEATURES[i : i + 2], request_id)
            conn.request("POST", INFER, body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            mixed_up += answer_id(response.read()) != request_id
            sent += 1 + ODD_REQUESTS[(c + i) % len(ODD_REQUESTS)](port, f"odd{c}-{i}")
        conn.close()
        return mixed_up, sent

    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(client, range(clients)))
    assert sum(mixed for mixed, _ in results) == 0
    sent = sum(n for _, n in results)
    wait_until(
        lambda: requests_total(metrics_port) - before == sent,
        what=f"the {sent} requests sent to be counted",
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
        assert stalled_upload(port, "") == 1
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


def peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_memory_stays_bounded_under_a_flood_of_large_bodies(tmp: Path, model_port: int) -> None:
    """Bodies of up to 64 MiB, many at once: the sidecar's peak RSS stays under its container's
    memory limit (256Mi), as bodies wait for room in the byte budget."""
    server, config = start_sidecar(tmp, model_port, "flood", max_body_bytes=64 * 2**20)
    assert server.proc is not None
    port, metrics_port = config["listen_port"], config["metrics_port"]

    def padded(pad_bytes: int) -> bytes:
        """A valid request the model server reads quickly, padded with one long string."""
        request = json.loads(v2_body(FEATURES[:2], "padded"))
        return json.dumps({**request, "pad": "p" * pad_bytes}).encode()

    # 24 MiB bodies pass through only; 3 MiB ones also queue for the drift worker.
    bodies = [padded(24 * 2**20), padded(3 * 2**20), padded(3 * 2**20)] * 8
    try:
        with ThreadPoolExecutor(12) as pool:
            statuses = list(pool.map(lambda b: post(port, INFER, b)[0], bodies))
        assert all(status < 500 for status in statuses), statuses
        assert peak_rss_bytes(server.proc.pid) < 256 * 2**20
        assert metric(metrics_port, "mlmodel_buffered_bytes") == 0
    finally:
        server.close()
