"""On a kind cluster: the operator from the chart, with the image built from the Dockerfile,
serves a scikit-learn model with MLServer whose pods really start and pass their probes, and
which answers through its Service (cluster DNS, kube-proxy, the node's pod network) and the
monitoring sidecar. These are the steps a user's kind-based CI takes (docs/kind-ci.md,
"Testing your models in CI with kind"), and what .github/workflows/kind.yaml runs with Docker."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client

from kube_helpers import TestCluster
from model_helpers import Models
from realnode_helpers import (
    REQUESTS,
    InstalledOperator,
    call_from_a_pod,
    restricted_pod,
    wait_for_pod_phase,
)

# The first test also creates the cluster, builds the node image and loads the images (minutes).
pytestmark = pytest.mark.timeout(1800)

IRIS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.1, 4.7, 1.5], [6.3, 3.3, 6.0, 2.5]]


def run_to_completion(cluster: TestCluster, namespace: str, pod: dict[str, Any]) -> str:
    """Run a one-shot pod until it succeeds; its log."""
    core = client.CoreV1Api(cluster.api)
    core.create_namespaced_pod(namespace, pod)
    name = pod["metadata"]["name"]
    wait_for_pod_phase(cluster, namespace, name, "Succeeded")
    return core.read_namespaced_pod_log(name, namespace)


def test_operator_runs_in_the_kind_node_from_the_loaded_image(
    kind_test_cluster: TestCluster, kind_operator: InstalledOperator, kind_images: dict[str, str]
) -> None:
    (pod,) = (
        client.CoreV1Api(kind_test_cluster.api)
        .list_namespaced_pod(
            kind_operator.namespace,
            label_selector=f"app.kubernetes.io/instance={kind_operator.release}",
        )
        .items
    )
    assert pod.spec.containers[0].image == kind_images["operator"]
    (status,) = pod.status.container_statuses
    assert status.ready and status.restart_count == 0
    # Logs come from the node's kubelet through the API server: the operator's JSON lines.
    logs = kind_test_cluster.kubectl(
        "logs", "-n", kind_operator.namespace, pod.metadata.name
    ).stdout.splitlines()
    assert any(json.loads(line) for line in logs if line.startswith("{"))


def test_mlserver_model_pods_run_and_answer_through_the_service(
    kind_test_cluster: TestCluster,
    kind_operator: InstalledOperator,
    kind_images: dict[str, str],
    kind_model_claim: str,
) -> None:
    cluster, namespace, name = kind_test_cluster, kind_operator.models, "iris-kind"
    # The model, trained in the image that serves it, onto the claim; as root, without any
    # capability, since the node's directory is root's (MLServer, not root, only reads it).
    train = (
        "import os, joblib\n"
        "from sklearn.datasets import load_iris\n"
        "from sklearn.linear_model import LogisticRegression\n"
        "X, y = load_iris(return_X_y=True)\n"
        f"os.makedirs('/mnt/models/{name}', exist_ok=True)\n"
        f"joblib.dump(LogisticRegression(max_iter=1000).fit(X, y), "
        f"'/mnt/models/{name}/model.joblib')\n"
    )
    mount = {"volumeMounts": [{"name": "models", "mountPath": "/mnt/models"}]}
    volumes = [{"name": "models", "persistentVolumeClaim": {"claimName": kind_model_claim}}]
    as_root = {"runAsUser": 0, "runAsGroup": 0}
    trainer = restricted_pod(
        "train", kind_images["mlserver"], ["python", "-c", train],
        container=mount, volumes=volumes, securityContext=as_root,
    )  # fmt: skip
    run_to_completion(cluster, namespace, trainer)

    models = Models(cluster, namespace)
    models.create(
        {
            "apiVersion": "machine-learning.org/v1",
            "kind": "MLModelDeployment",
            "metadata": {"name": name},
            "spec": {
                "model_type": "sklearn",
                "model_uri": f"pvc://{kind_model_claim}/{name}",
                "model_version": "v1",
                "computational_resources": {"memory_requirements": "1Gi", "cpu": "100m"},
                "monitoring": {"performance_tracking": "enabled"},
            },
        }
    )
    models.wait_ready(name, timeout=600)
    pods = (
        client.CoreV1Api(cluster.api)
        .list_namespaced_pod(namespace, label_selector=f"app.kubernetes.io/instance={name}")
        .items
    )
    assert pods
    for pod in pods:
        images = {c.image for c in pod.spec.containers}
        assert images == {kind_images["mlserver"], kind_images["operator"]}
        for status in pod.status.container_statuses:
            assert status.ready and status.started and status.restart_count == 0, status.name

    # From another pod, by the Service's DNS name, through the sidecar to MLServer.
    service = f"http://{name}.{namespace}.svc.cluster.local"
    body = {"inputs": [{"name": "x", "shape": [3, 4], "datatype": "FP64", "data": IRIS}]}
    result = call_from_a_pod(
        cluster, namespace, kind_images["operator"], f"{service}/v2/models/{name}/infer", body,
        f"{service}:9090/metrics",
    )  # fmt: skip
    assert len(result["answers"]) == REQUESTS
    for answer in result["answers"]:
        assert answer["model_name"] == name
        assert answer["outputs"][0]["data"] == [0, 1, 2]
    counted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in result["metrics"].splitlines()
        if line.startswith("mlmodel_requests_total{") and f'model="{name}"' in line
    )
    assert counted >= REQUESTS, "the sidecar did not count every request"
