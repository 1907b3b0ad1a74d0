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
    protocol: Literal["v2", "v1"] = "v2"
    listen_port: int = SIDECAR_PROXY_PORT
    metrics_port: int = SIDECAR_METRICS_PORT
    performance_tracking: bool = True
    drift: DriftSettings | None = None  # None: drift detection inactive
