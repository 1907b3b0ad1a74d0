"""manifests/: install.yaml is the chart rendered now, and the founding example is the founding
manifest, byte for byte."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from chart_helpers import REPO, helm

INSTALL = REPO / "manifests" / "install.yaml"
# The founding design document's manifest, as it stands there. The example must stay this, byte
# for byte, below its two comment lines.
FOUNDING_SPEC = """\
apiVersion: machine-learning.org/v1
kind: MLModelDeployment
metadata:
  name: predictive-analytics-system
spec:
  model_type: neural_network
  computational_resources:
    gpu_allocation: 4
    memory_requirements: 64GB
  monitoring:
    performance_tracking: enabled
    drift_detection: active
"""


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
    text = (REPO / "manifests" / "examples" / "predictive-analytics-system.yaml").read_text()
    comments, _, manifest = text.partition("apiVersion:")
    assert all(line.startswith("#") for line in comments.splitlines())
    assert "apiVersion:" + manifest == FOUNDING_SPEC
