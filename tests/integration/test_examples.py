"""Every manifest in manifests/examples/ applies unchanged and becomes Ready, with its model pods
admitted under the restricted Pod Security Standard."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kubernetes import client

from cases import REPO
from kube_helpers import TestCluster

pytestmark = pytest.mark.usefixtures("operator")

EXAMPLES = sorted((REPO / "manifests" / "examples").glob("*.yaml"))


def test_the_examples_are_the_ones_documented() -> None:
    assert [p.name for p in EXAMPLES] == [
        "custom-image.yaml",
        "gpu-h100.yaml",
        "predictive-analytics-system.yaml",
        "sklearn-cpu.yaml",
    ]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_becomes_ready_under_restricted(
    cluster: TestCluster, namespace: str, path: Path
) -> None:
    cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    name = yaml.safe_load(path.read_text())["metadata"]["name"]
    cluster.kubectl("apply", "-n", namespace, "-f", str(path))
    waited = cluster.kubectl(
        "wait", "-n", namespace, "--for=condition=Ready", "--timeout=90s", f"mlmd/{name}",
        check=False,
    )  # fmt: skip
    status = cluster.kubectl("get", "-n", namespace, f"mlmd/{name}", "-o", "yaml").stdout
    assert waited.returncode == 0, status

    core = client.CoreV1Api(cluster.api)
    selector = f"app.kubernetes.io/instance={name}"
    pods = core.list_namespaced_pod(namespace, label_selector=selector).items
    spec = yaml.safe_load(path.read_text())["spec"]
    assert len([p for p in pods if p.status.phase == "Running"]) == spec.get("replicas", 1)
    gpu_type = spec.get("computational_resources", {}).get("gpu_type")
    for pod in pods:
        labels = core.read_node(pod.spec.node_name).metadata.labels
        if gpu_type:
            assert labels["nvidia.com/gpu.product"] == gpu_type
        elif not spec.get("computational_resources", {}).get("gpu_allocation"):
            assert "nvidia.com/gpu.product" not in labels  # CPU models stay off GPU nodes
