"""Shared fixtures: the cluster the integration and e2e tests talk to, and a namespace per test.

The cluster comes from MLMODEL_TEST_CLUSTER:
  local       (default) the suite's own local control plane from hack/localcluster.py, in
              $MLMODEL_TEST_CLUSTER_DIR (default .test-cluster/, apart from the .cluster/ of
              `make cluster-up` and the demo, so that a user's models never hold the capacity
              the tests need): started for the session and stopped after it, or reused (and left
              running) when one is already up, after removing what an interrupted run left;
  kubeconfig  whatever cluster $KUBECONFIG points at, with kubectl and helm from $PATH;
  kind        the kind tests' cluster (kind_helpers.py) through pytest-kind-ng: podman and the
              node image of hack/kindnode.py here, Docker in GitHub Actions.

The kind tests (tests/kind) always run on that kind cluster, and skip, saying why, where this
host cannot run one.
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

import kind_helpers
from kube_helpers import SUITE_LABEL, TestCluster, cached_bin_dirs, create_namespace, wait_until
from mlmodel_operator import config

REPO = Path(__file__).resolve().parent.parent
LAUNCHER = REPO / "hack" / "localcluster.py"
CLUSTER_DIR = Path(os.environ.get("MLMODEL_TEST_CLUSTER_DIR", REPO / ".test-cluster"))


# Whether the collected tests include the real node's; if so, why it is not there.
WANTS_REAL_NODE = pytest.StashKey[bool]()
REAL_NODE_PROBLEM = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    kind_helpers.configure(config)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The folder a test lives in is its kind; a marker per file would only repeat it.
    for item in items:
        for kind in ("unit", "integration", "e2e", "realnode", "kind"):
            if kind in Path(item.fspath).parts:
                item.add_marker(kind)
    config.stash[WANTS_REAL_NODE] = any(item.get_closest_marker("realnode") for item in items)


def _launcher(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(LAUNCHER), *args, "--dir", str(CLUSTER_DIR)],
        check=check,
        capture_output=True,
        text=True,
    )


def _remove_cluster_leftovers(api: client.ApiClient) -> None:
    """Delete the cluster-scoped objects an interrupted run installed (KEDA's APIService and
    CRDs, keda_procs.py): an APIService left without its server stalls discovery, and with it
    namespace deletion; a CRD left would make the cluster look as if KEDA were installed. Its
    objects' finalizers go first, since whatever would remove them no longer runs."""
    registration = client.ApiregistrationV1Api(api)
    for service in registration.list_api_service(label_selector=SUITE_LABEL).items:
        registration.delete_api_service(service.metadata.name)
    ext = client.ApiextensionsV1Api(api)
    custom = client.CustomObjectsApi(api)
    crds = ext.list_custom_resource_definition(label_selector=SUITE_LABEL).items
    for crd in crds:
        group, plural = crd.spec.group, crd.spec.names.plural
        version = crd.spec.versions[0].name
        for obj in custom.list_cluster_custom_object(group, version, plural)["items"]:
            meta = obj["metadata"]
            if meta.get("finalizers") and meta.get("namespace"):
                custom.patch_namespaced_custom_object(
                    group, version, meta["namespace"], plural, meta["name"],
                    {"metadata": {"finalizers": None}},
                )  # fmt: skip
        ext.delete_custom_resource_definition(crd.metadata.name)
    wait_until(
        lambda: not ext.list_custom_resource_definition(label_selector=SUITE_LABEL).items,
        what=f"CRDs of an earlier run to be deleted: {[c.metadata.name for c in crds]}",
        timeout=120,
    )


def _remove_leftovers(api: client.ApiClient) -> None:
    """Delete the namespaces of an earlier, interrupted run and wait until they are gone, so
    that their pods hold no capacity the tests count on."""
    _remove_cluster_leftovers(api)
    core = client.CoreV1Api(api)
    leftovers = [ns.metadata.name for ns in core.list_namespace(label_selector=SUITE_LABEL).items]
    for name in leftovers:
        core.delete_namespace(name)
    wait_until(
        lambda: not core.list_namespace(label_selector=SUITE_LABEL).items,
        what=f"namespaces of an earlier run to be deleted: {leftovers}",
        timeout=180,
    )


def _real_node_wanted(config: pytest.Config) -> bool:
    """Whether to start the local cluster with a real node: when its tests are collected and
    this host can run one; otherwise the reason is kept for those tests to skip with."""
    if not config.stash.get(WANTS_REAL_NODE, False):
        return False
    check = _launcher("can-run-real-node", check=False)
    if check.returncode != 0:
        reason = (check.stdout or check.stderr).strip().splitlines()[-1]
        config.stash[REAL_NODE_PROBLEM] = f"skip: {reason}"
        return False
    return True


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[TestCluster]:
    mode = os.environ.get("MLMODEL_TEST_CLUSTER", "local")
    if mode == "local":
        real_node = _real_node_wanted(request.config)
        status = _launcher("status", check=False)
        already_up = status.returncode == 0 and (not real_node or "real node" in status.stdout)
        if not already_up:
            result = _launcher("up", *(["--real-node"] if real_node else []), check=False)
            if result.returncode != 0 and real_node:
                # The real node's tests fail with this; the others run on the kwok nodes.
                request.config.stash[REAL_NODE_PROBLEM] = (
                    f"fail: the real node did not start:\n{result.stderr}"
                )
                result = _launcher("up", check=False)
            if result.returncode != 0:
                pytest.fail(f"the local control plane did not start:\n{result.stderr}")
        test_cluster = TestCluster(
            kubeconfig=CLUSTER_DIR / "kubeconfig", bin_dirs=cached_bin_dirs()
        )
        if already_up:
            _remove_leftovers(test_cluster.api)
        yield test_cluster
        if not already_up:
            _launcher("down", check=False)
    elif mode == "kubeconfig":
        request.config.stash[REAL_NODE_PROBLEM] = "skip: MLMODEL_TEST_CLUSTER=kubeconfig"
        yield TestCluster(kubeconfig=Path(os.environ["KUBECONFIG"]), bin_dirs=[])
    elif mode == "kind":
        request.config.stash[REAL_NODE_PROBLEM] = "skip: MLMODEL_TEST_CLUSTER=kind"
        yield request.getfixturevalue("kind_test_cluster")
    else:
        pytest.fail(f"MLMODEL_TEST_CLUSTER={mode!r}: expected local, kubeconfig or kind")


@pytest.fixture(scope="session")
def kind_host(request: pytest.FixtureRequest) -> Iterator[None]:
    """This host ready for kind (podman here; nothing to do with Docker), until the cluster is
    deleted: torn down after pytest-kind-ng's `kind_cluster`, which is set up after it."""
    if kind_helpers.provider() != "podman":
        yield
        return
    with kind_helpers.podman_host(request.config):
        yield


@pytest.fixture(scope="session")
def kind_test_cluster(request: pytest.FixtureRequest) -> TestCluster:
    """The kind cluster of pytest-kind-ng's `kind_cluster` fixture; see kind_helpers.py."""
    request.getfixturevalue("kind_host")
    kind_cluster = request.getfixturevalue("kind_cluster")
    return TestCluster(
        kubeconfig=Path(kind_cluster.kubeconfig_path).resolve(), bin_dirs=cached_bin_dirs()
    )


@pytest.fixture(scope="session")
def real_node_cluster_dir(request: pytest.FixtureRequest, cluster: TestCluster) -> Path:
    """The local cluster's directory, when it has a real node (hack/realnode.py); the real
    node's tests skip, saying why, where this host cannot run one."""
    problem = request.config.stash.get(REAL_NODE_PROBLEM, None)
    if problem and problem.startswith("skip: "):
        pytest.skip(f"no real node: {problem.removeprefix('skip: ')}")
    if problem:
        pytest.fail(problem.removeprefix("fail: "))
    return CLUSTER_DIR


@pytest.fixture
def namespace(cluster: TestCluster) -> Iterator[str]:
    """A fresh namespace, ready for pods (its default ServiceAccount exists), deleted afterwards."""
    name = create_namespace(cluster.api, f"t-{uuid.uuid4().hex[:8]}")
    yield name
    client.CoreV1Api(cluster.api).delete_namespace(name)


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


@pytest.fixture
def operator(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    cluster: TestCluster,
    crd: str,
    namespace: str,
) -> Iterator[KopfRunner]:
    """The operator, in-process through kopf's KopfRunner, watching this test's namespace only:
    other tests' namespaces (terminating, or served by another operator) are none of its
    business. `@pytest.mark.operator_env(NAME=value)` changes its settings for one test."""
    marker = request.node.get_closest_marker("operator_env")
    settings = {
        "KUBECONFIG": str(cluster.kubeconfig),
        **OPERATOR_ENV,
        **(marker.kwargs if marker else {}),
        "MLMODEL_NAMESPACES": namespace,
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    config.set_current(config.from_env())
    runner = KopfRunner(
        ["run", "--standalone", f"--namespace={namespace}", "-m", "mlmodel_operator.handlers"],
        timeout=60,
    )
    with runner:
        yield runner
    assert runner.exit_code == 0, runner.output
