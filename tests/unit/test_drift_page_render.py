"""The drift page's data and HTML, from a real detector fed a shifted stream."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest

from mlmodel_operator.api import DriftSettings
from mlmodel_operator.monitor import drift_page
from mlmodel_operator.monitor.drift import DriftDetector


@pytest.fixture
def shifted() -> tuple[DriftDetector, drift_page.Snapshot]:
    rng = np.random.default_rng(5)
    reference = {"0": list(rng.normal(0, 1, 2000)), "1": list(rng.normal(0, 1, 2000))}
    detector = DriftDetector(DriftSettings(window_size=500), reference)
    detector.add(
        "input", {"x[0]": list(rng.normal(0, 1, 500)), "x[1]": list(rng.normal(2, 1, 500))}
    )
    detector.add("output", {"label": ["a", "b"] * 300})  # no reference: its baseline fills
    result = detector.check()
    held = {(r.direction, r.feature, "windowed") for r in result.features if r.drifted}
    alarms = {a.feature: (a, 1.7e9) for a in detector.take_alarms()}
    data = drift_page.snapshot(
        detector, result.features, held, alarms, model="iris", version="v2",
        checked_at=result.checked_at,
    )  # fmt: skip
    return detector, data


def test_snapshot_marks_the_shifted_feature_with_both_histograms(shifted) -> None:
    _, data = shifted
    features = {f["feature"]: f for f in data["features"]}
    assert set(features) == {"x[0]", "x[1]", "label"}  # the output's live baseline was full
    assert features["x[1]"]["drifted"] and not features["x[0]"]["drifted"]
    assert data["drifted"] is True
    for f in features.values():
        assert len(f["reference"]) == len(f["live"]) == len(f["bins"])
        assert sum(f["reference"]) == pytest.approx(1) and sum(f["live"]) == pytest.approx(1)
    assert features["x[1]"]["score"] > features["x[0]"]["score"]


def test_page_marks_the_drifted_feature_and_escapes_names(shifted, tmp_path: Path) -> None:
    _, data = shifted
    [label] = [f for f in data["features"] if f["feature"] == "label"]
    label["feature"] = "<b>x</b>"
    drift_page.save(data, tmp_path / "page.json")
    html = drift_page.render(drift_page.load(tmp_path / "page.json"), "iris", "v2")
    marked = dict(re.findall(r'data-feature="([^"]+)" data-drifted="(true|false)"', html))
    assert marked["input:x[1]"] == "true" and marked["input:x[0]"] == "false"
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html
    assert html.count("DRIFTED") == 1
    assert time.strftime("%Y-%m-%d", time.gmtime(data["checked_at"])) in html


def test_no_snapshot_yet_says_why(tmp_path: Path) -> None:
    assert drift_page.load(tmp_path / "missing.json") is None
    assert "No drift check has run yet" in drift_page.render(None, "iris", "")
