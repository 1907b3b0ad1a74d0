"""The runtime catalog: which model server runs each model_type, and how it is told where the
model is.

Defaults below; an installation overrides images (or any field) with a YAML or JSON file mapping
runtime names to fields (`--runtime-catalog`, Helm value `runtimeCatalog`), and a resource
overrides the image with `spec.image`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlmodel_operator.api import ModelType

MODEL_DIR = "/mnt/models"


class Runtime(BaseModel):
    """A model server: its image, ports, health endpoints and how it takes a model location."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    image: str
    port: int = Field(ge=1, le=65535, description="HTTP inference port")
    metrics_port: int | None = Field(None, description="the server's own Prometheus port")
    metrics_path: str | None = Field(
        None,
        description="path of the server's own Prometheus metrics on its HTTP port, which the "
        "sidecar adds to its own scrape (one target per pod gives both)",
    )
    protocol: Literal["v2", "v1", "openai"] = Field(
        "v2", description="REST protocol: OIP v2, KServe v1 or OpenAI"
    )
    readiness_path: str | None = Field(
        None, description="HTTP GET path ({model}: the model's name); None probes the port"
    )
    liveness_path: str | None = None
    # How the model location reaches the server: a command-line flag or an environment variable.
    model_flag: str | None = None
    model_env: str | None = None
    command: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    args_without_model: list[str] = Field(
        default_factory=list,
        description="extra args when model_uri is unset and the server gets an empty repository",
    )
    env: dict[str, str] = Field(default_factory=dict)
    user_id: int = Field(1000, description="UID the image's server runs as (non-root)")

    def readiness_for(self, model: str) -> str | None:
        """The readiness path of the server serving `model`."""
        return self.readiness_path.replace("{model}", model) if self.readiness_path else None


DEFAULT_RUNTIMES: dict[str, Runtime] = {
    "triton": Runtime(
        name="triton",
        image="nvcr.io/nvidia/tritonserver:25.01-py3",
        port=8000,
        metrics_port=8002,
        readiness_path="/v2/health/ready",
        liveness_path="/v2/health/live",
        command=["tritonserver"],
        args=["--http-port=8000", "--grpc-port=8001", "--metrics-port=8002"],
        model_flag="--model-repository",
        # No model_uri: start with the empty repository and no model, and let models be loaded
        # through the repository API (POST /v2/repository/models/<name>/load).
        args_without_model=["--model-control-mode=explicit"],
    ),
    "mlserver": Runtime(
        name="mlserver",
        image="docker.io/seldonio/mlserver:1.7.1",
        port=8080,
        metrics_port=8082,
        # The model's own readiness: MLServer's /v2/health/ready answers 200 with no model
        # loaded (one that failed to load is dropped from its registry), and before it is.
        readiness_path="/v2/models/{model}/ready",
        liveness_path="/v2/health/live",
        command=["mlserver", "start", MODEL_DIR],
        env={"MLSERVER_HTTP_PORT": "8080", "MLSERVER_METRICS_PORT": "8082"},
        model_env="MLSERVER_MODEL_URI",
    ),
    "huggingface": Runtime(
        name="huggingface",
        image="docker.io/kserve/huggingfaceserver:v0.15.2",
        port=8080,
        protocol="v1",
        readiness_path="/v2/health/ready",
        liveness_path="/v2/health/live",
        args=["--http_port=8080"],
        model_flag="--model_dir",
    ),
    # vLLM's OpenAI-compatible server. The module, not the `vllm serve` entry point: the module
    # runs in every vLLM image, including builds installed without package metadata.
    "vllm": Runtime(
        name="vllm",
        image="docker.io/vllm/vllm-openai:v0.32.0",
        port=8000,
        protocol="openai",
        # /health answers as soon as the process is up; /v1/models once the model is served.
        readiness_path="/v1/models",
        liveness_path="/health",
        metrics_path="/metrics",
        command=["python3", "-m", "vllm.entrypoints.openai.api_server"],
        model_flag="--model",
        # The weights are in the pod: never ask a hub for them, nor send usage reports out.
        env={"HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"},
    ),
    # The Inference Extension's endpoint picker (llm-d's), run beside an `llm` model that is
    # served through an InferencePool: `port` is its gRPC ext-proc port. The operator adds the
    # pool and health-port flags; these args are the rest. Cleartext gRPC, as the picker's
    # Service announces (appProtocol kubernetes.io/h2c); metrics without a bearer token, like
    # the sidecar's.
    "endpoint-picker": Runtime(
        name="endpoint-picker",
        image="ghcr.io/llm-d/llm-d-router-endpoint-picker:v0.11.0",
        port=9002,
        metrics_port=9090,
        protocol="openai",
        args=[
            "--config-file=/config/plugins.yaml",
            "--secure-serving=false",
            "--metrics-endpoint-auth=false",
            "--tracing=false",
            "--zap-encoder=json",
        ],
        user_id=65532,  # distroless' nonroot
    ),
    "custom": Runtime(
        name="custom",
        image="",  # always spec.image
        port=8080,
        model_env="MODEL_URI",
    ),
}

RUNTIME_FOR_MODEL_TYPE: dict[ModelType, str] = {
    ModelType.neural_network: "triton",
    ModelType.onnx: "triton",
    ModelType.tensorflow: "triton",
    ModelType.pytorch: "triton",
    ModelType.sklearn: "mlserver",
    ModelType.xgboost: "mlserver",
    ModelType.lightgbm: "mlserver",
    ModelType.huggingface: "huggingface",
    ModelType.llm: "vllm",
    ModelType.custom: "custom",
}

# MLServer picks its inference runtime from this variable.
MLSERVER_IMPLEMENTATIONS: dict[ModelType, str] = {
    ModelType.sklearn: "mlserver_sklearn.SKLearnModel",
    ModelType.xgboost: "mlserver_xgboost.XGBoostModel",
    ModelType.lightgbm: "mlserver_lightgbm.LightGBMModel",
}


class CatalogError(ValueError):
    """The runtime catalog file cannot be used; the message names the file and the entry."""


def load_catalog(path: Path | None) -> dict[str, Runtime]:
    """The default catalog with the overrides from `path` (YAML or JSON) merged in."""
    if path is None:
        return dict(DEFAULT_RUNTIMES)
    try:
        text = path.read_text()
        overrides = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as err:
        raise CatalogError(f"runtime catalog {path}: {err}") from err
    if not isinstance(overrides, dict | None):
        raise CatalogError(f"runtime catalog {path}: expected a mapping of runtime names")
    catalog = dict(DEFAULT_RUNTIMES)
    for name, fields in (overrides or {}).items():
        if not isinstance(fields, dict):
            raise CatalogError(f"runtime catalog {path}: {name}: expected a mapping of fields")
        base = catalog.get(name)
        merged = {**(base.model_dump() if base else {"name": name}), **fields}
        try:
            catalog[name] = Runtime.model_validate(merged)
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
            )
            raise CatalogError(f"runtime catalog {path}: {name}: {problems}") from err
    return catalog


PICKER_RUNTIME = "endpoint-picker"


def runtime_for(model_type: ModelType | str, catalog: dict[str, Runtime]) -> Runtime:
    return catalog[RUNTIME_FOR_MODEL_TYPE[ModelType(model_type)]]
