"""The model server Deployment: runtime container, monitoring sidecar, GPUs, security."""

from __future__ import annotations

from typing import Any

from mlmodel_operator import api
from mlmodel_operator.builders.meta import (
    RESTRICTED_CONTAINER_SECURITY,
    Owner,
    labels,
    monitor_config_name,
    object_meta,
    restricted_pod_security,
    selector_labels,
)
from mlmodel_operator.builders.monitor import build_monitor_container
from mlmodel_operator.monitor.settings import MonitorSettings
from mlmodel_operator.runtimes import MLSERVER_IMPLEMENTATIONS, MODEL_DIR, Runtime

MODEL_CONTAINER = "model-server"
CONFIG_HASH_ANNOTATION = f"{api.GROUP}/monitor-config-hash"
GPU_TAINT_KEY = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
# Large models take minutes to load; liveness only starts once the startup probe passes.
STARTUP_PROBE_BUDGET_SECONDS = 900


def model_port(spec: api.MLModelDeploymentSpec, runtime: Runtime) -> int:
    return spec.port if spec.port is not None else runtime.port


def model_location(
    spec: api.MLModelDeploymentSpec, runtime: Runtime
) -> tuple[list[str], dict[str, str], list[dict[str, Any]], list[dict[str, Any]]]:
    """(args, env, volumes, volume mounts) that tell the runtime where the model is."""
    uri = spec.model_uri
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    if uri and uri.startswith("hf://") and runtime.hub_flag:
        return [f"{runtime.hub_flag}={uri.removeprefix('hf://')}"], {}, volumes, mounts
    if uri is None:
        location = MODEL_DIR
    elif uri.startswith("pvc://"):
        claim, _, sub_path = uri.removeprefix("pvc://").partition("/")
        volumes.append(
            {"name": "model-store", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        )
        mounts.append({"name": "model-store", "mountPath": MODEL_DIR, "readOnly": True})
        location = f"{MODEL_DIR}/{sub_path}".rstrip("/")
    else:
        location = uri  # s3://, gs://, https:// and hf:// go to the runtime as they are
    args = [f"{runtime.model_flag}={location}"] if runtime.model_flag else []
    env = {runtime.model_env: location} if runtime.model_env else {}
    return args, env, volumes, mounts


def _probe(path: str | None, **timing: int) -> dict[str, Any]:
    action = (
        {"httpGet": {"path": path, "port": "model-http"}}
        if path
        else {"tcpSocket": {"port": "model-http"}}
    )
    return {**action, **timing}


def _resources(spec: api.MLModelDeploymentSpec) -> dict[str, Any]:
    resources = spec.computational_resources
    memory = api.format_memory(resources.memory_bytes)
    requests: dict[str, str] = {"memory": memory}
    limits: dict[str, str] = {"memory": memory}
    if resources.cpu:
        requests["cpu"] = api.format_cpu(resources.cpu)
    if resources.gpu_allocation:
        limits[resources.gpu_resource] = str(resources.gpu_allocation)
    return {"requests": requests, "limits": limits}


def build_model_container(
    owner: Owner, spec: api.MLModelDeploymentSpec, runtime: Runtime
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The model server container and the volumes it needs."""
    port = model_port(spec, runtime)
    ready_path = runtime.readiness_for(owner.name)
    loc_args, loc_env, volumes, mounts = model_location(spec, runtime)
    env = {
        **runtime.env,
        "MODEL_NAME": owner.name,
        # The root filesystem is read-only; caches go to the /tmp volume.
        "HOME": "/tmp",
        **loc_env,
    }
    if spec.model_version:
        env["MODEL_VERSION"] = spec.model_version
    if runtime.name == "mlserver":
        env["MLSERVER_MODEL_NAME"] = owner.name
        env["MLSERVER_MODEL_IMPLEMENTATION"] = MLSERVER_IMPLEMENTATIONS[spec.model_type]
    ports = [{"name": "model-http", "containerPort": port, "protocol": "TCP"}]
    if runtime.metrics_port:
        ports.append(
            {"name": "model-metrics", "containerPort": runtime.metrics_port, "protocol": "TCP"}
        )
    container: dict[str, Any] = {
        "name": MODEL_CONTAINER,
        "image": spec.image or runtime.image,
        "env": [{"name": k, "value": v} for k, v in env.items()],
        "ports": ports,
        "resources": _resources(spec),
        "startupProbe": _probe(
            ready_path,
            periodSeconds=10,
            failureThreshold=STARTUP_PROBE_BUDGET_SECONDS // 10,
        ),
        "readinessProbe": _probe(ready_path, periodSeconds=5, failureThreshold=3),
        "livenessProbe": _probe(
            runtime.liveness_path or ready_path, periodSeconds=10, failureThreshold=3
        ),
        "securityContext": RESTRICTED_CONTAINER_SECURITY,
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, *mounts],
    }
    if runtime.command:
        container["command"] = runtime.command
    if args := [*runtime.args, *loc_args]:
        container["args"] = args
    return container, volumes


def rollout_strategy(spec: api.MLModelDeploymentSpec) -> dict[str, Any]:
    if spec.computational_resources.gpu_allocation:
        # Replace pods one at a time without a surge pod: an update never needs spare GPUs.
        return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}}


def gpu_placement(spec: api.MLModelDeploymentSpec) -> dict[str, Any]:
    resources = spec.computational_resources
    if not resources.gpu_allocation:
        return {}
    # MIG profiles (nvidia.com/mig-*) sit on nodes tainted like any NVIDIA GPU node.
    taint = GPU_TAINT_KEY if resources.gpu_resource.startswith("nvidia.com/") else None
    placement: dict[str, Any] = {
        "tolerations": [
            {
                "key": taint or resources.gpu_resource,
                "operator": "Exists",
                "effect": "NoSchedule",
            }
        ]
    }
    if resources.gpu_type:
        placement["nodeSelector"] = {GPU_PRODUCT_LABEL: resources.gpu_type}
    return placement


def build_deployment(
    owner: Owner,
    spec: api.MLModelDeploymentSpec,
    runtime: Runtime,
    *,
    monitor: MonitorSettings | None,
    monitor_image: str,
    monitor_config_hash: str | None,
    progress_deadline_seconds: int,
) -> dict[str, Any]:
    model, volumes = build_model_container(owner, spec, runtime)
    containers = [model]
    volumes = [{"name": "tmp", "emptyDir": {}}, *volumes]
    annotations: dict[str, str] = {}
    if monitor is not None:
        containers.append(build_monitor_container(monitor_image, monitor))
        volumes.append(
            {"name": "monitor-config", "configMap": {"name": monitor_config_name(owner)}}
        )
        annotations = {
            # A new sidecar configuration rolls the pods, which read it only at start-up.
            CONFIG_HASH_ANNOTATION: monitor_config_hash or "",
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(monitor.metrics_port),
            "prometheus.io/path": "/metrics",
        }
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": restricted_pod_security(runtime.user_id),
        "containers": containers,
        "volumes": volumes,
        **gpu_placement(spec),
    }
    template_meta: dict[str, Any] = {"labels": labels(owner, spec)}
    if annotations:
        template_meta["annotations"] = annotations
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_meta(owner, spec, owner.name),
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": selector_labels(owner)},
            "strategy": rollout_strategy(spec),
            "progressDeadlineSeconds": progress_deadline_seconds,
            "revisionHistoryLimit": 3,
            "template": {"metadata": template_meta, "spec": pod_spec},
        },
    }
