"""On the real node: the operator from the chart, with the image built from the Dockerfile, runs
scikit-learn models (MLServer, and the KServe model server as a custom image) whose pods really
start, pass their real probes, answer through the Service and the monitoring sidecar, and are
counted in the sidecar's metrics; and the resource is Ready only once its pods really are."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from kube_helpers import TestCluster, wait_until
from model_helpers import Models, condition
from realnode_helpers import (
    IRIS,
    NODE,
    REQUESTS,
    InstalledOperator,
    assert_pods_really_ready,
    call_from_a_pod,
    port_forwarded_get,
    train_iris,
)

# The first test also builds and imports the images when `make test` has not (minutes, cold).
pytestmark = pytest.mark.timeout(1800)


def requests_counted(metrics: str, model: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("mlmodel_requests_total{")
        and f'model="{model}"' in line
        and 'status_class="2xx"' in line
    )


@pytest.fixture
def models(in_cluster_operator: InstalledOperator, cluster: TestCluster) -> Models:
    return Models(cluster, in_cluster_operator.models)


def test_operator_runs_in_cluster_on_the_real_node_from_the_built_image(
    cluster: TestCluster, in_cluster_operator: InstalledOperator, images: dict[str, str]
) -> None:
    (pod,) = (
        client.CoreV1Api(cluster.api)
        .list_namespaced_pod(
            in_cluster_operator.namespace,
            label_selector=f"app.kubernetes.io/instance={in_cluster_operator.release}",
        )
        .items
    )
    assert pod.spec.node_name == NODE
    assert pod.spec.containers[0].image == images["operator"]
    assert pod.status.container_statuses[0].ready
    # kubectl logs goes through the API server to the kubelet: the operator's JSON lines.
    logs = cluster.kubectl(
        "logs", "-n", in_cluster_operator.namespace, pod.metadata.name
    ).stdout.splitlines()
    assert logs and all(json.loads(line) for line in logs if line.startswith("{"))
    # So do exec and port-forward (the API server's kubelet client certificate).
    version = cluster.kubectl(
        "exec", "-n", in_cluster_operator.namespace, pod.metadata.name, "--",
        "python", "-c", "import mlmodel_operator; print(mlmodel_operator.__version__)",
    ).stdout.strip()  # fmt: skip
    assert version
    metrics = port_forwarded_get(
        cluster,
        in_cluster_operator.namespace,
        f"svc/{in_cluster_operator.release}-metrics",
        8080,
        "/metrics",
    )
    assert "mlmodel_operator_reconciles_total" in metrics


def serve_and_call(
    cluster: TestCluster,
    models: Models,
    spec: dict[str, Any],
    images: set[str],
    operator_image: str,
    path: str,
    body: dict[str, Any],
) -> dict[str, Any]:
    """Create a model named after its runtime, wait until it is Ready, check its pods really
    are, and call it REQUESTS times through its Service; returns call_from_a_pod's result."""
    name = spec["model_uri"].rsplit("/", 1)[1]
    models.create(
        {
            "apiVersion": "machine-learning.org/v1",
            "kind": "MLModelDeployment",
            "metadata": {"name": name},
            "spec": spec,
        }
    )
    model = models.wait_ready(name, timeout=300)
    assert_pods_really_ready(cluster, models.namespace, name, images, model)
    service = f"http://{name}.{models.namespace}.svc.cluster.local"
    return call_from_a_pod(
        cluster,
        models.namespace,
        operator_image,
        service + path.format(name=name),
        body,
        f"{service}:9090/metrics",
    )


def test_mlserver_model_serves_through_the_service_and_the_sidecar(
    cluster: TestCluster, models: Models, images: dict[str, str], model_claim: str
) -> None:
    name = "iris-mlserver"
    train_iris(cluster, models.namespace, model_claim, images["mlserver"], name)
    # The founding manifest's monitoring, with a runtime that can be built here.
    spec = {
        "model_type": "sklearn",
        "model_uri": f"pvc://{model_claim}/{name}",
        "model_version": "v1",
        "computational_resources": {"memory_requirements": "1Gi", "cpu": "100m"},
        "monitoring": {"performance_tracking": "enabled", "drift_detection": "active"},
    }
    body = {"inputs": [{"name": "x", "shape": [3, 4], "datatype": "FP64", "data": IRIS}]}
    result = serve_and_call(
        cluster,
        models,
        spec,
        {images["mlserver"], images["operator"]},
        images["operator"],
        "/v2/models/{name}/infer",
        body,
    )
    for answer in result["answers"]:
        assert answer["model_name"] == name
        assert answer["outputs"][0]["data"] == [0, 1, 2]
    assert requests_counted(result["metrics"], name) >= REQUESTS
    # Drift detection runs in the pod: its analyst process beats and uses the live baseline.
    samples = {
        (sample.name, sample.labels.get("source")): sample.value
        for family in text_string_to_metric_families(result["metrics"])
        for sample in family.samples
        if sample.labels.get("model") == name
    }
    assert samples[("mlmodel_drift_worker_heartbeat_timestamp_seconds", None)] > 0
    assert samples[("mlmodel_drift_reference_available", "live")] == 1

    # `kubectl mlmd logs` reads both containers of each of the model's pods, each line prefixed
    # with the pod and container it came from.
    pods = {
        p.metadata.name
        for p in models.core.list_namespaced_pod(
            models.namespace, label_selector=f"app.kubernetes.io/instance={name}"
        ).items
    }
    logs = cluster.mlmd("logs", name, "-n", models.namespace, "--sidecar", "--tail", "200").stdout
    sources = set(re.findall(r"^\[([^/\]]+)/([^\]]+)\] ", logs, re.M))
    assert sources == {(pod, c) for pod in pods for c in ("model-server", "monitor")}


def test_kserve_sklearn_custom_image_serves_through_the_sidecar(
    cluster: TestCluster, models: Models, images: dict[str, str], model_claim: str
) -> None:
    name = "iris-kserve"
    train_iris(cluster, models.namespace, model_claim, images["kserve-sklearn"], name)
    spec = {
        "model_type": "custom",
        "image": images["kserve-sklearn"],
        "port": 8080,
        "model_uri": f"pvc://{model_claim}/{name}",
        "computational_resources": {"memory_requirements": "1Gi", "cpu": "100m"},
        "monitoring": {"performance_tracking": "enabled"},
    }
    result = serve_and_call(
        cluster,
        models,
        spec,
        {images["kserve-sklearn"], images["operator"]},
        images["operator"],
        "/v1/models/{name}:predict",
        {"instances": IRIS},
    )
    assert [a["predictions"] for a in result["answers"]] == [[0, 1, 2]] * REQUESTS
    assert requests_counted(result["metrics"], name) >= REQUESTS


def pod_metrics(cluster: TestCluster, namespace: str, selector: str) -> list[str]:
    """The sidecar's /metrics of each running pod matching `selector`, through port-forwards."""
    pods = client.CoreV1Api(cluster.api).list_namespaced_pod(namespace, label_selector=selector)
    return [
        port_forwarded_get(cluster, namespace, f"pod/{pod.metadata.name}", 9090, "/metrics")
        for pod in pods.items
        if not pod.metadata.deletion_timestamp
    ]


def test_a_canary_runs_real_pods_each_labelled_with_its_version_then_is_promoted(
    cluster: TestCluster, models: Models, images: dict[str, str], model_claim: str
) -> None:
    """Both Deployments' pods really start side by side; each sidecar takes its version from its
    own pod (the downward API), so the metrics tell them apart. Without Prometheus the step is
    Inconclusive and waits; `promote` rolls the stable pods to the canary's template."""
    name = "iris-canary"
    train_iris(cluster, models.namespace, model_claim, images["kserve-sklearn"], name)
    spec = {
        "model_type": "custom",
        "image": images["kserve-sklearn"],
        "port": 8080,
        "model_uri": f"pvc://{model_claim}/{name}",
        "model_version": "v1",
        "replicas": 2,
        "computational_resources": {"memory_requirements": "1Gi", "cpu": "100m"},
        "rollout": {"strategy": "canary", "steps": [50, 100], "analysis": {"interval_seconds": 5}},
    }
    models.create(
        {"apiVersion": "machine-learning.org/v1", "kind": "MLModelDeployment",
         "metadata": {"name": name}, "spec": spec}
    )  # fmt: skip
    models.wait_ready(name, timeout=300)
    models.patch_spec({"model_version": "v2"}, name)

    def paused_with_both_serving() -> dict[str, Any] | None:
        obj = models.get(name)
        state = obj.get("status", {}).get("rollout") or {}
        both = obj["status"].get("readyReplicas") == 2 and obj["status"]["modelVersion"] == "v1,v2"
        return obj if state.get("phase") == "Paused" and both else None

    obj = wait_until(paused_with_both_serving, what="one stable and one canary pod", timeout=300)
    assert "--prometheus-url" in obj["status"]["rollout"]["lastAnalysis"]["message"]
    assert condition(obj, "Ready")["status"] == "True"
    instance = f"app.kubernetes.io/instance={name}"
    (canary,) = pod_metrics(cluster, models.namespace, f"{instance},machine-learning.org/track")
    (stable,) = pod_metrics(cluster, models.namespace, f"{instance},!machine-learning.org/track")
    assert re.search(rf'mlmodel_requests_total{{model="{name}",[^}}]*version="v2"}}', canary)
    assert 'version="v1"' not in canary
    assert re.search(rf'mlmodel_requests_total{{model="{name}",[^}}]*version="v1"}}', stable)
    assert 'version="v2"' not in stable

    models.custom.patch_namespaced_custom_object(
        "machine-learning.org", "v1", models.namespace, "mlmodeldeployments", name,
        {"metadata": {"annotations": {"machine-learning.org/rollout": "promote"}}},
    )  # fmt: skip

    def promoted() -> dict[str, Any] | None:
        obj = models.get(name)
        state = obj.get("status", {}).get("rollout") or {}
        return obj if state.get("phase") == "Promoted" else None

    wait_until(promoted, what="the promotion", timeout=300)
    model = models.wait_ready(name, timeout=300)
    # The model served throughout, so its Ready condition dates from before the promotion.
    reported_at = datetime.now(UTC)
    core = client.CoreV1Api(cluster.api)
    wait_until(
        lambda: len(core.list_namespaced_pod(models.namespace, label_selector=instance).items) == 2,
        what="the canary's and the old stable pods to be gone",
        timeout=180,
    )
    for metrics in pod_metrics(cluster, models.namespace, instance):
        assert 'version="v2"' in metrics and 'version="v1"' not in metrics
    assert model["status"]["modelVersion"] == "v2"
    assert_pods_really_ready(
        cluster,
        models.namespace,
        name,
        {images["kserve-sklearn"], images["operator"]},
        model,
        reported_at,
    )
