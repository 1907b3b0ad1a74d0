"""The body of POST /v2/models/<name>/feedback, and where each of its entries goes.

A body is one entry `{"id": "<x-prediction-id>", "truth": <value>}`, a JSON array of them, or
`{"feedback": [...]}`. A truth is one value for a single-row prediction, else a list with one
value per row. An entry that cannot be used is counted invalid; it never fails the others.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson

from mlmodel_operator.monitor.prediction_id import Holder, holder_of

MAX_ENTRIES = 10_000
MAX_BODY_BYTES = 16 * 2**20
_MISSING = object()
# What became of feedback entries, in the answer and the metrics.
OUTCOMES = ("matched", "duplicate", "late", "unmatched", "invalid", "unreachable")


class BadFeedback(ValueError):
    """The body as a whole cannot be read: answered 400 with this message."""


@dataclass(frozen=True)
class Entry:
    prediction: str
    truth: Any
    holder: Holder


@dataclass
class Parsed:
    entries: list[Entry] = field(default_factory=list)
    invalid: int = 0


def parse(body: bytes | bytearray) -> Parsed:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise BadFeedback(f"the body is not JSON: {err}") from None
    if isinstance(document, dict) and "feedback" in document:
        document = document["feedback"]
    items = document if isinstance(document, list) else [document]
    if len(items) > MAX_ENTRIES:
        raise BadFeedback(f"{len(items)} entries: at most {MAX_ENTRIES} per request")
    parsed = Parsed()
    for item in items:
        entry = _entry(item)
        if entry is None:
            parsed.invalid += 1
        else:
            parsed.entries.append(entry)
    return parsed


def _entry(item: object) -> Entry | None:
    if not isinstance(item, dict):
        return None
    prediction, truth = item.get("id"), item.get("truth", _MISSING)
    if not isinstance(prediction, str) or truth is _MISSING or truth is None:
        return None
    holder = holder_of(prediction)
    return None if holder is None else Entry(prediction, truth, holder)


def by_holder(entries: list[Entry]) -> dict[tuple[str, int], list[Entry]]:
    """Entries grouped by the pod address and worker that hold their predictions."""
    groups: dict[tuple[str, int], list[Entry]] = defaultdict(list)
    for entry in entries:
        groups[(entry.holder.address, entry.holder.worker)].append(entry)
    return dict(groups)


def encode(entries: list[Entry]) -> bytes:
    return orjson.dumps([{"id": e.prediction, "truth": e.truth} for e in entries])


def empty_summary() -> dict[str, int]:
    return dict.fromkeys(OUTCOMES, 0)


def add_summary(total: dict[str, int], part: dict[str, Any]) -> None:
    for outcome in OUTCOMES:
        value = part.get(outcome, 0)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            total[outcome] += value
