"""On the real node: an `llm` model served by vLLM's CPU build (the `vllm` image, built from
PyPI like the MLServer one) with its weights on a PersistentVolumeClaim (pvc://). Its pod starts
under the restricted Pod Security Standard, passes vLLM's real probes, answers a chat completion
through the Service and the sidecar, and a real Prometheus scrapes the sidecar's OpenAI metrics
and vLLM's own from the one metrics port."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from kube_helpers import TestCluster, wait_until
from llm_helpers import tiny_llm
from model_helpers import Models
from procs import free_port
from prometheus_procs import prometheus
from realnode_helpers import (
    REQUESTS,
    InstalledOperator,
    assert_pods_really_ready,
    call_from_a_pod,
)

pytestmark = pytest.mark.timeout(1800)
NAME = "tiny-chat"


@pytest.fixture
def models(in_cluster_operator: InstalledOperator, cluster: TestCluster) -> Models:
    return Models(cluster, in_cluster_operator.models)


@contextlib.contextmanager
def port_forward(cluster: TestCluster, namespace: str, target: str, port: int) -> Iterator[int]:
    """A local port forwarded to `target`'s `port` for the length of the block."""
    local = free_port()
    forward = subprocess.Popen(
        ["kubectl", "port-forward", "-n", namespace, target, f"{local}:{port}"],
        env=cluster.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield local
    finally:
        forward.terminate()
        forward.wait()


def test_an_llm_serves_a_chat_through_its_sidecar_and_prometheus_sees_its_tokens(
    cluster: TestCluster,
    models: Models,
    images: dict[str, str],
    model_claim: str,
    real_node_cluster_dir: Path,
    tmp_path: Path,
) -> None:
    claim_dir = real_node_cluster_dir / "models" / models.namespace
    weights = tiny_llm(tmp_path)
    shutil.copytree(weights, claim_dir / NAME)
    spec = {
        "model_type": "llm",
        "model_uri": f"pvc://{model_claim}/{NAME}",
        "model_version": "v1",
        "computational_resources": {"memory_requirements": "4Gi", "cpu": "500m"},
        "llm": {"max_model_len": 512, "dtype": "float32", "startup_timeout_seconds": 900},
        "monitoring": {"performance_tracking": "enabled", "drift_detection": "active"},
    }
    models.create(
        {"apiVersion": "machine-learning.org/v1", "kind": "MLModelDeployment",
         "metadata": {"name": NAME}, "spec": spec}
    )  # fmt: skip
    model = models.wait_ready(NAME, timeout=900)
    assert_pods_really_ready(
        cluster, models.namespace, NAME, {images["vllm"], images["operator"]}, model
    )
    (pod,) = (
        client.CoreV1Api(cluster.api)
        .list_namespaced_pod(models.namespace, label_selector=f"app.kubernetes.io/instance={NAME}")
        .items
    )
    server = next(c for c in pod.spec.containers if c.name == "model-server")
    assert server.startup_probe.http_get.path == "/v1/models"
    assert server.liveness_probe.http_get.path == "/health"
    shm = next(v for v in pod.spec.volumes if v.name == "dshm")
    assert shm.empty_dir.medium == "Memory"

    service = f"http://{NAME}.{models.namespace}.svc.cluster.local"
    body = {
        "model": NAME,
        "messages": [{"role": "user", "content": "Say something."}],
        "max_tokens": 8,
        "ignore_eos": True,
    }
    result = call_from_a_pod(
        cluster, models.namespace, images["operator"], f"{service}/v1/chat/completions", body,
        f"{service}:9090/metrics",
    )  # fmt: skip
    for answer in result["answers"]:
        assert answer["model"] == NAME
        assert answer["usage"]["completion_tokens"] == 8
        assert answer["choices"][0]["finish_reason"] == "length"
    metrics = result["metrics"]
    assert "vllm:num_requests_waiting{" in metrics  # vLLM's own, through the sidecar's port
    finished = {
        (sample.labels["endpoint"], sample.labels["finish_reason"]): sample.value
        for family in text_string_to_metric_families(metrics)
        if family.name == "mlmodel_llm_requests"
        for sample in family.samples
        if sample.name == "mlmodel_llm_requests_total" and sample.labels["model"] == NAME
    }
    assert finished == {("chat", "length"): REQUESTS}

    with (
        prometheus(tmp_path / "prometheus") as prom,
        port_forward(cluster, models.namespace, f"pod/{pod.metadata.name}", 9090) as local,
    ):
        prom.add_target(local, {"namespace": models.namespace, "pod": pod.metadata.name})
        tokens = prom.wait_for(
            f'sum(mlmodel_llm_completion_tokens_total{{namespace="{models.namespace}",'
            f'model="{NAME}",source="usage"}})',
            what="the sidecar's completion tokens in Prometheus",
            timeout=120,
        )
        assert tokens == 8 * REQUESTS
        waiting = prom.value(
            f'vllm:num_requests_waiting{{namespace="{models.namespace}",model_name="{NAME}"}}'
        )
        assert waiting == 0  # the queue autoscaling metric, as KEDA's query would read it
    logs = cluster.kubectl("logs", "-n", models.namespace, pod.metadata.name, "-c", "monitor")
    assert "Say something" not in logs.stdout  # prompts never reach the logs
    # Its pod holds 4Gi of the node: gone before the next test's pods are scheduled.
    models.custom.delete_namespaced_custom_object(
        "machine-learning.org", "v1", models.namespace, "mlmodeldeployments", NAME
    )
    wait_until(
        lambda: (
            not client.CoreV1Api(cluster.api)
            .list_namespaced_pod(
                models.namespace, label_selector=f"app.kubernetes.io/instance={NAME}"
            )
            .items
        ),
        what="the LLM's pods to be gone",
        timeout=180,
    )
