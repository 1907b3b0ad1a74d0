"""The operator, run in-process against the real control plane: children built and healed,
status that tells the truth mid-rollout, loud GPU scheduling failures, nothing left behind."""

from __future__ import annotations

import copy
import logging
import threading
import time
from typing import Any

import pytest
import yaml
from kubernetes import client, watch

from cases import FOUNDING_MANIFEST, REPO, founding_manifest, manifest
from kube_helpers import TestCluster, wait_until
from model_helpers import GROUP, NAME, PLURAL, VERSION, Models, condition

pytestmark = pytest.mark.usefixtures("operator")


@pytest.fixture
def models(cluster: TestCluster, namespace: str) -> Models:
    return Models(cluster, namespace)


class StatusRecorder:
    """Every status the API server stores for one resource, from a watch (no sampling gaps)."""

    def __init__(self, models: Models, name: str, resource_version: str) -> None:
        self.seen: list[dict[str, Any]] = []
        self._stopped = False
        self._watch = watch.Watch()
        self._thread = threading.Thread(
            target=self._run, args=(models, name, resource_version), daemon=True
        )
        self._thread.start()

    def _run(self, models: Models, name: str, resource_version: str) -> None:
        try:
            self._stream(models, name, resource_version)
        except Exception:
            if not self._stopped:
                raise

    def _stream(self, models: Models, name: str, resource_version: str) -> None:
        for event in self._watch.stream(
            models.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            models.namespace,
            PLURAL,
            field_selector=f"metadata.name={name}",
            resource_version=resource_version,
            timeout_seconds=120,
        ):
            self.seen.append(copy.deepcopy(event["object"]))

    def stop(self) -> None:
        self._stopped = True
        self._watch.stop()


def test_founding_manifest_becomes_ready_on_gpu_nodes(
    cluster: TestCluster, namespace: str, models: Models
) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", str(FOUNDING_MANIFEST))
    obj = models.wait_ready()
    status = obj["status"]
    assert status["phase"] == "Ready"
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    assert status["readyReplicas"] == 1 and status["ready"] == "1/1"
    assert status["endpoint"] == f"http://{NAME}.{namespace}.svc.cluster.local"
    # No finalizer: the resource can be deleted even while the operator is not running.
    assert not obj["metadata"].get("finalizers")
    for type_ in ("Progressing", "Available", "Scheduled"):
        assert condition(obj, type_)["observedGeneration"] == obj["metadata"]["generation"]

    deployment = models.deployment()
    pod_spec = deployment.spec.template.spec
    server, sidecar = pod_spec.containers
    assert server.resources.limits == {"memory": "64G", "nvidia.com/gpu": "4"}
    assert server.resources.requests == {"memory": "64G", "cpu": "8"}  # 2 per GPU by default
    # No model_uri: Triton starts in explicit model-control mode over an empty repository, and
    # status says plainly that no model is loaded.
    assert "--model-control-mode=explicit" in server.args
    assert status["message"].startswith("1/1 replicas ready, generation 1; no model is loaded")
    assert sidecar.name == "monitor"
    assert {p.name for p in sidecar.ports} == {"http", "metrics"}
    assert any(t.key == "nvidia.com/gpu" for t in pod_spec.tolerations)
    assert deployment.spec.strategy.rolling_update.max_surge == 0
    owner = deployment.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.controller) == ("MLModelDeployment", NAME, True)

    service = models.core.read_namespaced_service(NAME, namespace)
    assert {(p.name, p.target_port) for p in service.spec.ports} == {
        ("http", "http"),
        ("metrics", "metrics"),
    }
    pods = models.core.list_namespaced_pod(namespace, label_selector=status["selector"]).items
    assert len(pods) == 1
    node = models.core.read_node(pods[0].spec.node_name)
    assert node.metadata.labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    # Events are posted right after the status they describe.
    wait_until(lambda: {"Created", "ModelServing"} <= set(models.events()), what="the events")


def test_spec_update_is_progressing_then_ready_at_the_new_generation(
    cluster: TestCluster, namespace: str, models: Models
) -> None:
    models.create(founding_manifest())
    before = models.wait_ready()
    recorder = StatusRecorder(models, NAME, before["metadata"]["resourceVersion"])
    updated = models.patch_spec(
        {
            "replicas": 2,
            "model_version": "v2",
            "computational_resources": {"memory_requirements": "48Gi"},
        }
    )
    generation = updated["metadata"]["generation"]
    assert generation > before["metadata"]["generation"]
    after = models.wait_ready()
    recorder.stop()

    assert after["status"]["observedGeneration"] == generation
    assert after["status"]["modelVersion"] == "v2"
    assert after["status"]["readyReplicas"] == 2
    # Mid-rollout, at the new generation, the resource said Progressing and not Ready.
    mid = [
        s
        for s in recorder.seen
        if s.get("status", {}).get("observedGeneration") == generation
        and s["status"].get("phase") == "Progressing"
    ]
    assert mid, [s.get("status", {}).get("phase") for s in recorder.seen]
    assert all(condition(s, "Ready")["status"] == "False" for s in mid)
    assert all(condition(s, "Progressing")["status"] == "True" for s in mid)
    # Ready's lastTransitionTime moved only when it flipped, and never went backwards.
    stamps = [condition(s, "Ready").get("lastTransitionTime") for s in recorder.seen]
    assert stamps == sorted(stamps)
    server = models.deployment().spec.template.spec.containers[0]
    assert server.resources.limits["memory"] == "48Gi"
    wait_until(
        # At creation and at the update: one Event, counted twice.
        lambda: models.event_counts().get("RollingOut", 0) >= 2 and models.events(),
        what="RollingOut reported twice",
    )
    assert models.events().count("RollingOut") == 1


def test_insufficient_gpus_fail_loudly_and_recover(
    cluster: TestCluster, namespace: str, models: Models
) -> None:
    body = manifest(
        "greedy",
        model_type="pytorch",
        computational_resources={"gpu_allocation": 16, "memory_requirements": "64Gi"},
    )
    models.create(body)

    obj = models.wait_condition("Scheduled", name="greedy", status="False")
    scheduled = condition(obj, "Scheduled")
    assert scheduled["reason"] == "InsufficientGPU"
    assert "Insufficient nvidia.com/gpu" in scheduled["message"]
    assert "nodes are available" in scheduled["message"]  # the scheduler's own words
    assert condition(obj, "Ready")["status"] == "False"
    assert condition(obj, "Ready")["reason"] == "InsufficientGPU"
    # A cluster autoscaler may still add GPUs: waiting, not failed, and saying for what.
    assert obj["status"]["phase"] == "Pending"
    assert obj["status"]["message"].startswith("waiting for capacity for generation 1: ")
    assert condition(obj, "Progressing")["status"] == "False"
    assert condition(obj, "Available")["status"] == "False"
    assert "endpoint" not in obj["status"]  # never served
    wait_until(lambda: "InsufficientGPU" in models.events("greedy"), what="a Warning event")

    models.patch_spec({"computational_resources": {"gpu_allocation": 4}}, name="greedy")
    recovered = models.wait_ready("greedy")
    assert condition(recovered, "Scheduled")["status"] == "True"


def test_an_image_that_cannot_be_pulled_is_reported_and_recovers(
    cluster: TestCluster, namespace: str, models: Models
) -> None:
    # The local cluster's kwok fails to pull exactly this image (hack/kwok/stages.yaml).
    body = manifest("broken", model_type="custom", image="registry.invalid/missing:1.0", port=8080)
    models.create(body)

    obj = models.wait_condition("Ready", name="broken", reason="ImagePullBackOff")
    ready = condition(obj, "Ready")
    assert ready["status"] == "False"
    assert 'Back-off pulling image "registry.invalid/missing:1.0"' in ready["message"]
    assert "container model-server" in ready["message"]
    assert obj["status"]["phase"] == "Failed"
    assert condition(obj, "Scheduled")["status"] == "True"  # placed, but cannot start

    models.patch_spec({"image": "ghcr.io/acme/model:1.0"}, name="broken")
    models.wait_ready("broken")


def test_hand_edits_are_undone(cluster: TestCluster, namespace: str, models: Models) -> None:
    models.create(founding_manifest())
    models.wait_ready()
    models.core.delete_namespaced_service(NAME, namespace)
    models.apps.patch_namespaced_deployment_scale(NAME, namespace, {"spec": {"replicas": 3}})

    wait_until(
        lambda: models.core.read_namespaced_service(NAME, namespace),
        what="the Service to be restored",
    )
    wait_until(
        lambda: models.deployment().spec.replicas == 1,
        what="the Deployment's replicas to be restored",
    )


@pytest.mark.parametrize(
    "body",
    [founding_manifest(), manifest(NAME, model_type="sklearn", model_version="v1")],
    ids=["triton-gpu", "mlserver-cpu"],
)
def test_resync_of_unchanged_resource_writes_nothing(
    cluster: TestCluster,
    namespace: str,
    models: Models,
    body: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    models.create(body)
    models.wait_ready()

    def versions() -> dict[str, str]:
        return {
            "model": models.get()["metadata"]["resourceVersion"],
            "deployment": models.deployment().metadata.resource_version,
            "service": models.core.read_namespaced_service(
                NAME, namespace
            ).metadata.resource_version,
            "configmap": models.core.read_namespaced_config_map(
                f"{NAME}-monitor", namespace
            ).metadata.resource_version,
        }

    # Ready comes from replica counts; the Deployment's own conditions (mirrored as Available)
    # may still be catching up, and that is a real change. Wait until nothing changes.
    def settled() -> dict[str, str] | None:
        first = versions()
        time.sleep(1.5)
        return first if versions() == first else None

    before = wait_until(settled, what="the status to settle")
    with caplog.at_level(logging.DEBUG, logger="mlmodel_operator.kube"):
        time.sleep(7)  # the test operator resyncs every 3 s: at least two resyncs
    assert versions() == before
    # Not even a no-op apply (the server would absorb it without a new resourceVersion): the
    # operator, running in this process, logs every write request it sends.
    writes = [r.getMessage() for r in caplog.records if r.getMessage().startswith("write:")]
    assert not [w for w in writes if f"/namespaces/{namespace}/" in w]


def test_deleting_the_resource_removes_every_child(
    cluster: TestCluster, namespace: str, models: Models
) -> None:
    models.create(founding_manifest())
    models.wait_ready()
    models.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, NAME)

    def all_gone() -> bool:
        return not (
            models.apps.list_namespaced_deployment(namespace).items
            or models.apps.list_namespaced_replica_set(namespace).items
            or models.core.list_namespaced_pod(namespace).items
            or models.core.list_namespaced_service(namespace).items
            or [
                cm
                for cm in models.core.list_namespaced_config_map(namespace).items
                if cm.metadata.name != "kube-root-ca.crt"
            ]
        )

    wait_until(all_gone, what="every child to be garbage-collected")


def test_turning_monitoring_off_removes_the_sidecar_and_its_config(
    cluster: TestCluster, namespace: str, models: Models
) -> None:
    models.create(founding_manifest())
    models.wait_ready()
    models.patch_spec(
        {"monitoring": {"performance_tracking": "disabled", "drift_detection": "inactive"}}
    )
    models.wait_ready()
    containers = models.deployment().spec.template.spec.containers
    assert [c.name for c in containers] == ["model-server"]
    assert not [
        cm
        for cm in models.core.list_namespaced_config_map(namespace).items
        if cm.metadata.name == f"{NAME}-monitor"
    ]


@pytest.fixture
def loose_crd(cluster: TestCluster) -> Any:
    """The CRD without the memory pattern, as an older CRD version might have stored objects;
    the real CRD is restored afterwards."""
    path = REPO / "crds" / "mlmodeldeployments.machine-learning.org.yaml"
    crd = yaml.safe_load(path.read_text())
    spec_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    del spec_schema["properties"]["computational_resources"]["properties"]["memory_requirements"][
        "pattern"
    ]
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=yaml.dump(crd))
    yield
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))


def test_invalid_stored_spec_is_reported_not_crashed_on(
    cluster: TestCluster, namespace: str, models: Models, loose_crd: Any
) -> None:
    body = founding_manifest()
    body["spec"]["computational_resources"]["memory_requirements"] = "lots"
    wait_until(lambda: _create_accepted(models, body), what="the loosened CRD to accept the object")

    obj = models.wait_condition("Ready", reason="InvalidSpec")
    ready = condition(obj, "Ready")
    assert ready["status"] == "False"
    assert "spec.computational_resources.memory_requirements" in ready["message"]
    assert obj["status"]["phase"] == "Failed"
    assert not models.apps.list_namespaced_deployment(namespace).items

    # Fixed by the user, it reconciles normally: the operator did not get stuck on it.
    models.patch_spec({"computational_resources": {"memory_requirements": "64GB"}})
    models.wait_ready()


def _create_accepted(models: Models, body: dict[str, Any]) -> bool:
    try:
        models.create(body)
        return True
    except client.ApiException as err:
        if err.status == 422:
            return False  # the API server has not picked up the loosened schema yet
        raise
