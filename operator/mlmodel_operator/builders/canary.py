"""The canary's objects: its Deployment next to the stable one, and, for a Gateway's exact
split, one Service per side. Pure: they are derived from the stable objects the spec builds."""

from __future__ import annotations

import copy
from typing import Any

from mlmodel_operator import api
from mlmodel_operator.builders.meta import COMPONENT_LABEL, VERSION_LABEL
from mlmodel_operator.hashing import content_hash

# Canary pods carry this label; the canary Deployment selects on it, so that the two Deployments'
# ReplicaSets never claim each other's pods.
TRACK_LABEL = f"{api.GROUP}/track"
CANARY = "canary"
# The hash of a Deployment's pod template as the spec built it: the revision a rollout and the
# history speak of (the API server's defaults in the live template do not change it).
REVISION_ANNOTATION = f"{api.GROUP}/revision"
CANARY_SUFFIX = "-canary"
STABLE_SUFFIX = "-stable"
# Services that exist only as a route's backends; the ServiceMonitor does not select them, so the
# pods are not scraped twice.
BACKEND_COMPONENT = "route-backend"


def template_revision(deployment: dict[str, Any]) -> str:
    return content_hash(deployment["spec"]["template"])[:16]


def revision_of(deployment: dict[str, Any] | None) -> str | None:
    if deployment is None:
        return None
    return (deployment["metadata"].get("annotations") or {}).get(REVISION_ANNOTATION)


def with_revision(deployment: dict[str, Any], revision: str) -> dict[str, Any]:
    out = copy.deepcopy(deployment)
    out["metadata"].setdefault("annotations", {})[REVISION_ANNOTATION] = revision
    return out


def with_template(
    deployment: dict[str, Any], source: dict[str, Any], replicas: int | None
) -> dict[str, Any]:
    """`deployment` running the pod template (and revision) of the live `source` Deployment, the
    canary's track label dropped: how the stable keeps its template during a canary, and takes
    the canary's at promotion."""
    out = copy.deepcopy(deployment)
    template = copy.deepcopy(source["spec"]["template"])
    template["metadata"].get("labels", {}).pop(TRACK_LABEL, None)
    out["spec"]["template"] = template
    revision = revision_of(source)
    if revision:
        out["metadata"].setdefault("annotations", {})[REVISION_ANNOTATION] = revision
    if replicas is not None:
        out["spec"]["replicas"] = replicas
    return out


def build_canary_deployment(
    stable: dict[str, Any], replicas: int, template_from: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The canary Deployment: the stable one as the spec built it (or running the live canary's
    template), under its own name and selector."""
    out = with_template(stable, template_from, replicas) if template_from else copy.deepcopy(stable)
    out["metadata"]["name"] = stable["metadata"]["name"] + CANARY_SUFFIX
    out["spec"]["replicas"] = replicas
    out["spec"]["selector"]["matchLabels"][TRACK_LABEL] = CANARY
    out["spec"]["template"]["metadata"]["labels"][TRACK_LABEL] = CANARY
    return out


def pod_version(deployment: dict[str, Any] | None) -> str | None:
    """The model_version a live Deployment's pods run."""
    if deployment is None:
        return None
    return deployment["spec"]["template"]["metadata"].get("labels", {}).get(VERSION_LABEL)


def build_backend_services(
    service: dict[str, Any], stable_version: str | None
) -> list[dict[str, Any]]:
    """`<name>-stable` and `<name>-canary`: the model Service narrowed to one side each, as the
    route's weighted backends. Stable pods are told apart by their model_version (a canary runs
    another one); canary pods by their track label."""
    out = []
    name = service["metadata"]["name"]
    for suffix, extra in (
        (STABLE_SUFFIX, {VERSION_LABEL: stable_version or ""}),
        (CANARY_SUFFIX, {TRACK_LABEL: CANARY}),
    ):
        side = copy.deepcopy(service)
        side["metadata"]["name"] = name + suffix
        side["metadata"]["labels"][COMPONENT_LABEL] = BACKEND_COMPONENT
        side["spec"]["selector"] = {**side["spec"]["selector"], **extra}
        out.append(side)
    return out
