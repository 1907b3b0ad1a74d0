"""The canary step state machine, from tables: every verdict in every phase, the overrides, and
spec changes mid-canary."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from mlmodel_operator import api
from mlmodel_operator.rollout.machine import Decision, Facts, advance, rfc3339
from mlmodel_operator.rollout.split import Split, beside, promotion, split

pytestmark = pytest.mark.unit

P = api.RolloutPhase
R = api.AnalysisResult
NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
STEPS = (10, 50, 100)

BASE = Facts(
    canary_strategy=True,
    steps=STEPS,
    interval_seconds=60,
    spec_version="v2",
    spec_revision="rev2",
    stable_exists=True,
    stable_version="v1",
    replicas=10,
    canary_ready=True,
    stable_new_ready=0,
    promotion_done=False,
)


def facts(**changes: object) -> Facts:
    return dataclasses.replace(BASE, **changes)  # type: ignore[arg-type]


def status(phase: P, step: int = 1, started: datetime | None = None, **kw: object):
    return api.RolloutStatus(
        phase=phase,
        stable_version="v1",
        canary_version="v2",
        canary_revision="rev2",
        step=step,
        weight=STEPS[step - 1],
        step_started_at=rfc3339(started) if started else None,
        **kw,  # type: ignore[arg-type]
    )


def verdict(result: R, message: str = "figures") -> api.AnalysisRecord:
    return api.AnalysisRecord(result=result, message=message, time=rfc3339(NOW))


def reasons(decision: Decision) -> list[str]:
    return [note.reason for note in decision.notes]


DUE = NOW - timedelta(seconds=61)  # a window started this long ago is due to be judged


# --- replicas ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "weight", "expected"),
    [
        (10, 10, Split(9, 1)),
        (10, 50, Split(5, 5)),
        (10, 100, Split(0, 10)),
        (4, 10, Split(3, 1)),  # at least one canary pod
        (4, 90, Split(1, 3)),  # at least one stable pod until the last step
        (1, 10, Split(1, 1)),  # one replica: one of each, half the traffic
        (1, 100, Split(0, 1)),
        (3, 50, Split(1, 2)),  # round half to even: 1.5 -> 2
    ],
)
def test_split_keeps_the_total_and_one_pod_a_side_before_the_last_step(
    total: int, weight: int, expected: Split
) -> None:
    assert split(total, weight) == expected


def test_canary_share_is_the_share_of_pods() -> None:
    assert Split(9, 1).canary_share == 10
    assert Split(1, 1).canary_share == 50
    assert Split(0, 0).canary_share == 0


@pytest.mark.parametrize(
    ("stable_ready", "gpu", "expected"),
    [
        (0, False, Split(10, 10)),
        (4, False, Split(10, 6)),
        (10, False, Split(10, 0)),
        (0, True, Split(1, 9)),  # with GPUs the canary makes room first
        (4, True, Split(5, 5)),
        (10, True, Split(10, 0)),
    ],
)
def test_promotion_hands_pods_over_as_the_stable_becomes_ready(
    stable_ready: int, gpu: bool, expected: Split
) -> None:
    assert promotion(10, stable_ready, gpu) == expected


# --- starting --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"canary_strategy": False}, "strategy rolling"),
        ({"stable_exists": False}, "first create"),
        ({"spec_version": "v1"}, "same version"),
        ({"stable_version": None}, "the stable has no version"),
        ({"spec_version": None}, "the spec has no version"),
        ({"replicas": 0}, "no replicas"),
    ],
)
def test_no_canary_when_the_spec_does_not_change_the_version(change: dict, why: str) -> None:
    decision = advance(None, facts(**change), NOW)
    assert decision.canary is None and decision.stable == "spec", why
    assert decision.replicas is None


def test_rolling_strategy_keeps_no_rollout_status() -> None:
    assert advance(None, facts(canary_strategy=False), NOW).status is None


def test_a_new_version_starts_at_the_first_step_with_the_stable_template_kept() -> None:
    decision = advance(api.RolloutStatus(phase=P.Idle, stable_version="v1"), facts(), NOW)
    assert decision.status is not None
    assert decision.status.phase == P.Progressing and decision.status.step == 1
    assert decision.status.weight == 10 and decision.status.step_started_at is None
    assert (decision.stable, decision.canary) == ("stable", "spec")
    assert decision.replicas == Split(9, 1) and decision.route_weight == 10
    assert reasons(decision) == ["CanaryStarted"]


def test_weight_shown_is_the_share_of_pods_without_a_gateway() -> None:
    started = advance(None, facts(replicas=1), NOW)
    assert started.status is not None and started.status.weight == 50
    assert started.route_weight == 10
    exact = advance(None, facts(replicas=1, exact_split=True), NOW)
    assert exact.status is not None and exact.status.weight == 10


# --- stepping and verdicts --------------------------------------------------------------------


def test_the_window_starts_when_the_canary_is_ready() -> None:
    waiting = advance(status(P.Progressing), facts(canary_ready=False), NOW)
    assert waiting.status is not None and waiting.status.step_started_at is None
    assert waiting.requeue_after is None and not waiting.analyse
    started = advance(status(P.Progressing), facts(), NOW)
    assert started.status is not None and started.status.step_started_at == rfc3339(NOW)
    assert started.requeue_after == 60


def test_a_step_is_judged_only_after_its_interval() -> None:
    early = advance(status(P.Progressing, started=NOW - timedelta(seconds=20)), facts(), NOW)
    assert not early.analyse and early.requeue_after == 40
    due = advance(status(P.Progressing, started=DUE), facts(), NOW)
    assert due.analyse and due.status == status(P.Progressing, started=DUE)


def test_a_canary_that_stops_being_ready_restarts_its_window() -> None:
    decision = advance(status(P.Progressing, started=DUE), facts(canary_ready=False), NOW)
    assert decision.status is not None and decision.status.step_started_at is None
    assert not decision.analyse


# (phase, step, verdict) -> (next phase, next step, canary kept, event reasons, history)
VERDICT_TABLE = [
    (P.Progressing, 1, R.Pass, P.Progressing, 2, True, ["StepPassed"], []),
    (P.Progressing, 2, R.Pass, P.Progressing, 3, True, ["StepPassed"], []),
    (P.Progressing, 3, R.Pass, P.Promoting, 3, True, ["Promoting"], []),
    (P.Progressing, 1, R.Fail, P.RolledBack, 1, False, ["RolledBack"], ["RolledBack"]),
    (P.Progressing, 3, R.Fail, P.RolledBack, 3, False, ["RolledBack"], ["RolledBack"]),
    (P.Progressing, 2, R.Inconclusive, P.Paused, 2, True, ["AnalysisInconclusive"], []),
    (P.Paused, 2, R.Pass, P.Progressing, 3, True, ["StepPassed"], []),
    (P.Paused, 3, R.Pass, P.Promoting, 3, True, ["Promoting"], []),
    (P.Paused, 2, R.Fail, P.RolledBack, 2, False, ["RolledBack"], ["RolledBack"]),
    # Still no data: stays paused, no second event.
    (P.Paused, 2, R.Inconclusive, P.Paused, 2, True, [], []),
]


@pytest.mark.parametrize(
    ("phase", "step", "result", "next_phase", "next_step", "canary", "events", "history"),
    VERDICT_TABLE,
)
def test_every_verdict_in_every_judged_phase(
    phase: P,
    step: int,
    result: R,
    next_phase: P,
    next_step: int,
    canary: bool,
    events: list[str],
    history: list[str],
) -> None:
    decision = advance(status(phase, step, started=DUE), facts(), NOW, verdict(result))
    assert decision.status is not None
    assert decision.status.phase == next_phase and decision.status.step == next_step
    assert (decision.canary is not None) == canary
    assert reasons(decision) == events
    assert [r.outcome for r in decision.history] == history
    assert decision.status.last_analysis == verdict(result)
    if next_phase != P.Promoting:
        assert decision.stable == "stable"  # the stable template is never touched


def test_fail_names_the_metric_and_leaves_the_stable_alone() -> None:
    failed = verdict(R.Fail, "error ratio 0.42 > max_error_ratio 0.01 over 120 requests")
    decision = advance(status(P.Progressing, 2, started=DUE), facts(), NOW, failed)
    assert decision.status is not None and decision.status.message is not None
    assert "error ratio 0.42 > max_error_ratio 0.01" in decision.status.message
    assert decision.notes[0].type == "Warning"
    assert decision.replicas is None  # the stable gets every replica back
    assert decision.history[0].version == "v2" and decision.history[0].pod_template_hash == "rev2"


def test_inconclusive_is_judged_again_after_another_interval() -> None:
    decision = advance(status(P.Progressing, 2, started=DUE), facts(), NOW, verdict(R.Inconclusive))
    assert decision.status is not None and decision.status.step_started_at == rfc3339(NOW)
    assert decision.requeue_after == 60 and decision.replicas == Split(5, 5)


def test_next_step_waits_for_its_pods_before_its_window() -> None:
    decision = advance(status(P.Progressing, 1, started=DUE), facts(), NOW, verdict(R.Pass))
    assert decision.status is not None and decision.status.step_started_at is None
    assert decision.replicas == Split(5, 5) and decision.status.weight == 50


# --- promotion --------------------------------------------------------------------------------


def test_promotion_rolls_the_stable_to_the_canary_template_then_removes_the_canary() -> None:
    promoting = status(P.Promoting, 3)
    during = advance(promoting, facts(stable_new_ready=4), NOW)
    assert (during.stable, during.canary) == ("canary", "canary")
    assert during.replicas == Split(10, 6)
    done = advance(promoting, facts(promotion_done=True, stable_new_ready=10), NOW)
    assert done.status is not None and done.status.phase == P.Promoted
    assert done.status.stable_version == "v2" and done.status.canary_version is None
    assert done.canary is None and done.stable == "canary"
    assert reasons(done) == ["Promoted"] and [r.outcome for r in done.history] == ["Promoted"]


def test_a_spec_change_during_promotion_waits_for_it_to_end() -> None:
    decision = advance(status(P.Promoting, 3), facts(spec_revision="rev3", spec_version="v3"), NOW)
    assert decision.status is not None and decision.status.phase == P.Promoting
    assert decision.canary == "canary"


def test_after_promotion_the_next_version_starts_a_new_canary() -> None:
    promoted = api.RolloutStatus(phase=P.Promoted, stable_version="v2")
    decision = advance(
        promoted, facts(stable_version="v2", spec_version="v3", spec_revision="rev3"), NOW
    )
    assert decision.status is not None and decision.status.phase == P.Progressing
    assert decision.status.stable_version == "v2" and decision.status.canary_version == "v3"


# --- spec changes -----------------------------------------------------------------------------


@pytest.mark.parametrize("phase", [P.Progressing, P.Paused])
def test_a_spec_change_mid_canary_starts_over_with_the_newest_template(phase: P) -> None:
    decision = advance(
        status(phase, 2, started=DUE), facts(spec_revision="rev3", spec_version="v3"), NOW
    )
    assert decision.status is not None
    assert decision.status.phase == P.Progressing and decision.status.step == 1
    assert decision.status.canary_revision == "rev3" and decision.status.stable_version == "v1"
    assert decision.stable == "stable" and decision.canary == "spec"
    assert [r.outcome for r in decision.history] == ["Superseded"]
    assert reasons(decision) == ["CanaryRestarted", "CanaryStarted"]


@pytest.mark.parametrize("phase", [P.Progressing, P.Paused])
def test_the_spec_set_back_to_the_stable_version_ends_the_canary(phase: P) -> None:
    decision = advance(status(phase, 2), facts(spec_version="v1", spec_revision="rev1"), NOW)
    assert decision.status is not None and decision.status.phase == P.Idle
    assert decision.canary is None and decision.stable == "spec"
    assert [r.outcome for r in decision.history] == ["Aborted"]


def test_switching_to_rolling_mid_canary_ends_it_and_rolls_the_stable() -> None:
    decision = advance(status(P.Paused, 2), facts(canary_strategy=False), NOW)
    assert decision.canary is None and decision.stable == "spec"


def test_a_rolled_back_revision_stays_off_until_the_spec_changes() -> None:
    rolled_back = status(P.RolledBack, 2)
    same = advance(rolled_back, facts(), NOW)
    assert same.status == rolled_back and same.canary is None and same.stable == "stable"
    changed = advance(rolled_back, facts(spec_revision="rev3", spec_version="v3"), NOW)
    assert changed.status is not None and changed.status.phase == P.Progressing
    back = advance(rolled_back, facts(spec_version="v1", spec_revision="rev1"), NOW)
    assert back.status is not None and back.status.phase == P.Idle and back.stable == "spec"


# --- overrides --------------------------------------------------------------------------------


@pytest.mark.parametrize("phase", [P.Progressing, P.Paused])
def test_abort_rolls_back_at_once(phase: P) -> None:
    decision = advance(status(phase, 2), facts(override="abort"), NOW)
    assert decision.status is not None and decision.status.phase == P.RolledBack
    assert decision.canary is None and decision.override_handled
    assert [r.outcome for r in decision.history] == ["Aborted"]
    assert "machine-learning.org/rollout=abort" in (decision.status.message or "")


@pytest.mark.parametrize("phase", [P.Progressing, P.Paused])
def test_promote_skips_the_remaining_steps(phase: P) -> None:
    decision = advance(status(phase, 1), facts(override="promote"), NOW)
    assert decision.status is not None and decision.status.phase == P.Promoting
    assert decision.stable == "canary" and decision.override_handled


def test_retry_rejudges_a_paused_step_from_now() -> None:
    decision = advance(status(P.Paused, 2, started=DUE), facts(override="retry"), NOW)
    assert decision.status is not None and decision.status.phase == P.Progressing
    assert decision.status.step_started_at == rfc3339(NOW) and not decision.analyse


def test_retry_restarts_a_rolled_back_revision() -> None:
    decision = advance(status(P.RolledBack, 2), facts(override="retry"), NOW)
    assert decision.status is not None and decision.status.phase == P.Progressing
    assert decision.status.step == 1 and decision.override_handled


@pytest.mark.parametrize(
    ("previous", "override"),
    [
        (api.RolloutStatus(phase=P.Idle, stable_version="v2"), "promote"),
        (api.RolloutStatus(phase=P.Promoted, stable_version="v2"), "abort"),
        (status(P.Promoting, 3), "abort"),
        (status(P.Progressing, 1), "bogus"),
    ],
)
def test_overrides_that_do_not_apply_are_handled_and_said(
    previous: api.RolloutStatus, override: str
) -> None:
    same_version = {"spec_version": "v2", "stable_version": "v2"}
    f = facts(override=override, **(same_version if previous.phase != P.Progressing else {}))
    decision = advance(previous, f, NOW)
    assert decision.override_handled
    assert "RolloutOverrideIgnored" in reasons(decision)
    if previous.phase == P.Promoting:
        assert decision.status is not None and decision.status.phase == P.Promoting


@pytest.mark.parametrize(
    ("stable", "weight", "expected"),
    [
        (9, 10, Split(9, 1)),
        (4, 50, Split(4, 4)),
        (4, 25, Split(4, 1)),
        (4, 75, Split(4, 4)),  # at most as many as the stable: half the pods
        (4, 100, Split(4, 4)),
        (0, 10, Split(0, 1)),
    ],
)
def test_beside_an_autoscaler_the_canary_is_added_and_the_stable_left_alone(
    stable: int, weight: int, expected: Split
) -> None:
    assert beside(stable, weight) == expected


def test_an_autoscaled_canary_never_sizes_the_stable() -> None:
    started = advance(None, facts(autoscaled=True, replicas=9), NOW)
    assert started.replicas == Split(9, 1)
    promoting = advance(status(P.Promoting, 3), facts(autoscaled=True, gpu=True), NOW)
    assert promoting.replicas == Split(10, 10)  # no one-at-a-time: the count is the autoscaler's


@pytest.mark.parametrize("result", list(R))
@pytest.mark.parametrize(
    "previous",
    [
        api.RolloutStatus(phase=P.Idle, stable_version="v2"),
        api.RolloutStatus(phase=P.Promoted, stable_version="v2"),
        status(P.Promoting, 3),
        status(P.RolledBack, 2),
        status(P.Progressing, 2, started=NOW),  # its window has not ended
    ],
    ids=["Idle", "Promoted", "Promoting", "RolledBack", "Progressing-early"],
)
def test_a_verdict_outside_a_due_step_changes_nothing(
    previous: api.RolloutStatus, result: R
) -> None:
    same = (
        {"spec_version": "v2", "stable_version": "v2"}
        if previous.phase in (P.Idle, P.Promoted)
        else {}
    )
    without = advance(previous, facts(**same), NOW)
    with_verdict = advance(previous, facts(**same), NOW, verdict(result))
    assert with_verdict == without
