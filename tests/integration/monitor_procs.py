"""The monitoring sidecar's tests' processes: the KServe model server (servers/sklearn_kserve.py)
serving a scikit-learn iris classifier and an echo model, and `mlmodel-monitor` in front of it;
and small HTTP helpers to talk to them."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import pickle
import socket
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from procs import Server, free_port

SERVER_SCRIPT = Path(__file__).parent / "servers" / "sklearn_kserve.py"
MONITOR = Path(sys.executable).parent / "mlmodel-monitor"
MODEL = "iris"


def start_model_server(tmp: Path, port: int) -> Server:
    features, labels = load_iris(return_X_y=True)
    model_path = tmp / "iris.pkl"
    if not model_path.exists():
        model_path.write_bytes(pickle.dumps(LogisticRegression(max_iter=500).fit(features, labels)))
    server = Server(
        [sys.executable, str(SERVER_SCRIPT), str(model_path), MODEL, str(port)],
        tmp / f"model-server-{port}.log",
    ).start()
    return server.wait_for(f"http://127.0.0.1:{port}/v2/health/ready")


@contextlib.contextmanager
def model_server(tmp: Path) -> Iterator[int]:
    """The model server on a free port, for the length of the block; yields the port."""
    port = free_port()
    server = start_model_server(tmp, port)
    try:
        yield port
    finally:
        server.close()


def start_sidecar(
    tmp: Path, upstream_port: int, name: str, env: dict[str, str] | None = None, **overrides: Any
) -> tuple[Server, dict]:
    config = {
        "model_name": MODEL,
        "upstream": f"http://127.0.0.1:{upstream_port}",
        "upstream_ready_path": "/v2/health/ready",
        "listen_host": "127.0.0.1",
        "listen_port": free_port(),
        "metrics_port": free_port(),
        "performance_tracking": True,
        "drift": {"window_size": 60, "check_interval_seconds": 5},
        "max_body_bytes": 2**20,
        **overrides,
    }
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(config))
    environment = {**os.environ, **env} if env else None
    server = Server([str(MONITOR), f"--config={path}"], tmp / f"{name}.log", environment).start()
    server.wait_for(f"http://127.0.0.1:{config['metrics_port']}/metrics")
    server.wait_for(f"http://127.0.0.1:{config['listen_port']}/healthz")
    return server, config


def post(port: int, path: str, body: bytes, content_type: str = "application/json") -> tuple:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", path, body=body, headers={"Content-Type": content_type})
    response = conn.getresponse()
    data = response.read()
    headers = {k.lower(): v for k, v in response.getheaders()}
    conn.close()
    return response.status, headers, data


def raw_exchange(port: int, data: bytes, timeout: float = 30) -> tuple[int, dict, bytes]:
    """Send bytes as they are (any request, well-formed or not) and read one answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_answer(sock, data.split(b" ", 1)[0].decode("latin-1"))


def read_answer(sock: socket.socket, method: str = "GET") -> tuple[int, dict, bytes]:
    response = http.client.HTTPResponse(sock, method=method)
    response.begin()
    body = response.read()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


def metric(port: int, name: str, **labels: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def v2_body(rows: np.ndarray, request_id: str = "req-1") -> bytes:
    tensor = {"name": "x", "shape": list(rows.shape), "datatype": "FP64", "data": rows.tolist()}
    return json.dumps({"id": request_id, "inputs": [tensor]}).encode()


def v1_body(rows: np.ndarray) -> bytes:
    return json.dumps({"instances": rows.tolist()}).encode()


def flowers(rng: np.random.Generator, count: int) -> np.ndarray:
    """Iris flowers with a little noise: as many distinct values as a reference of thousands
    of rows wants."""
    features, _ = load_iris(return_X_y=True)
    return features[rng.integers(0, len(features), count)] + rng.normal(0, 0.05, (count, 4))
