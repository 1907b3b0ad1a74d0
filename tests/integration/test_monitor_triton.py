"""Triton's own HTTP client (`tritonclient`) through a real sidecar in front of the real KServe
model server: tensors go in Triton's binary extension both ways, as that client sends them by
default, and drift detection reads them."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.http as triton
from sklearn.datasets import load_iris

from kube_helpers import wait_until
from monitor_procs import MODEL, metric, model_server, start_sidecar

FEATURES, _ = load_iris(return_X_y=True)
ROWS = 60  # the window: each request fills it, so each makes a check due


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, dict]]:
    tmp = tmp_path_factory.mktemp("triton")
    with model_server(tmp) as port:
        sidecar, config = start_sidecar(
            tmp, port, "triton", drift={"window_size": ROWS, "check_interval_seconds": 5}
        )
        yield port, config
        sidecar.close()


def infer(port: int, model: str, arrays: dict[str, np.ndarray]) -> triton.InferResult:
    client = triton.InferenceServerClient(f"127.0.0.1:{port}")
    inputs = []
    for name, array in arrays.items():
        tensor = triton.InferInput(name, list(array.shape), triton.np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array, binary_data=True)
        inputs.append(tensor)
    # No outputs named: the client asks for all of them in binary (`binary_data_output`).
    result = client.infer(model, inputs, request_id="t")
    client.close()
    return result


def test_drift_is_detected_in_binary_tensors(servers: tuple[int, dict]) -> None:
    _, config = servers
    port, metrics_port = config["listen_port"], config["metrics_port"]
    rng = np.random.default_rng(11)
    for shift in (0.0, 0.0):  # the live reference, then a window like it
        rows = FEATURES[rng.integers(0, len(FEATURES), ROWS)] + np.array([0, 0, shift, 0])
        result = infer(port, MODEL, {"x": rows})
        assert result.as_numpy("predict").shape == (ROWS,)
    for _ in range(6):  # 360 rows with petal lengths two centimetres longer
        rows = FEATURES[rng.integers(0, len(FEATURES), ROWS)] + np.array([0, 0, 2.0, 0])
        infer(port, MODEL, {"x": rows})
    wait_until(
        lambda: metric(metrics_port, "mlmodel_drift_feature_detected", feature="x[2]") == 1,
        what="drift in x[2] to be detected",
        timeout=30,
    )
    assert metric(metrics_port, "mlmodel_drift_detected", model=MODEL) == 1
    assert metric(metrics_port, "mlmodel_unreadable_payloads_total") == 0
    # The outputs came back in binary too, and were read.
    assert metric(metrics_port, "mlmodel_drift_window_samples", feature="predict") > 0


TYPES = {
    "BOOL": np.bool_,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}


def tensors(rng: np.random.Generator) -> dict[str, np.ndarray]:
    arrays = {
        datatype.lower(): (rng.integers(0, 100, size=(ROWS, 2)) > 50).astype(dtype)
        if datatype == "BOOL"
        else rng.integers(0, 100, size=(ROWS, 2)).astype(dtype)
        for datatype, dtype in TYPES.items()
    }
    words = rng.choice(np.array([b"oslo", b"rome", "\u20ac".encode()], dtype=object), (ROWS, 2))
    arrays["city"] = words.astype(np.object_)
    return arrays


def test_every_binary_type_is_read_both_ways(servers: tuple[int, dict]) -> None:
    model_port, config = servers
    port, metrics_port = config["listen_port"], config["metrics_port"]
    rng = np.random.default_rng(5)
    for _ in range(2):  # the live reference, then a window to compare
        arrays = tensors(rng)
        proxied = infer(port, "echo", arrays)
        direct = infer(model_port, "echo", arrays)
        for name, array in arrays.items():
            assert np.array_equal(proxied.as_numpy(name), array), name
            assert np.array_equal(proxied.as_numpy(name), direct.as_numpy(name)), name

    def read_everywhere() -> bool:
        return all(
            metric(metrics_port, "mlmodel_drift_window_samples", direction=d, feature=f"{n}[{j}]")
            == ROWS
            for d in ("input", "output")
            for n in arrays
            for j in range(2)
        )

    wait_until(read_everywhere, what="every tensor to be read both ways", timeout=30)
    assert metric(metrics_port, "mlmodel_unreadable_payloads_total") == 0
