"""The model server Deployment: runtime container, monitoring sidecar, GPUs, security."""

from __future__ import annotations

import math
from typing import Any

from mlmodel_operator import api
from mlmodel_operator.builders.fetch import (
    EKS_SKIP_CONTAINERS,
    build_fetch_container,
    model_volume,
)
from mlmodel_operator.builders.llm import shm_volume, startup_budget_seconds, vllm_args
from mlmodel_operator.builders.meta import (
    RESTRICTED_CONTAINER_SECURITY,
    Owner,
    labels,
    monitor_config_name,
    object_meta,
    restricted_pod_security,
    selector_labels,
)
from mlmodel_operator.builders.monitor import build_monitor_container, build_monitor_volumes
from mlmodel_operator.fetch.uri import is_fetched
from mlmodel_operator.monitor.settings import MonitorSettings
from mlmodel_operator.runtimes import MLSERVER_IMPLEMENTATIONS, MODEL_DIR, Runtime

MODEL_CONTAINER = "model-server"
CONFIG_HASH_ANNOTATION = f"{api.GROUP}/monitor-config-hash"
GPU_TAINT_KEY = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
# Large models take minutes to load; liveness only starts once the startup probe passes.
STARTUP_PROBE_BUDGET_SECONDS = 900
# A server ready between two startup probes waits for the next one: with 10 s, that wait was most
# of an MLServer cold start (bench/cold_start.py). A probe is one local HTTP request, and only
# while the server starts.
STARTUP_PROBE_PERIOD_SECONDS = 2
# CPU requested per GPU when computational_resources.cpu is unset: data loading, pre- and
# post-processing and the serving threads that feed a GPU need cores of their own.
CPU_PER_GPU = 2


def model_port(spec: api.MLModelDeploymentSpec, runtime: Runtime) -> int:
    return spec.port if spec.port is not None else runtime.port


def model_location(
    spec: api.MLModelDeploymentSpec, runtime: Runtime
) -> tuple[list[str], dict[str, str], list[dict[str, Any]], list[dict[str, Any]]]:
    """(args, env, volumes, volume mounts) that tell the runtime where the model is."""
    uri = spec.model_uri
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    empty = serves_no_model(spec)
    if empty:
        # An empty, writable repository: the path the server is given exists, and a server
        # that loads models at run time (Triton in explicit mode) can write them there.
        volumes.append({"name": "model-store", "emptyDir": {}})
        mounts.append({"name": "model-store", "mountPath": MODEL_DIR})
        location = MODEL_DIR
    elif uri is None:
        location = MODEL_DIR  # an image of the user's own, which may hold its model there
    elif uri.startswith("pvc://"):
        claim, _, sub_path = uri.removeprefix("pvc://").partition("/")
        volumes.append(
            {"name": "model-store", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
        )
        mounts.append({"name": "model-store", "mountPath": MODEL_DIR, "readOnly": True})
        location = f"{MODEL_DIR}/{sub_path}".rstrip("/")
    elif is_fetched(uri):
        # Downloaded by the storage initializer, for every runtime (Triton, which could read
        # s3:// and gs:// itself, and the Hugging Face servers hf://, too): so the credentials
        # reach the initializer alone, and the size limit is checked before any byte is written.
        volumes.append(model_volume(spec))
        mounts.append({"name": "model-store", "mountPath": MODEL_DIR, "readOnly": True})
        location = MODEL_DIR
    else:
        location = uri
    args = [f"{runtime.model_flag}={location}"] if runtime.model_flag else []
    if empty:
        args += runtime.args_without_model
    env = {runtime.model_env: location} if runtime.model_env else {}
    return args, env, volumes, mounts


def serves_no_model(spec: api.MLModelDeploymentSpec) -> bool:
    """No model_uri and the runtime's own image, which holds no model."""
    return spec.model_uri is None and spec.image is None


def no_model_note(spec: api.MLModelDeploymentSpec, runtime: Runtime) -> str | None:
    """What status should say of a model server that was given no model, if it was."""
    if not serves_no_model(spec):
        return None
    return (
        f"no model is loaded: model_uri is unset, so {runtime.name} started with an empty "
        f"model repository at {MODEL_DIR}"
        + (" (load models through its repository API)" if runtime.args_without_model else "")
    )


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
    elif resources.gpu_allocation:
        requests["cpu"] = str(CPU_PER_GPU * resources.gpu_allocation)
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
    startup_seconds = STARTUP_PROBE_BUDGET_SECONDS
    if spec.model_type == api.ModelType.llm:
        loc_args += vllm_args(owner.name, spec, port)
        shm, shm_mount = shm_volume(spec)
        volumes.append(shm)
        mounts.append(shm_mount)
        startup_seconds = startup_budget_seconds(spec)
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
            periodSeconds=STARTUP_PROBE_PERIOD_SECONDS,
            failureThreshold=math.ceil(startup_seconds / STARTUP_PROBE_PERIOD_SECONDS),
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
        containers.append(
            build_monitor_container(monitor_image, monitor, spec.monitoring.sidecar_cpu)
        )
        volumes.append(
            {"name": "monitor-config", "configMap": {"name": monitor_config_name(owner)}}
        )
        volumes += build_monitor_volumes(spec)
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
    if is_fetched(spec.model_uri):
        # The fetcher runs the sidecar's image: our own, whatever the model server's is.
        fetcher, fetch_volumes = build_fetch_container(spec, monitor_image)
        pod_spec["initContainers"] = [fetcher]
        volumes += fetch_volumes
        if account := spec.storage.service_account_name:
            pod_spec["serviceAccountName"] = account
            annotations[EKS_SKIP_CONTAINERS] = ",".join(c["name"] for c in containers)
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
