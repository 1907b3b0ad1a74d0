"""Canary analysis: how one step of a canary rollout is measured and judged.

`analyse` measures the new version's requests over the step's window (analysis.interval_seconds
ending at `at`) from the sidecars' metrics in Prometheus, and judges them against the analysis'
thresholds; the stable version's figures are added to the message for comparison. It never
raises: whatever stops it from measuring makes the step Inconclusive, with the reason.

queries.py builds the PromQL, prometheus.py asks Prometheus (the only I/O, blocking), verdict.py
judges.
"""

from __future__ import annotations

import logging

from mlmodel_operator import api
from mlmodel_operator.analysis.prometheus import MetricsUnavailable, measure
from mlmodel_operator.analysis.verdict import Verdict, WindowMetrics, inconclusive, judge

__all__ = [
    "MetricsUnavailable",
    "Verdict",
    "WindowMetrics",
    "analyse",
    "inconclusive",
    "judge",
    "measure",
]

log = logging.getLogger(__name__)
NO_PROMETHEUS = "no Prometheus configured (--prometheus-url)"


def analyse(
    url: str | None,
    namespace: str,
    model: str,
    canary_version: str,
    stable_version: str | None,
    analysis: api.RolloutAnalysis,
    at: float,
) -> Verdict:
    """The verdict on `canary_version` of `model` in `namespace`, over the interval_seconds
    before `at` (Unix time). Blocking: call it from a thread in async code."""
    if not url:
        return inconclusive(NO_PROMETHEUS)
    window = analysis.interval_seconds
    llm = (
        analysis.max_p99_time_to_first_token_seconds is not None
        or analysis.max_p99_inter_token_latency_seconds is not None
    )
    accuracy = analysis.min_accuracy is not None or analysis.max_accuracy_drop is not None
    try:
        try:
            canary = measure(
                url, namespace, model, canary_version, window, at, llm=llm, accuracy=accuracy
            )
        except MetricsUnavailable as err:
            return inconclusive(str(err))
        stable = None
        if stable_version is not None:
            try:
                stable = measure(
                    url, namespace, model, stable_version, window, at, llm=llm, accuracy=accuracy
                )
            except MetricsUnavailable as err:
                log.info("stable version's figures left out: %s", err)
        return judge(canary, analysis, stable)
    except Exception as err:  # a bug here must not stop the rollout's reconcile
        log.exception("canary analysis of %s/%s failed", namespace, model)
        return inconclusive(f"analysis failed: {err!r}")
