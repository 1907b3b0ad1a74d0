"""`kubectl mlmd` against the local control plane, run the way a user runs it: kubectl finds the
`kubectl-mlmd` console script on PATH. The operator runs in-process without Prometheus, so a
canary pauses as inconclusive and the plugin's overrides have a rollout to act on."""

from __future__ import annotations

from typing import Any

import pytest

from kube_helpers import TestCluster, wait_until
from model_helpers import Models, paused_canary

pytestmark = pytest.mark.integration

NAME = "iris"
OVERRIDE = "machine-learning.org/rollout"


@pytest.fixture
def models(cluster: TestCluster, namespace: str, operator: Any) -> Models:
    return Models(cluster, namespace)


def rollout(models: Models) -> dict[str, Any]:
    return models.get(NAME).get("status", {}).get("rollout") or {}


def test_get_draws_the_model_its_deployments_and_pods(
    cluster: TestCluster, namespace: str, models: Models
) -> None:
    paused_canary(models, NAME)

    def pod_names() -> set[str]:
        return {p.metadata.name for p in models.core.list_namespaced_pod(namespace).items}

    def stable_and_canary_pods() -> set[str] | None:
        names = pod_names()
        canary = {n for n in names if n.startswith(f"{NAME}-canary-")}
        return names if canary and names - canary else None

    # The two replicas split between the versions at step 1 (50%).
    before = wait_until(stable_and_canary_pods, what="a stable and a canary pod")
    out = cluster.mlmd("get", NAME, "-n", namespace).stdout
    lines = out.splitlines()
    assert "Name:" in lines[0] and NAME in lines[0]
    assert any(
        line.startswith("Rollout:") and "Paused" in line and "step 1/2" in line for line in lines
    )
    assert any(line.startswith("Last analysis:") and "Inconclusive" in line for line in lines)
    assert any(
        line.startswith("Versions:") and "stable v1" in line and "canary v2" in line
        for line in lines
    )
    assert any(line.startswith("Monitoring:") for line in lines)
    tree = lines[lines.index(next(line for line in lines if line.startswith("NAME"))) :]
    assert tree[1].split()[:2] == [NAME, "MLModelDeployment"]
    deployments = [line for line in tree if " Deployment " in line]
    assert "stable" in deployments[0] and "version v1" in deployments[0]
    assert f"{NAME}-canary" in deployments[1] and "canary" in deployments[1]
    drawn = [line.split("── ")[1].split()[0] for line in tree if " Pod " in line]
    # Each Deployment is drawn with its pods under it, and each pod is one of the model's.
    assert set(drawn) <= before | pod_names()
    canary_row = tree.index(deployments[1])
    stable_pods = [line for line in tree[:canary_row] if " Pod " in line]
    canary_pods = [line for line in tree[canary_row + 1 :] if " Pod " in line]
    assert stable_pods and not any(f"{NAME}-canary-" in line for line in stable_pods)
    assert canary_pods and all(f"── {NAME}-canary-" in line for line in canary_pods)
    assert all(" Pod " in line or "ReplicaSet" in line for line in tree[canary_row + 1 :])


def test_overrides_act_through_the_rollout_annotation(
    cluster: TestCluster, namespace: str, models: Models
) -> None:
    paused_canary(models, NAME)

    def handled() -> bool:
        return OVERRIDE not in (models.get(NAME)["metadata"].get("annotations") or {})

    out = cluster.mlmd("abort", NAME, "-n", namespace).stdout
    assert f"{OVERRIDE}=abort" in out
    wait_until(lambda: rollout(models).get("phase") == "RolledBack", what="the abort")
    wait_until(handled, what="the annotation to be removed")
    assert models.get(NAME)["status"]["history"][0]["outcome"] == "Aborted"

    cluster.mlmd("retry", NAME, "-n", namespace)
    wait_until(lambda: rollout(models).get("phase") in ("Progressing", "Paused"), what="retry")
    wait_until(handled, what="the annotation to be removed")

    cluster.mlmd("promote", NAME, "-n", namespace)
    wait_until(lambda: rollout(models).get("phase") == "Promoted", what="the promotion")
    wait_until(handled, what="the annotation to be removed")
    assert {"RolledBack", "RolloutRetried", "Promoted"} <= set(models.events(NAME))


def test_a_missing_model_is_named_in_one_line(
    cluster: TestCluster, namespace: str, crd: str
) -> None:
    for args in (["get", "nope"], ["promote", "nope"], ["logs", "nope"]):
        result = cluster.mlmd(*args, "-n", namespace, check=False)
        assert result.returncode == 1
        assert result.stderr.strip() == (
            f'error: mlmodeldeployments.machine-learning.org "nope" not found in namespace '
            f'"{namespace}"'
        )
