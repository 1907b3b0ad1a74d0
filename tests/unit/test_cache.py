"""The watch cache: projections keep what the status and the diff read, and changes of nothing
else trigger a reconcile; the operator's own writes and late answers never move it backwards."""

from __future__ import annotations

import copy
from typing import Any

from mlmodel_operator.cache import (
    CUSTOM_METRICS,
    KEDA,
    PROMETHEUS_OPERATOR,
    Cache,
    child_view,
    pod_view,
)
from mlmodel_operator.status import failed_init_containers

INSTANCE = "app.kubernetes.io/instance"


def pod(name: str = "m-abc", rv: str = "10", ready: str = "False", **status: Any) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "ns",
            "resourceVersion": rv,
            "labels": {INSTANCE: "m", "app.kubernetes.io/version": "v1", "pod-template-hash": "x"},
            "managedFields": [{"manager": "kube-controller-manager"}],
        },
        "spec": {"containers": [{"name": "model-server", "image": "i"}]},
        "status": {
            "podIP": "10.0.0.1",
            "conditions": [
                {"type": "Ready", "status": ready, "lastTransitionTime": "t1"},
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": "t0"},
                {"type": "Initialized", "status": "True"},
            ],
            **status,
        },
    }


def deployment(rv: str = "5", replicas: int = 1, ready: int = 0) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "m",
            "namespace": "ns",
            "uid": "u1",
            "resourceVersion": rv,
            "generation": 1,
            "labels": {INSTANCE: "m", "app.kubernetes.io/managed-by": "mlmodel-operator"},
            "managedFields": [{"manager": "mlmodel-operator", "fieldsV1": {"f:spec": {}}}],
        },
        "spec": {"replicas": replicas},
        "status": {"readyReplicas": ready},
    }


def model(rv: str = "1", generation: int = 1, phase: str | None = None) -> dict:
    return {
        "apiVersion": "machine-learning.org/v1",
        "kind": "MLModelDeployment",
        "metadata": {
            "name": "m",
            "namespace": "ns",
            "uid": "u0",
            "generation": generation,
            "resourceVersion": rv,
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}"},
        },
        "spec": {"model_type": "sklearn"},
        "status": {"phase": phase} if phase else {},
    }


def test_pod_view_keeps_what_the_status_reads_only() -> None:
    view = pod_view(
        pod(containerStatuses=[{"name": "c", "state": {"waiting": {"reason": "ErrImagePull"}}}])
    )
    assert view["metadata"]["labels"] == {INSTANCE: "m", "app.kubernetes.io/version": "v1"}
    assert [c["type"] for c in view["status"]["conditions"]] == ["Ready", "PodScheduled"]
    assert "lastTransitionTime" not in view["status"]["conditions"][0]
    assert view["status"]["containerStatuses"] == [
        {"name": "c", "state": {"waiting": {"reason": "ErrImagePull"}}}
    ]
    assert "spec" not in view and "podIP" not in view["status"]


def test_pod_view_keeps_a_failed_init_container_with_its_message() -> None:
    # The model fetcher in back-off: the status reports its termination message.
    fetcher = {
        "name": "model-fetch",
        "restartCount": 3,
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
        "lastState": {
            "terminated": {
                "exitCode": 1,
                "reason": "Error",
                "message": "s3://models/m: AccessDenied",
                "finishedAt": "2026-01-01T00:00:00Z",
            }
        },
    }
    done = {"name": "other", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
    view = pod_view(pod(initContainerStatuses=[fetcher, done]))
    assert view["status"]["initContainerStatuses"] == [
        {
            "name": "model-fetch",
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
            "lastState": {
                "terminated": {
                    "exitCode": 1,
                    "reason": "Error",
                    "message": "s3://models/m: AccessDenied",
                }
            },
        },
        {"name": "other"},
    ]
    assert failed_init_containers([view]) == [
        ("model-fetch", "ModelFetchFailed", "s3://models/m: AccessDenied")
    ]


def test_child_view_drops_managed_fields_and_keeps_deployment_status() -> None:
    view = child_view(deployment(ready=1))
    assert "managedFields" not in view["metadata"]
    assert view["status"] == {"readyReplicas": 1}
    service = {**deployment(), "kind": "Service", "status": {"loadBalancer": {}}}
    assert "status" not in child_view(service)


def test_a_pod_change_the_status_does_not_report_triggers_nothing() -> None:
    cache = Cache()
    cache.observe(pod(rv="10"))
    assert cache.claim(pod()) and not cache.claim(pod())  # new: claimed once
    moved = pod(rv="11")
    moved["status"]["podIP"] = "10.0.0.2"
    moved["status"]["conditions"][0]["lastTransitionTime"] = "t2"
    cache.observe(moved)
    assert not cache.claim(moved)
    cache.observe(pod(rv="12", ready="True"))
    assert cache.claim(pod())
    assert cache.pods("ns", "m")[0]["status"]["conditions"][0]["status"] == "True"


def test_a_model_status_change_triggers_nothing_a_spec_change_does() -> None:
    cache = Cache()
    cache.observe(model())
    assert cache.claim(model())
    cache.observe(model(rv="2", phase="Ready"))
    assert not cache.claim(model())
    assert cache.model("ns", "m")["status"] == {"phase": "Ready"}
    cache.observe(model(rv="3", generation=2, phase="Ready"))
    assert cache.claim(model())


def test_the_operators_own_writes_are_recorded_without_a_trigger() -> None:
    cache = Cache()
    cache.record(deployment(rv="5", replicas=2))
    assert cache.get("Deployment", "ns", "m")["spec"] == {"replicas": 2}
    cache.observe(deployment(rv="5", replicas=2))  # the watch reports the same write
    assert not cache.claim(deployment())


def test_older_versions_never_replace_newer_ones() -> None:
    cache = Cache()
    cache.observe(deployment(rv="7", replicas=3))
    cache.record(deployment(rv="6", replicas=2))  # a write's answer arriving late
    cached = cache.get("Deployment", "ns", "m")
    assert cached["spec"] == {"replicas": 3} and cached["metadata"]["resourceVersion"] == "7"


def test_a_deleted_object_is_not_brought_back_by_a_late_answer() -> None:
    cache = Cache()
    cache.observe(deployment(rv="7"))
    deleted = deployment(rv="8")
    cache.forget(deleted)
    assert cache.get("Deployment", "ns", "m") is None
    cache.record(deployment(rv="7"))
    assert cache.get("Deployment", "ns", "m") is None
    cache.observe(deployment(rv="9"))  # created again
    assert cache.get("Deployment", "ns", "m") is not None


def test_reads_are_copies() -> None:
    cache = Cache()
    cache.observe(deployment())
    copy_ = cache.get("Deployment", "ns", "m")
    copy_["spec"]["replicas"] = 99
    assert cache.get("Deployment", "ns", "m")["spec"]["replicas"] == 1


def test_pods_are_grouped_by_model_and_forgotten() -> None:
    cache = Cache()
    cache.observe(pod("a"))
    other = copy.deepcopy(pod("b"))
    other["metadata"]["labels"][INSTANCE] = "other"
    cache.observe(other)
    assert [p["metadata"]["name"] for p in cache.pods("ns", "m")] == ["a"]
    cache.forget(pod("a", rv="20"))
    assert cache.pods("ns", "m") == []


def test_prometheus_operator_needs_both_crds_and_reports_a_flip_once() -> None:
    cache = Cache()
    cache.observe_crd("servicemonitors.monitoring.coreos.com", {"v1"})
    assert not cache.served_apis() and not cache.claim_api_change()
    cache.observe_crd("prometheusrules.monitoring.coreos.com", {"v1alpha1"})
    assert not cache.served_apis() and not cache.claim_api_change()
    cache.observe_crd("prometheusrules.monitoring.coreos.com", {"v1alpha1", "v1"})
    assert cache.served_apis() == {PROMETHEUS_OPERATOR}
    assert cache.claim_api_change() and not cache.claim_api_change()


def test_objects_that_are_not_the_operators_are_kept_as_name_and_controller() -> None:
    cache = Cache()
    theirs = deployment()
    theirs["metadata"]["labels"] = {"app": "someone-else"}
    theirs["metadata"]["ownerReferences"] = [{"uid": "x", "controller": True, "kind": "Foo"}]
    cache.observe(theirs)
    cached = cache.get("Deployment", "ns", "m")
    assert "spec" not in cached and "status" not in cached
    assert cached["metadata"]["ownerReferences"] == [{"uid": "x", "controller": True}]


def test_deployment_view_names_the_managers_of_its_replica_count() -> None:
    body = deployment()
    body["metadata"]["managedFields"] = [
        {"manager": "mlmodel-operator", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
        {"manager": "kube-controller-manager", "fieldsV1": {"f:status": {"f:replicas": {}}}},
    ]
    assert child_view(body)["replicasManagers"] == ["mlmodel-operator"]


def test_autoscaler_view_keeps_counts_and_conditions_only() -> None:
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "m", "namespace": "ns", "labels": {INSTANCE: "m"}},
        "spec": {"maxReplicas": 3},
        "status": {
            "currentReplicas": 2,
            "desiredReplicas": 3,
            "lastScaleTime": "t",
            "currentMetrics": [{"type": "Resource"}],
            "conditions": [
                {
                    "type": "ScalingActive",
                    "status": "False",
                    "reason": "FailedGetResourceMetric",
                    "message": "no metrics",
                    "lastTransitionTime": "t",
                }
            ],
        },
    }
    assert child_view(hpa)["status"] == {
        "currentReplicas": 2,
        "desiredReplicas": 3,
        "conditions": [
            {
                "type": "ScalingActive",
                "status": "False",
                "reason": "FailedGetResourceMetric",
                "message": "no metrics",
            }
        ],
    }


def test_keda_and_the_custom_metrics_api_are_optional_apis() -> None:
    cache = Cache()
    cache.observe_crd("scaledobjects.keda.sh", {"v1alpha1"})
    assert cache.served_apis() == {KEDA} and cache.claim_api_change()
    cache.observe_api_service("v1beta1.custom.metrics.k8s.io", False)
    assert not cache.claim_api_change()
    cache.observe_api_service("v1beta1.custom.metrics.k8s.io", True)
    assert cache.served_apis() == {KEDA, CUSTOM_METRICS} and cache.claim_api_change()
    cache.observe_api_service("v1beta1.custom.metrics.k8s.io", False)
    assert cache.served_apis() == {KEDA}
