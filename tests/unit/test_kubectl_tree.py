"""`kubectl mlmd get`'s summary lines, the pure part."""

from __future__ import annotations

from mlmodel_operator.kubectl.tree import _analysis


def test_the_last_analysis_line_names_accuracy_when_it_was_judged() -> None:
    record = {
        "result": "Fail",
        "requests": 340,
        "errorRatio": 0.0,
        "accuracy": 0.6,
        "labels": 212,
        "stableAccuracy": 0.98,
        "message": "accuracy 0.6 over 212 labelled predictions < min_accuracy 0.9",
        "time": "2026-12-05T10:00:00Z",
    }
    assert _analysis(record) == (
        "Fail, 340 requests, error ratio 0.000, accuracy 0.600 over 212 labels, stable 0.980 at "
        "2026-12-05T10:00:00Z: accuracy 0.6 over 212 labelled predictions < min_accuracy 0.9"
    )
    assert "accuracy" not in _analysis({"result": "Pass", "requests": 5, "time": "t"})
