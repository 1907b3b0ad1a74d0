"""Events as client-go's correlator writes them: a new Event once, then count bumps."""

from __future__ import annotations

from datetime import UTC, datetime

from mlmodel_operator.events import build_event, repeat_patch

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
MODEL = {
    "apiVersion": "machine-learning.org/v1",
    "kind": "MLModelDeployment",
    "metadata": {"name": "m", "namespace": "ns", "uid": "u"},
}


def test_a_new_event_names_its_object_and_counts_one() -> None:
    event = build_event(MODEL, "Warning", "InsufficientGPU", "x" * 2000, NOW, "host")
    assert event["involvedObject"]["uid"] == "u" and event["count"] == 1
    assert event["firstTimestamp"] == event["lastTimestamp"] == "2025-01-02T03:04:05Z"
    assert event["metadata"] == {"generateName": "m.", "namespace": "ns"}
    assert len(event["message"]) == 1024


def test_a_repeat_bumps_count_and_last_timestamp_only() -> None:
    assert repeat_patch(3, "again", NOW) == {
        "count": 3,
        "lastTimestamp": "2025-01-02T03:04:05Z",
        "message": "again",
    }
