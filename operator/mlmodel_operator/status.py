"""Pure status logic: what the children look like now -> the MLModelDeployment's status.

Conditions follow Kubernetes conventions (one per type; lastTransitionTime moves only when the
status flips; observedGeneration on status and on every condition), so kstatus (Flux), Argo CD
and `kubectl wait --for=condition=Ready` read them correctly, mid-rollout as well as at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mlmodel_operator.builders import AutoscalingPlan, MonitoringSetup
from mlmodel_operator.builders.fetch import FETCH_CONTAINER
from mlmodel_operator.builders.meta import VERSION_LABEL, WOKEN_ANNOTATION
from mlmodel_operator.payload_health import DROPS_WINDOW_SECONDS, PayloadDelivery
from mlmodel_operator.scaling import scaling_verdict

READY, PROGRESSING, AVAILABLE, SCHEDULED = "Ready", "Progressing", "Available", "Scheduled"
MONITORING_READY = "MonitoringReady"
# kstatus' standard conditions (Flux reads them): Reconciling while the spec is not yet realised,
# Stalled while it cannot be without someone's help. "Abnormal-true": False when all is well.
RECONCILING, STALLED = "Reconciling", "Stalled"
SCALING = "Scaling"
PAYLOAD_LOGGING = "PayloadLogging"
CONDITION_TYPES = (
    READY,
    PROGRESSING,
    AVAILABLE,
    SCHEDULED,
    MONITORING_READY,
    SCALING,
    PAYLOAD_LOGGING,
    RECONCILING,
    STALLED,
)
# Phases in which something needs a person's attention; their events are Warnings.
TROUBLED_PHASES = {"Degraded", "Failed"}
# Ready reasons of a canary rollout: its state machine posts their Events itself.
ROLLOUT_REASONS = {"CanaryStep", "AnalysisInconclusive", "Promoting", "RolledBack"}
ACTIVE_ROLLOUT = {"Progressing", "Paused", "Promoting"}


@dataclass(frozen=True)
class Observation:
    """Everything the status is computed from, read in one reconcile."""

    generation: int
    desired_replicas: int
    gpu_resource: str
    endpoint: str
    selector: str
    deployment: dict[str, Any] | None = None
    pods: list[dict[str, Any]] = field(default_factory=list)
    invalid_spec: str | None = None  # why the stored spec cannot be served
    reconcile_error: str | None = None  # a permanent API error (e.g. a missing permission)
    monitoring: MonitoringSetup | None = None  # None: unknown (e.g. the spec is invalid)
    model_note: str | None = None  # e.g. that the server was given no model to load
    model_version: str | None = None  # spec.model_version, named in rollout messages
    # A canary: its Deployment, pods and replicas (the stable's are the fields above), and the
    # rollout's state and revision history as the state machine left them.
    canary_deployment: dict[str, Any] | None = None
    canary_pods: list[dict[str, Any]] = field(default_factory=list)
    canary_replicas: int = 0
    rollout: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    # spec.autoscaling as set up (None: off), and the autoscaler as the cache has it.
    autoscaling: AutoscalingPlan | None = None
    autoscaler: dict[str, Any] | None = None
    # spec.monitoring.payload_logging's delivery as the sidecars report it (None: off).
    payload_logging: PayloadDelivery | None = None


@dataclass(frozen=True)
class Cond:
    status: str
    reason: str
    message: str = ""


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


def _condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    if not obj:
        return None
    conditions = obj.get("status", {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == type_), None)


def _is_terminating(pod: dict[str, Any]) -> bool:
    return bool(pod.get("metadata", {}).get("deletionTimestamp"))


def _pod_ready(pod: dict[str, Any]) -> bool:
    ready = _condition(pod, "Ready")
    return not _is_terminating(pod) and ready is not None and ready.get("status") == "True"


def unschedulable_pods(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for pod in pods:
        scheduled = _condition(pod, "PodScheduled")
        if (
            not _is_terminating(pod)
            and scheduled
            and scheduled.get("status") == "False"
            and scheduled.get("reason") == "Unschedulable"
        ):
            out.append(pod)
    return out


# Container states in which a pod will not become ready without someone changing something.
STUCK_CONTAINER_REASONS = {
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
}


def stuck_containers(pods: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(container, reason, message) of containers waiting in a state they will not leave,
    init containers included (an image that cannot be pulled, a Secret that does not exist)."""
    out = []
    for pod in pods:
        if _is_terminating(pod):
            continue
        status = pod.get("status", {})
        statuses = (status.get("initContainerStatuses") or []) + (
            status.get("containerStatuses") or []
        )
        for container in statuses:
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in STUCK_CONTAINER_REASONS:
                out.append((container["name"], waiting["reason"], waiting.get("message", "")))
    return out


# Init containers whose failure has a name of its own in status.
INIT_FAILURE_REASONS = {FETCH_CONTAINER: "ModelFetchFailed"}


def failed_init_containers(pods: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(container, reason, message) of init containers whose last run failed, with what the
    container wrote to its termination message (the fetcher's one line): a retry loop
    (CrashLoopBackOff) is reported with its cause. A retry under way still shows the failure
    until it succeeds, so that status does not flap with every attempt."""
    out = []
    for pod in pods:
        if _is_terminating(pod):
            continue
        for container in pod.get("status", {}).get("initContainerStatuses") or []:
            state = container.get("state") or {}
            failed = state.get("terminated") or (container.get("lastState") or {}).get("terminated")
            if not failed or failed.get("exitCode", 0) == 0:
                continue
            name = container["name"]
            # The last line: all there is of the fetcher's message, and the exception of a
            # traceback that the kubelet took from the log (FallbackToLogsOnError).
            lines = (failed.get("message") or "").strip().splitlines()
            message = (
                lines[-1].strip()
                if lines
                else (
                    f"container {name} exited with code {failed.get('exitCode')} "
                    f"({failed.get('reason', 'Error')})"
                )
            )
            out.append((name, INIT_FAILURE_REASONS.get(name, "InitContainerFailed"), message))
    return out


def serving_versions(pods: list[dict[str, Any]]) -> str | None:
    """The model_version labels of the pods that are ready, e.g. "v1" or mid-rollout "v1,v2"."""
    versions = {
        pod["metadata"].get("labels", {}).get(VERSION_LABEL) for pod in pods if _pod_ready(pod)
    }
    versions.discard(None)
    return ",".join(sorted(versions)) or None  # type: ignore[arg-type]


def _scheduling(obs: Observation) -> Cond:
    stuck = unschedulable_pods(obs.pods)
    if not stuck:
        return Cond("True", "PodsScheduled", "every model pod has a node")
    verdict = _condition(stuck[0], "PodScheduled") or {}
    scheduler_message = verdict.get("message", "")
    reason = (
        "InsufficientGPU"
        if f"Insufficient {obs.gpu_resource}" in scheduler_message
        else ("Unschedulable")
    )
    return Cond(
        "False", reason, f"{len(stuck)} pod(s) cannot be scheduled: {scheduler_message}".strip()
    )


def monitoring_condition(setup: MonitoringSetup | None) -> Cond:
    if setup is None:
        return Cond("Unknown", "NotReconciled")
    if not setup.sidecar:
        return Cond("False", "Disabled", "performance tracking and drift detection are off")
    if setup.prometheus_operator:
        reason, message = "ServiceMonitorReady", "ServiceMonitor and PrometheusRule are in place"
    else:
        reason = "ScrapeAnnotations"
        message = (
            "the Prometheus Operator is not installed; pods carry prometheus.io/scrape annotations"
        )
    if setup.drift_reference == "":
        message += "; drift reference: the first window of live traffic"
    elif setup.drift_reference:
        message += f"; drift reference: {setup.drift_reference}"
    return Cond("True", reason, message)


def payload_logging_condition(delivery: PayloadDelivery) -> Cond:
    """PayloadLogging: True while the sidecars deliver, False while deliveries fail or events
    were dropped lately, Unknown when the operator cannot tell (no Prometheus, no answer, no
    sidecar reporting yet)."""
    sink = delivery.url
    if delivery.reading is None:
        if delivery.problem is None:
            return Cond(
                "Unknown",
                "NoPrometheus",
                "the operator has no --prometheus-url to read the sidecars' "
                "mlmodel_payload_logging_failing from",
            )
        return Cond("Unknown", "MetricsUnavailable", delivery.problem)
    reading = delivery.reading
    if reading.pods == 0:
        return Cond(
            "Unknown",
            "NotReported",
            "no sidecar reports mlmodel_payload_logging_failing to Prometheus yet",
        )
    if reading.failing:
        return Cond(
            "False",
            "DeliveryFailing",
            f"deliveries to {sink} are failing in {reading.failing} of {reading.pods} pod(s); "
            "events are dropped (mlmodel_payload_events_dropped_total)",
        )
    if reading.dropped > 0:
        return Cond(
            "False",
            "EventsDropped",
            f"events were dropped in the last {DROPS_WINDOW_SECONDS // 60} minutes "
            "(mlmodel_payload_events_dropped_total, by reason): the sink does not keep up, or "
            "max_queued is too small",
        )
    return Cond("True", "Delivering", f"events are delivered to {sink}")


def _cannot_proceed(reason: str, message: str) -> tuple[str, dict[str, Cond]]:
    """Failed: the operator cannot act on the spec; what the children do is unknown."""
    bad = Cond("False", reason, message)
    unknown = Cond("Unknown", reason)
    return "Failed", {READY: bad, PROGRESSING: bad, AVAILABLE: unknown, SCHEDULED: unknown}


def rollout_label(obs: Observation) -> str:
    """Which rollout a message is about: "generation 3 (model_version v2)"."""
    version = f" (model_version {obs.model_version})" if obs.model_version else ""
    return f"generation {obs.generation}{version}"


def _availability(ready: int, desired: int) -> Cond:
    """Whether the model answers: at least one replica ready. (The Deployment's own Available
    means "no more than maxUnavailable missing", which with maxUnavailable 1 is True with no
    replica ready at all.)"""
    if ready:
        return Cond("True", "ReplicasReady", f"{ready} of {desired} replicas ready")
    if desired == 0:
        return Cond("False", "ScaledToZero", "scaled to zero replicas")
    return Cond("False", "NoReplicaReady", "no replica is ready")


def _blocked(obs: Observation, deployment: dict[str, Any], scheduling: Cond) -> Cond | None:
    """Why new pods cannot run, if they cannot: not created (a quota, an admission refusal),
    not scheduled, or not started (image pull, crash loop)."""
    # The Deployment controller cannot create pods at all: waiting for the progress deadline
    # would only hide it.
    replica_failure = _condition(deployment, "ReplicaFailure")
    if replica_failure and replica_failure.get("status") == "True":
        reason = replica_failure.get("reason") or "ReplicaFailure"
        return Cond("False", reason, replica_failure.get("message", ""))
    if scheduling.status == "False":
        return scheduling
    # Before the waiting states: a failed init container waits in CrashLoopBackOff, whose
    # message says nothing of why.
    if failed := failed_init_containers(obs.pods):
        _, reason, message = failed[0]
        if len(failed) > 1:
            message += f" (and {len(failed) - 1} more pod(s))"
        return Cond("False", reason, message)
    if stuck := stuck_containers(obs.pods):
        container, reason, message = stuck[0]
        detail = f"container {container}: {reason}: {message}".strip()
        if len(stuck) > 1:
            detail += f" (and {len(stuck) - 1} more container(s))"
        return Cond("False", reason, detail)
    return None


def waking_since(deployment: dict[str, Any] | None) -> str | None:
    """When the activator woke the model, while no replica is ready yet (else None)."""
    if deployment is None:
        return None
    woken = (deployment["metadata"].get("annotations") or {}).get(WOKEN_ANNOTATION)
    replicas = (deployment.get("spec") or {}).get("replicas", 1)
    ready = (deployment.get("status") or {}).get("readyReplicas", 0)
    return woken if woken and replicas and not ready else None


def waits_for_capacity(blocked: Cond) -> bool:
    """Whether the cluster may still provide what is missing by itself (a cluster autoscaler,
    other workloads ending, a quota freed), as opposed to a spec or image that must change."""
    if blocked.reason in ("InsufficientGPU", "Unschedulable"):
        return True
    return blocked.reason == "FailedCreate" and "exceeded quota" in blocked.message


def evaluate(obs: Observation) -> tuple[str, dict[str, Cond]]:
    """The phase and the four conditions, before timestamps and generations are added."""
    if obs.invalid_spec is not None:
        return _cannot_proceed("InvalidSpec", obs.invalid_spec)
    if obs.reconcile_error is not None:
        return _cannot_proceed("ReconcileError", obs.reconcile_error)
    deployment = obs.deployment
    label = rollout_label(obs)
    if deployment is None:
        creating = Cond("False", "Creating", f"creating the model server Deployment for {label}")
        return "Pending", {
            READY: creating,
            PROGRESSING: Cond("True", "Creating", creating.message),
            AVAILABLE: Cond("False", "Creating"),
            SCHEDULED: Cond("Unknown", "Creating"),
        }

    desired = obs.desired_replicas
    status = deployment.get("status", {})
    total = status.get("replicas", 0)
    updated = status.get("updatedReplicas", 0)
    ready = status.get("readyReplicas", 0)
    available = status.get("availableReplicas", 0)
    # The Deployment controller has not seen our latest write yet: its status describes the
    # previous spec, so nothing can be called done, and its counts are not this rollout's.
    observed = status.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 0)
    complete = observed and updated == desired and total == desired and available == desired

    dep_progressing = _condition(deployment, "Progressing") or {}
    stalled = observed and dep_progressing.get("reason") == "ProgressDeadlineExceeded"
    scheduling = _scheduling(obs)

    conditions = {SCHEDULED: scheduling, AVAILABLE: _availability(ready, desired)}
    if stalled:
        message = dep_progressing.get("message", "the rollout made no progress in time")
        message = f"{label}: {message}"
        conditions[PROGRESSING] = Cond("False", "ProgressDeadlineExceeded", message)
        conditions[READY] = Cond("False", "ProgressDeadlineExceeded", message)
        return "Degraded", conditions
    if complete and scheduling.status == "True":
        conditions[PROGRESSING] = Cond("False", "RolloutComplete", f"{label} is rolled out")
        conditions[READY] = (
            Cond("True", "ScaledToZero", f"scaled to zero replicas, {label}")
            if desired == 0
            else Cond(
                "True",
                "ModelServing",
                "; ".join(
                    filter(None, [f"{ready}/{desired} replicas ready, {label}", obs.model_note])
                ),
            )
        )
        return "Ready", conditions

    if observed:
        old = max(total - updated, 0)
        rollout = f"rolling out {label}: {updated} of {desired} replicas updated, {ready} ready"
        if old:
            rollout += f", {old} old replica(s) still serving"
    else:
        rollout = f"rolling out {label}: waiting for the Deployment controller"
    # What the pods show is a fact even before the Deployment controller has caught up (they
    # may be the new ones already): Scheduled says so, and Ready must agree with it.
    blocked = _blocked(obs, deployment, scheduling)
    if blocked is None:
        conditions[PROGRESSING] = Cond("True", "RollingOut", rollout)
        conditions[READY] = Cond("False", "RollingOut", rollout)
        if woken := waking_since(deployment):
            waking = f"waking from zero since {woken}: {rollout}"
            conditions[PROGRESSING] = Cond("True", "Waking", waking)
            conditions[READY] = Cond("False", "Waking", waking)
        return "Progressing", conditions
    # The rollout cannot go on by itself: it is not progressing, whatever the Deployment says.
    conditions[PROGRESSING] = Cond("False", blocked.reason, f"{label}: {blocked.message}")
    if ready:
        # Old replicas still serve. A GPU rollout (maxUnavailable 1) took one of them down for a
        # new pod that cannot run; say what capacity that cost.
        message = f"{blocked.message}; {ready} of {desired} replicas serving ({label} blocked)"
        conditions[READY] = Cond("False", blocked.reason, message)
        return "Degraded", conditions
    if waits_for_capacity(blocked):
        message = f"waiting for capacity for {label}: {blocked.message}"
        conditions[READY] = Cond("False", blocked.reason, message)
        return "Pending", conditions
    conditions[READY] = Cond("False", blocked.reason, f"{label}: {blocked.message}")
    return "Failed", conditions


def with_rollout(
    obs: Observation, phase: str, conditions: dict[str, Cond]
) -> tuple[str, dict[str, Cond]]:
    """The phase and conditions as a canary rollout makes them. While a canary runs, Ready stays
    True as long as a version serves, and Progressing says how the canary fares; after a rollback
    the spec's version is not what serves: Degraded. Trouble of the stable version itself, or
    an error of the operator's, wins over both."""
    rollout = obs.rollout or {}
    state = rollout.get("phase")
    message = rollout.get("message") or ""
    if state == "RolledBack" and phase in ("Ready", "Progressing"):
        # Also while the stable Deployment takes back the canary's replicas.
        conditions[READY] = Cond("False", "RolledBack", message)
        conditions[PROGRESSING] = Cond("False", "RolledBack", message)
        return "Degraded", conditions
    if state not in ACTIVE_ROLLOUT or phase not in ("Ready", "Progressing"):
        return phase, conditions
    stable_ready = ((obs.deployment or {}).get("status") or {}).get("readyReplicas", 0)
    canary_ready = ((obs.canary_deployment or {}).get("status") or {}).get("readyReplicas", 0)
    reason = {"Paused": "AnalysisInconclusive", "Promoting": "Promoting"}.get(state, "CanaryStep")
    serving = stable_ready + canary_ready
    conditions[READY] = Cond("True", reason, message) if serving else Cond("False", reason, message)
    conditions[AVAILABLE] = _availability(serving, obs.desired_replicas + obs.canary_replicas)
    progressing = Cond("False" if state == "Paused" else "True", reason, message)
    if obs.canary_deployment is not None:
        canary = Observation(
            generation=obs.generation,
            desired_replicas=obs.canary_replicas,
            gpu_resource=obs.gpu_resource,
            endpoint=obs.endpoint,
            selector=obs.selector,
            deployment=obs.canary_deployment,
            pods=obs.canary_pods,
        )
        scheduling = _scheduling(canary)
        if blocked := _blocked(canary, obs.canary_deployment, scheduling):
            # The canary cannot run (no GPU free for it, an image that cannot start): the
            # rollout waits, and says why; the stable version goes on serving.
            what = "waiting for capacity" if waits_for_capacity(blocked) else "blocked"
            progressing = Cond(
                "False", blocked.reason, f"canary {what}: {blocked.message}; {message}"
            )
            conditions[SCHEDULED] = scheduling
    conditions[PROGRESSING] = progressing
    return "Progressing", conditions


def kstatus_conditions(phase: str, ready: Cond) -> dict[str, Cond]:
    """Reconciling and Stalled, from the phase: a canary under way is still reconciling."""
    reconciling = phase in ("Pending", "Progressing")
    stalled = phase in TROUBLED_PHASES
    return {
        RECONCILING: Cond("True", ready.reason, ready.message)
        if reconciling
        else Cond("False", "Reconciled" if not stalled else ready.reason),
        STALLED: Cond("True", ready.reason, ready.message)
        if stalled
        else Cond("False", "NotStalled"),
    }


def merge_conditions(
    previous: list[dict[str, Any]], current: dict[str, Cond], generation: int, now: str
) -> list[dict[str, Any]]:
    before = {c.get("type"): c for c in previous}
    merged = []
    for type_ in (t for t in CONDITION_TYPES if t in current):
        cond = current[type_]
        prior = before.get(type_)
        flipped = prior is None or prior.get("status") != cond.status
        merged.append(
            {
                "type": type_,
                "status": cond.status,
                "reason": cond.reason,
                "message": cond.message,
                "lastTransitionTime": now if flipped else prior["lastTransitionTime"],
                "observedGeneration": generation,
            }
        )
    return merged


def compute_status(obs: Observation, previous: dict[str, Any], now: str) -> dict[str, Any]:
    """The full status to store. Unchanged input gives an unchanged status (no write needed)."""
    phase, conditions = evaluate(obs)
    if obs.invalid_spec is None and obs.reconcile_error is None:
        phase, conditions = with_rollout(obs, phase, conditions)
    conditions[MONITORING_READY] = monitoring_condition(obs.monitoring)
    if obs.autoscaling is not None:
        conditions[SCALING] = Cond(*scaling_verdict(obs.autoscaling, obs.autoscaler))
    if obs.payload_logging is not None:
        conditions[PAYLOAD_LOGGING] = payload_logging_condition(obs.payload_logging)
    conditions.update(kstatus_conditions(phase, conditions[READY]))
    deployments = [d for d in (obs.deployment, obs.canary_deployment) if d]
    counts = {
        key: sum((d.get("status") or {}).get(key, 0) for d in deployments)
        for key in ("replicas", "readyReplicas", "updatedReplicas")
    }
    ready = counts["readyReplicas"]
    status = {
        "observedGeneration": obs.generation,
        "phase": phase,
        "conditions": merge_conditions(
            previous.get("conditions") or [], conditions, obs.generation, now
        ),
        "replicas": counts["replicas"],
        "readyReplicas": ready,
        "updatedReplicas": counts["updatedReplicas"],
        "ready": f"{ready}/{obs.desired_replicas + obs.canary_replicas}",
        "selector": obs.selector,
        # Shown once a replica has been ready, so that a URL is never offered for a model that
        # has never answered; kept afterwards (it is where the model is served from).
        "endpoint": obs.endpoint if ready or previous.get("endpoint") else None,
        "modelVersion": serving_versions(obs.pods + obs.canary_pods),
        "message": conditions[READY].message,
        "wakingSince": (
            waking_since(obs.deployment) if conditions[READY].reason == "Waking" else None
        ),
    }
    if obs.rollout is not None:
        status["rollout"] = obs.rollout
    if obs.history:
        status["history"] = obs.history
    return status


def _ready_reason(status: dict[str, Any]) -> str | None:
    return next(
        (c.get("reason") for c in status.get("conditions") or [] if c.get("type") == READY), None
    )


def _transition(status: dict[str, Any]) -> tuple[Any, ...]:
    """What an Event is posted on a change of: the phase and the reason for (not) being Ready,
    and, during a rollout, which generation rolls out (an edit mid-rollout starts another)."""
    reason = _ready_reason(status)
    rolling = reason in ("RollingOut", "Creating")
    return status.get("phase"), reason, status.get("observedGeneration") if rolling else None


def transition_events(previous: dict[str, Any], current: dict[str, Any]) -> list[Event]:
    """One Kubernetes Event when the phase, the reason for (not) being Ready, or the generation
    being rolled out changes. Its message is the status message, which names the generation
    and model_version it is about."""
    after = _transition(current)
    if _transition(previous) == after or after[1] is None or after[1] in ROLLOUT_REASONS:
        return []
    waiting = current["phase"] == "Pending" and after[1] != "Creating"
    kind = "Warning" if current["phase"] in TROUBLED_PHASES or waiting else "Normal"
    return [Event(kind, after[1], current.get("message") or "")]
