"""The sequential drift detector on seeded streams: its closed-form CUSUM agrees with the
recursion, the bootstrap calibration keeps its promised false-alarm rate, known shifts are
found within stated delays, a stationary stream raises no alarm, and a verdict holds while a
shift lasts and clears after it ends."""

from __future__ import annotations

import numpy as np
import pytest

from mlmodel_operator.api import DriftSettings
from mlmodel_operator.monitor import sequential
from mlmodel_operator.monitor.drift import DriftDetector
from mlmodel_operator.monitor.sequential import Bank, NumericFeature, run

FEATURES = 20
NAMES = [f"f{j}" for j in range(FEATURES)]


def feed(detector: DriftDetector, rows: np.ndarray, batch: int = 100) -> list[tuple[int, str, str]]:
    """(sample, feature, detector) of each alarm, the sample counted from the first row."""
    alarms = []
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        detector.add("input", {n: chunk[:, j].tolist() for j, n in enumerate(NAMES)})
        alarms += [(start + a.at, a.feature[1], a.detector) for a in detector.take_alarms()]
    return alarms


def baseline(seed: int, rows: int = 1000) -> tuple[DriftDetector, np.random.Generator]:
    """A detector past its live baseline of `rows` standard normal rows."""
    rng = np.random.default_rng(seed)
    detector = DriftDetector(DriftSettings(window_size=rows))
    assert feed(detector, rng.normal(size=(rows, FEATURES))) == []
    return detector, rng


def test_the_closed_form_cusum_is_the_recursion() -> None:
    rng = np.random.default_rng(0)
    steps = rng.normal(-0.1, 1.0, size=(500, 3))
    state = np.array([0.0, 2.5, 7.0])
    expected, current = [], state.copy()
    for step in steps:
        current = np.maximum(0.0, current + step)
        expected.append(current.copy())
    np.testing.assert_allclose(run(state, steps), np.array(expected), atol=1e-9)


def test_the_calibrated_bank_keeps_its_promised_run_length_between_false_alarms() -> None:
    """Five features, one false alarm per 2,000 samples promised: over 400,000 samples, at most
    200 alarms (the promise), and at least a sixth of the alarms aimed at (MARGIN times fewer
    than promised), so that the calibration is not merely far too cautious."""
    rng = np.random.default_rng(11)
    promised, features, samples = 2000, 5, 400_000
    bank = Bank(promised, seed=1)
    watched = []
    for j in range(features):
        feature = NumericFeature(rng.normal(size=20_000), bank.rng)
        bank.add(("input", f"f{j}"), feature.charts)
        watched.append(feature)
    alarms = 0
    for _ in range(0, samples, 5000):
        rows = rng.normal(size=(5000, features))
        for j, feature in enumerate(watched):
            alarms += len(feature.update(("input", f"f{j}"), rows[:, j]))
    aimed_at = samples / (promised * sequential.MARGIN)
    assert aimed_at / 6 <= alarms <= samples / promised


def test_no_alarm_on_a_stationary_stream_of_two_thousand_samples() -> None:
    # 20 features, one false alarm per 10,000 samples promised (the default); 2,000 samples.
    detector, rng = baseline(seed=3)
    assert feed(detector, rng.normal(size=(2000, FEATURES))) == []


@pytest.mark.parametrize(
    ("shift", "scale", "chart", "within"),
    [
        (1.0, 1.0, "cusum_mean", 150),  # theory for this bank: about 45 samples
        (-0.5, 1.0, "cusum_mean", 400),  # about 100
        (0.0, np.sqrt(2), "cusum_scale", 300),  # a doubled variance: about 65
    ],
)
def test_a_shift_in_one_feature_of_twenty_is_found_within_a_stated_delay(
    shift: float, scale: float, chart: str, within: int
) -> None:
    detector, rng = baseline(seed=5)
    rows = rng.normal(size=(2000, FEATURES))
    rows[:, 7] = rows[:, 7] * scale + shift
    alarms = feed(detector, rows)
    assert alarms, "no alarm"
    sample, feature, detector_name = alarms[0]
    assert (feature, detector_name) == ("f7", chart)
    assert sample < within


def test_a_categorical_frequency_shift_is_found_by_the_categorical_chart() -> None:
    rng = np.random.default_rng(8)
    shares_before, shares_after = [0.5, 0.3, 0.2], [0.3, 0.3, 0.4]
    detector = DriftDetector(DriftSettings(window_size=1000))
    before = rng.choice(["a", "b", "c"], size=3000, p=shares_before).tolist()
    after = rng.choice(["a", "b", "c"], size=2000, p=shares_after).tolist()
    alarms = []
    for start in range(0, 5000, 100):
        detector.add("input", {"colour": (before + after)[start : start + 100]})
        alarms += [(start + a.at, a.detector) for a in detector.take_alarms()]
    assert alarms, "no alarm"
    sample, name = alarms[0]
    # The baseline is the first 1,000 values; the change comes at 3,000.
    assert name == "categorical"
    assert 3000 <= sample < 3500


def test_the_verdict_holds_while_a_shift_lasts_and_clears_after_stable_samples() -> None:
    detector, rng = baseline(seed=9)
    shifted = rng.normal(size=(3000, FEATURES))
    shifted[:, 2] += 1.0
    alarms = feed(detector, shifted)
    # A lasting shift keeps raising alarms (a mean shift moves the scale chart too).
    assert {feature for _, feature, _ in alarms} == {"f2"}
    assert max(sample for sample, _, _ in alarms) > 2500
    verdicts = {v.feature: v.drifted for v in detector.sequential_verdicts()}
    assert verdicts == {"f2": True}
    # Back to the reference: the charts' last climb may still end in an alarm, then a
    # window_size of samples without one clears the verdict.
    after = feed(detector, rng.normal(size=(1100, FEATURES)))
    assert all(sample < 100 and feature == "f2" for sample, feature, _ in after)
    verdicts = {v.feature: v.drifted for v in detector.sequential_verdicts()}
    assert verdicts == {"f2": False}


def test_thresholds_rise_as_features_join_the_bank() -> None:
    rng = np.random.default_rng(4)
    bank = Bank(10_000, seed=2)
    first = NumericFeature(rng.normal(size=2000), bank.rng)
    bank.add(("input", "a"), first.charts)
    alone = first.charts.threshold.copy()
    for name in "bcdefgh":
        bank.add(("input", name), NumericFeature(rng.normal(size=2000), bank.rng).charts)
    assert (first.charts.threshold > alone).all()
