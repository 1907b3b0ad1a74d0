"""Pure builders: an MLModelDeployment's spec in, its child objects out, as plain dicts.

No I/O, no kopf, no API client here: everything is a function of its arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlmodel_operator import api
from mlmodel_operator.builders.autoscaling import (
    HPA_API,
    HPA_KIND,
    KEDA_API,
    KEDA_KIND,
    AutoscalingPlan,
    build_hpa,
    build_scaled_object,
    plan_autoscaling,
)
from mlmodel_operator.builders.deployment import build_deployment, model_port
from mlmodel_operator.builders.inference_pool import (
    build_pool_children,
    pool_object_keys,
    pool_wanted,
)
from mlmodel_operator.builders.meta import Owner, monitor_config_name
from mlmodel_operator.builders.monitor import (
    build_monitor_configmap,
    monitor_enabled,
    monitor_settings,
    peers_service_name,
)
from mlmodel_operator.builders.network_policy import NetworkPolicySettings, build_network_policy
from mlmodel_operator.builders.prometheus import build_prometheus_rule, build_service_monitor
from mlmodel_operator.builders.route import ROUTE_API, build_http_route
from mlmodel_operator.builders.service import build_peers_service, build_service
from mlmodel_operator.hashing import content_hash
from mlmodel_operator.runtimes import PICKER_RUNTIME, Runtime, runtime_for

__all__ = [
    "AutoscalingPlan",
    "BuildSettings",
    "Children",
    "MonitoringSetup",
    "NetworkPolicySettings",
    "ObjectRef",
    "Owner",
    "build_children",
]


@dataclass(frozen=True)
class ObjectRef:
    api_version: str
    kind: str
    namespace: str
    name: str


@dataclass(frozen=True)
class BuildSettings:
    """The installation-wide settings the builders need."""

    runtimes: dict[str, Runtime]
    monitor_image: str
    progress_deadline_seconds: int = 1200
    # Whether the cluster serves monitoring.coreos.com/v1 (ServiceMonitor, PrometheusRule).
    prometheus_operator: bool = False
    # A NetworkPolicy per model when set (--network-policy).
    network_policy: NetworkPolicySettings | None = None
    # Prometheus' HTTP API (--prometheus-url), for canary analysis and autoscaler triggers.
    prometheus_url: str | None = None
    # Whether the cluster serves the Gateway API's HTTPRoutes (gateway.networking.k8s.io/v1).
    gateway_api: bool = False
    # Whether the cluster serves the Inference Extension's InferencePools
    # (inference.networking.k8s.io/v1): an `llm` model behind a Gateway is then served through
    # one, with an endpoint picker.
    inference_pool: bool = False
    # Whether the cluster serves KEDA's keda.sh/v1alpha1 ScaledObject, and the custom metrics
    # API (custom.metrics.k8s.io, e.g. prometheus-adapter) for a HorizontalPodAutoscaler.
    keda: bool = False
    custom_metrics: bool = False
    # Whether the activator runs (--activator): it wakes models at zero and, without KEDA,
    # takes idle ones there.
    activator: bool = False


@dataclass(frozen=True)
class MonitoringSetup:
    """What the builders decided for monitoring (the status reports it)."""

    sidecar: bool
    prometheus_operator: bool
    drift_reference: str | None  # reference_uri, "" for the live baseline, None: drift off


@dataclass(frozen=True)
class Children:
    """What one MLModelDeployment should own: objects to apply, in order, objects that an
    earlier spec created and this one no longer wants, and the monitoring set up."""

    apply: list[dict[str, Any]]
    absent: list[ObjectRef]
    monitoring: MonitoringSetup
    # spec.autoscaling as set up here; None: autoscaling is off.
    autoscaling: AutoscalingPlan | None = None


def build_children(
    owner: Owner, spec: api.MLModelDeploymentSpec, settings: BuildSettings
) -> Children:
    runtime = runtime_for(spec.model_type, settings.runtimes)
    children: list[dict[str, Any]] = []
    absent: list[ObjectRef] = []
    monitor = None
    config_hash = None
    if monitor_enabled(spec):
        monitor = monitor_settings(owner, spec, runtime, model_port(spec, runtime))
        configmap = build_monitor_configmap(owner, spec, monitor)
        config_hash = content_hash(configmap["data"])
        children.append(configmap)
    else:
        absent.append(ObjectRef("v1", "ConfigMap", owner.namespace, monitor_config_name(owner)))
    children.append(
        build_deployment(
            owner,
            spec,
            runtime,
            monitor=monitor,
            monitor_image=settings.monitor_image,
            monitor_config_hash=config_hash,
            progress_deadline_seconds=settings.progress_deadline_seconds,
        )
    )
    plan = plan_autoscaling(
        spec,
        keda=settings.keda,
        custom_metrics=settings.custom_metrics,
        activator=settings.activator,
        prometheus_url=settings.prometheus_url,
    )
    if plan is not None and plan.kind is not None:
        # The autoscaler owns the replica count (see autoscaling.replicas_handover).
        del children[-1]["spec"]["replicas"]
    service = build_service(owner, spec, runtime, monitored=monitor is not None)
    children.append(service)
    peers = peers_service_name(owner)
    if monitor is not None and monitor.ground_truth is not None:
        port = monitor.ground_truth.feedback_port_base
        children.append(build_peers_service(owner, spec, peers, port))
    else:
        absent.append(ObjectRef("v1", "Service", owner.namespace, peers))
    gateway = spec.rollout.gateway
    pool = pool_wanted(spec, gateway_api=settings.gateway_api, pool_api=settings.inference_pool)
    if pool and gateway is not None:
        # Through the sidecar when it runs, so that the picker's requests and metric scrapes
        # are the ones the sidecar measures and forwards.
        target_port = api.SIDECAR_PROXY_PORT if monitor is not None else model_port(spec, runtime)
        clients = settings.network_policy.clients if settings.network_policy else None
        picker = settings.runtimes[PICKER_RUNTIME]
        children += build_pool_children(owner, spec, picker, target_port, gateway, clients)
    elif gateway is not None and settings.gateway_api:
        children.append(build_http_route(owner, spec, gateway, canary_weight=None))
    else:
        absent.append(ObjectRef(ROUTE_API, "HTTPRoute", owner.namespace, owner.name))
    if not pool:
        absent += [
            ObjectRef(api_version, kind, owner.namespace, name)
            for api_version, kind, name in pool_object_keys(owner)
        ]
    if settings.network_policy is not None:
        feedback_ports = None
        if monitor is not None and monitor.ground_truth is not None:
            base = monitor.ground_truth.feedback_port_base
            feedback_ports = range(base, base + monitor.workers)
        children.append(
            build_network_policy(owner, spec, service, settings.network_policy, feedback_ports)
        )
    else:
        # Turned off: a policy made while it was on would go on blocking traffic.
        absent.append(
            ObjectRef("networking.k8s.io/v1", "NetworkPolicy", owner.namespace, owner.name)
        )
    if settings.prometheus_operator:
        prometheus = [build_service_monitor(owner, spec), build_prometheus_rule(owner, spec)]
        if monitor is not None:
            children += prometheus
        else:
            absent += [
                ObjectRef(o["apiVersion"], o["kind"], owner.namespace, owner.name)
                for o in prometheus
            ]
    autoscalers = {HPA_KIND: HPA_API, KEDA_KIND: KEDA_API} if settings.keda else {HPA_KIND: HPA_API}
    kind = plan.kind if plan is not None else None
    if kind == HPA_KIND:
        children.append(build_hpa(owner, spec))
    elif kind == KEDA_KIND:
        children.append(build_scaled_object(owner, spec, settings.prometheus_url))
    absent += [
        ObjectRef(api_version, other, owner.namespace, owner.name)
        for other, api_version in autoscalers.items()
        if other != kind
    ]
    drift = spec.monitoring.drift_detection == "active"
    setup = MonitoringSetup(
        sidecar=monitor is not None,
        prometheus_operator=settings.prometheus_operator,
        drift_reference=(spec.monitoring.drift.reference_uri or "") if drift else None,
    )
    return Children(apply=children, absent=absent, monitoring=setup, autoscaling=plan)
