"""Pure: between the reconcile and the state machine. What the cache shows becomes the machine's
Facts; its Decision becomes the objects to apply (the stable Deployment's template and replicas,
the canary Deployment, a Gateway's backends and weights) and to delete."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from mlmodel_operator import api
from mlmodel_operator.builders import Children, ObjectRef, Owner
from mlmodel_operator.builders.canary import (
    CANARY_SUFFIX,
    STABLE_SUFFIX,
    TRACK_LABEL,
    build_backend_services,
    build_canary_deployment,
    pod_version,
    revision_of,
    with_revision,
    with_template,
)
from mlmodel_operator.builders.canary import template_revision as spec_revision
from mlmodel_operator.builders.route import build_http_route
from mlmodel_operator.rollout.machine import OVERRIDE_ANNOTATION, Decision, Facts, step_replicas


@dataclass(frozen=True)
class Live:
    """The model's Deployments as the cache has them (None: not there)."""

    stable: dict[str, Any] | None
    canary: dict[str, Any] | None


def rolled_out(deployment: dict[str, Any] | None, replicas: int, revision: str | None) -> bool:
    """Whether a live Deployment runs `revision` with exactly `replicas` pods, all ready, as
    seen by the Deployment controller after the last change."""
    if deployment is None or revision_of(deployment) != revision:
        return False
    status = deployment.get("status") or {}
    observed = status.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 0)
    counts = (
        deployment["spec"].get("replicas"),
        status.get("replicas", 0),
        status.get("updatedReplicas", 0),
        status.get("readyReplicas", 0),
    )
    return observed and all(count == replicas for count in counts)


def override_of(body: dict[str, Any]) -> str | None:
    return (body["metadata"].get("annotations") or {}).get(OVERRIDE_ANNOTATION)


def facts_from(
    spec: api.MLModelDeploymentSpec,
    stable_built: dict[str, Any],
    live: Live,
    previous: api.RolloutStatus | None,
    override: str | None,
    exact_split: bool,
    autoscaled: bool = False,
) -> Facts:
    rollout = spec.rollout
    steps = tuple(rollout.steps)
    replicas = spec.replicas
    if autoscaled and live.stable is not None:
        # The autoscaler's count: the canary is sized beside it.
        replicas = live.stable["spec"].get("replicas", replicas)
    canary_ready = False
    if previous is not None and previous.step and previous.canary_revision:
        expected = step_replicas(steps, replicas, previous.step, autoscaled)
        canary_ready = rolled_out(
            live.canary, expected.canary, previous.canary_revision
        ) and _settled(live.stable, expected.stable)
    promoted_revision = revision_of(live.canary) or (previous and previous.canary_revision)
    stable_status = (live.stable or {}).get("status") or {}
    stable_new_ready = (
        min(stable_status.get("updatedReplicas", 0), stable_status.get("readyReplicas", 0))
        if revision_of(live.stable) == promoted_revision
        else 0
    )
    return Facts(
        canary_strategy=rollout.strategy == api.RolloutStrategy.canary,
        steps=steps,
        interval_seconds=rollout.analysis.interval_seconds,
        spec_version=spec.model_version,
        spec_revision=spec_revision(stable_built),
        stable_exists=live.stable is not None,
        stable_version=pod_version(live.stable),
        replicas=replicas,
        canary_ready=canary_ready,
        stable_new_ready=stable_new_ready,
        promotion_done=rolled_out(live.stable, replicas, promoted_revision),
        gpu=spec.computational_resources.gpu_allocation > 0,
        exact_split=exact_split,
        autoscaled=autoscaled,
        override=override,
    )


def _settled(deployment: dict[str, Any] | None, replicas: int) -> bool:
    """The stable side is down to its share: no pod beyond it still serves."""
    if deployment is None:
        return replicas == 0
    status = deployment.get("status") or {}
    observed = status.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 0)
    return (
        observed
        and deployment["spec"].get("replicas") == replicas
        and (status.get("replicas", 0) <= replicas)
    )


def arrange(
    owner: Owner,
    spec: api.MLModelDeploymentSpec,
    children: Children,
    decision: Decision,
    live: Live,
    gateway: bool,
    autoscaled: bool = False,
) -> Children:
    """The children to apply and to delete, as the decision has them: the stable Deployment with
    the template it keeps or takes, the canary Deployment or its deletion, and with a Gateway the
    route's weights and backend Services."""
    apply: list[dict[str, Any]] = []
    absent = list(children.absent)
    sources = {"stable": live.stable, "canary": live.canary}
    replicas = decision.replicas
    canary_name = owner.name + CANARY_SUFFIX
    route_weight = decision.route_weight if decision.canary == "spec" else None
    for obj in children.apply:
        kind, name = obj["kind"], obj["metadata"]["name"]
        if kind == "Deployment" and name == owner.name:
            spec_built = with_revision(obj, spec_revision(obj))
            source = sources.get(decision.stable)
            # An autoscaler's count is its own: never applied.
            stable_replicas = replicas.stable if replicas is not None and not autoscaled else None
            if source is not None:
                stable = with_template(spec_built, source, stable_replicas)
            else:
                stable = _with_replicas(spec_built, stable_replicas)
            apply.append(stable)
            if decision.canary is not None and replicas is not None:
                template = live.canary if decision.canary == "canary" else None
                apply.append(build_canary_deployment(spec_built, replicas.canary, template))
            else:
                absent.append(ObjectRef("apps/v1", "Deployment", owner.namespace, canary_name))
        elif kind == "Service" and name == owner.name:
            apply.append(obj)
            if gateway and route_weight is not None:
                apply += build_backend_services(obj, pod_version(live.stable))
            else:
                absent += [
                    ObjectRef("v1", "Service", owner.namespace, owner.name + suffix)
                    for suffix in (STABLE_SUFFIX, CANARY_SUFFIX)
                ]
        elif kind == "HTTPRoute" and gateway and route_weight is not None and spec.rollout.gateway:
            apply.append(build_http_route(owner, spec, spec.rollout.gateway, route_weight))
        else:
            apply.append(obj)
    return dataclasses.replace(children, apply=apply, absent=absent)


def _with_replicas(deployment: dict[str, Any], replicas: int | None) -> dict[str, Any]:
    if replicas is None:
        return deployment
    return {**deployment, "spec": {**deployment["spec"], "replicas": replicas}}


def split_pods(pods: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(stable pods, canary pods), by the canary's track label."""
    stable, canary = [], []
    for pod in pods:
        labels = pod.get("metadata", {}).get("labels") or {}
        (canary if labels.get(TRACK_LABEL) else stable).append(pod)
    return stable, canary
