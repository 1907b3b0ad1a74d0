"""Pure: the canary step state machine. The rollout's state lives in status.rollout; each
reconcile passes it in with the facts of the moment and gets back what to run and the next state.

    Idle/Promoted --new model_version--> Progressing (step 1)
    Progressing --canary ready--> window starts --interval--> judged:
        Pass          next step, or Promoting after the last one
        Fail          RolledBack: canary removed, stable untouched
        Inconclusive  Paused at the same weight, judged again after another interval
    Paused --Pass--> Progressing; --Fail--> RolledBack
    Promoting --stable rolled out with the new template--> Promoted: canary removed
    RolledBack --same revision--> stays (the stable serves) until the spec changes or `retry`

A canary starts when model_version changes from one value to another under strategy canary; any
other change is a rolling update of the stable Deployment. A spec change mid-canary restarts it
at step 1 with the newest template; the spec set back to the stable version ends it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from mlmodel_operator import api
from mlmodel_operator.rollout.split import Split, beside, promotion, split

Phase = api.RolloutPhase
ACTIVE = (Phase.Progressing, Phase.Paused, Phase.Promoting)
OVERRIDE_ANNOTATION = f"{api.GROUP}/rollout"
OVERRIDES = ("promote", "abort", "retry")

# Where each Deployment's pod template comes from: the spec, or the live stable or canary
# Deployment (the stable keeps its template during a canary; the canary's is what gets promoted).
Source = Literal["spec", "stable", "canary"]


@dataclass(frozen=True)
class Facts:
    """What the reconcile knows now, from the spec and the cache."""

    canary_strategy: bool
    steps: tuple[int, ...]
    interval_seconds: int
    spec_version: str | None
    spec_revision: str  # hash of the pod template the spec asks for
    stable_exists: bool  # the stable Deployment exists (a first create is never a canary)
    stable_version: str | None  # model_version of the live stable Deployment's template
    replicas: int  # the model's replica count, split between the sides
    canary_ready: bool  # the canary Deployment runs this revision, every replica ready
    stable_new_ready: int  # stable replicas ready with the promoted template
    promotion_done: bool  # the stable Deployment is rolled out with the promoted template
    gpu: bool = False
    exact_split: bool = False  # a Gateway splits by weight; else the pods' share is the weight
    autoscaled: bool = False  # an autoscaler owns the stable count (`replicas` is the live one)
    override: str | None = None  # the machine-learning.org/rollout annotation


@dataclass(frozen=True)
class Note:
    """An Event to post."""

    type: str
    reason: str
    message: str


@dataclass(frozen=True)
class Decision:
    status: api.RolloutStatus | None
    stable: Source = "spec"
    canary: Source | None = None  # None: no canary Deployment
    replicas: Split | None = None  # None: the stable gets all replicas
    route_weight: int | None = None  # percent to the canary through a Gateway; None: no split
    analyse: bool = False  # a verdict is needed: call again with it
    requeue_after: float | None = None  # seconds until the next judgement is due
    notes: tuple[Note, ...] = ()
    history: tuple[api.Revision, ...] = ()  # revisions that ended, newest first
    override_handled: bool = False


def _with(status: api.RolloutStatus, **changes: object) -> api.RolloutStatus:
    return status.model_copy(update=changes)


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class _Run:
    """The decision under construction."""

    facts: Facts
    now: datetime
    override_seen: bool = False
    notes: list[Note] = field(default_factory=list)
    history: list[api.Revision] = field(default_factory=list)

    def note(self, type_: str, reason: str, message: str) -> None:
        self.notes.append(Note(type_, reason, message))

    def ended(self, status: api.RolloutStatus, outcome: str) -> None:
        self.history.append(
            api.Revision(
                version=status.canary_version,
                pod_template_hash=status.canary_revision or "",
                outcome=outcome,
                time=rfc3339(self.now),
            )
        )

    def decide(self, status: api.RolloutStatus | None, **kwargs: object) -> Decision:
        return Decision(
            status=status,
            notes=tuple(self.notes),
            history=tuple(reversed(self.history)),
            override_handled=self.override_seen,
            **kwargs,  # type: ignore[arg-type]
        )


def _label(version: str | None) -> str:
    return version or "(no model_version)"


def advance(
    previous: api.RolloutStatus | None,
    facts: Facts,
    now: datetime,
    verdict: api.AnalysisRecord | None = None,
) -> Decision:
    """The next state of the rollout. When a step is due to be judged and `verdict` is None, the
    decision asks for one (`analyse`); call again with it."""
    run = _Run(facts, now, override_seen=facts.override is not None)
    if facts.override is not None and facts.override not in OVERRIDES:
        run.note(
            "Warning",
            "RolloutOverrideIgnored",
            f"unknown value {facts.override!r} of {OVERRIDE_ANNOTATION}: use promote, abort or "
            "retry",
        )
        run.facts = dataclasses.replace(facts, override=None)
    if previous is not None and previous.phase in ACTIVE:
        return _active(run, previous, verdict)
    return _inactive(run, previous)


def _wanted(facts: Facts, stable_version: str | None) -> bool:
    """Whether the spec asks for a canary of a new model_version against the stable one."""
    return (
        facts.canary_strategy
        and facts.stable_exists
        and facts.replicas > 0
        and stable_version is not None
        and facts.spec_version is not None
        and facts.spec_version != stable_version
    )


def _inactive(run: _Run, previous: api.RolloutStatus | None) -> Decision:
    facts = run.facts
    if facts.override in ("promote", "abort"):
        run.note("Normal", "RolloutOverrideIgnored", f"no canary in progress to {facts.override}")
    if not _wanted(facts, facts.stable_version):
        if previous is None and not facts.canary_strategy:
            return run.decide(None)
        if previous is None or previous.phase == Phase.RolledBack:
            # First created, or the spec went back to the stable version or to rolling updates.
            idle = api.RolloutStatus(phase=Phase.Idle, stable_version=facts.spec_version)
            return run.decide(idle)
        # The stable Deployment takes the spec as it is (a rolling update of the same version).
        return run.decide(_with(previous, stable_version=facts.spec_version))
    if (
        previous is not None
        and previous.phase == Phase.RolledBack
        and previous.canary_revision == facts.spec_revision
        and facts.override != "retry"
    ):
        # The revision that failed stays off until the spec changes or someone asks for a retry.
        return run.decide(previous, stable="stable")
    if facts.override == "retry":
        run.note("Normal", "RolloutRetried", "retrying the canary (machine-learning.org/rollout)")
    return _start(run, facts.stable_version)


def _start(run: _Run, stable_version: str | None) -> Decision:
    facts = run.facts
    weight = facts.steps[0]
    status = api.RolloutStatus(
        phase=Phase.Progressing,
        stable_version=stable_version,
        canary_version=facts.spec_version,
        canary_revision=facts.spec_revision,
        step=1,
        weight=weight,
        message=f"step 1/{len(facts.steps)}: starting canary {_label(facts.spec_version)} at "
        f"{weight}% of traffic; stable {_label(stable_version)}",
    )
    run.note("Normal", "CanaryStarted", status.message or "")
    return _at_step(run, status)


def step_replicas(
    steps: tuple[int, ...], replicas: int, step: int, autoscaled: bool = False
) -> Split:
    """Replicas of each side at step `step` (from 1)."""
    weight = steps[min(step, len(steps)) - 1]
    return beside(replicas, weight) if autoscaled else split(replicas, weight)


def _at_step(run: _Run, status: api.RolloutStatus, requeue: float | None = None) -> Decision:
    """Run the canary at the status' step, the stable keeping its template."""
    facts = run.facts
    weight = facts.steps[(status.step or 1) - 1]
    replicas = step_replicas(facts.steps, facts.replicas, status.step or 1, facts.autoscaled)
    shown = weight if facts.exact_split else replicas.canary_share
    return run.decide(
        _with(status, weight=shown),
        stable="stable",
        canary="spec",
        replicas=replicas,
        route_weight=weight,
        requeue_after=requeue,
    )


def _active(run: _Run, previous: api.RolloutStatus, verdict: api.AnalysisRecord | None) -> Decision:
    facts = run.facts
    if previous.phase == Phase.Promoting:
        if facts.override is not None:
            run.note(
                "Normal",
                "RolloutOverrideIgnored",
                f"{facts.override} ignored: the promotion of {_label(previous.canary_version)} "
                "is under way",
            )
        return _promoting(run, previous)
    if not _wanted(facts, previous.stable_version):
        why = (
            f"the spec went back to {_label(facts.spec_version)}"
            if facts.spec_version == previous.stable_version
            else "the spec no longer asks for a canary"
        )
        run.ended(previous, "Aborted")
        removed = f"canary {_label(previous.canary_version)} removed"
        run.note("Normal", "CanaryEnded", f"{why}: {removed}")
        status = api.RolloutStatus(
            phase=Phase.Idle,
            stable_version=previous.stable_version,
            message=f"{why}; canary {_label(previous.canary_version)} removed",
        )
        return run.decide(status)
    if facts.spec_revision != previous.canary_revision:
        run.ended(previous, "Superseded")
        run.note(
            "Normal",
            "CanaryRestarted",
            f"the spec changed during the canary of {_label(previous.canary_version)}: "
            "starting over from step 1",
        )
        return _start(run, previous.stable_version)
    if facts.override == "abort":
        return _roll_back(run, previous, "aborted (machine-learning.org/rollout=abort)", "Aborted")
    if facts.override == "promote":
        run.note(
            "Normal",
            "Promoting",
            f"promoting {_label(previous.canary_version)} (machine-learning.org/rollout=promote)",
        )
        return _begin_promotion(run, previous)
    if facts.override == "retry":
        run.note("Normal", "RolloutRetried", f"step {previous.step}: judging again from now")
        previous = _with(previous, phase=Phase.Progressing, step_started_at=None)

    if not facts.canary_ready:
        status = _with(
            previous,
            step_started_at=None,
            message=f"step {previous.step}/{len(facts.steps)} ({previous.weight}%): waiting for "
            f"the canary {_label(previous.canary_version)} to be ready",
        )
        return _at_step(run, status)
    if previous.step_started_at is None:
        status = _with(
            previous,
            step_started_at=rfc3339(run.now),
            message=f"step {previous.step}/{len(facts.steps)} ({previous.weight}%): watching "
            f"{_label(previous.canary_version)} for {facts.interval_seconds}s",
        )
        return _at_step(run, status, requeue=float(facts.interval_seconds))
    due = _parse(previous.step_started_at) + timedelta(seconds=facts.interval_seconds)
    if run.now < due:
        return _at_step(run, previous, requeue=(due - run.now).total_seconds())
    if verdict is None:
        return run.decide(previous, analyse=True)
    return _judged(run, _with(previous, last_analysis=verdict), verdict)


def window_end(status: api.RolloutStatus, facts: Facts) -> datetime | None:
    """The end of the current step's window (the time its queries are evaluated at)."""
    if status.step_started_at is None:
        return None
    return _parse(status.step_started_at) + timedelta(seconds=facts.interval_seconds)


def _judged(run: _Run, status: api.RolloutStatus, verdict: api.AnalysisRecord) -> Decision:
    facts = run.facts
    step, total = status.step or 1, len(facts.steps)
    where = f"step {step}/{total} ({status.weight}%)"
    if verdict.result == api.AnalysisResult.Fail:
        return _roll_back(run, status, f"{where} failed: {verdict.message}", "RolledBack")
    if verdict.result == api.AnalysisResult.Inconclusive:
        if status.phase != Phase.Paused:
            run.note("Warning", "AnalysisInconclusive", f"{where} paused: {verdict.message}")
        paused = _with(
            status,
            phase=Phase.Paused,
            step_started_at=rfc3339(run.now),
            message=f"{where} paused, analysis inconclusive: {verdict.message}; judged again "
            f"in {facts.interval_seconds}s",
        )
        return _at_step(run, paused, requeue=float(facts.interval_seconds))
    if step >= total:
        run.note("Normal", "Promoting", f"{where} passed: {verdict.message}; promoting")
        return _begin_promotion(run, status)
    weight = facts.steps[step]
    run.note("Normal", "StepPassed", f"{where} passed: {verdict.message}; going to {weight}%")
    following = _with(
        status,
        phase=Phase.Progressing,
        step=step + 1,
        weight=weight,
        step_started_at=None,
        message=f"step {step + 1}/{total} ({weight}%): waiting for the canary "
        f"{_label(status.canary_version)} to be ready",
    )
    return _at_step(run, following)


def _roll_back(run: _Run, status: api.RolloutStatus, why: str, outcome: str) -> Decision:
    run.ended(status, outcome)
    message = (
        f"{why}; canary {_label(status.canary_version)} removed, "
        f"{_label(status.stable_version)} serves"
    )
    run.note("Warning", "RolledBack", message)
    rolled_back = _with(
        status, phase=Phase.RolledBack, step_started_at=None, weight=0, message=message
    )
    return run.decide(rolled_back, stable="stable")


def _begin_promotion(run: _Run, status: api.RolloutStatus) -> Decision:
    promoting = _with(
        status,
        phase=Phase.Promoting,
        step_started_at=None,
        message=f"promoting {_label(status.canary_version)}: the stable Deployment takes its "
        "template while the canary serves",
    )
    return _promoting(run, promoting)


def _promoting(run: _Run, status: api.RolloutStatus) -> Decision:
    facts = run.facts
    if facts.promotion_done:
        run.ended(status, "Promoted")
        message = f"{_label(status.canary_version)} promoted: it serves all traffic"
        run.note("Normal", "Promoted", message)
        promoted = api.RolloutStatus(
            phase=Phase.Promoted,
            stable_version=status.canary_version,
            last_analysis=status.last_analysis,
            message=message,
        )
        return run.decide(promoted, stable="canary")
    # With an autoscaler the operator does not size the stable Deployment, so it cannot grow
    # it one pod at a time: the canary only gives up a pod for each new stable one ready.
    replicas = promotion(facts.replicas, facts.stable_new_ready, facts.gpu and not facts.autoscaled)
    status = _with(status, weight=replicas.canary_share)
    # Spec changes wait until the promotion ends: the canary's template is what gets promoted.
    return run.decide(status, stable="canary", canary="canary", replicas=replicas)
