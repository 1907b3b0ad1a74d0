"""The kind tests' fixtures: the project's images in the node, the operator installed from the
chart with the image built from the Dockerfile, and a claim holding the models it serves."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client

import kind_helpers
from kube_helpers import TestCluster, create_namespace
from realnode_helpers import InstalledOperator, install_chart, models_claim, uninstall_chart

# A directory of the kind node's own filesystem (inside its container).
MODELS_HOST_DIR = "/var/local/mlmodel-models"


@pytest.fixture(scope="session")
def kind_images(kind_test_cluster: TestCluster, request: pytest.FixtureRequest) -> dict[str, str]:
    """NAME -> image, loaded into the kind node (kind_helpers.load_images)."""
    return kind_helpers.load_images(request.getfixturevalue("kind_cluster"))


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
    catalog = {"mlserver": {"image": kind_images["mlserver"]}}
    install_chart(cluster, installed, kind_images["operator"], catalog, "300s")
    yield installed
    uninstall_chart(cluster, installed)


@pytest.fixture(scope="module")
def kind_model_claim(
    kind_test_cluster: TestCluster, kind_operator: InstalledOperator
) -> Iterator[str]:
    """A claim in the models' namespace bound to a directory of the node (the node image has no
    dynamic provisioner: see hack/kind/node/kind/manifests/default-storage.yaml); its name."""
    namespace = kind_operator.models
    path = f"{MODELS_HOST_DIR}/{namespace}"
    volume = models_claim(kind_test_cluster, namespace, {"path": path, "type": "DirectoryOrCreate"})
    yield "models"
    client.CoreV1Api(kind_test_cluster.api).delete_persistent_volume(volume)
