"""The Scaling condition mirrors the autoscaler's own verdict; at zero the model is Ready; GPU
shortage is reported when the autoscaler asks for replicas that cannot be placed."""

from __future__ import annotations

from typing import Any

import pytest

from mlmodel_operator.builders.autoscaling import AutoscalingPlan
from mlmodel_operator.scaling import scaling_verdict
from mlmodel_operator.status import Observation, compute_status, evaluate

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
    refused = AutoscalingPlan(None, "ScaleToZeroNeedsKEDA", "min_replicas 0 needs KEDA")
    assert scaling_verdict(refused, None) == (
        "False",
        "ScaleToZeroNeedsKEDA",
        "min_replicas 0 needs KEDA",
    )
    assert scaling_verdict(HPA, None) == (
        "Unknown",
        "AutoscalerPending",
        "creating the HorizontalPodAutoscaler",
    )


def deployment(replicas: int, ready: int, updated: int | None = None) -> dict[str, Any]:
    updated = replicas if updated is None else updated
    return {
        "metadata": {"generation": 2},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": 2,
            "replicas": replicas,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "conditions": [
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}
            ],
        },
    }


def obs(**kw: Any) -> Observation:
    base: dict[str, Any] = {
        "generation": 1,
        "desired_replicas": 1,
        "gpu_resource": "nvidia.com/gpu",
        "endpoint": "http://m.ns.svc.cluster.local",
        "selector": "a=b",
        "autoscaling": KEDA,
    }
    return Observation(**{**base, **kw})


def test_scaled_to_zero_by_the_autoscaler_is_ready() -> None:
    idle = {"status": {"conditions": [KEDA_READY, cond("Active", "False", "ScalerNotActive")]}}
    status = compute_status(
        obs(desired_replicas=0, deployment=deployment(0, 0), autoscaler=idle), {}, "t"
    )
    assert status["phase"] == "Ready"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "ScaledToZero"
    scaling = next(c for c in status["conditions"] if c["type"] == "Scaling")
    assert (scaling["status"], scaling["reason"]) == ("True", "Idle")
    assert (status["replicas"], status["readyReplicas"], status["ready"]) == (0, 0, "0/0")


def test_without_autoscaling_there_is_no_scaling_condition() -> None:
    status = compute_status(obs(autoscaling=None, deployment=deployment(1, 1)), {}, "t")
    assert "Scaling" not in {c["type"] for c in status["conditions"]}


def test_replicas_the_autoscaler_asks_for_that_find_no_gpus_are_insufficient_gpu() -> None:
    # The autoscaler raised the Deployment from 2 to 4 replicas; 2 new pods find no GPUs.
    message = "0/4 nodes are available: 2 Insufficient nvidia.com/gpu, 2 node(s) had untolerated"
    unschedulable = {
        "metadata": {"name": "m-x"},
        "status": {
            "conditions": [
                {"type": "Ready", "status": "False"},
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": message,
                },
            ]
        },
    }
    ready = {
        "metadata": {"name": "m-y"},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }
    phase, conditions = evaluate(
        obs(
            generation=2,
            desired_replicas=4,
            deployment=deployment(4, 2),
            pods=[ready, ready, unschedulable, unschedulable],
        )
    )
    assert conditions["Scheduled"].reason == "InsufficientGPU"
    assert conditions["Ready"].reason == "InsufficientGPU"
    assert "2 of 4 replicas serving" in conditions["Ready"].message
    assert phase == "Degraded"
