"""The one idempotent reconcile: read the resource from the cache, apply its children, write its
status.

Level-based: every trigger (the resource or a child changed, the resync) calls the same function,
which looks only at the current state, never at what changed. It reads only the cache, so a
reconcile of an unchanged resource sends nothing at all. The cache may lag behind the API server;
what keeps that safe:

- applies are server-side and idempotent, so applying against a stale copy is harmless; and a
  child edited or deleted by hand comes back through the watch as a change, which reconciles;
- the status is written with the resource's cached resourceVersion as a precondition, so a status
  computed from an older spec is refused (409) instead of stored; the resource is then read fresh
  and the reconcile retried;
- the reconcile's own writes go into the cache at once, so the next one does not repeat them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from mlmodel_operator import api, metrics
from mlmodel_operator.builders import BuildSettings, ObjectRef, Owner, build_children
from mlmodel_operator.builders.autoscaling import (
    HANDOVER_MANAGER,
    HPA_KIND,
    KEDA_KIND,
    replicas_handover,
    starting_replicas,
)
from mlmodel_operator.builders.canary import CANARY_SUFFIX
from mlmodel_operator.builders.deployment import no_model_note
from mlmodel_operator.builders.meta import controller_uid, selector_string
from mlmodel_operator.builders.service import endpoint
from mlmodel_operator.cache import (
    CUSTOM_METRICS,
    GATEWAY_API,
    INFERENCE_POOL,
    KEDA,
    MODEL_KIND,
    PROMETHEUS_OPERATOR,
    Cache,
)
from mlmodel_operator.compare import covers, with_hash
from mlmodel_operator.events import EventRecorder
from mlmodel_operator.kube import FIELD_MANAGER, Kube, describe_error, is_transient, retry_after
from mlmodel_operator.payload_health import DeliveryProbe
from mlmodel_operator.rollout.machine import OVERRIDE_ANNOTATION, Decision
from mlmodel_operator.rollout.plan import Live, override_of, split_pods
from mlmodel_operator.rollout.step import history, next_step
from mlmodel_operator.runtimes import runtime_for
from mlmodel_operator.status import Observation, compute_status, transition_events
from mlmodel_operator.workqueue import Retry

log = logging.getLogger(__name__)


class TransientError(Exception):
    """The API server failed in a way worth retrying (conflict, throttling, 5xx)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotControlled(Exception):
    """A child's name is taken by an object this resource does not control: the operator neither
    takes it over nor deletes it."""


class StaleModel(Exception):
    """The cached resource is older than the API server's: read it fresh, then retry."""


def permanent_error(err: ApiException) -> str:
    """The API server's message for an error worth reporting; an error worth retrying (conflict,
    throttling, 5xx) is raised as TransientError instead."""
    if is_transient(err):
        raise TransientError(describe_error(err), retry_after(err)) from err
    return describe_error(err)


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def invalid_spec_message(err: ValidationError) -> str:
    parts = []
    for error in err.errors():
        path = ".".join(["spec", *(str(p) for p in error["loc"])])
        parts.append(f"{path}: {error['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


def without_nulls(value: Any) -> Any:
    """`value` as the API server stores it after a merge patch: a null removes a key."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    return value


def status_needs_write(previous: dict[str, Any], status: dict[str, Any]) -> bool:
    """Whether `status` differs from what is stored and may replace it: a status never goes back
    to an older observedGeneration. The status is written as a merge patch, whose nulls remove
    what the stored status has (a rollout's window that ended)."""
    if previous.get("observedGeneration", 0) > status["observedGeneration"]:
        return False
    return any(previous.get(key) != without_nulls(value) for key, value in status.items())


@dataclass(frozen=True)
class Outcome:
    """What a reconcile did, and when the resource wants another one although nothing changes
    (a canary step's window ends)."""

    result: str
    requeue_after: float | None = None


@dataclass(frozen=True)
class Context:
    """What a reconcile works with, made once at start-up."""

    kube: Kube
    cache: Cache
    events: EventRecorder
    settings: BuildSettings
    # Payload logging's delivery, from Prometheus; None: not checked (the condition is Unknown).
    delivery: DeliveryProbe | None = None


def reconcile_once(ctx: Context, namespace: str, name: str) -> Outcome:
    """Bring one MLModelDeployment's children and status up to date."""
    body = ctx.cache.model(namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        if ctx.delivery is not None:
            ctx.delivery.forget(namespace, name)
        return Outcome("gone")  # the garbage collector removes the children
    owner = Owner.from_body(body)
    previous = body.get("status") or {}
    generation = body["metadata"].get("generation", 1)
    common = {
        "generation": generation,
        "endpoint": endpoint(owner),
        "selector": selector_string(owner),
    }
    try:
        spec = api.MLModelDeploymentSpec.model_validate(body.get("spec") or {})
    except ValidationError as err:
        observation = Observation(
            desired_replicas=0,
            gpu_resource="",
            invalid_spec=invalid_spec_message(err),
            **common,
        )
        return Outcome(_write_status(ctx, body, previous, observation, outcome="invalid"))

    apis = ctx.cache.served_apis()
    settings = replace(
        ctx.settings,
        prometheus_operator=PROMETHEUS_OPERATOR in apis,
        gateway_api=GATEWAY_API in apis,
        inference_pool=INFERENCE_POOL in apis,
        keda=KEDA in apis,
        custom_metrics=CUSTOM_METRICS in apis,
    )
    live = Live(
        stable=_controlled(ctx, owner, name), canary=_controlled(ctx, owner, name + CANARY_SUFFIX)
    )
    children, decision = next_step(
        owner, spec, build_children(owner, spec, settings), body, live, settings
    )
    if not previous:
        created = ", ".join(f"{o['kind']} {o['metadata']['name']}" for o in children.apply)
        ctx.events.record(body, "Normal", "Created", f"creating {created}")
    applied: dict[tuple[str, str], dict[str, Any]] = {}
    errors: list[str] = []
    autoscaled = children.autoscaling is not None and children.autoscaling.kind is not None
    # An autoscaler that is no longer wanted goes before the replicas are applied again, so
    # that it cannot scale the Deployment after the operator took the count back.
    _delete_absent(ctx, owner, [r for r in children.absent if r.kind in AUTOSCALERS], errors)
    for obj in children.apply:
        key = (obj["kind"], obj["metadata"]["name"])
        try:
            if key == ("Deployment", name) and autoscaled:
                applied[key] = _apply_autoscaled(ctx, obj, spec)
            else:
                applied[key] = _apply(ctx, obj)
        except ApiException as err:
            errors.append(f"{obj['kind']} {obj['metadata']['name']}: {permanent_error(err)}")
        except NotControlled as err:
            # Later children refer to this one by name (the Deployment mounts the ConfigMap):
            # applying them would make them use someone else's object.
            errors.append(str(err))
            break
    _delete_absent(ctx, owner, [r for r in children.absent if r.kind not in AUTOSCALERS], errors)

    deployment = applied.get(("Deployment", name))
    canary = applied.get(("Deployment", name + CANARY_SUFFIX))
    desired_replicas = spec.replicas
    if autoscaled and deployment is not None:
        # The autoscaler's count, as the Deployment has it.
        desired_replicas = (deployment.get("spec") or {}).get("replicas", spec.replicas)
    elif decision.replicas is not None:
        desired_replicas = decision.replicas.stable
    stable_pods, canary_pods = split_pods(ctx.cache.pods(namespace, name))
    notes = [no_model_note(spec, runtime_for(spec.model_type, settings.runtimes))]
    if spec.rollout.gateway is not None and not settings.gateway_api:
        notes.append(
            "spec.rollout.gateway is set but the cluster serves no Gateway API HTTPRoutes "
            "(gateway.networking.k8s.io/v1): a canary is split by replicas"
        )
    autoscaler_kind = children.autoscaling.kind if children.autoscaling else None
    autoscaler = applied.get((autoscaler_kind, name)) if autoscaler_kind else None
    sink = spec.monitoring.payload_logging
    probe = ctx.delivery or DeliveryProbe(None, 0)
    delivery = probe.check(namespace, name, sink.url) if sink is not None else None
    observation = Observation(
        desired_replicas=desired_replicas,
        gpu_resource=spec.computational_resources.gpu_resource,
        deployment=deployment,
        pods=stable_pods,
        canary_deployment=canary,
        canary_pods=canary_pods if canary is not None else [],
        canary_replicas=decision.replicas.canary if canary is not None and decision.replicas else 0,
        reconcile_error="; ".join(errors) or None,
        model_note="; ".join(filter(None, notes)) or None,
        model_version=spec.model_version,
        monitoring=children.monitoring,
        autoscaling=children.autoscaling,
        autoscaler=autoscaler,
        payload_logging=delivery,
        # Nulls included: the merge patch removes what this state no longer has.
        rollout=decision.status.model_dump(mode="json", by_alias=True) if decision.status else None,
        history=history(previous, decision, spec, live, children, now_rfc3339()),
        **common,
    )
    result = _write_status(ctx, body, previous, observation, decision)
    if decision.override_handled and result != "gone":
        _clear_override(ctx, body)
    return Outcome(result, decision.requeue_after)


AUTOSCALERS = (HPA_KIND, KEDA_KIND)


def _delete_absent(ctx: Context, owner: Owner, refs: list[ObjectRef], errors: list[str]) -> None:
    for ref in refs:
        cached = ctx.cache.get(ref.kind, ref.namespace, ref.name)
        if cached is None or controller_uid(cached) != owner.uid:
            continue  # gone already, or someone else's: never deleted
        meta = cached["metadata"]
        try:
            # Preconditions: a 409 if it was replaced or changed since the cache saw it; the
            # retry then works from the watch's fresher copy.
            ctx.kube.delete(ref, meta["uid"], meta["resourceVersion"])
        except ApiException as err:
            errors.append(f"deleting {ref.kind} {ref.name}: {permanent_error(err)}")


def _controlled(ctx: Context, owner: Owner, name: str) -> dict[str, Any] | None:
    """The cached Deployment of that name if this resource controls it."""
    cached = ctx.cache.get("Deployment", owner.namespace, name)
    return cached if cached is not None and controller_uid(cached) == owner.uid else None


def _clear_override(ctx: Context, body: dict[str, Any]) -> None:
    """Remove the rollout annotation the reconcile acted on, so that it acts once."""
    meta = body["metadata"]
    value = override_of(body) or ""
    try:
        updated = ctx.kube.remove_model_annotation(
            meta["namespace"], meta["name"], OVERRIDE_ANNOTATION, value
        )
    except ApiException as err:
        if err.status in (404, 422):  # gone, or set again since: the next reconcile reads it
            return
        raise TransientError(describe_error(err), retry_after(err)) from err
    ctx.cache.record(updated)


def _apply_autoscaled(
    ctx: Context, obj: dict[str, Any], spec: api.MLModelDeploymentSpec
) -> dict[str, Any]:
    """Apply the model Deployment of an autoscaled model, which leaves `replicas` to the
    autoscaler. A new Deployment is created at its starting size (a Deployment created without
    one would have 1); one whose count the operator still owns is handed over first, so that the
    count stays what it is (see autoscaling.replicas_handover)."""
    meta = obj["metadata"]
    cached = ctx.cache.get("Deployment", meta["namespace"], meta["name"])
    if cached is None:
        start = {**obj, "spec": {**obj["spec"], "replicas": starting_replicas(spec)}}
        return _apply(ctx, start)
    if FIELD_MANAGER in cached.get("replicasManagers", []) and controller_uid(
        cached
    ) == controller_uid(obj):
        ctx.cache.record(
            ctx.kube.apply(replicas_handover(cached), field_manager=HANDOVER_MANAGER, force=False)
        )
        return _apply(ctx, obj, always=True)
    return _apply(ctx, obj)


def _apply(ctx: Context, obj: dict[str, Any], always: bool = False) -> dict[str, Any]:
    """Server-side apply `obj` unless the cached object already matches it; the object as the
    API server has it (or as the cache does, when nothing was sent). Raises NotControlled when an
    object of that name exists with another controller, or none: it belongs to someone else."""
    desired = with_hash(obj)
    meta = desired["metadata"]
    cached = ctx.cache.get(desired["kind"], meta["namespace"], meta["name"])
    if cached is not None and controller_uid(cached) != controller_uid(desired):
        raise NotControlled(
            f"{desired['kind']} {meta['name']} exists and is not controlled by this "
            f"{api.KIND}: rename or delete it"
        )
    if cached is not None and not always and covers(cached, desired):
        return cached
    applied = ctx.kube.apply(desired)
    ctx.cache.record(applied)
    return applied


def _write_status(
    ctx: Context,
    body: dict[str, Any],
    previous: dict[str, Any],
    observation: Observation,
    decision: Decision | None = None,
    outcome: str | None = None,
) -> str:
    status = compute_status(observation, previous, now_rfc3339())
    meta = body["metadata"]
    if status_needs_write(previous, status):
        try:
            written = ctx.kube.patch_model_status(
                meta["namespace"], meta["name"], status, meta["resourceVersion"]
            )
        except ApiException as err:
            if err.status == 409:
                raise StaleModel(describe_error(err)) from err
            if err.status == 404:  # deleted while this run read it: nothing left to report on
                log.debug("%s/%s is gone; status not written", meta["namespace"], meta["name"])
                return "gone"
            # Nowhere left to report it but the log: retrying would only repeat the refusal.
            message = permanent_error(err)
            log.error(
                "cannot write the status of %s/%s: %s", meta["namespace"], meta["name"], message
            )
            return "error"
        ctx.cache.record(written)
    for event in transition_events(previous, status):
        ctx.events.record(body, event.type, event.reason, event.message)
    for note in decision.notes if decision else ():
        ctx.events.record(body, note.type, note.reason, note.message)
    return outcome or status["phase"].lower()


class Reconciler:
    """The work queue's processing function: one reconcile, its metrics, and the translation of
    its failures into retries."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def __call__(self, key: tuple[str, str]) -> float | None:
        """One reconcile; the seconds after which the key wants another one, if it does."""
        namespace, name = key
        start = time.perf_counter()
        try:
            outcome = reconcile_once(self.ctx, namespace, name)
        except TransientError as err:
            metrics.RECONCILES.labels(result="error").inc()
            raise Retry(str(err), err.retry_after) from err
        except StaleModel as err:
            metrics.RECONCILES.labels(result="conflict").inc()
            self._refresh(namespace, name)
            raise Retry(f"the cached resource was stale ({err})") from err
        except Exception:
            metrics.RECONCILES.labels(result="error").inc()
            raise
        finally:
            metrics.RECONCILE_SECONDS.observe(time.perf_counter() - start)
        metrics.RECONCILES.labels(result=outcome.result).inc()
        return outcome.requeue_after

    def _refresh(self, namespace: str, name: str) -> None:
        try:
            fresh = self.ctx.kube.get(f"{api.GROUP}/{api.VERSION}", MODEL_KIND, namespace, name)
        except ApiException as err:
            raise Retry(f"cannot read {namespace}/{name}: {describe_error(err)}") from err
        if fresh is not None:
            self.ctx.cache.record(fresh)
