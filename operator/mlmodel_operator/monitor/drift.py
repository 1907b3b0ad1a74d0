"""The drift detector: bounded windows of recent values per feature, compared with a reference.

Memory is bounded whatever the traffic: at most `max_features` features per direction (inputs
and outputs each have their own budget, so outputs are watched however wide the inputs are),
each with a window of `window_size` values. A feature's reference comes from the reference
data when it has a column of that name (or, for a tensor column `x[j]`, the column `j`);
otherwise the first full window of live traffic becomes its reference.

Two detectors watch each feature. The sequential one (sequential.py) checks every sample with
CUSUM charts and raises an alarm within a few hundred samples of a shift; the windowed one below
is the slow, thorough check. Drift is declared when either fires.

A feature has drifted in the windowed test when the change is both significant (p-value below
the threshold, divided by the number of features tested, so the model-level false-alarm rate
stays at the configured level) and large enough to matter (effect size at least the
threshold): with big windows a negligible shift is still "significant".
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np

from mlmodel_operator.api import DriftSettings
from mlmodel_operator.monitor.payloads import DEFAULT_BUDGET, Columns, Wide
from mlmodel_operator.monitor.projection import PROJECTIONS, SEED, project
from mlmodel_operator.monitor.sequential import (
    Alarm,
    Bank,
    CategoricalFeature,
    NumericFeature,
)
from mlmodel_operator.monitor.stats import (
    CategoricalReference,
    NumericReference,
    categorical_test,
    ks_pvalues,
    ks_statistic,
    psi,
)

log = logging.getLogger(__name__)
Reference = NumericReference | CategoricalReference
MAX_WIDE = 4  # wide tensors projected per direction
MIN_SAMPLES = 100  # fewer values than this in a window (or the whole window if smaller) wait
_INDEX = re.compile(r"\[(\d+)\]$")


@dataclass(frozen=True)
class FeatureResult:
    direction: str  # input or output
    feature: str
    method: str  # ks, psi or chi2
    score: float  # KS statistic, PSI, or total variation distance
    p_value: float
    samples: int
    drifted: bool


@dataclass(frozen=True)
class CheckResult:
    features: list[FeatureResult]
    drifted: bool
    checked_at: float


@dataclass
class _Feature:
    numeric: bool
    window: deque = field(default_factory=deque)
    reference: Reference | None = None
    sequential: NumericFeature | CategoricalFeature | None = None


@dataclass
class _WideTensor:
    """A wide tensor's projections: the live baseline while it fills, then their charts."""

    width: int
    baseline: list[np.ndarray] = field(default_factory=list)
    rows: int = 0
    sequential: NumericFeature | None = None


@dataclass(frozen=True)
class SequentialVerdict:
    direction: str
    feature: str
    detector: str  # the chart of the feature's last alarm: cusum_mean, cusum_scale, ...
    drifted: bool  # an alarm within the last `stable_samples` samples of the feature


def is_numeric(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def as_finite(value: int | float) -> float | None:
    """A number as a finite float; None when it is infinite, NaN, or an int beyond float range."""
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def is_category(value: object) -> bool:
    """Scalars only: a nested value is no category (and its text could be any size)."""
    return value is None or isinstance(value, str | int | float | bool)


class DriftDetector:
    def __init__(
        self,
        settings: DriftSettings,
        reference_columns: dict[str, list[object]] | None = None,
        max_features: int = DEFAULT_BUDGET,
    ) -> None:
        self.settings = settings
        self.max_features = max_features
        self.reference_columns = reference_columns or {}
        self.features: dict[tuple[str, str], _Feature] = {}
        self.per_direction = Counter[str]()
        self.min_samples = min(MIN_SAMPLES, settings.window_size)
        self.new_samples = 0
        self.last_check = time.monotonic()
        self.rejected = Counter[str]()  # why values were not used: nonfinite, type, overflow
        self.bank = Bank(settings.expected_samples_between_false_alarms)
        # After an alarm a feature counts as drifted until this many of its samples in a row
        # raise none: a lasting shift keeps raising alarms (the charts restart from zero after
        # each), so the verdict holds while it lasts and clears by itself after it ends.
        self.stable_samples = settings.window_size
        self.alarms: list[Alarm] = []  # raised since the caller last took them
        self.wide: dict[tuple[str, str], _WideTensor] = {}

    # --- intake ------------------------------------------------------------------------------

    def add(self, direction: str, columns: Columns) -> None:
        fed: list[tuple[tuple[str, str], _Feature, list]] = []
        for name, values in columns.items():
            feature = self._feature(direction, name, values)
            if feature is None:
                continue
            usable = self._numbers(values) if feature.numeric else self._categories(values)
            if feature.reference is None:
                # The live baseline is exactly the first window_size values, however many
                # came in one call; the rest start the first window compared with it.
                room = self.settings.window_size - len(feature.window)
                feature.window.extend(usable[:room])
                usable = usable[room:]
                self._maybe_freeze_baseline(feature)
            feature.window.extend(usable)
            self.new_samples += len(values)
            if feature.reference is not None:
                fed.append(((direction, name), feature, usable))
        # Every feature joins the bank before any runs: thresholds depend on the bank's size.
        for key, feature, _ in fed:
            if feature.sequential is None:
                self._start_sequential(key, feature)
        for key, feature, usable in fed:
            if usable:
                self._sequential(key, feature, usable)

    def _start_sequential(self, key: tuple[str, str], feature: _Feature) -> None:
        """Calibrated once per reference: from the reference data when the feature first
        comes, or when its live baseline freezes."""
        reference = feature.reference
        if isinstance(reference, NumericReference):
            feature.sequential = NumericFeature(reference.sorted_values, self.bank.rng)
        else:
            assert isinstance(reference, CategoricalReference)
            expanded = [c for c, n in reference.counts.items() for _ in range(n)]
            feature.sequential = CategoricalFeature(expanded, self.bank.rng)
        self.bank.add(key, feature.sequential.charts)

    def _sequential(self, key: tuple[str, str], feature: _Feature, values: list) -> None:
        if isinstance(feature.sequential, NumericFeature):
            self.alarms += feature.sequential.update(key, np.asarray(values, dtype=np.float64))
        else:
            self.alarms += feature.sequential.update(key, values)

    def add_wide(self, direction: str, tensors: Wide) -> None:
        """The whole rows of tensors with values past the feature budget: their projections'
        baseline is the first window_size rows of live traffic (reference data, named by
        column, does not say how to project), then the sequential charts watch them."""
        for name, rows in tensors.items():
            key = (direction, f"{name}:projection")
            tensor = self.wide.get(key)
            if tensor is None:
                if sum(k[0] == direction for k in self.wide) >= MAX_WIDE:
                    self.rejected["overflow"] += rows.size
                    continue
                tensor = self.wide[key] = _WideTensor(rows.shape[1])
                log.info(
                    "drift: %s %s: %d values a row projected to %d (seed %d)",
                    direction, name, rows.shape[1], PROJECTIONS, SEED,
                )  # fmt: skip
            if rows.shape[1] != tensor.width:
                self.rejected["type"] += rows.size
                continue
            projected = project(rows)
            finite = np.isfinite(projected).all(axis=1)
            self.rejected["nonfinite"] += int((~finite).sum())
            projected = projected[finite]
            if tensor.sequential is None:
                room = self.settings.window_size - tensor.rows
                tensor.baseline.append(projected[:room])
                tensor.rows += len(projected[:room])
                projected = projected[room:]
                if tensor.rows < self.settings.window_size:
                    continue
                reference = np.concatenate(tensor.baseline)
                tensor.baseline = []
                tensor.sequential = NumericFeature(reference, self.bank.rng, "projection")
                self.bank.add(key, tensor.sequential.charts)
            if len(projected):
                self.alarms += tensor.sequential.update(key, projected)

    def take_alarms(self) -> list[Alarm]:
        alarms, self.alarms = self.alarms, []
        return alarms

    def sequential_verdicts(self) -> list[SequentialVerdict]:
        """The features whose charts have raised an alarm, drifted or stable again."""
        out = []
        for (direction, name), charts in self.bank.charts.items():
            if charts.last_alarm is None or charts.since_alarm is None:
                continue
            drifted = charts.since_alarm < self.stable_samples
            out.append(SequentialVerdict(direction, name, charts.last_alarm.detector, drifted))
        return out

    def _categories(self, values: list[object]) -> list[str]:
        categories = [str(v) for v in values if is_category(v)]
        self.rejected["type"] += len(values) - len(categories)
        return categories

    def _numbers(self, values: list[object]) -> list[float]:
        """The finite numbers among a numeric feature's values; the others are counted."""
        if all(type(v) is float for v in values):  # what JSON numbers with a point become
            finite = [v for v in values if v - v == 0.0]  # type: ignore[operator]  # inf, nan: not 0
            self.rejected["nonfinite"] += len(values) - len(finite)
            return finite  # type: ignore[return-value]
        numbers = []
        for value in values:
            if not is_numeric(value):
                self.rejected["type"] += 1
            elif (number := as_finite(value)) is None:  # type: ignore[arg-type]
                self.rejected["nonfinite"] += 1
            else:
                numbers.append(number)
        return numbers

    def _feature(self, direction: str, name: str, values: list[object]) -> _Feature | None:
        key = (direction, name)
        feature = self.features.get(key)
        if feature is not None:
            return feature
        if self.per_direction[direction] >= self.max_features or not values:
            self.rejected["overflow"] += len(values)
            return None
        self.per_direction[direction] += 1
        # The first batch decides the kind; later values of the other kind are rejected.
        numeric = 2 * sum(is_numeric(v) for v in values) >= len(values)
        feature = _Feature(numeric=numeric, window=deque(maxlen=self.settings.window_size))
        feature.reference = self._reference_for(name, numeric)
        self.features[key] = feature
        return feature

    def _reference_for(self, name: str, numeric: bool) -> Reference | None:
        column = self.reference_columns.get(name)
        if column is None and (index := _INDEX.search(name)):
            column = self.reference_columns.get(index.group(1))
        if column is None:
            return None
        if numeric:
            numbers = [n for v in column if is_numeric(v) and (n := as_finite(v)) is not None]
            # A reference column without numbers cannot serve a numeric feature: the first
            # window of live traffic takes its place.
            return NumericReference.from_values(numbers) if numbers else None
        categories = [v for v in column if is_category(v)]
        return CategoricalReference.from_values(categories) if categories else None

    def _maybe_freeze_baseline(self, feature: _Feature) -> None:
        # Without reference data, the first full window of traffic is the reference.
        if feature.reference is None and len(feature.window) == self.settings.window_size:
            values = list(feature.window)
            feature.reference = (
                NumericReference.from_values(values)
                if feature.numeric
                else CategoricalReference.from_values(values)
            )
            feature.window.clear()

    # --- checks ------------------------------------------------------------------------------

    def due(self, now: float | None = None) -> bool:
        """Every window's worth of new samples, or every check interval when there were any."""
        now = time.monotonic() if now is None else now
        if self.new_samples >= self.settings.window_size:
            return True
        return (
            self.new_samples > 0 and now - self.last_check >= self.settings.check_interval_seconds
        )

    def check(self, now: float | None = None) -> CheckResult:
        now = time.monotonic() if now is None else now
        self.new_samples = 0
        self.last_check = now
        ready = [
            (key, f)
            for key, f in self.features.items()
            if f.reference is not None and len(f.window) >= self.min_samples
        ]
        if not ready:
            return CheckResult([], False, time.time())
        alpha = self.settings.p_value_threshold / len(ready)
        threshold = self.settings.effect_size_threshold
        numeric = [(key, f) for key, f in ready if f.numeric]
        results = [self._categorical(key, f, alpha, threshold) for key, f in ready if not f.numeric]
        results += self._numeric(numeric, alpha, threshold)
        return CheckResult(results, any(r.drifted for r in results), time.time())

    def _numeric(
        self, features: list[tuple[tuple[str, str], _Feature]], alpha: float, threshold: float
    ) -> list[FeatureResult]:
        if not features:
            return []
        windows = [np.sort(np.fromiter(f.window, dtype=np.float64)) for _, f in features]
        refs: list[NumericReference] = [f.reference for _, f in features]  # type: ignore[misc]
        statistics = [ks_statistic(r.sorted_values, w) for r, w in zip(refs, windows, strict=True)]
        p_values = ks_pvalues(
            statistics,
            np.array([r.sorted_values.size for r in refs]),
            np.array([w.size for w in windows]),
        )
        out = []
        for i, ((direction, name), _) in enumerate(features):
            if self.settings.method == "psi":
                method, score = "psi", psi(refs[i], windows[i])
            else:
                method, score = "ks", statistics[i]
            out.append(
                FeatureResult(
                    direction=direction,
                    feature=name,
                    method=method,
                    score=score,
                    p_value=float(p_values[i]),
                    samples=windows[i].size,
                    drifted=bool(p_values[i] < alpha and score >= threshold),
                )
            )
        return out

    def _categorical(
        self, key: tuple[str, str], feature: _Feature, alpha: float, threshold: float
    ) -> FeatureResult:
        distance, p_value = categorical_test(feature.reference, feature.window)  # type: ignore[arg-type]
        return FeatureResult(
            direction=key[0],
            feature=key[1],
            method="chi2",
            score=distance,
            p_value=p_value,
            samples=len(feature.window),
            drifted=p_value < alpha and distance >= threshold,
        )
