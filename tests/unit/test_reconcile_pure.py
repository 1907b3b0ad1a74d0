"""The reconcile's pure decisions."""

from __future__ import annotations

from mlmodel_operator.reconcile import status_needs_write


def test_status_never_goes_back_in_observed_generation() -> None:
    assert status_needs_write({}, {"observedGeneration": 1, "phase": "Pending"})
    assert not status_needs_write(
        {"observedGeneration": 3, "phase": "Ready"}, {"observedGeneration": 2, "phase": "Pending"}
    )
    same = {"observedGeneration": 2, "phase": "Ready"}
    assert not status_needs_write(same, dict(same))
