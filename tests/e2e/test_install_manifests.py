"""manifests/install.yaml installs with one `kubectl apply` as the chart does, and
`kubectl delete -f` removes it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from kube_helpers import TestCluster

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "manifests" / "install.yaml"
NAMESPACE = "mlmodel-system"  # fixed by the file
NAME = "mlmodel-operator"


def get_json(cluster: TestCluster, *args: str) -> dict[str, Any]:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


@pytest.fixture
def without_crds(tmp_path: Path) -> Path:
    """install.yaml less its CRDs. `kubectl delete -f install.yaml` deletes the CRDs too, and with
    them every MLModelDeployment in the cluster; the rest of the suite shares this cluster's."""
    docs = [d for d in yaml.safe_load_all(INSTALL.read_text()) if d]
    path = tmp_path / "install-without-crds.yaml"
    path.write_text(
        yaml.safe_dump_all([d for d in docs if d["kind"] != "CustomResourceDefinition"])
    )
    return path


def test_kubectl_apply_installs_and_delete_removes(
    cluster: TestCluster, without_crds: Path
) -> None:
    applied = cluster.kubectl("apply", "-f", str(INSTALL), check=False)
    try:
        assert applied.returncode == 0, applied.stderr  # one run, no "ensure CRDs are installed"
        labels = get_json(cluster, "namespace", NAMESPACE)["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
        cluster.kubectl("rollout", "status", f"deployment/{NAME}", "-n", NAMESPACE, "--timeout=90s")
        pods = get_json(
            cluster, "pods", "-n", NAMESPACE, "-l", f"app.kubernetes.io/instance={NAME}"
        )
        assert [p["status"]["phase"] for p in pods["items"]] == ["Running"]
        binding = get_json(cluster, "clusterrolebinding", NAME)
        assert binding["subjects"][0]["namespace"] == NAMESPACE
    finally:
        deleted = cluster.kubectl("delete", "-f", str(without_crds), "--wait=true", check=False)
    assert deleted.returncode == 0, deleted.stderr
    for kind in ("namespace", "clusterrole", "clusterrolebinding"):
        gone = cluster.kubectl("get", kind, NAME if kind != "namespace" else NAMESPACE, check=False)
        assert "NotFound" in gone.stderr, (kind, gone.stdout)
    assert get_json(cluster, "crd", "mlmodeldeployments.machine-learning.org")  # still there
