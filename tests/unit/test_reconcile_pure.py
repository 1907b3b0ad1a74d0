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


def test_a_nested_null_removes_a_stored_field_and_is_no_change_once_removed() -> None:
    stored = {"observedGeneration": 2, "rollout": {"phase": "Progressing", "stepStartedAt": "t"}}
    ended = {"observedGeneration": 2, "rollout": {"phase": "Progressing", "stepStartedAt": None}}
    assert status_needs_write(stored, ended)
    after = {"observedGeneration": 2, "rollout": {"phase": "Progressing"}}
    assert not status_needs_write(after, ended)
