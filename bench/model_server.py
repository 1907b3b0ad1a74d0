"""A real model server for the sidecar benchmark, speaking Open Inference Protocol v2 over REST,
with two models: `tabular` ([batch, 64] floats) and `image` ([batch, 3, 64, 64] floats), each
answering class probabilities ([batch, 10] FP32).

    python model_server.py torch PORT   # torch models on the GPU where there is one (aiohttp)
    python model_server.py kserve PORT  # the KServe Python model server, numpy models

The torch backend is what a GPU pod runs: a small MLP and a small CNN, inference on CUDA when
available. The KServe backend is the server the tests use, for machines without torch.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np

CLASSES = 10
WIDTH = 64
IMAGE = (3, 64, 64)


def softmax_rows(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def answer(model: str, request_id: str, probabilities: np.ndarray) -> dict[str, Any]:
    return {
        "model_name": model,
        "id": request_id,
        "outputs": [
            {
                "name": "probabilities",
                "shape": list(probabilities.shape),
                "datatype": "FP32",
                "data": np.round(probabilities, 5).reshape(-1).tolist(),
            }
        ],
    }


def serve_torch(port: int) -> None:
    import torch
    from aiohttp import web

    try:
        import orjson

        loads, dumps = orjson.loads, orjson.dumps
    except ImportError:
        loads, dumps = json.loads, lambda d: json.dumps(d).encode()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    models = {
        "tabular": torch.nn.Sequential(
            torch.nn.Linear(WIDTH, 256), torch.nn.ReLU(), torch.nn.Linear(256, CLASSES)
        ),
        "image": torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, stride=2, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(16, 32, 3, stride=2, padding=1),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
            torch.nn.Linear(32, CLASSES),
        ),
    }
    for model in models.values():
        model.to(device).eval()
    print(f"torch models on {device}", flush=True)

    async def infer(request: web.Request) -> web.Response:
        name = request.match_info["model"]
        document = loads(await request.read())
        tensor = document["inputs"][0]
        array = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
        with torch.inference_mode():
            logits = models[name](torch.from_numpy(array).to(device)).cpu().numpy()
        body = dumps(answer(name, document.get("id", ""), softmax_rows(logits)))
        return web.Response(body=body, content_type="application/json")

    async def ready(request: web.Request) -> web.Response:
        return web.Response(text="ready")

    app = web.Application(client_max_size=64 * 2**20)
    app.router.add_post("/v2/models/{model}/infer", infer)
    app.router.add_get("/v2/health/ready", ready)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def serve_kserve(port: int) -> None:
    from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer

    class Linear(Model):
        """A fixed random linear classifier on the flattened input."""

        def __init__(self, name: str, features: int) -> None:
            super().__init__(name)
            self.weights = np.random.default_rng(0).normal(size=(features, CLASSES))
            self.ready = True

        def predict(self, payload: InferRequest, headers: dict[str, str] | None = None) -> Any:
            array = payload.inputs[0].as_numpy()
            rows = array.reshape(array.shape[0], -1)
            probabilities = softmax_rows(rows @ self.weights).astype(np.float32)
            output = InferOutput("probabilities", list(probabilities.shape), "FP32")
            output.set_data_from_numpy(np.round(probabilities, 5), binary_data=False)
            return InferResponse(payload.id or "", self.name, [output])

    ModelServer(http_port=port, enable_grpc=False, workers=1).start(
        [Linear("tabular", WIDTH), Linear("image", int(np.prod(IMAGE)))]
    )


if __name__ == "__main__":
    backend, port = sys.argv[1], int(sys.argv[2])
    {"torch": serve_torch, "kserve": serve_kserve}[backend](port)
