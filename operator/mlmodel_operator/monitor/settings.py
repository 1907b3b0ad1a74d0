"""The sidecar's configuration file, written by the operator (builders/monitor.py) into a
ConfigMap and read by the sidecar at start-up."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlmodel_operator.api import SIDECAR_METRICS_PORT, SIDECAR_PROXY_PORT, DriftSettings

CONFIG_DIR = "/etc/mlmodel-monitor"
CONFIG_FILE = "config.json"
# The pod's model_version, from its app.kubernetes.io/version label (the downward API): the
# ConfigMap is shared by the stable and the canary pods, so the version comes from the pod. Set
# in the environment, even empty (a pod without the label), it overrides the configuration's.
MODEL_VERSION_ENV = "MLMODEL_MONITOR_MODEL_VERSION"
MAX_WORKERS = 64


class MonitorSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model_name: str
    model_version: str = ""  # the `version` label of every metric; see MODEL_VERSION_ENV
    upstream: str  # the model server in the same pod, e.g. http://127.0.0.1:8000
    # GET path on the model server that answers 200 when it is ready; None: a TCP connect.
    upstream_ready_path: str | None = "/v2/health/ready"
    protocol: Literal["v2", "v1", "openai"] = "v2"
    # The model server's own Prometheus metrics on its HTTP port (vLLM's /metrics), added to
    # the sidecar's scrape; None: the sidecar's metrics alone.
    upstream_metrics_path: str | None = None
    listen_host: str = "0.0.0.0"
    listen_port: int = SIDECAR_PROXY_PORT
    metrics_port: int = SIDECAR_METRICS_PORT
    performance_tracking: bool = True
    # Proxy processes sharing the listening port (SO_REUSEPORT): the operator sets one per whole
    # CPU of the sidecar's request, at least one.
    workers: int = Field(1, ge=1, le=MAX_WORKERS)
    drift: DriftSettings | None = None  # None: drift detection inactive
    # Requests larger than this are refused with 413; one that declares a larger Content-Length
    # is refused before any of its body is read.
    max_body_bytes: int = 64 * 2**20
    # Request and response bodies the proxy holds in memory at once, across all connections. A
    # request whose body does not fit waits for room (within body_timeout_seconds, else 503);
    # a large response that does not fit is streamed instead of read whole.
    max_buffered_bytes: int = 96 * 2**20
    # Bodies up to this size are analysed for drift (requests and responses); larger ones only
    # pass through.
    max_capture_bytes: int = 4 * 2**20
    # Payloads waiting for the analyst, in bytes and in count, shared out among the workers; as
    # they fill, an even share is kept (sampled), and beyond either bound payloads are dropped
    # (and counted), never waited for.
    queue_bytes: int = 32 * 2**20
    queue_size: int = 1000
    upstream_timeout_seconds: float = 300.0
    # A request body not received in full within this time is answered 408 and its connection
    # closed: a client that stops sending cannot hold a connection and its buffer.
    body_timeout_seconds: float = 60.0
    # Client connections served at once; beyond this a new connection gets 503 and is closed.
    max_connections: int = 1024
    # An idle keep-alive connection from a client is closed after this long.
    keepalive_timeout_seconds: float = 75.0
    # Limits of the HTTP parser for client requests, at least those of the model servers
    # (uvicorn and Triton accept 1,000+ headers and request lines over 8 KiB). A request over
    # them is answered 400 and counted. A request head can hold up to max_headers *
    # max_header_field_bytes (32 MiB by default), times max_connections at worst.
    max_request_line_bytes: int = 64 * 2**10
    max_header_field_bytes: int = 16 * 2**10
    max_headers: int = 2048

    @classmethod
    def load(cls, text: str, environ: Mapping[str, str]) -> MonitorSettings:
        """The settings in a JSON configuration, with the pod's own values from `environ`."""
        settings = cls.model_validate_json(text)
        if MODEL_VERSION_ENV in environ:
            settings = settings.model_copy(update={"model_version": environ[MODEL_VERSION_ENV]})
        return settings

    @model_validator(mode="after")
    def _a_body_fits_the_buffer(self) -> MonitorSettings:
        if self.max_body_bytes > self.max_buffered_bytes:
            raise ValueError("max_body_bytes must not exceed max_buffered_bytes")
        return self
