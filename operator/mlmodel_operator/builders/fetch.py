"""The storage initializer: an init container that downloads model_uri into the model volume,
and the only container in the pod that gets the storage credentials."""

from __future__ import annotations

from typing import Any

from mlmodel_operator import api
from mlmodel_operator.builders.meta import RESTRICTED_CONTAINER_SECURITY
from mlmodel_operator.runtimes import MODEL_DIR

FETCH_CONTAINER = "model-fetch"
MODEL_VOLUME = "model-store"
TOKEN_VOLUME = "fetch-token"
TOKEN_DIR = "/var/run/secrets/mlmodel/fetch-token"
TOKEN_SECONDS = 3600
# EKS's pod identity webhook injects role credentials into every container of a pod whose
# ServiceAccount carries a role, unless told to skip some: the others never get them.
EKS_SKIP_CONTAINERS = "eks.amazonaws.com/skip-containers"


def model_volume(spec: api.MLModelDeploymentSpec) -> dict[str, Any]:
    size = api.format_memory(api.model_size_limit(spec))
    return {"name": MODEL_VOLUME, "emptyDir": {"sizeLimit": size}}


def build_fetch_container(
    spec: api.MLModelDeploymentSpec, image: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The init container and the volumes only it mounts (the ServiceAccount token)."""
    assert spec.model_uri is not None
    storage = spec.storage
    args = [spec.model_uri, MODEL_DIR, f"--size-limit={api.model_size_limit(spec)}"]
    if storage.endpoint_url:
        args.append(f"--endpoint-url={storage.endpoint_url}")
    env = [{"name": "HOME", "value": "/tmp"}]
    mounts = [
        {"name": MODEL_VOLUME, "mountPath": MODEL_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    volumes: list[dict[str, Any]] = []
    if storage.service_account_name:
        token = {
            "audience": storage.token_audience,
            "expirationSeconds": TOKEN_SECONDS,
            "path": "token",
        }
        volumes.append(
            {"name": TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": token}]}}
        )
        mounts.append({"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True})
        if spec.model_uri.startswith("s3://"):
            env.append({"name": "AWS_WEB_IDENTITY_TOKEN_FILE", "value": f"{TOKEN_DIR}/token"})
    container: dict[str, Any] = {
        "name": FETCH_CONTAINER,
        "image": image,
        "command": ["mlmodel-fetch"],
        "args": args,
        "env": env,
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"memory": "512Mi"},
        },
        # The fetcher's one-line reason is what status reports; its log if it died without one.
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": RESTRICTED_CONTAINER_SECURITY,
        "volumeMounts": mounts,
    }
    if storage.secret_name:
        # A missing Secret shows as CreateContainerConfigError on this container, in status.
        container["envFrom"] = [{"secretRef": {"name": storage.secret_name}}]
    return container, volumes
