"""The kind tests' fixtures: the project's images in the node, the operator installed from the
chart with the image built from the Dockerfile, and a claim holding the models it serves."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

import kind_helpers
from kube_helpers import TestCluster, create_namespace
from realnode_helpers import InstalledOperator

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "mlmodel-operator"
# On the node, inside its container: a directory of the kind node's own filesystem.
MODELS_HOST_DIR = "/var/local/mlmodel-models"


@pytest.fixture(scope="session")
def kind_images(kind_test_cluster: TestCluster, request: pytest.FixtureRequest) -> dict[str, str]:
    """NAME -> image, loaded into the kind node (kind_helpers.load_images)."""
    return kind_helpers.load_images(request.getfixturevalue("kind_cluster"))


def helm(cluster: TestCluster, *args: str) -> str:
    result = subprocess.run(["helm", *args], capture_output=True, text=True, env=cluster.env)
    if result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed: {result.stderr}")
    return result.stdout


@pytest.fixture(scope="module")
def kind_operator(
    kind_test_cluster: TestCluster, kind_images: dict[str, str]
) -> Iterator[InstalledOperator]:
    """The chart (and its CRDs) installed with the locally built image, watching one namespace."""
    cluster = kind_test_cluster
    suffix = uuid.uuid4().hex[:6]
    installed = InstalledOperator(
        f"mlmodel-operator-{suffix}",
        create_namespace(cluster.api, f"kind-system-{suffix}"),
        create_namespace(cluster.api, f"kind-models-{suffix}"),
    )
    repository, tag = kind_images["operator"].rsplit(":", 1)
    catalog = {"mlserver": {"image": kind_images["mlserver"]}}
    helm(
        cluster, "install", installed.release, str(CHART), "-n", installed.namespace,
        "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
        # Images come from the node's containerd (kind load); there is no registry.
        "--set", "image.pullPolicy=Never",
        "--set-json", f"runtimeCatalog={json.dumps(catalog)}",
        "--set-json", f"watchNamespaces={json.dumps([installed.models])}",
        "--wait", "--timeout", "300s",
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
def kind_model_claim(
    kind_test_cluster: TestCluster, kind_operator: InstalledOperator
) -> Iterator[str]:
    """A claim in the models' namespace bound to a directory of the node (the node image has no
    dynamic provisioner: see hack/kind/node/kind/manifests/default-storage.yaml); its name."""
    namespace = kind_operator.models
    core = client.CoreV1Api(kind_test_cluster.api)
    volume = f"models-{namespace}"
    core.create_persistent_volume(
        {
            "metadata": {"name": volume},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": {"path": f"{MODELS_HOST_DIR}/{namespace}", "type": "DirectoryOrCreate"},
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
