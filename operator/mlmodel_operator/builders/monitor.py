"""The monitoring sidecar: its ConfigMap and its container in the model pod."""

from __future__ import annotations

import json
from typing import Any

from mlmodel_operator import api
from mlmodel_operator.builders.meta import (
    RESTRICTED_CONTAINER_SECURITY,
    VERSION_LABEL,
    Owner,
    monitor_config_name,
    object_meta,
)
from mlmodel_operator.monitor.settings import (
    CONFIG_DIR,
    CONFIG_FILE,
    MAX_WORKERS,
    MODEL_VERSION_ENV,
    MonitorSettings,
)
from mlmodel_operator.runtimes import Runtime

SIDECAR_NAME = "monitor"
# The processes' metric files (prometheus_client's multiprocess mode), on a memory-backed emptyDir:
# the root filesystem is read-only.
METRICS_VOLUME = "monitor-metrics"
METRICS_DIR = "/run/mlmodel-monitor"
METRICS_DIR_SIZE = "64Mi"
MEMORY_LIMIT_MI = 256  # one worker and the analyst, with the default buffers
MEMORY_PER_EXTRA_WORKER_MI = 160  # its own max_buffered_bytes (96 MiB) and heap


def sidecar_workers(cpu: str) -> int:
    """Proxy workers for a sidecar CPU request: one per whole CPU, at least one."""
    return max(1, min(MAX_WORKERS, int(api.cpu_cores(cpu))))


def monitor_enabled(spec: api.MLModelDeploymentSpec) -> bool:
    monitoring = spec.monitoring
    return monitoring.performance_tracking == "enabled" or monitoring.drift_detection == "active"


def monitor_settings(
    owner: Owner, spec: api.MLModelDeploymentSpec, runtime: Runtime, port: int
) -> MonitorSettings:
    monitoring = spec.monitoring
    return MonitorSettings(
        model_name=owner.name,
        upstream=f"http://127.0.0.1:{port}",
        upstream_ready_path=runtime.readiness_for(owner.name),
        protocol=runtime.protocol,
        upstream_metrics_path=runtime.metrics_path,
        performance_tracking=monitoring.performance_tracking == "enabled",
        drift=monitoring.drift if monitoring.drift_detection == "active" else None,
        workers=sidecar_workers(monitoring.sidecar_cpu),
    )


def build_monitor_configmap(
    owner: Owner, spec: api.MLModelDeploymentSpec, settings: MonitorSettings
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": object_meta(owner, spec, monitor_config_name(owner)),
        "data": {
            CONFIG_FILE: json.dumps(settings.model_dump(mode="json"), indent=2, sort_keys=True)
        },
    }


def build_monitor_volume() -> dict[str, Any]:
    return {"name": METRICS_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": METRICS_DIR_SIZE}}


def build_monitor_container(image: str, settings: MonitorSettings, cpu: str) -> dict[str, Any]:
    memory_limit_mi = MEMORY_LIMIT_MI + MEMORY_PER_EXTRA_WORKER_MI * (settings.workers - 1)
    return {
        "name": SIDECAR_NAME,
        "image": image,
        "command": ["mlmodel-monitor"],
        "args": [f"--config={CONFIG_DIR}/{CONFIG_FILE}"],
        # The `version` label of its metrics is the pod's, not the shared ConfigMap's: stable
        # and canary pods differ only there. A pod without the label gets "" (the downward API
        # gives an empty string for a missing label).
        "env": [
            {
                "name": MODEL_VERSION_ENV,
                "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{VERSION_LABEL}']"}},
            },
            {"name": "PROMETHEUS_MULTIPROC_DIR", "value": METRICS_DIR},
        ],
        "ports": [
            {"name": "http", "containerPort": settings.listen_port, "protocol": "TCP"},
            {"name": "metrics", "containerPort": settings.metrics_port, "protocol": "TCP"},
        ],
        # /readyz is ready only while the model server behind the proxy is.
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "resources": {
            "requests": {"cpu": api.format_cpu(cpu), "memory": "64Mi"},
            "limits": {"memory": f"{memory_limit_mi}Mi"},
        },
        "securityContext": RESTRICTED_CONTAINER_SECURITY,
        "volumeMounts": [
            {"name": "monitor-config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": METRICS_VOLUME, "mountPath": METRICS_DIR},
        ],
    }
