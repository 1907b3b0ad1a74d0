"""The GitOps files: the Argo CD health check's verdicts on every kind of status, argocd-cm
carrying that very script, and Argo CD / Flux examples whose values the chart accepts."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from argocd_health import HEALTH_LUA, argocd_health
from chart_helpers import CHART, REPO, helm

GITOPS = REPO / "gitops"
HEALTH_KEY = "resource.customizations.health.machine-learning.org_MLModelDeployment"


def model(generation: int = 2, **status: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "machine-learning.org/v1",
        "kind": "MLModelDeployment",
        "metadata": {"name": "m", "namespace": "ns", "generation": generation},
        "spec": {"model_type": "sklearn"},
    }
    if status:
        obj["status"] = status
    return obj


def ready(status: str, observed: int = 2, message: str = "ready says") -> dict[str, Any]:
    return {"type": "Ready", "status": status, "observedGeneration": observed, "message": message}


@pytest.mark.parametrize(
    ("obj", "verdict"),
    [
        (model(), "Missing"),
        (model(observedGeneration=1, phase="Ready", conditions=[ready("True", 1)]), "Progressing"),
        (model(phase="Ready", conditions=[ready("True")]), "Progressing"),  # no observedGeneration
        (model(observedGeneration=2, phase="Ready", conditions=[ready("True")]), "Healthy"),
        # A Ready condition left from an older generation does not make it Healthy.
        (model(observedGeneration=2, phase="Ready", conditions=[ready("True", 1)]), "Progressing"),
        (
            model(observedGeneration=2, phase="Progressing", conditions=[ready("False")]),
            "Progressing",
        ),
        (model(observedGeneration=2, phase="Pending"), "Progressing"),
        (model(observedGeneration=2, phase="Degraded", conditions=[ready("False")]), "Degraded"),
        (model(observedGeneration=2, phase="Failed", conditions=[ready("False")]), "Degraded"),
        (model(observedGeneration=3, phase="Ready", conditions=[ready("True", 3)]), "Healthy"),
    ],
)
def test_health_verdicts(obj: dict[str, Any], verdict: str) -> None:
    assert argocd_health(obj)["status"] == verdict


def test_messages_come_from_the_status_then_the_ready_condition() -> None:
    failed = model(observedGeneration=2, phase="Failed", message="0/4 nodes are available")
    failed["status"]["conditions"] = [ready("False", message="the condition")]
    assert argocd_health(failed) == {"status": "Degraded", "message": "0/4 nodes are available"}
    del failed["status"]["message"]
    assert argocd_health(failed)["message"] == "the condition"
    assert "generation 2" in argocd_health(model(observedGeneration=1))["message"]


def test_argocd_cm_carries_the_health_check_verbatim() -> None:
    cm = yaml.safe_load((GITOPS / "argocd" / "argocd-cm.yaml").read_text())
    assert (cm["kind"], cm["metadata"]["name"]) == ("ConfigMap", "argocd-cm")
    assert cm["data"][HEALTH_KEY] == HEALTH_LUA.read_text()


def renders_with(values: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    result = subprocess.run(
        [helm(), "template", "mlmodel-operator", str(CHART), "-f", str(path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_argocd_application_installs_the_chart(tmp_path: Path) -> None:
    app = yaml.safe_load((GITOPS / "argocd" / "application.yaml").read_text())
    source = app["spec"]["source"]
    assert (REPO / source["path"] / "Chart.yaml").exists()
    assert app["spec"]["destination"]["namespace"] == "mlmodel-system"
    renders_with(source["helm"]["valuesObject"], tmp_path)


def test_flux_helmrelease_installs_the_chart(tmp_path: Path) -> None:
    docs = {
        d["kind"]: d for d in yaml.safe_load_all((GITOPS / "flux" / "helmrelease.yaml").read_text())
    }
    release = docs["HelmRelease"]
    chart = release["spec"]["chart"]["spec"]
    assert (REPO / chart["chart"] / "Chart.yaml").exists()
    assert chart["sourceRef"]["name"] == docs["GitRepository"]["metadata"]["name"]
    labels = docs["Namespace"]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    renders_with(release["spec"]["values"], tmp_path)


def test_flux_kustomization_waits_for_models_that_exist() -> None:
    kustomization = yaml.safe_load((GITOPS / "flux" / "kustomization.yaml").read_text())
    spec = kustomization["spec"]
    examples = REPO / spec["path"]
    names = {yaml.safe_load(p.read_text())["metadata"]["name"] for p in examples.glob("*.yaml")}
    checks = spec["healthChecks"]
    assert checks
    for check in checks:
        assert (check["apiVersion"], check["kind"]) == (
            "machine-learning.org/v1",
            "MLModelDeployment",
        )
        assert check["name"] in names
        assert check["namespace"] == spec["targetNamespace"]
