"""spec.autoscaling on a real API server with the real HorizontalPodAutoscaler controller (the
local kube-controller-manager runs it; no metrics API is installed, so it reports metrics
unavailable), and KEDA's ScaledObject at the object level, with a stand-in of its CRD."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, watch

from cases import manifest
from kube_helpers import TestCluster, wait_until
from model_helpers import NAME, Models, condition, wait_for_reconciles

# The KEDA test asks for the operator itself, after KEDA's CRD (see keda_crd).
with_operator = pytest.mark.usefixtures("operator")

OPERATOR = "mlmodel-operator"
HANDOVER = "mlmodel-operator-handover"
PROMETHEUS_URL = "http://prometheus.monitoring.svc:9090"
# memory needs no metrics source but the resource metrics API, which is not installed here: the
# HPA controller runs and says so.
ON_MEMORY = {"max_replicas": 5, "metric": "memory", "target": 80}


@pytest.fixture
def models(cluster: TestCluster, namespace: str) -> Models:
    return Models(cluster, namespace)


def autoscaling_api(cluster: TestCluster) -> client.AutoscalingV2Api:
    return client.AutoscalingV2Api(cluster.api)


def hpa(cluster: TestCluster, namespace: str) -> client.V2HorizontalPodAutoscaler:
    return autoscaling_api(cluster).read_namespaced_horizontal_pod_autoscaler(NAME, namespace)


def replicas_owners(deployment: client.V1Deployment) -> set[str]:
    return {
        entry.manager
        for entry in deployment.metadata.managed_fields or []
        if "f:replicas" in (entry.fields_v1 or {}).get("f:spec", {})
    }


class ReplicaRecorder:
    """Every replica count the API server stores for the model Deployment, from a watch."""

    def __init__(self, models: Models, resource_version: str) -> None:
        self.seen: list[int] = []
        self._watch = watch.Watch()
        self._stopped = False
        self._thread = threading.Thread(
            target=self._run, args=(models, resource_version), daemon=True
        )
        self._thread.start()

    def _run(self, models: Models, resource_version: str) -> None:
        try:
            for event in self._watch.stream(
                models.apps.list_namespaced_deployment,
                models.namespace,
                field_selector=f"metadata.name={NAME}",
                resource_version=resource_version,
                timeout_seconds=120,
            ):
                self.seen.append(event["object"].spec.replicas)
        except Exception:
            if not self._stopped:
                raise

    def stop(self) -> list[int]:
        self._stopped = True
        self._watch.stop()
        return self.seen


def scaling(models: Models) -> dict[str, Any]:
    return condition(models.get(), "Scaling")


@with_operator
def test_hpa_is_created_and_its_real_verdict_reaches_the_status(
    cluster: TestCluster, namespace: str, models: Models
) -> None:
    models.create(manifest(NAME, model_type="sklearn", autoscaling=ON_MEMORY))
    created = wait_until(lambda: hpa(cluster, namespace), what="the HorizontalPodAutoscaler")
    assert created.metadata.owner_references[0].name == NAME
    assert created.spec.scale_target_ref.kind == "Deployment"
    assert created.spec.scale_target_ref.name == NAME
    assert (created.spec.min_replicas, created.spec.max_replicas) == (1, 5)
    assert created.spec.metrics[0].resource.name == "memory"
    assert created.spec.behavior.scale_down.stabilization_window_seconds == 300

    # The controller finds no metrics API; its own message is in the model's status.
    obj = models.wait_condition("Scaling", reason="MetricsUnavailable")
    verdict = condition(obj, "Scaling")
    active = next(c for c in hpa(cluster, namespace).status.conditions if c.type == "ScalingActive")
    assert active.status == "False"
    assert verdict["status"] == "False"
    assert verdict["message"].startswith(f"HorizontalPodAutoscaler: {active.message}")
    # Metrics unavailable does not make the model any less served.
    ready = models.wait_ready()
    assert ready["status"]["phase"] == "Ready"
    assert ready["status"]["replicas"] == ready["status"]["readyReplicas"] == 1


@with_operator
def test_switching_on_keeps_the_count_the_operator_never_fights_and_off_hands_it_back(
    cluster: TestCluster, namespace: str, models: Models
) -> None:
    models.create(manifest(NAME, model_type="sklearn", replicas=3))
    models.wait_ready()
    before = models.deployment()
    assert replicas_owners(before) == {OPERATOR}

    # Switched on: the operator hands the count over, and it is never reset on the way.
    recorder = ReplicaRecorder(models, before.metadata.resource_version)
    models.patch_spec({"autoscaling": {**ON_MEMORY, "min_replicas": 2}})
    handed = wait_until(
        lambda: OPERATOR not in replicas_owners(d := models.deployment()) and d,
        what="the operator to let go of the Deployment's replicas",
    )
    wait_until(lambda: hpa(cluster, namespace), what="the HorizontalPodAutoscaler")
    models.wait_condition("Scaling", reason="MetricsUnavailable")
    assert handed.spec.replicas == 3
    assert replicas_owners(handed) == {HANDOVER}
    seen = recorder.stop()
    assert seen and set(seen) == {3}, seen

    # Scaled as an autoscaler scales (the scale subresource); reconciles leave it alone.
    models.apps.patch_namespaced_deployment_scale(NAME, namespace, {"spec": {"replicas": 4}})
    scaled = models.deployment()
    operator_entry = next(e for e in scaled.metadata.managed_fields if e.manager == OPERATOR)
    models.custom.patch_namespaced_custom_object(
        "machine-learning.org",
        "v1",
        namespace,
        "mlmodeldeployments",
        NAME,
        {"metadata": {"labels": {"touched": "yes"}}},
    )
    wait_for_reconciles(3)  # the label's reconcile and resyncs
    obj = models.wait_ready()
    assert obj["status"]["ready"] == "4/4"
    after = models.deployment()
    assert after.spec.replicas == 4
    assert after.metadata.generation == scaled.metadata.generation  # no spec write since
    assert OPERATOR not in replicas_owners(after)
    assert (
        next(e for e in after.metadata.managed_fields if e.manager == OPERATOR).time
        == operator_entry.time
    )

    # Switched off: the HPA goes and spec.replicas applies again, owned by the operator.
    models.patch_spec({"autoscaling": None})
    wait_until(
        lambda: (
            not autoscaling_api(cluster).list_namespaced_horizontal_pod_autoscaler(namespace).items
        ),
        what="the HorizontalPodAutoscaler to be deleted",
    )
    back = wait_until(
        lambda: (d := models.deployment()).spec.replicas == 3 and d,
        what="spec.replicas to apply again",
    )
    assert OPERATOR in replicas_owners(back)
    obj = models.wait_ready()
    assert not condition(obj, "Scaling")


@with_operator
def test_the_real_hpa_scales_up_to_min_and_the_operator_lets_it(
    cluster: TestCluster, namespace: str, models: Models
) -> None:
    models.create(manifest(NAME, model_type="sklearn", replicas=1))
    models.wait_ready()
    models.patch_spec({"autoscaling": {**ON_MEMORY, "min_replicas": 2}})
    # The HPA controller brings a count below min_replicas up without metrics: its own write.
    scaled = wait_until(
        lambda: (d := models.deployment()).spec.replicas == 2 and d,
        what="the HorizontalPodAutoscaler to scale the Deployment to min_replicas",
    )
    assert OPERATOR not in replicas_owners(scaled)
    assert HANDOVER not in replicas_owners(scaled)  # the autoscaler's now
    obj = wait_until(
        lambda: (o := models.wait_ready())["status"]["ready"] == "2/2" and o,
        what="the status to show the autoscaler's 2 replicas",
    )
    assert obj["status"]["replicas"] == obj["status"]["readyReplicas"] == 2
    wait_for_reconciles(2)
    assert models.deployment().spec.replicas == 2


@with_operator
def test_scale_to_zero_without_keda_or_activator_and_traffic_metrics_without_a_source_are_refused(
    cluster: TestCluster, namespace: str, models: Models
) -> None:
    to_zero = {"min_replicas": 0, "max_replicas": 4, "metric": "concurrency", "target": 2}
    models.create(manifest(NAME, model_type="sklearn", replicas=2, autoscaling=to_zero))
    obj = models.wait_condition("Scaling", status="False", reason="ScaleToZeroNeedsActivator")
    assert (
        "needs the activator (chart value activator.enabled) or KEDA"
        in (condition(obj, "Scaling")["message"])
    )
    obj = models.wait_ready()
    assert obj["status"]["ready"] == "2/2"  # spec.replicas applies
    assert OPERATOR in replicas_owners(models.deployment())
    assert not autoscaling_api(cluster).list_namespaced_horizontal_pod_autoscaler(namespace).items

    models.patch_spec({"autoscaling": {**to_zero, "min_replicas": 1}})
    obj = models.wait_condition("Scaling", status="False", reason="CustomMetricsUnavailable")
    assert "custom.metrics.k8s.io" in condition(obj, "Scaling")["message"]
    assert not autoscaling_api(cluster).list_namespaced_horizontal_pod_autoscaler(namespace).items


# --- KEDA, at the object level --------------------------------------------------------------

KEDA_GROUP, KEDA_VERSION, KEDA_PLURAL = "keda.sh", "v1alpha1", "scaledobjects"
KEDA_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{KEDA_PLURAL}.{KEDA_GROUP}"},
    "spec": {
        "group": KEDA_GROUP,
        "scope": "Namespaced",
        "names": {"kind": "ScaledObject", "plural": KEDA_PLURAL, "singular": "scaledobject"},
        "versions": [
            {
                "name": KEDA_VERSION,
                "served": True,
                "storage": True,
                # A stand-in: KEDA's own schema is large; the API server needs no more to store
                # the objects. Status is a subresource, as in KEDA's CRD.
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    }
                },
            }
        ],
    },
}


@pytest.fixture
def keda_crd(cluster: TestCluster) -> Iterator[None]:
    """KEDA's CRD, installed before the operator starts, as KEDA is installed before the
    operator (kopf may not start watching a CRD created while it runs: it looks for the new kind
    once, when the CRD changes, and the API server's discovery can still lag behind then)."""
    ext = client.ApiextensionsV1Api(cluster.api)
    name = KEDA_CRD["metadata"]["name"]
    ext.create_custom_resource_definition(copy.deepcopy(KEDA_CRD))
    wait_until(
        lambda: any(
            c.type == "Established" and c.status == "True"
            for c in ext.read_custom_resource_definition(name).status.conditions or []
        ),
        what=f"{name} to be established",
    )
    yield
    ext.delete_custom_resource_definition(name)
    # Deletion finishes asynchronously; the next test may create it again.
    wait_until(
        lambda: name not in {c.metadata.name for c in ext.list_custom_resource_definition().items},
        what="KEDA's CRD to be deleted",
    )


@pytest.mark.operator_env(MLMODEL_PROMETHEUS_URL=PROMETHEUS_URL)
def test_with_keda_a_scaled_object_scales_to_zero_and_status_mirrors_it(
    cluster: TestCluster, namespace: str, keda_crd: None, operator: Any, models: Models
) -> None:
    custom = client.CustomObjectsApi(cluster.api)
    to_zero = {"min_replicas": 0, "max_replicas": 4, "metric": "concurrency", "target": 2}
    models.create(manifest(NAME, model_type="sklearn", replicas=1, autoscaling=to_zero))

    def scaled_object() -> dict[str, Any]:
        return custom.get_namespaced_custom_object(
            KEDA_GROUP, KEDA_VERSION, namespace, KEDA_PLURAL, NAME
        )

    obj = wait_until(scaled_object, what="the ScaledObject")
    assert obj["metadata"]["ownerReferences"][0]["name"] == NAME
    assert obj["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": NAME,
    }
    assert (obj["spec"]["minReplicaCount"], obj["spec"]["maxReplicaCount"]) == (0, 4)
    assert obj["spec"]["triggers"] == [
        {
            "type": "prometheus",
            "metricType": "AverageValue",
            "metadata": {
                "serverAddress": PROMETHEUS_URL,
                "query": "sum(mlmodel_requests_in_flight"
                f'{{namespace="{namespace}",model="{NAME}"}})',
                "threshold": "2",
                "activationThreshold": "0",
            },
        }
    ]
    assert not autoscaling_api(cluster).list_namespaced_horizontal_pod_autoscaler(namespace).items
    # No KEDA operator runs here: nothing has judged the ScaledObject yet.
    models.wait_condition("Scaling", status="Unknown", reason="AutoscalerPending")
    wait_until(
        lambda: OPERATOR not in replicas_owners(models.deployment()),
        what="the operator to let go of the Deployment's replicas",
    )

    # What KEDA reports when no request is in flight, and what it does: scale to zero.
    custom.patch_namespaced_custom_object_status(
        KEDA_GROUP,
        KEDA_VERSION,
        namespace,
        KEDA_PLURAL,
        NAME,
        {
            "status": {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "ScaledObjectReady",
                        "message": "ScaledObject is defined correctly and is ready for scaling",
                    },
                    {
                        "type": "Active",
                        "status": "False",
                        "reason": "ScalerNotActive",
                        "message": "Scaling is not performed because triggers are not active",
                    },
                ]
            }
        },
    )
    obj = models.wait_condition("Scaling", status="True", reason="Idle")
    assert condition(obj, "Scaling")["message"] == (
        "ScaledObject: Scaling is not performed because triggers are not active"
    )
    models.apps.patch_namespaced_deployment_scale(NAME, namespace, {"spec": {"replicas": 0}})
    obj = wait_until(
        lambda: condition(o := models.get(), "Ready").get("reason") == "ScaledToZero" and o,
        what="the model to be Ready, scaled to zero",
    )
    assert obj["status"]["phase"] == "Ready"
    assert obj["status"]["replicas"] == 0
    wait_for_reconciles(2)
    assert models.deployment().spec.replicas == 0  # not scaled back by the operator
