"""manifests/: install.yaml is the chart rendered now, and the founding example is the founding
manifest, byte for byte."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from chart_helpers import REPO, helm

INSTALL = REPO / "manifests" / "install.yaml"
SHARED_EXAMPLES = REPO.parent / "shared" / "examples"


def test_install_yaml_is_the_chart_rendered_now(tmp_path: Path) -> None:
    out = tmp_path / "install.yaml"
    subprocess.run(
        ["bash", str(REPO / "hack" / "render-manifests.sh"), str(out)],
        check=True,
        capture_output=True,
        env={"HELM": helm(), "PATH": "/usr/bin:/bin"},
    )
    assert INSTALL.read_text() == out.read_text(), "stale: run `make manifests`"


def test_install_yaml_installs_into_a_restricted_mlmodel_system() -> None:
    docs = [d for d in yaml.safe_load_all(INSTALL.read_text()) if d]
    namespace = docs[0]
    assert namespace["kind"] == "Namespace"
    assert namespace["metadata"]["name"] == "mlmodel-system"
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    kinds = [d["kind"] for d in docs]
    assert kinds.count("CustomResourceDefinition") == 3
    assert {"Deployment", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"} <= set(kinds)
    # `kubectl apply` cannot create a kind whose CRD it creates in the same run.
    assert "ClusterKopfPeering" not in kinds
    namespaced = [d for d in docs if d["kind"] in ("Deployment", "ServiceAccount", "Service")]
    assert {d["metadata"]["namespace"] for d in namespaced} == {"mlmodel-system"}


def test_founding_example_is_the_founding_manifest_unchanged() -> None:
    ours = REPO / "manifests" / "examples" / "predictive-analytics-system.yaml"
    if not SHARED_EXAMPLES.is_dir():
        pytest.skip("no ../shared/examples beside this clone to compare with")
    assert ours.read_bytes() == (SHARED_EXAMPLES / ours.name).read_bytes()
