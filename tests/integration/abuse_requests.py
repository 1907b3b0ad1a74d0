"""Odd and hostile requests for the sidecar, sent on raw sockets as they would come from the
outside: what the abuse tests and bench/sidecar_abuse.py send through a real sidecar.

Each odd request returns its answers as (status, whether it was this request's own answer);
an aborted upload gets no answer and counts as the 499 the sidecar records for it.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from sklearn.datasets import load_iris

from monitor_procs import MODEL, raw_exchange, read_answer, v2_body

INFER = f"/v2/models/{MODEL}/infer"
FEATURES, _ = load_iris(return_X_y=True)
CLIENT_CLOSED = 499
Answers = list[tuple[int, bool]]
OddRequest = Callable[[int, str], Answers]


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


# Payloads that each once stopped drift analysis for good.
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


def expect_continue(port: int, request_id: str) -> Answers:
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
        sock.sendall(body)
        status, _, answer = read_answer(sock)
    return [(status, interim.startswith(b"HTTP/1.1 100 ") and answer_id(answer) == request_id)]


def pipelined(port: int, request_id: str) -> Answers:
    """Two requests in one write, answered in order on one connection."""
    first, second = f"{request_id}-a", f"{request_id}-b"
    data = request("POST", INFER, v2_body(FEATURES[:1], first)) + request(
        "POST", INFER, v2_body(FEATURES[1:2], second)
    )
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        reader = sock.makefile("rb")
        answers = [read_length_delimited(reader) for _ in range(2)]
    return [
        (status, answer_id(answer) == wanted)
        for (status, answer), wanted in zip(answers, (first, second), strict=True)
    ]


def read_length_delimited(reader: BinaryIO) -> tuple[int, bytes]:
    """The status and body of the next answer on a connection (http.client reads one only)."""
    status, length = int(reader.readline().split()[1]), 0
    while (line := reader.readline()) != b"\r\n":
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    return status, reader.read(length)


def chunked(port: int, request_id: str) -> Answers:
    body = v2_body(FEATURES[:3], request_id)
    head = [f"POST {INFER} HTTP/1.1", "Host: model", "Content-Type: application/json"]
    head.append("Transfer-Encoding: chunked")
    chunks = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in (body[:10], body[10:]))
    status, _, answer = raw_exchange(
        port, ("\r\n".join(head) + "\r\n\r\n").encode() + chunks + b"0\r\n\r\n"
    )
    return [(status, answer_id(answer) == request_id)]


def head_request(port: int, _: str) -> Answers:
    return [(raw_exchange(port, request("HEAD", f"/v2/models/{MODEL}"))[0], True)]


def euro_header(port: int, request_id: str) -> Answers:
    data = request("POST", INFER, v2_body(FEATURES[:1], request_id), "X-Note: 5 €")
    status, _, answer = raw_exchange(port, data)
    return [(status, answer_id(answer) == request_id)]


def many_headers(port: int, request_id: str) -> Answers:
    extra = [f"X-Extra-{i}: {i}" for i in range(1200)]
    status, _, answer = raw_exchange(
        port, request("POST", INFER, v2_body(FEATURES[:1], request_id), *extra)
    )
    return [(status, answer_id(answer) == request_id)]


def long_query(port: int, request_id: str) -> Answers:
    target = f"{INFER}?pad={'q' * 10_000}"
    status, _, answer = raw_exchange(
        port, request("POST", target, v2_body(FEATURES[:1], request_id))
    )
    return [(status, answer_id(answer) == request_id)]


def bad_request_line(port: int, _: str) -> Answers:
    return [(raw_exchange(port, b"GARBAGE\r\n\r\n")[0], True)]


def huge_declared_body(port: int, _: str) -> Answers:
    """Refused at once: the body is never sent, so an answer can only come before it."""
    head = request("POST", INFER).replace(b"Content-Length: 0", b"Content-Length: 1073741824")
    return [(raw_exchange(port, head)[0], True)]


def aborted_upload(port: int, _: str) -> Answers:
    head = request("POST", INFER).replace(b"Content-Length: 0", b"Content-Length: 1000")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + b'{"inputs": ')
    return [(CLIENT_CLOSED, True)]  # no answer: the sidecar counts it as 499


def stalled_upload(port: int, _: str) -> Answers:
    """Half a body, then nothing: answered 408 once the body timeout runs out."""
    head = request("POST", INFER).replace(b"Content-Length: 0", b"Content-Length: 1000")
    return [(raw_exchange(port, head + b'{"inputs": ')[0], True)]


def bad_payload(name: str) -> OddRequest:
    def send(port: int, _: str) -> Answers:
        return [(raw_exchange(port, request("POST", INFER, BAD_PAYLOADS[name]))[0], True)]

    send.__name__ = f"bad payload: {name}"
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


def mixed_client(port: int, client: int, rounds: int) -> Answers:
    """Valid requests with distinct ids on one keep-alive connection, one odd request after
    each: all the answers, with whether each was the request's own."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    answers: Answers = []
    for i in range(rounds):
        request_id = f"client{client}-{i}"
        rows = FEATURES[i % 140 : i % 140 + 2]
        conn.request("POST", INFER, v2_body(rows, request_id), {"Content-Type": "application/json"})
        response = conn.getresponse()
        answers.append((response.status, answer_id(response.read()) == request_id))
        answers += ODD_REQUESTS[(client + i) % len(ODD_REQUESTS)](port, f"odd{client}-{i}")
    conn.close()
    return answers


def padded(pad_bytes: int) -> bytes:
    """A valid request the model server reads quickly, padded with one long string."""
    request = json.loads(v2_body(FEATURES[:2], "padded"))
    return json.dumps({**request, "pad": "p" * pad_bytes}).encode()


def tree_pss_bytes(pid: int) -> int:
    """Memory of a process and its children as their container is charged for it: the sum of
    their proportional set sizes, so that pages the children share after fork count once."""
    total = 0
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for member in [str(pid), *children]:
        try:
            rollup = Path(f"/proc/{member}/smaps_rollup").read_text()
        except OSError:  # gone meanwhile
            continue
        for line in rollup.splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1]) * 1024
    return total


class PeakMemory:
    """The highest tree_pss_bytes seen, sampled every 20 ms in a thread while in the block."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(0.02):
            self.peak = max(self.peak, tree_pss_bytes(self.pid))

    def __enter__(self) -> PeakMemory:
        self.peak = tree_pss_bytes(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
