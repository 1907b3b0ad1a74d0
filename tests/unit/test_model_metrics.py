"""The operator's per-model series, from cached models and their Deployments."""

from __future__ import annotations

from typing import Any

from mlmodel_operator.model_metrics import model_families


def samples(models: list[tuple[dict[str, Any], list[dict[str, Any]]]]) -> dict[tuple, float]:
    return {
        (s.name, *sorted(s.labels.items())): s.value
        for family in model_families(models)
        for s in family.samples
    }


def model(status: dict[str, Any], replicas: int = 3) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": "iris"}, "spec": {"replicas": replicas},
            "status": status}  # fmt: skip


def key(name: str, **labels: str) -> tuple:
    return (name, *sorted({"namespace": "ns", "model": "iris", **labels}.items()))


def test_a_paused_canary_shows_its_weight_step_and_verdict() -> None:
    status = {
        "replicas": 4, "readyReplicas": 3, "updatedReplicas": 2,
        "conditions": [{"type": "Ready", "status": "True"}],
        "rollout": {"phase": "Paused", "step": 1, "weight": 25,
                    "lastAnalysis": {"result": "Inconclusive", "time": "t"}},
    }  # fmt: skip
    deployments = [{"spec": {"replicas": 3}}, {"spec": {"replicas": 1}}]
    got = samples([(model(status), deployments)])
    assert got[key("mlmodel_operator_model_replicas", state="desired")] == 4
    assert got[key("mlmodel_operator_model_replicas", state="ready")] == 3
    assert got[key("mlmodel_operator_model_ready")] == 1
    assert got[key("mlmodel_operator_canary_weight")] == 25
    assert got[key("mlmodel_operator_canary_step")] == 1
    assert got[key("mlmodel_operator_canary_analysis", result="Inconclusive")] == 1
    assert got[key("mlmodel_operator_canary_analysis", result="Pass")] == 0


def test_after_the_rollout_the_weight_is_zero_and_before_a_deployment_the_spec_counts() -> None:
    status = {"rollout": {"phase": "Promoted", "step": 2, "weight": 100}}
    got = samples([(model(status, replicas=5), [])])
    assert got[key("mlmodel_operator_canary_weight")] == 0
    assert got[key("mlmodel_operator_canary_step")] == 0
    assert got[key("mlmodel_operator_model_replicas", state="desired")] == 5
    assert got[key("mlmodel_operator_model_ready")] == 0
    assert not [k for k in got if k[0] == "mlmodel_operator_canary_analysis"]


def test_no_models_no_samples() -> None:
    assert samples([]) == {}
