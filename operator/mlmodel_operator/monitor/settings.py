"""The sidecar's configuration file, written by the operator (builders/monitor.py) into a
ConfigMap and read by the sidecar at start-up."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mlmodel_operator.api import (
    FEEDBACK_PORTS,
    SIDECAR_METRICS_PORT,
    SIDECAR_PROXY_PORT,
    DriftSettings,
)

CONFIG_DIR = "/etc/mlmodel-monitor"
CONFIG_FILE = "config.json"
# The pod's model_version, from its app.kubernetes.io/version label (the downward API): the
# ConfigMap is shared by the stable and the canary pods, so the version comes from the pod. Set
# in the environment, even empty (a pod without the label), it overrides the configuration's.
MODEL_VERSION_ENV = "MLMODEL_MONITOR_MODEL_VERSION"
MAX_WORKERS = len(FEEDBACK_PORTS)
# The pod's IP (the downward API's status.podIP): part of every prediction id, so that feedback
# reaching another replica can be sent on to the one holding the prediction.
POD_IP_ENV = "MLMODEL_MONITOR_POD_IP"
# Proxy worker i takes feedback sent on by its peers on FEEDBACK_PORT_BASE + i: the connections of
# the shared port go to any worker, and a prediction waits in the memory of the one that answered.
FEEDBACK_PORT_BASE = FEEDBACK_PORTS.start
# The mounted Secret with the payload sink's Authorization header (key `authorization`).
PAYLOAD_AUTH_DIR = "/etc/mlmodel-monitor-sink"
PAYLOAD_AUTH_KEY = "authorization"


class GroundTruthSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    task: Literal["classification", "regression"]
    output: str | None = None  # None: the first output (v2), `predictions` (v1)
    ttl_seconds: int = Field(86_400, ge=1)
    max_pending_bytes: int = Field(64 * 2**20, ge=1)
    # The headless Service naming every pod of the model (all versions); feedback is sent on
    # only to addresses it resolves to. None: every prediction is held by this pod.
    peers_host: str | None = None
    feedback_port_base: int = FEEDBACK_PORT_BASE


class PayloadLoggingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    mode: Literal["all", "request", "response"] = "all"
    sample_percent: float = Field(100.0, gt=0, le=100)
    batch_size: int = Field(1, ge=1)
    batch_interval_seconds: float = Field(1.0, gt=0)
    # A file holding the Authorization header's value (a mounted Secret's key); None: none.
    authorization_file: str | None = None
    max_queued_bytes: int = Field(16 * 2**20, ge=1)
    # A body (request, answer, or a stream's answer) is kept for its event up to this size; past
    # it the event carries the first bytes and says it was truncated.
    max_capture_bytes: int = Field(4 * 2**20, ge=1)
    # One delivery attempt to the sink; a slower answer counts as a failure and is retried.
    timeout_seconds: float = Field(10.0, gt=0)


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
    ground_truth: GroundTruthSettings | None = None  # None: no feedback endpoint
    payload_logging: PayloadLoggingSettings | None = None  # None: payloads not logged
    namespace: str = ""  # the model's, carried by payload events
    pod_ip: str = ""  # see POD_IP_ENV
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
        if POD_IP_ENV in environ:
            settings = settings.model_copy(update={"pod_ip": environ[POD_IP_ENV]})
        return settings

    @property
    def prediction_ids(self) -> bool:
        """Whether inference answers carry a prediction id."""
        return self.ground_truth is not None or self.payload_logging is not None

    @model_validator(mode="after")
    def _a_body_fits_the_buffer(self) -> MonitorSettings:
        if self.max_body_bytes > self.max_buffered_bytes:
            raise ValueError("max_body_bytes must not exceed max_buffered_bytes")
        return self
