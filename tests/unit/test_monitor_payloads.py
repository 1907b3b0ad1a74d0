"""Reading inference payloads, and reference files, into named columns."""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from mlmodel_operator.monitor.payloads import UnreadablePayload, parse, protocol_of
from mlmodel_operator.monitor.reference import ReferenceUnavailable, load_reference


@pytest.mark.parametrize(
    ("method", "path", "protocol"),
    [
        ("POST", "/v2/models/iris/infer", "v2"),
        ("POST", "/v2/models/iris/versions/3/infer", "v2"),
        ("POST", "/v1/models/iris:predict", "v1"),
        ("GET", "/v2/models/iris/infer", "other"),
        ("POST", "/v1/models/iris:explain", "other"),
        ("GET", "/v2/health/ready", "other"),
    ],
)
def test_protocol_labels_are_bounded(method: str, path: str, protocol: str) -> None:
    assert protocol_of(method, path) == protocol


def test_v2_tensors_become_feature_columns() -> None:
    request = {
        "inputs": [
            {"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [[1, 2, 3], [4, 5, 6]]},
            {"name": "city", "shape": [2], "datatype": "BYTES", "data": ["oslo", "rome"]},
        ]
    }
    response = {"outputs": [{"name": "p", "shape": [2], "datatype": "FP32", "data": [0.1, 0.9]}]}
    inputs, outputs = parse("v2", json.dumps(request).encode(), json.dumps(response).encode())
    assert inputs == {"x[0]": [1, 4], "x[1]": [2, 5], "x[2]": [3, 6], "city": ["oslo", "rome"]}
    assert outputs == {"p": [0.1, 0.9]}


def test_v1_rows_become_feature_columns() -> None:
    inputs, outputs = parse(
        "v1",
        b'{"instances": [[1, 2], [3, 4]]}',
        b'{"predictions": [0, 1]}',
    )
    assert inputs == {"instances[0]": [1, 3], "instances[1]": [2, 4]}
    assert outputs == {"predictions": [0, 1]}
    inputs, _ = parse("v1", b'{"instances": [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]}', None)
    assert inputs == {"a": [1, 2], "b": ["x", "y"]}


def test_an_error_response_still_yields_inputs() -> None:
    inputs, outputs = parse("v1", b'{"instances": [1, 2]}', b"<html>oops</html>")
    assert inputs == {"instances": [1, 2]} and outputs == {}


@pytest.mark.parametrize(
    ("protocol", "body"),
    [
        ("v2", b"not json"),
        ("v2", b"\xff\xfe binary"),
        ("v2", b"[1, 2]"),
        ("v2", b'{"inputs": []}'),
        ("v2", b'{"inputs": [{"name": "x", "shape": [2, 2], "data": [1, 2, 3]}]}'),
        ("v2", b'{"inputs": [{"name": "x", "shape": [-1], "data": [1]}]}'),
        ("v1", b'{"instances": [[1, 2], [3]]}'),
        ("v1", b'{"inputs": [1]}'),
        ("other", b"{}"),
    ],
)
def test_unreadable_payloads_raise(protocol: str, body: bytes) -> None:
    with pytest.raises(UnreadablePayload):
        parse(protocol, body, None)


def test_reference_formats(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("a,colour\n1.5,red\n2.5,blue\n")
    assert load_reference(str(tmp_path / "r.csv")) == {"a": [1.5, 2.5], "colour": ["red", "blue"]}
    (tmp_path / "r.jsonl").write_text('{"a": 1, "b": "x"}\n\n{"a": 2, "b": "y"}\n')
    assert load_reference(str(tmp_path / "r.jsonl")) == {"a": [1, 2], "b": ["x", "y"]}
    np.save(tmp_path / "r.npy", np.array([[1.0, 2.0], [3.0, 4.0]]))
    assert load_reference(str(tmp_path / "r.npy")) == {"0": [1.0, 3.0], "1": [2.0, 4.0]}


def test_reference_over_http_and_unavailable(tmp_path: Path) -> None:
    (tmp_path / "ref.csv").write_text("a\n1\n2\n")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert load_reference(f"{base}/ref.csv") == {"a": [1.0, 2.0]}
        with pytest.raises(ReferenceUnavailable):
            load_reference(f"{base}/missing.csv")
    finally:
        server.shutdown()
    with pytest.raises(ReferenceUnavailable):
        load_reference(str(tmp_path / "nope.npy"))
    (tmp_path / "bad.parquet").write_text("x")
    with pytest.raises(ReferenceUnavailable, match="unknown reference format"):
        load_reference(str(tmp_path / "bad.parquet"))
