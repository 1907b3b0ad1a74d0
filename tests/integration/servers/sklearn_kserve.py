"""A real model server for the sidecar's tests: the KServe Python model server (KServe v1 and
Open Inference Protocol v2 over REST, with Triton's binary tensor extension) serving a pickled
scikit-learn classifier, and `echo`, a model that answers each input tensor as an output of the
same name, type and shape (in binary when the client asks for binary outputs).

    python sklearn_kserve.py MODEL_PICKLE NAME HTTP_PORT
"""

from __future__ import annotations

import pickle
import sys
from typing import Any

import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer


class SklearnModel(Model):
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        with open(path, "rb") as f:
            self.estimator = pickle.load(f)
        self.ready = True

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        if isinstance(payload, InferRequest):
            features = payload.inputs[0].as_numpy()
            labels = self.estimator.predict(features).astype(np.int64)
            output = InferOutput("predict", [len(labels)], "INT64", labels.tolist())
            return InferResponse(payload.id or "", self.name, [output])
        labels = self.estimator.predict(np.asarray(payload["instances"], dtype=np.float64))
        return {"predictions": labels.tolist()}


class EchoModel(Model):
    def __init__(self) -> None:
        super().__init__("echo")
        self.ready = True

    def predict(self, payload: InferRequest, headers: dict[str, str] | None = None) -> Any:
        outputs = []
        for tensor in payload.inputs:
            output = InferOutput(tensor.name, tensor.shape, tensor.datatype)
            output.set_data_from_numpy(tensor.as_numpy(), binary_data=False)
            outputs.append(output)
        return InferResponse(
            payload.id or "",
            self.name,
            outputs,
            use_binary_outputs=payload.use_binary_outputs,
            requested_outputs=payload.request_outputs,
        )


if __name__ == "__main__":
    model_path, name, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ModelServer(http_port=port, enable_grpc=False, workers=1).start(
        [SklearnModel(name, model_path), EchoModel()]
    )
