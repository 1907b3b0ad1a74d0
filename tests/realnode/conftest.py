"""The real node's fixtures: its images, and the operator installed from the chart and running
on it with the image built from the Dockerfile."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from llm_helpers import SERVER_ARGS as LLM_CPU_ARGS
from llm_helpers import SERVER_ENV as LLM_CPU_ENV

from kube_helpers import TestCluster
from mlmodel_operator.runtimes import DEFAULT_RUNTIMES
from realnode_helpers import InstalledOperator, real_node_namespace

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "mlmodel-operator"


@pytest.fixture(scope="session")
def images(real_node_cluster_dir: Path) -> dict[str, str]:
    """Image name -> tag, built (cached by content) and imported into the node's containerd."""
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "hack" / "images.py"),
            "load",
            "--dir",
            str(real_node_cluster_dir),
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.fail(f"building or loading the real node's images failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout)


def helm(cluster: TestCluster, *args: str) -> str:
    result = subprocess.run(["helm", *args], capture_output=True, text=True, env=cluster.env)
    if result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed: {result.stderr}")
    return result.stdout


@pytest.fixture(scope="module")
def in_cluster_operator(
    cluster: TestCluster, images: dict[str, str], crd: str
) -> Iterator[InstalledOperator]:
    """The chart installed with the locally built image, watching one namespace of models."""
    suffix = uuid.uuid4().hex[:6]
    installed = InstalledOperator(
        f"mlmodel-operator-{suffix}",
        real_node_namespace(cluster, "rn-system"),
        real_node_namespace(cluster, "rn-models"),
    )
    repository, tag = images["operator"].rsplit(":", 1)
    catalog: dict[str, Any] = {"mlserver": {"image": images["mlserver"]}}
    if "vllm" in images:
        # vLLM's CPU build on this node: no compilation at start-up (no compiler in the
        # image), a KV cache that fits a small node, and OpenMP threads left unpinned.
        catalog["vllm"] = {
            "image": images["vllm"],
            "args": LLM_CPU_ARGS,
            "env": {**DEFAULT_RUNTIMES["vllm"].env, **LLM_CPU_ENV},
        }
    helm(
        cluster, "install", installed.release, str(CHART), "-n", installed.namespace,
        "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
        # Images come from the node's containerd; there is no registry.
        "--set", "image.pullPolicy=Never",
        "--set-json", f"runtimeCatalog={json.dumps(catalog)}",
        "--set-json", f"watchNamespaces={json.dumps([installed.models])}",
        "--wait", "--timeout", "180s",
    )  # fmt: skip
    yield installed
    subprocess.run(
        ["helm", "uninstall", installed.release, "-n", installed.namespace, "--wait"],
        capture_output=True,
        env=cluster.env,
    )
    core = client.CoreV1Api(cluster.api)
    for namespace in (installed.models, installed.namespace):
        core.delete_namespace(namespace)


@pytest.fixture(scope="module")
def model_claim(
    cluster: TestCluster, in_cluster_operator: InstalledOperator, real_node_cluster_dir: Path
) -> Iterator[str]:
    """A PersistentVolumeClaim in the models' namespace, bound to a directory of the node's host
    (the operator mounts pvc:// at /mnt/models); its name."""
    namespace = in_cluster_operator.models
    directory = real_node_cluster_dir / "models" / namespace
    directory.mkdir(parents=True)
    directory.chmod(0o777)  # written by pods running as non-root
    core = client.CoreV1Api(cluster.api)
    volume = f"models-{namespace}"
    core.create_persistent_volume(
        {
            "metadata": {"name": volume},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": {"path": str(directory), "type": "Directory"},
            },
        }
    )
    core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "metadata": {"name": "models"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "",
                "volumeName": volume,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    yield "models"
    core.delete_persistent_volume(volume)
