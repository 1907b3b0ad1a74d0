"""The Argo CD health check judges the statuses the operator really writes: Healthy only when the
model serves at its latest generation, Progressing through a rollout and while it waits for GPUs,
Degraded when its image cannot be had, Missing before the operator has said anything."""

from __future__ import annotations

import copy
import threading
from typing import Any

import pytest
from kubernetes import client, watch

from argocd_health import argocd_health
from cases import founding_manifest, manifest
from kube_helpers import TestCluster, wait_until

pytestmark = pytest.mark.usefixtures("operator")

GROUP, VERSION, PLURAL = "machine-learning.org", "v1", "mlmodeldeployments"


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_), {})


def serving(obj: dict[str, Any]) -> bool:
    """Ready=True at the latest generation: the only state Argo CD may call Healthy."""
    status = obj.get("status", {})
    return (
        status.get("observedGeneration") == obj["metadata"]["generation"]
        and condition(obj, "Ready").get("status") == "True"
    )


class Recorder:
    """Every version of one resource the API server stores, from a watch: no sampling gaps."""

    def __init__(self, custom: client.CustomObjectsApi, namespace: str, name: str, rv: str):
        self.seen: list[dict[str, Any]] = []
        self._watch = watch.Watch()
        self._stopped = False
        self._thread = threading.Thread(
            target=self._run, args=(custom, namespace, name, rv), daemon=True
        )
        self._thread.start()

    def _run(self, custom: client.CustomObjectsApi, namespace: str, name: str, rv: str) -> None:
        try:
            for event in self._watch.stream(
                custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                field_selector=f"metadata.name={name}",
                resource_version=rv,
                timeout_seconds=120,
            ):
                self.seen.append(copy.deepcopy(event["object"]))
        except Exception:
            if not self._stopped:
                raise

    def stop(self) -> None:
        self._stopped = True
        self._watch.stop()


@pytest.fixture
def custom(cluster: TestCluster) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(cluster.api)


def get(custom: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    return custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


def wait_serving(custom: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = get(custom, namespace, name)
        return obj if serving(obj) else None

    return wait_until(check, what=f"{name} Ready at its latest generation")


def test_a_rollout_is_missing_then_progressing_then_healthy(
    custom: client.CustomObjectsApi, namespace: str
) -> None:
    created = custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, founding_manifest()
    )
    name = created["metadata"]["name"]
    # As the API server stored it, before the operator wrote anything.
    assert argocd_health(created)["status"] == "Missing"

    ready = wait_serving(custom, namespace, name)
    verdict = argocd_health(ready)
    assert verdict == {"status": "Healthy", "message": ready["status"]["message"]}

    recorder = Recorder(custom, namespace, name, ready["metadata"]["resourceVersion"])
    updated = custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name, {"spec": {"replicas": 2, "model_version": "v2"}}
    )
    generation = updated["metadata"]["generation"]
    # The spec as stored, not yet observed by the operator: Argo CD must not call it Healthy.
    assert argocd_health(updated)["status"] == "Progressing"
    wait_serving(custom, namespace, name)
    recorder.stop()

    verdicts = [(obj, argocd_health(obj)) for obj in recorder.seen]
    assert verdicts, "the watch saw no update"
    for obj, verdict in verdicts:
        status = obj.get("status", {})
        expected = "Healthy" if serving(obj) else "Progressing"
        assert verdict["status"] == expected, (status, verdict)
        if status.get("observedGeneration") == generation and not serving(obj):
            assert verdict["message"] == status["message"]
    mid_rollout = [
        v
        for obj, v in verdicts
        if obj["status"].get("observedGeneration") == generation
        and obj["status"].get("phase") == "Progressing"
    ]
    assert mid_rollout and all(v["status"] == "Progressing" for v in mid_rollout)
    assert verdicts[-1][1]["status"] == "Healthy"


def test_gpus_no_node_has_free_are_progressing_with_the_schedulers_reason(
    custom: client.CustomObjectsApi, namespace: str
) -> None:
    # Waiting for capacity (a cluster autoscaler may add GPUs): in progress, with the reason.
    body = manifest(
        "greedy",
        model_type="pytorch",
        computational_resources={"gpu_allocation": 16, "memory_requirements": "64Gi"},
    )
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)

    def waiting() -> dict[str, Any] | None:
        obj = get(custom, namespace, "greedy")
        return obj if condition(obj, "Scheduled").get("reason") == "InsufficientGPU" else None

    obj = wait_until(waiting, what="Scheduled=False InsufficientGPU")
    assert obj["status"]["phase"] == "Pending"
    verdict = argocd_health(obj)
    assert verdict["status"] == "Progressing"
    assert "Insufficient nvidia.com/gpu" in verdict["message"]


def test_an_image_that_cannot_be_pulled_is_degraded(
    custom: client.CustomObjectsApi, namespace: str
) -> None:
    # The local cluster's kwok fails to pull exactly this image (hack/kwok/stages.yaml).
    body = manifest("broken", model_type="custom", image="registry.invalid/missing:1.0", port=8080)
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)

    def failed() -> dict[str, Any] | None:
        obj = get(custom, namespace, "broken")
        return obj if obj.get("status", {}).get("phase") == "Failed" else None

    obj = wait_until(failed, what="phase Failed")
    verdict = argocd_health(obj)
    assert verdict["status"] == "Degraded"
    assert "ImagePullBackOff" in verdict["message"]
