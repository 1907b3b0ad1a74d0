"""Per-model metrics of the operator, read from the watch cache at each scrape: what the
dashboard shows of a model that only the operator knows (replicas desired and ready, the
canary's step, weight and last verdict). Computed at scrape time rather than kept in labelled
gauges, so that a deleted model's series go with it and nothing is left to clean up.

Labels are `namespace` and `model`, as the sidecars' series have them; a scrape of the operator
keeps them with `honor_labels` (the chart's ServiceMonitor sets honorLabels)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LABELS = ["namespace", "model"]
ANALYSIS_RESULTS = ("Pass", "Fail", "Inconclusive")


Model = tuple[dict[str, Any], list[dict[str, Any]]]  # an MLModelDeployment, its Deployments


def model_families(models: Iterable[Model]) -> list[GaugeMetricFamily]:
    """Pure: cached MLModelDeployments with their Deployments (stable, and the canary's) -> the
    metric families of one scrape. Desired replicas are the Deployments' own counts, which an
    autoscaler sets; the spec's count before there is a Deployment."""
    replicas = GaugeMetricFamily(
        "mlmodel_operator_model_replicas",
        "Replicas of a model: desired (its Deployments'), current, ready, updated",
        labels=[*LABELS, "state"],
    )
    ready = GaugeMetricFamily(
        "mlmodel_operator_model_ready", "1 while the model's Ready condition is True", labels=LABELS
    )
    weight = GaugeMetricFamily(
        "mlmodel_operator_canary_weight",
        "Percent of the traffic on the canary (0 without one)",
        labels=LABELS,
    )
    step = GaugeMetricFamily(
        "mlmodel_operator_canary_step", "The canary's step, from 1 (0 without one)", labels=LABELS
    )
    verdict = GaugeMetricFamily(
        "mlmodel_operator_canary_analysis",
        "1 for the result of the canary's last analysis, 0 for the others",
        labels=[*LABELS, "result"],
    )
    for body, deployments in models:
        meta, spec = body["metadata"], body.get("spec") or {}
        status = body.get("status") or {}
        key = [meta.get("namespace", ""), meta["name"]]
        counts = [(d.get("spec") or {}).get("replicas") for d in deployments]
        desired = sum(c or 0 for c in counts) if counts else spec.get("replicas", 1)
        for state, value in (
            ("desired", desired),
            ("current", status.get("replicas", 0)),
            ("ready", status.get("readyReplicas", 0)),
            ("updated", status.get("updatedReplicas", 0)),
        ):
            replicas.add_metric([*key, state], float(value or 0))
        conditions = status.get("conditions") or []
        is_ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        ready.add_metric(key, 1.0 if is_ready else 0.0)
        rollout = status.get("rollout") or {}
        active = rollout.get("phase") in ("Progressing", "Paused", "Promoting")
        weight.add_metric(key, float(rollout.get("weight") or 0) if active else 0.0)
        step.add_metric(key, float(rollout.get("step") or 0) if active else 0.0)
        if last := rollout.get("lastAnalysis"):
            for result in ANALYSIS_RESULTS:
                verdict.add_metric([*key, result], 1.0 if last.get("result") == result else 0.0)
    return [replicas, ready, weight, step, verdict]


class ModelCollector(Collector):
    """Registered once; `source` is set when the operator starts (a function returning the
    cached models), and until then a scrape yields the families without samples."""

    def __init__(self) -> None:
        self.source: Callable[[], Iterable[Model]] = list

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from model_families(self.source())
