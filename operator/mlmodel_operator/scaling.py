"""Pure: the `Scaling` condition of an autoscaled model. It mirrors the autoscaler's own verdict
(a HorizontalPodAutoscaler's AbleToScale, ScalingActive and ScalingLimited conditions, or a KEDA
ScaledObject's Ready and Active ones) with its own message, or says why there is no autoscaler.
"""

from __future__ import annotations

from typing import Any

from mlmodel_operator.builders.autoscaling import HPA_KIND, AutoscalingPlan

# (status, reason, message), as status.Cond takes them.
Verdict = tuple[str, str, str]
PENDING = "AutoscalerPending"


def _conditions(autoscaler: dict[str, Any]) -> dict[str, dict[str, Any]]:
    status = autoscaler.get("status") or {}
    return {c.get("type", ""): c for c in status.get("conditions") or []}


def hpa_verdict(hpa: dict[str, Any]) -> Verdict:
    conditions = _conditions(hpa)
    status = hpa.get("status") or {}
    counts = ""
    if "desiredReplicas" in status:
        counts = (
            f" ({status.get('currentReplicas', 0)} current, {status['desiredReplicas']} desired, "
            f"{hpa['spec'].get('minReplicas', 1)}-{hpa['spec'].get('maxReplicas')} allowed)"
        )
    able = conditions.get("AbleToScale")
    active = conditions.get("ScalingActive")
    limited = conditions.get("ScalingLimited")
    if able is None and active is None:
        return "Unknown", PENDING, f"waiting for the {HPA_KIND} controller's first verdict"
    if able is not None and able.get("status") == "False":
        return "False", able.get("reason", "AbleToScale"), f"{HPA_KIND}: {able.get('message')}"
    if active is not None and active.get("status") == "False":
        reason = active.get("reason", "ScalingActive")
        if reason.startswith("FailedGet"):  # FailedGetResourceMetric, FailedGetPodsMetric, ...
            reason = "MetricsUnavailable"
        return "False", reason, f"{HPA_KIND}: {active.get('message')}{counts}"
    if limited is not None and limited.get("status") == "True":
        reason = limited.get("reason", "ScalingLimited")
        return "True", reason, f"{HPA_KIND}: {limited.get('message')}{counts}"
    shown = active or able or {}
    reason = shown.get("reason", "ScalingActive")
    return "True", reason, f"{HPA_KIND}: {shown.get('message')}{counts}"


def scaled_object_verdict(scaled: dict[str, Any]) -> Verdict:
    conditions = _conditions(scaled)
    ready = conditions.get("Ready")
    if ready is None or ready.get("status") == "Unknown":
        return "Unknown", PENDING, "waiting for KEDA to take the ScaledObject in hand"
    if ready.get("status") == "False":
        return (
            "False",
            ready.get("reason") or "ScaledObjectNotReady",
            (f"ScaledObject: {ready.get('message')}"),
        )
    for type_ in ("Paused", "Fallback"):
        cond = conditions.get(type_)
        if cond is not None and cond.get("status") == "True":
            return "False", type_, f"ScaledObject: {cond.get('message')}"
    active = conditions.get("Active") or {}
    message = active.get("message") or "no trigger is active"
    if active.get("status") == "True":
        return "True", "Active", f"ScaledObject: {message}"
    return "True", "Idle", f"ScaledObject: {message}"


def scaling_verdict(plan: AutoscalingPlan, autoscaler: dict[str, Any] | None) -> Verdict:
    """The Scaling condition of a model whose spec asks for autoscaling."""
    if plan.kind is None:
        return "False", plan.reason or "NotAutoscaled", plan.message or ""
    if autoscaler is None:
        return "Unknown", PENDING, f"creating the {plan.kind}"
    if plan.kind == HPA_KIND:
        return hpa_verdict(autoscaler)
    return scaled_object_verdict(autoscaler)
