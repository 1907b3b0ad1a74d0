"""The autoscaler builders and the replica hand-over: pure functions of the spec and settings."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from mlmodel_operator import api
from mlmodel_operator.builders import BuildSettings, ObjectRef, Owner, build_children
from mlmodel_operator.builders.autoscaling import (
    HANDOVER_MANAGER,
    build_hpa,
    build_scaled_object,
    plan_autoscaling,
    quantity,
    replicas_handover,
    replicas_managers,
    starting_replicas,
)
from mlmodel_operator.runtimes import DEFAULT_RUNTIMES

OWNER = Owner(name="m", namespace="ns", uid="uid-1")
SETTINGS = BuildSettings(runtimes=dict(DEFAULT_RUNTIMES), monitor_image="monitor:1")
PROMETHEUS = "http://prometheus.monitoring:9090"


def spec(autoscaling: dict[str, Any] | None = None, **fields: Any) -> api.MLModelDeploymentSpec:
    body = {"model_type": "sklearn", **fields}
    if autoscaling is not None:
        body["autoscaling"] = {"max_replicas": 8, "target": 4, **autoscaling}
    return api.MLModelDeploymentSpec.model_validate(body)


def by_kind(s: api.MLModelDeploymentSpec, settings: BuildSettings) -> dict[str, dict[str, Any]]:
    return {obj["kind"]: obj for obj in build_children(OWNER, s, settings).apply}


def test_hpa_on_cpu_targets_the_deployment_with_utilization_of_the_request() -> None:
    s = spec(
        {"metric": "cpu", "target": 70, "min_replicas": 2, "scale_down_delay_seconds": 120},
        computational_resources={"cpu": "1"},
    )
    built = by_kind(s, SETTINGS)
    hpa = built["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["metadata"]["name"] == "m"
    assert hpa["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert hpa["spec"] == {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "m"},
        "minReplicas": 2,
        "maxReplicas": 8,
        "metrics": [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 70},
                },
            }
        ],
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 120}},
    }
    # The autoscaler owns the count: the operator no longer applies it.
    assert "replicas" not in built["Deployment"]["spec"]


@pytest.mark.parametrize(
    ("metric", "target", "name", "average"),
    [
        ("concurrency", 4, "mlmodel_requests_in_flight", "4"),
        ("concurrency", 1.5, "mlmodel_requests_in_flight", "1500m"),
        ("rps", 20, "mlmodel_requests", "20"),
    ],
)
def test_hpa_on_traffic_uses_pods_metrics_of_the_custom_metrics_api(
    metric: str, target: float, name: str, average: str
) -> None:
    with_adapter = replace(SETTINGS, custom_metrics=True)
    hpa = build_hpa(OWNER, spec({"metric": metric, "target": target}))
    assert hpa["spec"]["metrics"] == [
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": name},
                "target": {"type": "AverageValue", "averageValue": average},
            },
        }
    ]
    assert "HorizontalPodAutoscaler" in by_kind(spec({"metric": metric}), with_adapter)


def test_hpa_on_gpus_targets_the_sum_over_a_replicas_gpus() -> None:
    s = spec(
        {"metric": "gpu_utilization", "target": 60},
        model_type="pytorch",
        computational_resources={"gpu_allocation": 4},
    )
    metric = build_hpa(OWNER, s)["spec"]["metrics"][0]["pods"]
    assert metric["metric"]["name"] == "DCGM_FI_DEV_GPU_UTIL"
    assert metric["target"]["averageValue"] == "240"


def test_scaled_object_on_concurrency_is_a_prometheus_trigger_on_the_sidecar() -> None:
    keda = replace(SETTINGS, keda=True, prometheus_url=PROMETHEUS)
    s = spec({"min_replicas": 0, "target": 2.5, "scale_down_delay_seconds": 600})
    built = by_kind(s, keda)
    assert "HorizontalPodAutoscaler" not in built
    scaled = built["ScaledObject"]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "m",
    }
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (0, 8)
    assert scaled["spec"]["cooldownPeriod"] == 600
    assert scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == {
        "scaleDown": {"stabilizationWindowSeconds": 600}
    }
    assert scaled["spec"]["triggers"] == [
        {
            "type": "prometheus",
            "metricType": "AverageValue",
            "metadata": {
                "serverAddress": PROMETHEUS,
                "query": 'sum(mlmodel_requests_in_flight{namespace="ns",model="m"})',
                "threshold": "2.5",
                "activationThreshold": "0",
            },
        }
    ]
    assert "replicas" not in built["Deployment"]["spec"]
    # Where KEDA is served, an HPA of an earlier plan is removed, and the other way round.
    absent = build_children(OWNER, s, keda).absent
    assert ObjectRef("autoscaling/v2", "HorizontalPodAutoscaler", "ns", "m") in absent
    hpa_absent = build_children(OWNER, spec({"metric": "memory", "target": 80}), SETTINGS).absent
    assert not [r for r in hpa_absent if r.kind == "ScaledObject"]  # KEDA not served: not watched


def test_scaled_object_queries() -> None:
    keda = replace(SETTINGS, keda=True, prometheus_url=PROMETHEUS)
    rps = build_scaled_object(OWNER, spec({"metric": "rps", "target": 10}), PROMETHEUS)
    assert rps["spec"]["triggers"][0]["metadata"]["query"] == (
        'sum(rate(mlmodel_requests_total{namespace="ns",model="m"}[1m]))'
    )
    gpu = spec(
        {"metric": "gpu_utilization", "target": 80},
        model_type="pytorch",
        computational_resources={"gpu_allocation": 2},
    )
    trigger = by_kind(gpu, keda)["ScaledObject"]["spec"]["triggers"][0]["metadata"]
    # Per replica: the sum over the model's GPUs divided by GPUs per replica; KEDA divides by
    # the replicas. Only this Deployment's pods, not <name>-canary-...'s.
    assert trigger["query"] == (
        'sum(DCGM_FI_DEV_GPU_UTIL{namespace="ns",pod=~"m-[a-z0-9]+-[a-z0-9]+"}) / 2'
    )
    assert trigger["threshold"] == "80"
    memory = build_scaled_object(OWNER, spec({"metric": "memory", "target": 75}), None)
    assert memory["spec"]["triggers"] == [
        {"type": "memory", "metricType": "Utilization", "metadata": {"value": "75"}}
    ]


@pytest.mark.parametrize(
    ("autoscaling", "keda", "custom_metrics", "url", "kind", "reason", "activator"),
    [
        (
            {"metric": "memory", "target": 80},
            False,
            False,
            None,
            "HorizontalPodAutoscaler",
            None,
            False,
        ),
        ({"metric": "concurrency"}, False, True, None, "HorizontalPodAutoscaler", None, False),
        ({"metric": "concurrency"}, False, False, None, None, "CustomMetricsUnavailable", False),
        ({"metric": "rps"}, False, False, PROMETHEUS, None, "CustomMetricsUnavailable", False),
        ({"min_replicas": 0}, False, True, PROMETHEUS, None, "ScaleToZeroNeedsActivator", False),
        ({"min_replicas": 0}, True, False, PROMETHEUS, "ScaledObject", None, False),
        ({"metric": "concurrency"}, True, False, None, None, "PrometheusURLMissing", False),
        ({"metric": "memory", "target": 80}, True, False, None, "ScaledObject", None, False),
        ({"min_replicas": 0}, False, True, PROMETHEUS, "HorizontalPodAutoscaler", None, True),
        ({"min_replicas": 0}, False, False, None, "HorizontalPodAutoscaler", None, True),
    ],
)
def test_plan_says_why_autoscaling_cannot_be_set_up(
    autoscaling: dict[str, Any],
    keda: bool,
    custom_metrics: bool,
    url: str | None,
    kind: str | None,
    reason: str | None,
    activator: bool,
) -> None:
    s = spec(autoscaling)
    plan = plan_autoscaling(
        s, keda=keda, custom_metrics=custom_metrics, prometheus_url=url, activator=activator
    )
    assert plan is not None
    assert (plan.kind, plan.reason) == (kind, reason)
    assert (plan.message is None) == (reason is None)
    settings = replace(
        SETTINGS, keda=keda, custom_metrics=custom_metrics, prometheus_url=url, activator=activator
    )
    built = by_kind(s, settings)
    if kind is None:
        # Not set up: no autoscaler, and the replicas stay the spec's.
        assert built["Deployment"]["spec"]["replicas"] == 1
        assert not {"HorizontalPodAutoscaler", "ScaledObject"} & set(built)


def test_without_autoscaling_there_is_no_plan_and_replicas_apply() -> None:
    s = spec(replicas=3)
    assert plan_autoscaling(s, keda=True, custom_metrics=True, prometheus_url=PROMETHEUS) is None
    built = build_children(OWNER, s, SETTINGS)
    assert built.autoscaling is None
    assert by_kind(s, SETTINGS)["Deployment"]["spec"]["replicas"] == 3


def test_quantity() -> None:
    assert [quantity(v) for v in (4, 4.0, 1.5, 0.25)] == ["4", "4", "1500m", "250m"]


@pytest.mark.parametrize(
    ("replicas", "bounds", "start"),
    [(1, (2, 8), 2), (5, (1, 8), 5), (20, (1, 8), 8), (0, (0, 3), 0), (0, (1, 3), 1)],
)
def test_a_new_deployment_starts_at_spec_replicas_within_the_bounds(
    replicas: int, bounds: tuple[int, int], start: int
) -> None:
    s = spec({"min_replicas": bounds[0], "max_replicas": bounds[1]}, replicas=replicas)
    assert starting_replicas(s) == start


def test_replicas_managers_and_handover() -> None:
    live = {
        "metadata": {
            "name": "m",
            "namespace": "ns",
            "managedFields": [
                {
                    "manager": "mlmodel-operator",
                    "operation": "Apply",
                    "fieldsV1": {"f:spec": {"f:replicas": {}, "f:template": {}}},
                },
                {
                    "manager": "kube-controller-manager",
                    "operation": "Update",
                    "subresource": "status",
                    "fieldsV1": {"f:status": {"f:replicas": {}}},
                },
            ],
        },
        "spec": {"replicas": 3},
    }
    assert replicas_managers(live) == ["mlmodel-operator"]
    assert replicas_managers({"metadata": {}}) == []
    assert replicas_handover(live) == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "m", "namespace": "ns"},
        "spec": {"replicas": 3},
    }
    assert HANDOVER_MANAGER != "mlmodel-operator"


def test_an_llm_scales_on_vllms_queue() -> None:
    s = spec({"metric": "queue", "target": 8}, model_type="llm", model_uri="pvc://w/m")
    hpa = build_hpa(OWNER, s)
    assert hpa["spec"]["metrics"][0]["pods"] == {
        "metric": {"name": "vllm:num_requests_waiting"},
        "target": {"type": "AverageValue", "averageValue": "8"},
    }
    trigger = build_scaled_object(OWNER, s, PROMETHEUS)["spec"]["triggers"][0]
    # vLLM labels its metrics with the served name, which is the resource's name.
    assert trigger["metadata"]["query"] == (
        'sum(vllm:num_requests_waiting{namespace="ns",model_name="m"})'
    )
    assert trigger["metadata"]["threshold"] == "8"
    # Without KEDA it needs the custom metrics API, like the sidecar's metrics.
    plan = plan_autoscaling(s, keda=False, custom_metrics=False, prometheus_url=None)
    assert plan is not None and plan.reason == "CustomMetricsUnavailable"


def test_an_hpa_of_a_model_that_scales_to_zero_keeps_one_replica() -> None:
    # The activator takes the model from one replica to zero.
    hpa = build_hpa(OWNER, spec({"min_replicas": 0, "max_replicas": 3}))
    # autoscaling/v2 refuses minReplicas 0 (without the HPAScaleToZero feature gate).
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 3)
