"""What the workers hand over when the analyst falls behind: an even share, and payload label
values that can never break the metrics endpoint."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mlmodel_operator.api import DriftSettings
from mlmodel_operator.monitor.drift import DriftDetector
from mlmodel_operator.monitor.labels import MAX_LABEL_LENGTH, safe_label
from mlmodel_operator.monitor.sampling import MIN_SHARE, EvenSampler, keep_share


def test_everything_is_kept_while_the_hand_off_has_room() -> None:
    sampler = EvenSampler()
    assert all(sampler.keep(0.1) for _ in range(1000))


@pytest.mark.parametrize("fill", [0.3, 0.5, 0.6, 0.74])
def test_a_filling_hand_off_keeps_an_even_share(fill: float) -> None:
    sampler = EvenSampler()
    kept = [i for i in range(10_000) if sampler.keep(fill)]
    share = keep_share(fill)
    assert len(kept) == pytest.approx(10_000 * share, abs=1)
    gaps = {b - a for a, b in itertools.pairwise(kept)}
    # Evenly spaced: every gap is the same, give or take one payload.
    assert max(gaps) - min(gaps) <= 1


def test_the_share_falls_as_the_hand_off_fills_but_never_to_nothing() -> None:
    shares = [keep_share(f / 100) for f in range(101)]
    assert shares == sorted(shares, reverse=True)
    assert shares[0] == 1.0 and shares[-1] == MIN_SHARE > 0


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("x[3]", "x[3]"),
        ("\ud800", "\ufffd"),
        ("a\x00b\nc\x1b[31m", "a\ufffdb\ufffdc\ufffd[31m"),
        ("é€✓ ok", "é€✓ ok"),
    ],
)
def test_label_values_are_printable_utf8(name: str, expected: str) -> None:
    assert safe_label(name) == expected
    safe_label(name).encode("utf-8")  # never raises


def test_label_values_are_bounded_in_length() -> None:
    assert len(safe_label("n" * 10_000)) == MAX_LABEL_LENGTH
    assert safe_label(12345) == "12345"


@pytest.mark.parametrize(("shift", "alarms"), [(0.5, True), (0.0, False)])
def test_detection_holds_while_half_the_payloads_are_dropped(shift: float, alarms: bool) -> None:
    """A stream sampled at half (the hand-off half full) still alarms on a shift, and still
    does not alarm without one."""
    rng = np.random.default_rng(11)
    settings = DriftSettings.model_validate({"window_size": 500, "check_interval_seconds": 60})
    reference = {"0": rng.normal(size=5000).tolist()}
    detector = DriftDetector(settings, reference)
    sampler = EvenSampler()
    fill = 0.5  # where keep_share gives one half
    assert keep_share(fill) == 0.5
    kept = 0
    for _ in range(2000):  # payloads of one row each
        value = float(rng.normal(shift, 1))
        if sampler.keep(fill):
            detector.add("input", {"x[0]": [value]})
            kept += 1
    assert kept == 1000
    assert detector.check().drifted is alarms
