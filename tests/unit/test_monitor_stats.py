"""Drift statistics and the detector's decisions, on generated data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from mlmodel_operator.api import DriftSettings
from mlmodel_operator.monitor.drift import DriftDetector
from mlmodel_operator.monitor.stats import (
    CategoricalReference,
    NumericReference,
    categorical_test,
    chi2_pvalue,
    ks_pvalues,
    ks_statistic,
    psi,
)

RNG_SEED = 20261123


@pytest.mark.parametrize("ties", [False, True])
def test_ks_statistic_equals_scipy(ties: bool) -> None:
    rng = np.random.default_rng(RNG_SEED)
    for _ in range(200):
        n, m = int(rng.integers(50, 5000)), int(rng.integers(20, 2000))
        a = rng.normal(size=n)
        b = rng.normal(rng.uniform(-0.5, 0.5), rng.uniform(0.5, 2), size=m)
        if ties:
            a, b = np.round(a, 1), np.round(b, 1)
        ours = ks_statistic(np.sort(a), np.sort(b))
        assert ours == stats.ks_2samp(a, b, method="asymp").statistic


def test_ks_p_value_close_to_scipy_asymptotic_and_never_smaller() -> None:
    rng = np.random.default_rng(RNG_SEED)
    for shift in np.linspace(0, 0.2, 30):
        a, b = rng.normal(size=10_000), rng.normal(shift, 1, size=1000)
        d = ks_statistic(np.sort(a), np.sort(b))
        ours = ks_pvalues([d], 10_000, 1000)[0]
        scipy_p = stats.ks_2samp(a, b, method="asymp").pvalue
        assert ours == pytest.approx(scipy_p, abs=0.01)
        assert ours >= scipy_p - 1e-12  # conservative: never more alarms than scipy's


def test_psi_is_zero_for_the_same_distribution_and_grows_with_shift() -> None:
    rng = np.random.default_rng(RNG_SEED)
    reference = NumericReference.from_values(rng.normal(size=20_000))
    same = psi(reference, np.sort(rng.normal(size=5000)))
    shifted = psi(reference, np.sort(rng.normal(1.0, 1, size=5000)))
    assert same < 0.01
    assert shifted > 0.25


def test_categorical_distance_and_p_value() -> None:
    reference = CategoricalReference.from_values(["a"] * 500 + ["b"] * 300 + ["c"] * 200)
    distance, p_value = categorical_test(reference, ["a"] * 50 + ["b"] * 30 + ["c"] * 20)
    assert distance == pytest.approx(0.0) and p_value > 0.5
    distance, p_value = categorical_test(reference, ["a"] * 30 + ["b"] * 30 + ["c"] * 40)
    assert distance == pytest.approx(0.2) and p_value < 1e-4


@pytest.mark.parametrize("columns", [2, 3, 7])
def test_chi2_pvalue_equals_scipy(columns: int) -> None:
    rng = np.random.default_rng(RNG_SEED + columns)
    table = rng.integers(1, 200, size=(2, columns)).astype(np.float64)
    expected = stats.chi2_contingency(table, correction=False).pvalue
    assert chi2_pvalue(table) == pytest.approx(expected, rel=1e-9)


def settings(**kw: object) -> DriftSettings:
    return DriftSettings.model_validate({"window_size": 500, **kw})


def run_windows(detector: DriftDetector, sample, windows: int, size: int) -> list[bool]:  # type: ignore[no-untyped-def]
    verdicts = []
    for _ in range(windows):
        detector.add("input", sample(size))
        verdicts.append(detector.check().drifted)
    return verdicts


@pytest.mark.parametrize("method", ["ks", "psi"])
def test_false_alarm_rate_on_stationary_data_stays_within_the_level(method: str) -> None:
    rng = np.random.default_rng(RNG_SEED)
    reference = {f"f{j}": rng.normal(size=5000).tolist() for j in range(5)}
    detector = DriftDetector(settings(method=method, p_value_threshold=0.05), reference)

    def sample(size: int) -> dict[str, list[float]]:
        return {f"f{j}": rng.normal(size=size).tolist() for j in range(5)}

    alarms = run_windows(detector, sample, windows=200, size=500)
    assert sum(alarms) / len(alarms) <= 0.05


def test_mean_shift_of_half_a_sigma_is_detected() -> None:
    rng = np.random.default_rng(RNG_SEED)
    detector = DriftDetector(settings(), {"x": rng.normal(size=10_000).tolist()})
    detector.add("input", {"x": rng.normal(0.5, 1, size=500).tolist()})
    result = detector.check()
    assert result.drifted
    (feature,) = result.features
    assert feature.method == "ks" and feature.score > 0.1 and feature.p_value < 0.01


def test_variance_change_is_detected() -> None:
    rng = np.random.default_rng(RNG_SEED)
    detector = DriftDetector(settings(), {"x": rng.normal(size=10_000).tolist()})
    detector.add("input", {"x": rng.normal(0, 2, size=500).tolist()})
    assert detector.check().drifted


def test_categorical_frequency_change_is_detected() -> None:
    rng = np.random.default_rng(RNG_SEED)
    reference = {"colour": rng.choice(["red", "green", "blue"], 5000, p=[0.5, 0.3, 0.2]).tolist()}
    detector = DriftDetector(settings(), reference)
    detector.add(
        "input", {"colour": rng.choice(["red", "green", "blue"], 500, p=[0.5, 0.3, 0.2]).tolist()}
    )
    assert not detector.check().drifted
    detector.add(
        "input", {"colour": rng.choice(["red", "green", "blue"], 500, p=[0.3, 0.3, 0.4]).tolist()}
    )
    result = detector.check()
    assert result.drifted and result.features[0].method == "chi2"


def test_negligible_shift_in_a_huge_window_is_not_drift() -> None:
    # Significant but tiny: the effect-size threshold keeps it from being called drift.
    rng = np.random.default_rng(RNG_SEED)
    detector = DriftDetector(
        DriftSettings(window_size=100_000), {"x": rng.normal(size=100_000).tolist()}
    )
    detector.add("input", {"x": rng.normal(0.05, 1, size=100_000).tolist()})
    (feature,) = detector.check().features
    assert feature.p_value < 0.05
    assert not feature.drifted


def test_live_baseline_when_no_reference() -> None:
    rng = np.random.default_rng(RNG_SEED)
    detector = DriftDetector(settings())
    detector.add("input", {"x": rng.normal(size=500).tolist()})  # becomes the reference
    assert detector.check().features == []
    detector.add("input", {"x": rng.normal(size=500).tolist()})
    assert not detector.check().drifted
    detector.add("input", {"x": rng.normal(1.0, 1, size=500).tolist()})
    assert detector.check().drifted


def test_tensor_columns_match_reference_columns_by_index() -> None:
    rng = np.random.default_rng(RNG_SEED)
    detector = DriftDetector(settings(), {"1": rng.normal(size=5000).tolist()})
    detector.add("input", {"x[1]": rng.normal(3, 1, size=500).tolist()})
    assert detector.check().drifted


def test_bad_values_are_counted_not_used_and_memory_is_bounded() -> None:
    detector = DriftDetector(settings(), max_features=2)
    detector.add("input", {"x": [1.0, float("nan"), float("inf"), "text", 2.0]})
    detector.add("input", {"y": [1.0], "z": [1.0, 2.0]})
    assert detector.rejected == {"nonfinite": 2, "type": 1, "overflow": 2}
    assert len(detector.features) == 2
    detector.add("input", {"x": list(range(5000))})
    assert all(len(f.window) <= 500 for f in detector.features.values())


def test_values_beyond_float_range_or_nested_are_rejected_not_raised() -> None:
    detector = DriftDetector(settings())
    detector.add("input", {"x": [1.0, 10**400, -(10**400), 2.0], "c": ["a", [["deep"]], {"k": 1}]})
    assert detector.rejected == {"nonfinite": 2, "type": 2}
    assert list(detector.features["input", "x"].window) == [1.0, 2.0]


def test_a_reference_column_without_numbers_gives_way_to_the_live_baseline() -> None:
    rng = np.random.default_rng(RNG_SEED)
    detector = DriftDetector(settings(), {"x": ["a", "b", None, 10**400]})
    detector.add("input", {"x": rng.normal(size=500).tolist()})
    assert detector.features["input", "x"].reference is not None  # the live window
    detector.add("input", {"x": rng.normal(3, 1, size=500).tolist()})
    assert detector.check().drifted


def test_checks_are_due_every_window_or_interval() -> None:
    detector = DriftDetector(settings(check_interval_seconds=10))
    start = detector.last_check
    assert not detector.due(start + 60)  # nothing new
    detector.add("input", {"x": [1.0] * 10})
    assert not detector.due(start + 5)
    assert detector.due(start + 10)
    detector.add("input", {"x": [1.0] * 500})
    assert detector.due(start)
