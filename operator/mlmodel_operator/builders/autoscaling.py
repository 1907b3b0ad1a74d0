"""The model's autoscaler: a KEDA ScaledObject where the cluster serves KEDA, else a
HorizontalPodAutoscaler, both on the model Deployment; or, when neither can do what
spec.autoscaling asks here, why not (the status says it, and the replicas stay the spec's).

While an autoscaler is in place the operator leaves `replicas` out of the Deployment it applies,
so the autoscaler alone owns it. `replicas_handover` makes that hand-over without the API server
resetting the count (see its docstring).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlmodel_operator import api
from mlmodel_operator.builders.meta import Owner, object_meta

HPA_API = "autoscaling/v2"
HPA_KIND = "HorizontalPodAutoscaler"
KEDA_API = "keda.sh/v1alpha1"
KEDA_KIND = "ScaledObject"
# The field manager that keeps the Deployment's replica count while the operator's own manager
# lets go of it (server-side apply's "transferring ownership").
HANDOVER_MANAGER = "mlmodel-operator-handover"
# The monitoring sidecar's metrics, and NVIDIA DCGM exporter's GPU utilization (percent).
IN_FLIGHT_METRIC = "mlmodel_requests_in_flight"
REQUESTS_METRIC = "mlmodel_requests_total"
# What prometheus-adapter's default rule names a counter's per-second rate (`_total` dropped).
REQUEST_RATE_METRIC = "mlmodel_requests"
GPU_UTIL_METRIC = "DCGM_FI_DEV_GPU_UTIL"
# vLLM's requests waiting for a place in its running batch, labelled model_name (the served
# name: the resource's name); the sidecar adds it to its own scrape (monitor/exposition.py).
QUEUE_METRIC = "vllm:num_requests_waiting"
# Metrics KEDA reads from Prometheus (the others are its cpu and memory triggers).
PROMETHEUS_METRICS = ("concurrency", "rps", "gpu_utilization", "queue")
KEDA_POLLING_SECONDS = 15


@dataclass(frozen=True)
class AutoscalingPlan:
    """What spec.autoscaling becomes here: the autoscaler's kind, or None with the reason."""

    kind: str | None
    reason: str | None = None
    message: str | None = None


def plan_autoscaling(
    spec: api.MLModelDeploymentSpec,
    *,
    keda: bool,
    custom_metrics: bool,
    prometheus_url: str | None,
    activator: bool = False,
) -> AutoscalingPlan | None:
    """None when spec.autoscaling is unset. Only the cluster's APIs and the operator's settings
    decide here; what the spec alone decides was refused at admission."""
    scaling = spec.autoscaling
    if scaling is None:
        return None
    metric = str(scaling.metric)
    if keda:
        if metric in PROMETHEUS_METRICS and not prometheus_url:
            return AutoscalingPlan(
                None,
                "PrometheusURLMissing",
                f"autoscaling on {metric} with KEDA reads Prometheus, and the operator has no "
                "--prometheus-url (chart value prometheusUrl): set it",
            )
        return AutoscalingPlan(KEDA_KIND)
    if scaling.min_replicas == 0 and not activator:
        return AutoscalingPlan(
            None,
            "ScaleToZeroNeedsActivator",
            "min_replicas 0 needs the activator (chart value activator.enabled) or KEDA "
            "(keda.sh/v1alpha1 ScaledObject), and this operator has neither: a "
            "HorizontalPodAutoscaler cannot scale to zero. Enable the activator, install KEDA or "
            "set min_replicas to 1 or more; until then replicas applies",
        )
    # With the activator an HPA is made even without its metrics: the activator needs one to own
    # the count (it wakes and idles the model), and the HPA's own verdict says what is missing.
    if metric in PROMETHEUS_METRICS and not custom_metrics and scaling.min_replicas > 0:
        return AutoscalingPlan(
            None,
            "CustomMetricsUnavailable",
            f"autoscaling on {metric} without KEDA needs the custom metrics API "
            "(custom.metrics.k8s.io, e.g. prometheus-adapter), which this cluster does not "
            "serve; until then replicas applies",
        )
    return AutoscalingPlan(HPA_KIND)


def quantity(value: float) -> str:
    """A target as a Kubernetes quantity: 4 -> "4", 1.5 -> "1500m"."""
    if value == int(value):
        return str(int(value))
    return f"{round(value * 1000)}m"


def _number(value: float) -> str:
    """A target as KEDA's metadata takes it: "4", "1.5"."""
    return str(int(value)) if value == int(value) else str(value)


def _gpus(spec: api.MLModelDeploymentSpec) -> int:
    return max(spec.computational_resources.gpu_allocation, 1)


def _pods_metric(name: str, average: str) -> dict[str, Any]:
    return {
        "type": "Pods",
        "pods": {
            "metric": {"name": name},
            "target": {"type": "AverageValue", "averageValue": average},
        },
    }


def hpa_metrics(spec: api.MLModelDeploymentSpec) -> list[dict[str, Any]]:
    scaling = spec.autoscaling
    assert scaling is not None
    metric, target = str(scaling.metric), scaling.target
    if metric in ("cpu", "memory"):
        utilization = {"type": "Utilization", "averageUtilization": int(target)}
        return [{"type": "Resource", "resource": {"name": metric, "target": utilization}}]
    if metric == "concurrency":
        return [_pods_metric(IN_FLIGHT_METRIC, quantity(target))]
    if metric == "rps":
        return [_pods_metric(REQUEST_RATE_METRIC, quantity(target))]
    if metric == "queue":
        return [_pods_metric(QUEUE_METRIC, quantity(target))]
    # A pod's value is the sum over its GPUs: the target per GPU times the GPUs per replica.
    return [_pods_metric(GPU_UTIL_METRIC, quantity(target * _gpus(spec)))]


def _behavior(scaling: api.Autoscaling) -> dict[str, Any]:
    return {"scaleDown": {"stabilizationWindowSeconds": scaling.scale_down_delay_seconds}}


def _target_ref(owner: Owner) -> dict[str, str]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "name": owner.name}


def build_hpa(owner: Owner, spec: api.MLModelDeploymentSpec) -> dict[str, Any]:
    scaling = spec.autoscaling
    assert scaling is not None
    return {
        "apiVersion": HPA_API,
        "kind": HPA_KIND,
        "metadata": object_meta(owner, spec, owner.name),
        "spec": {
            "scaleTargetRef": _target_ref(owner),
            # An HPA cannot scale to zero: the activator takes an idle model from one to zero,
            # and at zero the HPA pauses until the activator wakes the model.
            "minReplicas": max(scaling.min_replicas, 1),
            "maxReplicas": scaling.max_replicas,
            "metrics": hpa_metrics(spec),
            "behavior": _behavior(scaling),
        },
    }


def prometheus_query(owner: Owner, spec: api.MLModelDeploymentSpec) -> str:
    """The model's total of its metric; KEDA divides it by the replicas (AverageValue)."""
    scaling = spec.autoscaling
    assert scaling is not None
    match = f'namespace="{owner.namespace}",model="{owner.name}"'
    if scaling.metric == "concurrency":
        return f"sum({IN_FLIGHT_METRIC}{{{match}}})"
    if scaling.metric == "rps":
        return f"sum(rate({REQUESTS_METRIC}{{{match}}}[1m]))"
    if scaling.metric == "queue":
        return f'sum({QUEUE_METRIC}{{namespace="{owner.namespace}",model_name="{owner.name}"}})'
    # DCGM labels a GPU with the pod using it. Only this Deployment's pods (<name>-<rs>-<id>):
    # not another Deployment's whose name starts alike (<name>-canary-<rs>-<id>).
    pods = f'namespace="{owner.namespace}",pod=~"{owner.name}-[a-z0-9]+-[a-z0-9]+"'
    return f"sum({GPU_UTIL_METRIC}{{{pods}}}) / {_gpus(spec)}"


def keda_triggers(
    owner: Owner, spec: api.MLModelDeploymentSpec, prometheus_url: str | None
) -> list[dict[str, Any]]:
    scaling = spec.autoscaling
    assert scaling is not None
    metric = str(scaling.metric)
    if metric in ("cpu", "memory"):
        return [
            {
                "type": metric,
                "metricType": "Utilization",
                "metadata": {"value": str(int(scaling.target))},
            }
        ]
    return [
        {
            "type": "prometheus",
            "metricType": "AverageValue",
            "metadata": {
                "serverAddress": prometheus_url or "",
                "query": prometheus_query(owner, spec),
                "threshold": _number(scaling.target),
                # Active (kept above zero) while the query is above 0.
                "activationThreshold": "0",
            },
        }
    ]


def build_scaled_object(
    owner: Owner, spec: api.MLModelDeploymentSpec, prometheus_url: str | None
) -> dict[str, Any]:
    scaling = spec.autoscaling
    assert scaling is not None
    return {
        "apiVersion": KEDA_API,
        "kind": KEDA_KIND,
        "metadata": object_meta(owner, spec, owner.name),
        "spec": {
            "scaleTargetRef": _target_ref(owner),
            "minReplicaCount": scaling.min_replicas,
            "maxReplicaCount": scaling.max_replicas,
            "pollingInterval": KEDA_POLLING_SECONDS,
            # Idle this long before the last replica goes (min_replicas 0).
            "cooldownPeriod": scaling.scale_down_delay_seconds,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": _behavior(scaling)}},
            "triggers": keda_triggers(owner, spec, prometheus_url),
        },
    }


def starting_replicas(spec: api.MLModelDeploymentSpec) -> int:
    """The size an autoscaled Deployment is created at: spec.replicas within the bounds."""
    scaling = spec.autoscaling
    assert scaling is not None
    return min(max(spec.replicas, scaling.min_replicas), scaling.max_replicas)


def replicas_managers(deployment: dict[str, Any]) -> list[str]:
    """The field managers that own a Deployment's spec.replicas (from its managedFields)."""
    return sorted(
        {
            entry.get("manager", "")
            for entry in (deployment.get("metadata") or {}).get("managedFields") or []
            if "f:replicas" in ((entry.get("fieldsV1") or {}).get("f:spec") or {})
        }
    )


def replicas_handover(live: dict[str, Any]) -> dict[str, Any]:
    """The apply, by HANDOVER_MANAGER, of the live replica count alone.

    With server-side apply, a field that the operator's manager alone owns and then leaves out
    of what it applies is removed, and the Deployment's replicas default back to 1. Applied
    first, this makes a second manager co-own the count at its current value (no conflict: the
    value is the same), so the operator's next apply without `replicas` lets go of it and the
    count stays. The autoscaler's first change of the count then takes the field over. Sent
    without force: if the count changed in the meantime, the conflict is retried from fresher
    state rather than overwriting the autoscaler.
    """
    meta = live["metadata"]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
        "spec": {"replicas": (live.get("spec") or {}).get("replicas", 1)},
    }
