"""Reading inference payloads into named columns."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlmodel_operator.monitor.payloads import Exchange, UnreadablePayload, parse, protocol_of


def read(protocol: str, request: bytes, response: bytes | None) -> tuple[dict, dict]:
    inputs, outputs, *_ = parse(Exchange(protocol, 200, request, response))
    return inputs, outputs


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
    inputs, outputs = read("v2", json.dumps(request).encode(), json.dumps(response).encode())
    assert inputs == {"x[0]": [1, 4], "x[1]": [2, 5], "x[2]": [3, 6], "city": ["oslo", "rome"]}
    assert outputs == {"p": [0.1, 0.9]}


def test_v1_rows_become_feature_columns() -> None:
    inputs, outputs = read(
        "v1",
        b'{"instances": [[1, 2], [3, 4]]}',
        b'{"predictions": [0, 1]}',
    )
    assert inputs == {"instances[0]": [1, 3], "instances[1]": [2, 4]}
    assert outputs == {"predictions": [0, 1]}
    inputs, _ = read("v1", b'{"instances": [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]}', None)
    assert inputs == {"a": [1, 2], "b": ["x", "y"]}


def test_an_error_response_still_yields_inputs() -> None:
    inputs, outputs = read("v1", b'{"instances": [1, 2]}', b"<html>oops</html>")
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
        read(protocol, body, None)


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"inputs": [{"name": "x", "shape": 4, "data": [1, 2, 3, 4]}]}',
        b'{"inputs": [{"name": "x", "shape": [1], "data": '
        + b"[" * 990
        + b"1"
        + b"]" * 990
        + b"}]}",
        b'{"inputs": [{"name": "x", "shape": [true], "data": [1]}]}',
        b'{"inputs": [{"name": "x", "shape": [1], "parameters": {"binary_data_size": 8}}]}',
    ],
    ids=["100k-deep", "shape-int", "nested-990", "shape-bool", "binary-missing"],
)
def test_hostile_payloads_are_unreadable_not_errors(body: bytes) -> None:
    with pytest.raises(UnreadablePayload):
        read("v2", body, None)


BINARY_ARRAYS = {
    "BOOL": np.array([[True, False], [False, True]]),
    "INT8": np.array([[-128, 127], [0, 1]], dtype=np.int8),
    "INT16": np.array([[-32768, 32767], [0, 1]], dtype=np.int16),
    "INT32": np.array([[-(2**31), 2**31 - 1], [0, 1]], dtype=np.int32),
    "INT64": np.array([[-(2**63), 2**63 - 1], [0, 1]], dtype=np.int64),
    "UINT8": np.array([[0, 255], [1, 2]], dtype=np.uint8),
    "UINT16": np.array([[0, 65535], [1, 2]], dtype=np.uint16),
    "UINT32": np.array([[0, 2**32 - 1], [1, 2]], dtype=np.uint32),
    "UINT64": np.array([[0, 2**64 - 1], [1, 2]], dtype=np.uint64),
    "FP16": np.array([[0.5, -1.25], [65504, 1e-3]], dtype=np.float16),
    "FP32": np.array([[0.5, -1.25], [3.4e38, 1e-3]], dtype=np.float32),
    "FP64": np.array([[0.5, -1.25], [1e300, 1e-3]], dtype=np.float64),
}


def binary_body(tensors: dict[str, tuple[str, np.ndarray, bytes]], key: str) -> tuple[bytes, str]:
    """A body with Triton's binary extension: JSON, then each tensor's raw bytes."""
    document = {
        key: [
            {
                "name": name,
                "datatype": datatype,
                "shape": list(array.shape),
                "parameters": {"binary_data_size": len(raw)},
            }
            for name, (datatype, array, raw) in tensors.items()
        ]
    }
    head = json.dumps(document).encode()
    return head + b"".join(raw for _, _, raw in tensors.values()), str(len(head))


def test_binary_tensors_of_every_type_in_both_directions() -> None:
    words = np.array([["oslo", "€"], ["rome", ""]], dtype=object)
    raw_words = b"".join(
        len(w.encode()).to_bytes(4, "little") + w.encode() for w in words.reshape(-1)
    )
    tensors = {
        datatype.lower(): (datatype, array, array.astype(array.dtype.newbyteorder("<")).tobytes())
        for datatype, array in BINARY_ARRAYS.items()
    }
    tensors["city"] = ("BYTES", words, raw_words)
    request, request_length = binary_body(tensors, "inputs")
    response, response_length = binary_body({"p": tensors["fp32"]}, "outputs")
    exchange = Exchange("v2", 200, request, response, request_length, response_length)
    inputs, outputs, *_ = parse(exchange)
    for datatype, array in BINARY_ARRAYS.items():
        for j in range(2):
            assert inputs[f"{datatype.lower()}[{j}]"] == array[:, j].tolist(), datatype
    assert inputs["city[0]"] == ["oslo", "rome"] and inputs["city[1]"] == ["€", ""]
    assert outputs["p[1]"] == BINARY_ARRAYS["FP32"][:, 1].tolist()


@pytest.mark.parametrize(
    ("header", "raw"),
    [("9999", b""), ("x", b""), ("15", b"\x01\x00\x00")],
    ids=["header-too-long", "header-not-a-number", "cut-short"],
)
def test_bad_binary_data_is_unreadable(header: str, raw: bytes) -> None:
    document = b'{"inputs": [{"name": "x", "datatype": "INT32", "shape": [1], '
    document += b'"parameters": {"binary_data_size": 4}}]}'
    length = header if header != "15" else str(len(document))
    with pytest.raises(UnreadablePayload):
        parse(Exchange("v2", 200, document + raw, None, length))


def image_request(batch: int = 1) -> bytes:
    data = np.arange(batch * 3 * 8 * 8, dtype=float).reshape(batch, 3, 8, 8).tolist()
    tensor = {"name": "img", "shape": [batch, 3, 8, 8], "datatype": "FP32", "data": data}
    return json.dumps({"inputs": [tensor]}).encode()


@pytest.mark.parametrize("batch", [1, 3])
def test_inputs_past_the_budget_are_left_unread_and_outputs_keep_their_own(batch: int) -> None:
    answer = {"outputs": [{"name": "p", "shape": [batch, 2], "datatype": "FP32",
                           "data": [[0.25, 0.75]] * batch}]}  # fmt: skip
    exchange = Exchange("v2", 200, image_request(batch), json.dumps(answer).encode())
    inputs, outputs, over_budget, *_ = parse(exchange, budget=5)
    assert list(inputs) == [f"img[{j}]" for j in range(5)]
    assert inputs["img[4]"] == [4.0 + 192 * r for r in range(batch)]
    assert outputs == {"p[0]": [0.25] * batch, "p[1]": [0.75] * batch}
    assert over_budget == batch * (192 - 5)


def test_the_budget_runs_across_tensors_in_order() -> None:
    tensors = [
        {"name": "a", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]},
        {"name": "b", "shape": [1, 3], "datatype": "FP32", "data": [4, 5, 6]},
        {"name": "c", "shape": [1, 3], "datatype": "FP32", "data": [7, 8, 9]},
    ]
    inputs, _, over_budget, *_ = parse(
        Exchange("v2", 200, json.dumps({"inputs": tensors}).encode(), None), budget=4
    )
    assert inputs == {"a[0]": [1], "a[1]": [2], "a[2]": [3], "b[0]": [4]}
    assert over_budget == 5


def test_a_binary_tensor_past_the_budget_is_sliced_not_decoded() -> None:
    array = np.arange(2 * 1000, dtype=np.float32).reshape(2, 1000)
    raw = array.tobytes()
    document = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 1000],
                            "parameters": {"binary_data_size": len(raw)}}]}  # fmt: skip
    head = json.dumps(document).encode()
    inputs, _, over_budget, *_ = parse(Exchange("v2", 200, head + raw, None, str(len(head))), 3)
    assert inputs == {"x[0]": [0.0, 1000.0], "x[1]": [1.0, 1001.0], "x[2]": [2.0, 1002.0]}
    assert over_budget == 2 * 997


@pytest.mark.parametrize(
    "name",
    [r"\u0000\u001b[2J", "n" * 10_000, r"caf\u00e9\nbar"],  # JSON escapes
    ids=["control", "10KB", "newline"],
)
def test_feature_names_from_payloads_are_safe_label_values(name: str) -> None:
    body = b'{"inputs": [{"name": "%s", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}'
    inputs, *_ = parse(Exchange("v2", 200, body % name.encode(), None))
    for feature in inputs:
        assert feature.isprintable() and len(feature) <= 64
        feature.encode("utf-8")


def test_a_lone_surrogate_makes_a_payload_unreadable_not_a_label() -> None:
    body = b'{"inputs": [{"name": "\\ud800", "shape": [1], "datatype": "FP32", "data": [1]}]}'
    with pytest.raises(UnreadablePayload):
        parse(Exchange("v2", 200, body, None))
