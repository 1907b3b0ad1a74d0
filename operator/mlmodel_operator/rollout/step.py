"""One reconcile's step of a rollout: the state machine's next state (with the step's analysis
queried from Prometheus when it is due), the children as the decision arranges them, and the
revision history. The only I/O is the analysis' query; the reconcile applies the result."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mlmodel_operator import api
from mlmodel_operator.analysis import analyse
from mlmodel_operator.builders import BuildSettings, Children, Owner
from mlmodel_operator.builders.canary import revision_of, template_revision
from mlmodel_operator.builders.inference_pool import pool_wanted
from mlmodel_operator.rollout.machine import Decision, advance, rfc3339, window_end
from mlmodel_operator.rollout.plan import Live, arrange, facts_from, override_of


def next_step(
    owner: Owner,
    spec: api.MLModelDeploymentSpec,
    children: Children,
    body: dict[str, Any],
    live: Live,
    settings: BuildSettings,
) -> tuple[Children, Decision]:
    """The rollout's next state, and the children as it arranges them (which template each
    Deployment runs, with how many replicas; a Gateway's weights)."""
    stable_built = next(o for o in children.apply if o["kind"] == "Deployment")
    stored = (body.get("status") or {}).get("rollout")
    previous = api.RolloutStatus.model_validate(stored) if stored else None
    # A pool spreads requests over both versions' pods by load: a split by replicas.
    pooled = pool_wanted(spec, gateway_api=settings.gateway_api, pool_api=settings.inference_pool)
    exact = spec.rollout.gateway is not None and settings.gateway_api and not pooled
    autoscaled = children.autoscaling is not None and children.autoscaling.kind is not None
    facts = facts_from(spec, stable_built, live, previous, override_of(body), exact, autoscaled)
    now = datetime.now(UTC)
    decision = advance(previous, facts, now)
    if decision.analyse and decision.status is not None:
        status = decision.status
        end = window_end(status, facts) or now
        verdict = analyse(
            settings.prometheus_url,
            owner.namespace,
            owner.name,
            status.canary_version or "",
            status.stable_version,
            spec.rollout.analysis,
            end.timestamp(),
        )
        decision = advance(previous, facts, now, verdict.record(rfc3339(now)))
    return arrange(owner, spec, children, decision, live, exact, autoscaled), decision


def history(
    previous: dict[str, Any],
    decision: Decision,
    spec: api.MLModelDeploymentSpec,
    live: Live,
    children: Children,
    now: str,
) -> list[dict[str, Any]]:
    """status.history: revisions that ended in this reconcile, then the earlier ones. A rolling
    update (the stable Deployment takes a new revision of the spec) is one too."""
    entries = [
        r.model_dump(mode="json", by_alias=True, exclude_none=True) for r in decision.history
    ]
    stable = next(o for o in children.apply if o["kind"] == "Deployment")
    revision = revision_of(stable) or template_revision(stable)
    if (
        decision.stable == "spec"
        and decision.canary is None
        and revision_of(live.stable) != revision
    ):
        deployed = api.Revision(
            version=spec.model_version,
            pod_template_hash=revision,
            outcome="Deployed",
            time=now,
        )
        entries.append(deployed.model_dump(mode="json", by_alias=True, exclude_none=True))
    return (entries + list(previous.get("history") or []))[: api.MAX_HISTORY]
