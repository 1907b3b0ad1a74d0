"""Wide inputs: the fixed random projection, and a shift only in values past the feature budget
found by the sequential charts on the projections, through the analyst."""

from __future__ import annotations

import json

import numpy as np
from prometheus_client import REGISTRY

from mlmodel_operator.api import DriftSettings
from mlmodel_operator.monitor.analyst import Analyst
from mlmodel_operator.monitor.drift import DriftDetector
from mlmodel_operator.monitor.payloads import Exchange, parse
from mlmodel_operator.monitor.projection import PROJECTIONS, project


def test_the_projection_is_fixed_and_keeps_the_scale_of_each_channel() -> None:
    rows = np.random.default_rng(1).normal(size=(4000, 3 * 32 * 32))
    projected = project(rows)
    assert projected.shape == (4000, PROJECTIONS)
    np.testing.assert_array_equal(project(rows[:10]), projected[:10])  # no state, no new draw
    # Independent unit-variance values: every channel has unit variance too.
    np.testing.assert_allclose(projected.std(axis=0), 1.0, atol=0.06)


def image_exchange(rng: np.random.Generator, shift: float, places: np.ndarray) -> Exchange:
    image = rng.normal(size=(1, 3, 16, 16))
    image.reshape(-1)[places] += shift
    tensor = {"name": "x", "shape": [1, 3, 16, 16], "datatype": "FP64", "data": image.tolist()}
    return Exchange("v2", 200, json.dumps({"inputs": [tensor]}).encode(), None)


def test_a_shift_past_the_feature_budget_is_found_on_the_projections() -> None:
    model = "wide"
    settings = DriftSettings(window_size=1000, max_features=8)
    analyst = Analyst(model, settings, [])
    analyst.detector = DriftDetector(settings, max_features=8)
    rng = np.random.default_rng(2)
    places = 8 + rng.choice(768 - 8, size=38, replace=False)  # 5% of the values, past the budget
    for _ in range(12):  # the baseline, then more of the same
        analyst.ingest(*[image_exchange(rng, 0.0, places) for _ in range(100)])
    assert analyst.detector.take_alarms() == []
    wide = parse(image_exchange(rng, 0.0, places), 8)
    assert wide.over_budget == 768 - 8
    assert wide.wide_inputs is not None and wide.wide_inputs["x"].shape == (1, 768)
    for _ in range(5):
        analyst.ingest(*[image_exchange(rng, 0.5, places) for _ in range(100)])
    labels = {"model": model, "version": "", "direction": "input", "feature": "x:projection"}
    alarms = REGISTRY.get_sample_value(
        "mlmodel_drift_alarms_total", {**labels, "detector": "projection"}
    )
    assert alarms and alarms >= 1
    # The features within the budget saw no change.
    verdicts = {v.feature for v in analyst.detector.sequential_verdicts() if v.drifted}
    assert verdicts == {"x:projection"}
    assert REGISTRY.get_sample_value("mlmodel_drift_detected", {"model": model, "version": ""}) == 1
