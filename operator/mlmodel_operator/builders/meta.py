"""Names, labels and owner references shared by every child object."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlmodel_operator import api

OPERATOR_NAME = "mlmodel-operator"
NAME_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
PART_OF_LABEL = "app.kubernetes.io/part-of"
COMPONENT_LABEL = "app.kubernetes.io/component"
VERSION_LABEL = "app.kubernetes.io/version"
MODEL_TYPE_LABEL = f"{api.GROUP}/model-type"
APP_NAME = "mlmodel"
MODEL_SERVER = "model-server"  # the component label of the model's own objects
# Set on the model Deployment by the activator when it wakes the model from zero (RFC 3339).
WOKEN_ANNOTATION = f"{api.GROUP}/woken-at"


# What the `restricted` Pod Security Standard asks of every container and pod.
RESTRICTED_CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


def restricted_pod_security(uid: int) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


@dataclass(frozen=True)
class Owner:
    """The MLModelDeployment a child belongs to."""

    name: str
    namespace: str
    uid: str

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> Owner:
        meta = body["metadata"]
        return cls(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])


def selector_labels(owner: Owner) -> dict[str, str]:
    """Labels that select the model's pods; never change (a Deployment's selector is immutable)."""
    return {NAME_LABEL: APP_NAME, INSTANCE_LABEL: owner.name}


def selector_string(owner: Owner) -> str:
    return ",".join(f"{k}={v}" for k, v in selector_labels(owner).items())


def labels(owner: Owner, spec: api.MLModelDeploymentSpec) -> dict[str, str]:
    out = {
        **selector_labels(owner),
        MANAGED_BY_LABEL: OPERATOR_NAME,
        PART_OF_LABEL: OPERATOR_NAME,
        COMPONENT_LABEL: MODEL_SERVER,
        MODEL_TYPE_LABEL: str(spec.model_type),
    }
    if spec.model_version:
        out[VERSION_LABEL] = spec.model_version
    return out


def owner_reference(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": f"{api.GROUP}/{api.VERSION}",
        "kind": api.KIND,
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def controller_uid(obj: dict[str, Any]) -> str | None:
    """The uid of the object's controller: the owner reference marked `controller: true`."""
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return next((ref.get("uid") for ref in refs if ref.get("controller")), None)


def object_meta(owner: Owner, spec: api.MLModelDeploymentSpec, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels(owner, spec),
        "ownerReferences": [owner_reference(owner)],
    }


MONITOR_CONFIG_SUFFIX = "-monitor"


def monitor_config_name(owner: Owner) -> str:
    return f"{owner.name}{MONITOR_CONFIG_SUFFIX}"
