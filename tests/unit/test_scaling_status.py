"""The Scaling condition mirrors the autoscaler's own verdict, or says why there is none."""

from __future__ import annotations

from typing import Any

import pytest

from mlmodel_operator.builders.autoscaling import AutoscalingPlan
from mlmodel_operator.scaling import scaling_verdict

HPA = AutoscalingPlan("HorizontalPodAutoscaler")
KEDA = AutoscalingPlan("ScaledObject")
NO_METRICS = (
    "the HPA was unable to compute the replica count: failed to get memory utilization: unable "
    "to get metrics for resource memory: no metrics returned from resource metrics API"
)


def cond(type_: str, status: str, reason: str, message: str = "") -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


def hpa(*conditions: dict[str, str], current: int = 2, desired: int = 2) -> dict[str, Any]:
    status: dict[str, Any] = {"conditions": list(conditions)}
    if conditions:
        status |= {"currentReplicas": current, "desiredReplicas": desired}
    return {"spec": {"minReplicas": 1, "maxReplicas": 8}, "status": status}


ABLE = cond("AbleToScale", "True", "ReadyForNewScale", "recommended size matches current size")


@pytest.mark.parametrize(
    ("autoscaler", "expected"),
    [
        (
            hpa(),
            (
                "Unknown",
                "AutoscalerPending",
                "waiting for the HorizontalPodAutoscaler controller's first verdict",
            ),
        ),
        (
            hpa(ABLE, cond("ScalingActive", "False", "FailedGetResourceMetric", NO_METRICS)),
            (
                "False",
                "MetricsUnavailable",
                f"HorizontalPodAutoscaler: {NO_METRICS} (2 current, 2 desired, 1-8 allowed)",
            ),
        ),
        (
            hpa(cond("AbleToScale", "False", "FailedGetScale", 'deployments.apps "m" not found')),
            ("False", "FailedGetScale", 'HorizontalPodAutoscaler: deployments.apps "m" not found'),
        ),
        (
            hpa(
                ABLE,
                cond("ScalingActive", "True", "ValidMetricFound", "the HPA was able to ..."),
                cond(
                    "ScalingLimited",
                    "True",
                    "TooManyReplicas",
                    "the desired replica count is more than the maximum replica count",
                ),
                current=8,
                desired=8,
            ),
            (
                "True",
                "TooManyReplicas",
                "HorizontalPodAutoscaler: the desired replica count is more than the maximum "
                "replica count (8 current, 8 desired, 1-8 allowed)",
            ),
        ),
        (
            hpa(
                ABLE,
                cond("ScalingActive", "True", "ValidMetricFound", "the HPA was able to compute"),
                cond("ScalingLimited", "False", "DesiredWithinRange", "within range"),
                current=2,
                desired=3,
            ),
            (
                "True",
                "ValidMetricFound",
                "HorizontalPodAutoscaler: the HPA was able to compute (2 current, 3 desired, "
                "1-8 allowed)",
            ),
        ),
    ],
    ids=["pending", "metrics-unavailable", "unable-to-scale", "limited", "active"],
)
def test_hpa_verdicts(autoscaler: dict[str, Any], expected: tuple[str, str, str]) -> None:
    assert scaling_verdict(HPA, autoscaler) == expected


KEDA_READY = cond("Ready", "True", "ScaledObjectReady", "ScaledObject is defined correctly")


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        ([], ("Unknown", "AutoscalerPending", "waiting for KEDA to take the ScaledObject in hand")),
        (
            [cond("Ready", "False", "ScaledObjectCheckFailed", "Triggers are not working")],
            ("False", "ScaledObjectCheckFailed", "ScaledObject: Triggers are not working"),
        ),
        (
            [KEDA_READY, cond("Active", "True", "ScalerActive", "Scaling is performed")],
            ("True", "Active", "ScaledObject: Scaling is performed"),
        ),
        (
            [KEDA_READY, cond("Active", "False", "ScalerNotActive", "triggers are not active")],
            ("True", "Idle", "ScaledObject: triggers are not active"),
        ),
        (
            [KEDA_READY, cond("Fallback", "True", "FallbackExists", "using fallback replicas")],
            ("False", "Fallback", "ScaledObject: using fallback replicas"),
        ),
    ],
    ids=["pending", "not-ready", "active", "idle", "fallback"],
)
def test_scaled_object_verdicts(
    conditions: list[dict[str, str]], expected: tuple[str, str, str]
) -> None:
    assert scaling_verdict(KEDA, {"status": {"conditions": conditions}}) == expected


def test_no_autoscaler_says_why_and_a_missing_one_is_being_created() -> None:
    refused = AutoscalingPlan(None, "ScaleToZeroNeedsActivator", "min_replicas 0 needs KEDA")
    assert scaling_verdict(refused, None) == (
        "False",
        "ScaleToZeroNeedsActivator",
        "min_replicas 0 needs KEDA",
    )
    assert scaling_verdict(HPA, None) == (
        "Unknown",
        "AutoscalerPending",
        "creating the HorizontalPodAutoscaler",
    )
