"""The real node's fixtures: its images, and the operator installed from the chart and running
on it with the image built from the Dockerfile."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from kube_helpers import TestCluster
from llm_helpers import SERVER_ARGS as LLM_CPU_ARGS
from llm_helpers import SERVER_ENV as LLM_CPU_ENV
from mlmodel_operator.runtimes import DEFAULT_RUNTIMES
from realnode_helpers import (
    InstalledOperator,
    install_chart,
    models_claim,
    new_installation,
    uninstall_chart,
)

REPO = Path(__file__).resolve().parents[2]


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


@pytest.fixture(scope="module")
def in_cluster_operator(
    cluster: TestCluster, images: dict[str, str], crd: str
) -> Iterator[InstalledOperator]:
    """The chart installed with the locally built image, watching one namespace of models."""
    installed = new_installation(cluster)
    catalog: dict[str, Any] = {"mlserver": {"image": images["mlserver"]}}
    if "vllm" in images:
        # vLLM's CPU build on this node: no compilation at start-up (no compiler in the
        # image), a KV cache that fits a small node, and OpenMP threads left unpinned.
        catalog["vllm"] = {
            "image": images["vllm"],
            "args": LLM_CPU_ARGS,
            "env": {**DEFAULT_RUNTIMES["vllm"].env, **LLM_CPU_ENV},
        }
    install_chart(cluster, installed, images["operator"], catalog, "180s")
    yield installed
    uninstall_chart(cluster, installed)


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
    volume = models_claim(cluster, namespace, {"path": str(directory), "type": "Directory"})
    yield "models"
    client.CoreV1Api(cluster.api).delete_persistent_volume(volume)
