"""`mlmodel-operator` refusing to start says why in one line that names what to change, and
exits non-zero; no traceback."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from kube_helpers import REPO, TestCluster, wait_until
from procs import free_port

OPERATOR = REPO / ".venv" / "bin" / "mlmodel-operator"
CRD = REPO / "crds" / "mlmodeldeployments.machine-learning.org.yaml"


def run_operator(kubeconfig: Path | str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    env.pop("MLMODEL_NAMESPACES", None)
    return subprocess.run(
        [str(OPERATOR), "--metrics-port=0", "--health-port=0", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mlmodel-operator: error: "), lines[0]
    return lines[0]


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("flag", ["--metrics-port", "--health-port"])
def test_a_port_in_use(cluster: TestCluster, crd: str, taken_port: int, flag: str) -> None:
    line = one_line_error(run_operator(cluster.kubeconfig, f"{flag}={taken_port}"))
    assert f"port {taken_port}" in line
    assert flag in line


def test_an_unreadable_kubeconfig(tmp_path: Path) -> None:
    garbage = tmp_path / "kubeconfig"
    garbage.write_text("::: not a kubeconfig [")
    line = one_line_error(run_operator(garbage))
    assert "cannot load the Kubernetes client configuration" in line
    assert str(garbage) in line
    line = one_line_error(run_operator(tmp_path / "missing"))
    assert str(tmp_path / "missing") in line


def test_an_api_server_that_does_not_answer(cluster: TestCluster, tmp_path: Path) -> None:
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    nobody = f"https://127.0.0.1:{free_port()}"
    config["clusters"][0]["cluster"]["server"] = nobody
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    line = one_line_error(run_operator(path))
    assert f"cannot reach the API server at {nobody}" in line


def test_a_bad_runtime_catalog(cluster: TestCluster, crd: str, tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text("triton: {image: 5}\n")
    line = one_line_error(run_operator(cluster.kubeconfig, f"--runtime-catalog={catalog}"))
    assert f"runtime catalog {catalog}: triton: image:" in line
    assert "--runtime-catalog" in line


@pytest.fixture
def without_crd(cluster: TestCluster, crd: str) -> Iterator[None]:
    """The cluster without the MLModelDeployment CRD, restored afterwards."""
    cluster.kubectl("delete", crd, "--wait=true")
    wait_until(
        lambda: cluster.kubectl("get", crd, check=False).returncode != 0,
        what="the CRD to be deleted",
    )
    yield
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", crd)
    wait_until(
        lambda: (
            "mlmodeldeployments"
            in cluster.kubectl(
                "api-resources", "--api-group=machine-learning.org", check=False
            ).stdout
        ),
        what="the CRD to be served again",
    )


def test_a_missing_crd(cluster: TestCluster, without_crd: None) -> None:
    line = one_line_error(run_operator(cluster.kubeconfig))
    assert "does not serve machine-learning.org/v1" in line
    assert "kubectl apply --server-side -f crds/" in line
