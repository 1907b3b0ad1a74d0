"""The Gateway API HTTPRoute that attaches a model to a Gateway, and splits a canary's traffic
by weight."""

from __future__ import annotations

from typing import Any

from mlmodel_operator import api
from mlmodel_operator.builders.canary import CANARY_SUFFIX, STABLE_SUFFIX
from mlmodel_operator.builders.meta import Owner, object_meta
from mlmodel_operator.builders.service import HTTP_PORT

GATEWAY_GROUP = "gateway.networking.k8s.io"
ROUTE_API = f"{GATEWAY_GROUP}/v1"


def _backend(name: str, weight: int | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"group": "", "kind": "Service", "name": name, "port": HTTP_PORT}
    if weight is not None:
        ref["weight"] = weight
    return ref


def parent_ref(gateway: api.GatewayParent) -> dict[str, Any]:
    parent: dict[str, Any] = {"group": GATEWAY_GROUP, "kind": "Gateway", "name": gateway.name}
    if gateway.namespace:
        parent["namespace"] = gateway.namespace
    if gateway.section_name:
        parent["sectionName"] = gateway.section_name
    return parent


def build_http_route(
    owner: Owner,
    spec: api.MLModelDeploymentSpec,
    gateway: api.GatewayParent,
    canary_weight: int | None,
) -> dict[str, Any]:
    """All traffic to the model Service, or during a canary `canary_weight` percent to the
    canary's pods and the rest to the stable ones."""
    if canary_weight is None:
        backends = [_backend(owner.name)]
    else:
        backends = [
            _backend(owner.name + STABLE_SUFFIX, 100 - canary_weight),
            _backend(owner.name + CANARY_SUFFIX, canary_weight),
        ]
    return {
        "apiVersion": ROUTE_API,
        "kind": "HTTPRoute",
        "metadata": object_meta(owner, spec, owner.name),
        "spec": {"parentRefs": [parent_ref(gateway)], "rules": [{"backendRefs": backends}]},
    }
