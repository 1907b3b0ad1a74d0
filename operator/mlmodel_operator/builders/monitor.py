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
    PAYLOAD_AUTH_DIR,
    PAYLOAD_AUTH_KEY,
    POD_IP_ENV,
    GroundTruthSettings,
    MonitorSettings,
    PayloadLoggingSettings,
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
PAYLOAD_AUTH_VOLUME = "monitor-sink-auth"


def peers_service_name(owner: Owner) -> str:
    """The headless Service resolving to every pod of the model, for feedback sent on."""
    return f"{owner.name}-peers"


def sidecar_workers(cpu: str) -> int:
    """Proxy workers for a sidecar CPU request: one per whole CPU, at least one."""
    return max(1, min(MAX_WORKERS, int(api.cpu_cores(cpu))))


def monitor_enabled(spec: api.MLModelDeploymentSpec) -> bool:
    monitoring = spec.monitoring
    return (
        monitoring.performance_tracking == "enabled"
        or monitoring.drift_detection == "active"
        or monitoring.ground_truth is not None
        or monitoring.payload_logging is not None
    )


def ground_truth_settings(
    owner: Owner, truth: api.GroundTruth | None
) -> GroundTruthSettings | None:
    if truth is None:
        return None
    return GroundTruthSettings(
        task=truth.task,
        output=truth.output,
        ttl_seconds=truth.ttl_seconds,
        max_pending_bytes=api.parse_memory(truth.max_pending),
        peers_host=f"{peers_service_name(owner)}.{owner.namespace}.svc",
    )


def payload_logging_settings(logging: api.PayloadLogging | None) -> PayloadLoggingSettings | None:
    if logging is None:
        return None
    auth = f"{PAYLOAD_AUTH_DIR}/{PAYLOAD_AUTH_KEY}" if logging.secret_name else None
    return PayloadLoggingSettings(
        url=logging.url,
        mode=logging.mode,
        sample_percent=logging.sample_percent,
        batch_size=logging.batch_size,
        batch_interval_seconds=logging.batch_interval_seconds,
        authorization_file=auth,
        max_queued_bytes=api.parse_memory(logging.max_queued),
    )


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
        ground_truth=ground_truth_settings(owner, monitoring.ground_truth),
        payload_logging=payload_logging_settings(monitoring.payload_logging),
        namespace=owner.namespace,
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


def build_monitor_volumes(spec: api.MLModelDeploymentSpec) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = [
        {"name": METRICS_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": METRICS_DIR_SIZE}}
    ]
    logging = spec.monitoring.payload_logging
    if logging is not None and logging.secret_name:
        volumes.append(
            {
                "name": PAYLOAD_AUTH_VOLUME,
                "secret": {
                    "secretName": logging.secret_name,
                    "items": [{"key": PAYLOAD_AUTH_KEY, "path": PAYLOAD_AUTH_KEY}],
                },
            }
        )
    return volumes


def sidecar_memory_limit_mi(settings: MonitorSettings) -> int:
    """The sidecar's memory limit: its buffers, plus in each worker the predictions waiting for
    their truth and the events waiting for the payload sink."""
    per_worker = 0
    if settings.ground_truth is not None:
        per_worker += settings.ground_truth.max_pending_bytes
    if settings.payload_logging is not None:
        per_worker += settings.payload_logging.max_queued_bytes
    extra_mi = -(-per_worker * settings.workers // 2**20)
    return MEMORY_LIMIT_MI + MEMORY_PER_EXTRA_WORKER_MI * (settings.workers - 1) + extra_mi


def build_monitor_container(image: str, settings: MonitorSettings, cpu: str) -> dict[str, Any]:
    env: list[dict[str, Any]] = [
        {
            "name": MODEL_VERSION_ENV,
            "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{VERSION_LABEL}']"}},
        },
        {"name": "PROMETHEUS_MULTIPROC_DIR", "value": METRICS_DIR},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "monitor-config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": METRICS_VOLUME, "mountPath": METRICS_DIR},
    ]
    ports = [
        {"name": "http", "containerPort": settings.listen_port, "protocol": "TCP"},
        {"name": "metrics", "containerPort": settings.metrics_port, "protocol": "TCP"},
    ]
    if settings.prediction_ids:
        env.append({"name": POD_IP_ENV, "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
    if settings.ground_truth is not None:
        base = settings.ground_truth.feedback_port_base
        ports += [
            {"name": f"feedback-{i}", "containerPort": base + i, "protocol": "TCP"}
            for i in range(settings.workers)
        ]
    logging = settings.payload_logging
    if logging is not None and logging.authorization_file is not None:
        mounts.append(
            {"name": PAYLOAD_AUTH_VOLUME, "mountPath": PAYLOAD_AUTH_DIR, "readOnly": True}
        )
    return {
        "name": SIDECAR_NAME,
        "image": image,
        "command": ["mlmodel-monitor"],
        "args": [f"--config={CONFIG_DIR}/{CONFIG_FILE}"],
        # The `version` label of its metrics is the pod's, not the shared ConfigMap's: stable
        # and canary pods differ only there. A pod without the label gets "" (the downward API
        # gives an empty string for a missing label).
        "env": env,
        "ports": ports,
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
            "limits": {"memory": f"{sidecar_memory_limit_mi(settings)}Mi"},
        },
        "securityContext": RESTRICTED_CONTAINER_SECURITY,
        "volumeMounts": mounts,
    }
