"""The sidecar's configuration file, written by the operator (builders/monitor.py) into a
ConfigMap and read by the sidecar at start-up."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from mlmodel_operator.api import SIDECAR_METRICS_PORT, SIDECAR_PROXY_PORT, DriftSettings

CONFIG_DIR = "/etc/mlmodel-monitor"
CONFIG_FILE = "config.json"


class MonitorSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model_name: str
    upstream: str  # the model server in the same pod, e.g. http://127.0.0.1:8000
    # GET path on the model server that answers 200 when it is ready; None: a TCP connect.
    upstream_ready_path: str | None = "/v2/health/ready"
    protocol: Literal["v2", "v1"] = "v2"
    listen_host: str = "0.0.0.0"
    listen_port: int = SIDECAR_PROXY_PORT
    metrics_port: int = SIDECAR_METRICS_PORT
    performance_tracking: bool = True
    drift: DriftSettings | None = None  # None: drift detection inactive
    # Requests larger than this are refused with 413 before they reach the model server.
    max_body_bytes: int = 64 * 2**20
    # Responses up to this size are kept for output drift; larger ones only pass through.
    max_capture_bytes: int = 4 * 2**20
    upstream_timeout_seconds: float = 300.0
    # Payloads waiting for the drift worker; more are dropped (and counted), never waited for.
    queue_size: int = 1000
