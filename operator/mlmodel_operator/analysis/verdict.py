"""Judging a canary step from its window's figures: pure, no I/O.

Too few requests make the step Inconclusive, never Pass nor Fail: a verdict on missing data
would promote or roll back by chance. Otherwise every threshold the new version breaks is named,
with its value; the stable version's figures, when known, are added for comparison.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mlmodel_operator import api


@dataclass(frozen=True)
class WindowMetrics:
    """One version's requests in a window, as Prometheus counted them (increase() extrapolates
    to the window's edges, so counts need not be whole numbers)."""

    requests: float
    errors: float
    p99_latency_seconds: float | None  # None: no requests
    drift: bool | None  # None: no drift series (drift detection off)
    version: str = ""  # the model_version measured, for messages
    # (observations, p99 seconds or None) of the streamed answers; None: not measured.
    time_to_first_token: tuple[float, float | None] | None = None
    inter_token_latency: tuple[float, float | None] | None = None
    # (labelled, correct) predictions whose truth arrived in the window; None: not measured.
    labels: tuple[float, float] | None = None

    @property
    def accuracy(self) -> float | None:
        if self.labels is None or self.labels[0] <= 0:
            return None
        return min(1.0, self.labels[1] / self.labels[0])

    @property
    def error_ratio(self) -> float | None:
        if self.requests <= 0:
            return None
        # The two counts are extrapolated apart and may disagree by a hair.
        return min(1.0, self.errors / self.requests)


@dataclass(frozen=True)
class Verdict:
    result: api.AnalysisResult
    message: str  # names the metric, its value and the threshold on Fail; why on Inconclusive
    canary: WindowMetrics | None = None
    stable: WindowMetrics | None = None

    def record(self, time: str) -> api.AnalysisRecord:
        """The status record of this verdict, judged at `time` (RFC 3339)."""
        canary = self.canary
        return api.AnalysisRecord(
            result=self.result,
            requests=canary.requests if canary else None,
            error_ratio=canary.error_ratio if canary else None,
            p99_latency_seconds=canary.p99_latency_seconds if canary else None,
            drift=canary.drift if canary else None,
            p99_time_to_first_token_seconds=_p99(canary.time_to_first_token) if canary else None,
            p99_inter_token_latency_seconds=_p99(canary.inter_token_latency) if canary else None,
            accuracy=canary.accuracy if canary else None,
            labels=canary.labels[0] if canary and canary.labels else None,
            stable_accuracy=self.stable.accuracy if self.stable else None,
            message=self.message,
            time=time,
        )


def inconclusive(reason: str) -> Verdict:
    return Verdict(api.AnalysisResult.Inconclusive, reason)


def judge(
    canary: WindowMetrics, analysis: api.RolloutAnalysis, stable: WindowMetrics | None = None
) -> Verdict:
    name = canary.version or "the new version"
    window = f"in the last {analysis.interval_seconds}s"
    context = f" ({_describe(stable)})" if stable is not None else ""
    if canary.requests < analysis.min_requests:
        return Verdict(
            api.AnalysisResult.Inconclusive,
            f"{_count(canary.requests)} requests to {name} {window}, fewer than min_requests "
            f"{analysis.min_requests}{context}",
            canary,
        )
    over = f"over {_count(canary.requests)} requests to {name} {window}"
    # (label, field, threshold, p99) of each streaming gate that is set.
    thresholds = (
        analysis.max_p99_time_to_first_token_seconds,
        analysis.max_p99_inter_token_latency_seconds,
    )
    measured = (canary.time_to_first_token, canary.inter_token_latency)
    streams = [
        (label, field, threshold, _p99(figures))
        for (label, field), threshold, figures in zip(
            STREAM_GATES, thresholds, measured, strict=True
        )
        if threshold is not None
    ]
    for label, field, _threshold, stream_p99 in streams:
        if stream_p99 is None:
            return Verdict(
                api.AnalysisResult.Inconclusive,
                f"no {label} measured for {name} {window} (no streamed completion with "
                f"generated text): {field} cannot be judged{context}",
                canary,
            )
    accuracy = _judge_accuracy(canary, analysis, stable)
    if isinstance(accuracy, str):
        return Verdict(api.AnalysisResult.Inconclusive, f"{accuracy}{context}", canary, stable)
    ratio, p99 = canary.error_ratio, canary.p99_latency_seconds
    broken = []
    if ratio is not None and ratio > analysis.max_error_ratio:
        broken.append(f"error ratio {_num(ratio)} > max_error_ratio {analysis.max_error_ratio:g}")
    if p99 is not None and p99 > analysis.max_p99_latency_seconds:
        broken.append(
            f"p99 latency {_num(p99)}s > max_p99_latency_seconds "
            f"{analysis.max_p99_latency_seconds:g}"
        )
    for label, field, threshold, stream_p99 in streams:
        if stream_p99 is not None and stream_p99 > threshold:
            broken.append(f"p99 {label} {_num(stream_p99)}s > {field} {threshold:g}")
    if analysis.fail_on_drift and canary.drift is True:
        broken.append("drift detected (fail_on_drift)")
    broken += accuracy.broken
    if broken:
        return Verdict(
            api.AnalysisResult.Fail, f"{'; '.join(broken)} {over}{context}", canary, stable
        )
    held = [
        f"error ratio {_num(ratio or 0.0)} <= {analysis.max_error_ratio:g}",
        f"p99 latency {_num(p99)}s <= {analysis.max_p99_latency_seconds:g}"
        if p99 is not None
        else "p99 latency unknown",
    ]
    held += [f"p99 {label} {_num(p)}s <= {t:g}" for label, _f, t, p in streams if p is not None]
    if canary.drift is not None:
        held.append("drift detected, fail_on_drift off" if canary.drift else "no drift")
    held += accuracy.held
    return Verdict(api.AnalysisResult.Pass, f"{', '.join(held)} {over}{context}", canary, stable)


@dataclass(frozen=True)
class AccuracyJudgement:
    broken: list[str]
    held: list[str]


def _judge_accuracy(
    canary: WindowMetrics, analysis: api.RolloutAnalysis, stable: WindowMetrics | None
) -> AccuracyJudgement | str:
    """The accuracy gates' findings, or why they cannot be judged (too few labels)."""
    floor, drop = analysis.min_accuracy, analysis.max_accuracy_drop
    if floor is None and drop is None:
        return AccuracyJudgement([], [])
    name = canary.version or "the new version"
    window = f"in the last {analysis.interval_seconds}s"
    labelled = canary.labels[0] if canary.labels else 0.0
    if labelled < analysis.min_labels:
        return (
            f"{_count(labelled)} labelled predictions of {name} {window}, fewer than "
            f"min_labels {analysis.min_labels}: accuracy cannot be judged"
        )
    accuracy = canary.accuracy or 0.0
    of = f"over {_count(labelled)} labelled predictions"
    broken, held = [], []
    if floor is not None:
        text = f"accuracy {_num(accuracy)} {of}"
        if accuracy < floor:
            broken.append(f"{text} < min_accuracy {floor:g}")
        else:
            held.append(f"{text} >= min_accuracy {floor:g}")
    if drop is not None:
        stable_labels = stable.labels[0] if stable is not None and stable.labels else 0.0
        if stable is None or stable_labels < analysis.min_labels:
            return (
                f"{_count(stable_labels)} labelled predictions of the stable version {window}, "
                f"fewer than min_labels {analysis.min_labels}: max_accuracy_drop cannot be judged"
            )
        baseline = stable.accuracy or 0.0
        fall = baseline - accuracy
        side = f"{_num(fall)} below" if fall >= 0 else f"{_num(-fall)} above"
        text = (
            f"accuracy {_num(accuracy)} is {side} the stable version's {_num(baseline)} "
            f"(over {_count(stable_labels)} labelled)"
        )
        if fall > drop:
            broken.append(f"{text} > max_accuracy_drop {drop:g}")
        else:
            held.append(f"{text}, within max_accuracy_drop {drop:g}")
    return AccuracyJudgement(broken, held)


STREAM_GATES = (
    ("time to first token", "max_p99_time_to_first_token_seconds"),
    ("inter-token latency", "max_p99_inter_token_latency_seconds"),
)


def _p99(measured: tuple[float, float | None] | None) -> float | None:
    return measured[1] if measured is not None else None


def _describe(stable: WindowMetrics) -> str:
    name = f"stable {stable.version}" if stable.version else "stable"
    if stable.requests <= 0:
        return f"{name}: no requests"
    p99 = stable.p99_latency_seconds
    latency = f"p99 {_num(p99)}s" if p99 is not None else "p99 unknown"
    return (
        f"{name}: error ratio {_num(stable.error_ratio or 0.0)}, {latency} over "
        f"{_count(stable.requests)} requests"
    )


def _num(value: float) -> str:
    """Three significant digits: 0.42, 0.0015, 0.497, 12.3."""
    return f"{value:.3g}" if math.isfinite(value) else str(value)


def _count(value: float) -> str:
    """A count as Prometheus extrapolated it: 120, 99.6."""
    return f"{value:.1f}".removesuffix(".0")
