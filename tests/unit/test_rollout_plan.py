"""Between the cache and the state machine, and between its decisions and the objects applied:
which template each Deployment runs, with how many replicas, and a Gateway's backends."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from argocd_health import argocd_health
from mlmodel_operator import api
from mlmodel_operator.builders import BuildSettings, Owner, build_children
from mlmodel_operator.builders.canary import REVISION_ANNOTATION, TRACK_LABEL, template_revision
from mlmodel_operator.builders.meta import COMPONENT_LABEL, VERSION_LABEL
from mlmodel_operator.rollout.machine import Decision, advance
from mlmodel_operator.rollout.plan import Live, arrange, facts_from, rolled_out, split_pods
from mlmodel_operator.rollout.split import Split
from mlmodel_operator.runtimes import DEFAULT_RUNTIMES
from mlmodel_operator.status import Observation, compute_status

pytestmark = pytest.mark.unit

OWNER = Owner(name="m", namespace="ns", uid="uid-1")
SETTINGS = BuildSettings(runtimes=dict(DEFAULT_RUNTIMES), monitor_image="monitor:1")
GATEWAY_SETTINGS = BuildSettings(
    runtimes=dict(DEFAULT_RUNTIMES), monitor_image="monitor:1", gateway_api=True
)
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def spec(version: str = "v2", **fields: Any) -> api.MLModelDeploymentSpec:
    return api.MLModelDeploymentSpec.model_validate(
        {
            "model_type": "sklearn",
            "model_uri": "pvc://models/iris",
            "model_version": version,
            "replicas": 10,
            "rollout": {"strategy": "canary", "steps": [10, 50, 100]},
            **fields,
        }
    )


def built_deployment(s: api.MLModelDeploymentSpec) -> dict[str, Any]:
    return next(o for o in build_children(OWNER, s, SETTINGS).apply if o["kind"] == "Deployment")


def live(deployment: dict[str, Any], ready: int | None = None) -> dict[str, Any]:
    """`deployment` as the API server has it after a rollout at its replicas."""
    out = copy.deepcopy(deployment)
    out["metadata"]["generation"] = 3
    annotations = out["metadata"].setdefault("annotations", {})
    annotations.setdefault(REVISION_ANNOTATION, template_revision(deployment))
    replicas = out["spec"]["replicas"]
    count = replicas if ready is None else ready
    out["status"] = {
        "observedGeneration": 3,
        "replicas": replicas,
        "updatedReplicas": count,
        "readyReplicas": count,
    }
    return out


def by_name(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}


def test_rolled_out_needs_the_revision_and_every_replica_ready() -> None:
    dep = live(built_deployment(spec()))
    revision = template_revision(built_deployment(spec()))
    assert rolled_out(dep, 10, revision)
    assert not rolled_out(dep, 9, revision)
    assert not rolled_out(dep, 10, "other")
    assert not rolled_out(live(built_deployment(spec()), ready=9), 10, revision)
    stale = copy.deepcopy(dep)
    stale["status"]["observedGeneration"] = 2
    assert not rolled_out(stale, 10, revision)


def test_facts_read_the_stable_version_from_the_live_template() -> None:
    stable = live(built_deployment(spec("v1")))
    facts = facts_from(
        spec("v2"), built_deployment(spec("v2")), Live(stable, None), None, None, False
    )
    assert facts.stable_version == "v1" and facts.spec_version == "v2"
    assert facts.spec_revision == template_revision(built_deployment(spec("v2")))
    assert facts.canary_strategy and facts.stable_exists and not facts.canary_ready


def test_a_canary_start_keeps_the_stable_template_and_adds_the_canary_deployment() -> None:
    s1, s2 = spec("v1"), spec("v2")
    stable = live(built_deployment(s1))
    state = Live(stable, None)
    children = build_children(OWNER, s2, SETTINGS)
    facts = facts_from(s2, built_deployment(s2), state, None, None, False)
    decision = advance(None, facts, NOW)
    out = by_name(arrange(OWNER, s2, children, decision, state, False).apply)
    kept = out[("Deployment", "m")]
    assert kept["spec"]["template"] == stable["spec"]["template"]
    assert kept["spec"]["replicas"] == 9
    assert kept["metadata"]["annotations"][REVISION_ANNOTATION] == template_revision(
        built_deployment(s1)
    )
    canary = out[("Deployment", "m-canary")]
    assert canary["spec"]["replicas"] == 1
    assert canary["spec"]["selector"]["matchLabels"][TRACK_LABEL] == "canary"
    labels = canary["spec"]["template"]["metadata"]["labels"]
    assert labels[TRACK_LABEL] == "canary" and labels[VERSION_LABEL] == "v2"
    assert canary["metadata"]["annotations"][REVISION_ANNOTATION] == facts.spec_revision


def test_no_canary_means_the_spec_template_and_the_canary_deployment_absent() -> None:
    s = spec("v1")
    children = build_children(OWNER, s, SETTINGS)
    state = Live(live(built_deployment(s)), None)
    decision = advance(None, facts_from(s, built_deployment(s), state, None, None, False), NOW)
    arranged = arrange(OWNER, s, children, decision, state, False)
    stable = by_name(arranged.apply)[("Deployment", "m")]
    assert stable["spec"]["replicas"] == 10
    assert ("Deployment", "m-canary") in {(r.kind, r.name) for r in arranged.absent}


def test_the_canary_is_ready_once_both_sides_are_at_their_step() -> None:
    s1, s2 = spec("v1"), spec("v2")
    started = advance(
        None,
        facts_from(
            s2, built_deployment(s2), Live(live(built_deployment(s1)), None), None, None, False
        ),
        NOW,
    )
    arranged = by_name(
        arrange(
            OWNER,
            s2,
            build_children(OWNER, s2, SETTINGS),
            started,
            Live(live(built_deployment(s1)), None),
            False,
        ).apply
    )
    state = Live(live(arranged[("Deployment", "m")]), live(arranged[("Deployment", "m-canary")]))
    facts = facts_from(s2, built_deployment(s2), state, started.status, None, False)
    assert facts.canary_ready
    not_yet = Live(state.stable, live(arranged[("Deployment", "m-canary")], ready=0))
    assert not facts_from(
        s2, built_deployment(s2), not_yet, started.status, None, False
    ).canary_ready


def test_promotion_gives_the_stable_the_canary_template() -> None:
    s1, s2 = spec("v1"), spec("v2")
    canary_dep = live(built_deployment(s2))
    canary_dep["metadata"]["name"] = "m-canary"
    canary_dep["spec"]["template"]["metadata"]["labels"][TRACK_LABEL] = "canary"
    promoting = api.RolloutStatus(
        phase=api.RolloutPhase.Promoting,
        stable_version="v1",
        canary_version="v2",
        canary_revision=template_revision(built_deployment(s2)),
        step=3,
        weight=100,
    )
    state = Live(live(built_deployment(s1)), canary_dep)
    decision = Decision(status=promoting, stable="canary", canary="canary", replicas=Split(10, 10))
    out = by_name(
        arrange(OWNER, s2, build_children(OWNER, s2, SETTINGS), decision, state, False).apply
    )
    stable = out[("Deployment", "m")]
    assert TRACK_LABEL not in stable["spec"]["template"]["metadata"]["labels"]
    assert stable["spec"]["template"]["metadata"]["labels"][VERSION_LABEL] == "v2"
    assert stable["spec"]["selector"]["matchLabels"].get(TRACK_LABEL) is None


def test_gateway_split_is_exact_with_one_service_per_side() -> None:
    s1 = spec("v1", rollout={"strategy": "canary", "gateway": {"name": "gw", "namespace": "infra"}})
    s2 = spec("v2", rollout={"strategy": "canary", "gateway": {"name": "gw", "namespace": "infra"}})
    children = build_children(OWNER, s2, GATEWAY_SETTINGS)
    route = next(o for o in children.apply if o["kind"] == "HTTPRoute")
    assert route["spec"]["parentRefs"] == [
        {
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "name": "gw",
            "namespace": "infra",
        }
    ]
    assert [b["name"] for b in route["spec"]["rules"][0]["backendRefs"]] == ["m"]
    state = Live(live(built_deployment(s1)), None)
    facts = facts_from(s2, built_deployment(s2), state, None, None, True)
    decision = advance(None, facts, NOW)
    assert decision.status is not None and decision.status.weight == 10
    out = by_name(arrange(OWNER, s2, children, decision, state, True).apply)
    backends = out[("HTTPRoute", "m")]["spec"]["rules"][0]["backendRefs"]
    assert [(b["name"], b["weight"]) for b in backends] == [("m-stable", 90), ("m-canary", 10)]
    stable_svc, canary_svc = out[("Service", "m-stable")], out[("Service", "m-canary")]
    assert stable_svc["spec"]["selector"][VERSION_LABEL] == "v1"
    assert canary_svc["spec"]["selector"][TRACK_LABEL] == "canary"
    # Backends are not scraped a second time by the ServiceMonitor.
    assert stable_svc["metadata"]["labels"][COMPONENT_LABEL] == "route-backend"


def test_pods_are_told_apart_by_the_track_label() -> None:
    pods = [
        {"metadata": {"name": "a", "labels": {}}},
        {"metadata": {"name": "b", "labels": {TRACK_LABEL: "canary"}}},
    ]
    stable, canary = split_pods(pods)
    assert [p["metadata"]["name"] for p in stable] == ["a"]
    assert [p["metadata"]["name"] for p in canary] == ["b"]


# --- status --------------------------------------------------------------------------------------


def deployment_status(replicas: int, ready: int) -> dict[str, Any]:
    return {
        "metadata": {"generation": 2},
        "status": {
            "observedGeneration": 2,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": ready,
            "availableReplicas": ready,
        },
    }


def observe(rollout: dict[str, Any] | None, **kw: Any) -> dict[str, Any]:
    obs = Observation(
        generation=5,
        desired_replicas=kw.pop("desired", 9),
        gpu_resource="nvidia.com/gpu",
        endpoint="http://m",
        selector="s",
        deployment=kw.pop("deployment", deployment_status(9, 9)),
        canary_deployment=kw.pop("canary", deployment_status(1, 1)),
        canary_replicas=kw.pop("canary_replicas", 1),
        rollout=rollout,
        **kw,
    )
    return compute_status(obs, {}, "2026-01-01T00:00:00Z")


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


@pytest.mark.parametrize(
    ("phase", "reason", "progressing", "argo"),
    [
        ("Progressing", "CanaryStep", "True", "Progressing"),
        ("Paused", "AnalysisInconclusive", "False", "Suspended"),
        ("Promoting", "Promoting", "True", "Progressing"),
    ],
)
def test_ready_stays_true_while_a_canary_runs(
    phase: str, reason: str, progressing: str, argo: str
) -> None:
    status = observe({"phase": phase, "message": "step 2/3 (50%)"})
    cond = conditions(status)
    assert status["phase"] == "Progressing"
    assert cond["Ready"]["status"] == "True" and cond["Ready"]["reason"] == reason
    assert cond["Progressing"]["status"] == progressing
    assert cond["Reconciling"]["status"] == "True"  # kstatus: InProgress
    assert status["replicas"] == 10 and status["readyReplicas"] == 10 and status["ready"] == "10/10"
    obj = {"metadata": {"generation": 5}, "status": status}
    assert argocd_health(obj)["status"] == argo


def test_rolled_back_is_degraded_with_the_metric_in_the_message() -> None:
    message = "step 1/3 (10%) failed: error ratio 0.5 > max_error_ratio 0.01; canary v2 removed"
    status = observe(
        {"phase": "RolledBack", "message": message},
        desired=10,
        deployment=deployment_status(10, 10),
        canary=None,
        canary_replicas=0,
    )
    cond = conditions(status)
    assert status["phase"] == "Degraded"
    assert cond["Ready"]["reason"] == "RolledBack" and "max_error_ratio" in cond["Ready"]["message"]
    assert cond["Available"]["status"] == "True"  # the stable version still serves
    assert cond["Stalled"]["status"] == "True"  # kstatus: Failed
    obj = {"metadata": {"generation": 5}, "status": status}
    assert argocd_health(obj)["status"] == "Degraded"


def test_a_canary_without_gpus_says_so() -> None:
    pending_pod = {
        "metadata": {"name": "c", "labels": {TRACK_LABEL: "canary"}},
        "status": {
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                }
            ]
        },
    }
    status = observe(
        {"phase": "Progressing", "message": "step 1/3 (10%): waiting for the canary v2"},
        canary=deployment_status(1, 0),
        canary_pods=[pending_pod],
    )
    cond = conditions(status)
    assert cond["Progressing"]["status"] == "False"
    assert cond["Progressing"]["reason"] == "InsufficientGPU"
    assert "Insufficient nvidia.com/gpu" in cond["Progressing"]["message"]
    assert cond["Ready"]["status"] == "True"  # the stable serves


def test_rollout_and_history_are_in_status() -> None:
    history = [{"version": "v1", "podTemplateHash": "abc", "outcome": "Deployed", "time": "t"}]
    status = observe({"phase": "Progressing", "weight": 10}, history=history)
    assert status["rollout"]["weight"] == 10 and status["history"] == history


def test_without_a_canary_the_status_is_as_before_plus_kstatus_conditions() -> None:
    status = observe(None, desired=10, deployment=deployment_status(10, 10), canary=None,
                     canary_replicas=0)  # fmt: skip
    cond = conditions(status)
    assert status["phase"] == "Ready" and "rollout" not in status
    assert cond["Reconciling"]["status"] == "False" and cond["Stalled"]["status"] == "False"


def test_every_kind_a_canary_can_need_has_an_api_path() -> None:
    from mlmodel_operator.kube import resource_path

    s = spec("v2", rollout={"strategy": "canary", "gateway": {"name": "gw"}})
    settings = BuildSettings(
        runtimes=dict(DEFAULT_RUNTIMES),
        monitor_image="monitor:1",
        gateway_api=True,
        prometheus_operator=True,
    )
    built = build_children(OWNER, s, settings)
    for obj in built.apply:
        assert resource_path(obj["apiVersion"], obj["kind"], "ns", obj["metadata"]["name"])
    for ref in built.absent:
        assert resource_path(ref.api_version, ref.kind, "ns", ref.name)


@pytest.mark.parametrize(
    ("rollout", "interval"),
    [
        ({}, "30s"),
        ({"strategy": "canary", "analysis": {"interval_seconds": 300}}, "30s"),
        ({"strategy": "canary", "analysis": {"interval_seconds": 60}}, "15s"),
        ({"strategy": "canary", "analysis": {"interval_seconds": 5}}, "5s"),
    ],
)
def test_the_service_monitor_scrapes_each_canary_window_at_least_four_times(
    rollout: dict[str, Any], interval: str
) -> None:
    from mlmodel_operator.builders.prometheus import build_service_monitor

    monitor = build_service_monitor(OWNER, spec(rollout=rollout))
    assert monitor["spec"]["endpoints"][0]["interval"] == interval
