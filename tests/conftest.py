"""Shared fixtures: the cluster the integration and e2e tests talk to, and a namespace per test.

The cluster comes from MLMODEL_TEST_CLUSTER:
  local       (default) the local control plane from hack/localcluster.py: started for the session
              and stopped after it, or reused (and left running) when one is already up;
  kubeconfig  whatever cluster $KUBECONFIG points at, with kubectl and helm from $PATH;
  kind        a kind cluster through pytest-kind-ng; needs a Docker engine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kopf.testing import KopfRunner
from kubernetes import client

from kube_helpers import TestCluster, cached_bin_dirs, wait_until

REPO = Path(__file__).resolve().parent.parent
LAUNCHER = REPO / "hack" / "localcluster.py"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The folder a test lives in is its kind; a marker per file would only repeat it.
    for item in items:
        for kind in ("unit", "integration", "e2e"):
            if kind in Path(item.fspath).parts:
                item.add_marker(kind)


def _launcher(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(LAUNCHER), *args], check=check, capture_output=True, text=True
    )


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[TestCluster]:
    mode = os.environ.get("MLMODEL_TEST_CLUSTER", "local")
    if mode == "local":
        already_up = _launcher("status", check=False).returncode == 0
        if not already_up:
            result = _launcher("up", check=False)
            if result.returncode != 0:
                pytest.fail(f"the local control plane did not start:\n{result.stderr}")
        kubeconfig = Path(os.environ.get("MLMODEL_CLUSTER_DIR", REPO / ".cluster")) / "kubeconfig"
        yield TestCluster(kubeconfig=kubeconfig, bin_dirs=cached_bin_dirs())
        if not already_up:
            _launcher("down", check=False)
    elif mode == "kubeconfig":
        yield TestCluster(kubeconfig=Path(os.environ["KUBECONFIG"]), bin_dirs=[])
    elif mode == "kind":
        kind_cluster = request.getfixturevalue("kind_cluster")
        yield TestCluster(kubeconfig=Path(kind_cluster.kubeconfig_path), bin_dirs=[])
    else:
        pytest.fail(f"MLMODEL_TEST_CLUSTER={mode!r}: expected local, kubeconfig or kind")


@pytest.fixture
def namespace(cluster: TestCluster) -> Iterator[str]:
    """A fresh namespace, ready for pods (its default ServiceAccount exists), deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(cluster.api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    wait_until(
        lambda: any(
            sa.metadata.name == "default" for sa in core.list_namespaced_service_account(name).items
        ),
        what=f"the default ServiceAccount in {name}",
    )
    yield name
    core.delete_namespace(name)


@pytest.fixture(scope="session")
def crd(cluster: TestCluster) -> str:
    """The MLModelDeployment CRD from crds/, applied and Established."""
    path = REPO / "crds" / "mlmodeldeployments.machine-learning.org.yaml"
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    name = "crd/mlmodeldeployments.machine-learning.org"
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", name)
    return name


# Settings for the operator run in-process: resyncs often enough that a test can wait for two.
OPERATOR_ENV = {"MLMODEL_RESYNC_SECONDS": "3", "MLMODEL_LOG_LEVEL": "INFO"}


@pytest.fixture(scope="session")
def operator(cluster: TestCluster, crd: str) -> Iterator[KopfRunner]:
    """The operator, in-process through kopf's KopfRunner, watching all namespaces."""
    os.environ.update({"KUBECONFIG": str(cluster.kubeconfig), **OPERATOR_ENV})
    runner = KopfRunner(
        ["run", "--standalone", "--all-namespaces", "-m", "mlmodel_operator.handlers"],
        timeout=60,
    )
    with runner:
        yield runner
    assert runner.exit_code == 0, runner.output
