"""Predictions waiting for their truth: bounded in bytes and in time.

Insertion order is age order (each worker's clock only moves forward), so expiry and eviction
both take from the front of one OrderedDict. A prediction is kept as the id and its rows (a
class label or number per row of the answer), never the payload.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from enum import StrEnum

Row = str | float
Rows = tuple[Row, ...]
# Per entry beyond its id and rows: the dict slot, the key and value objects, the tuple.
ENTRY_OVERHEAD = 200


class Outcome(StrEnum):
    matched = "matched"  # joined to its prediction, which is then let go
    duplicate = "duplicate"  # its prediction was already labelled
    late = "late"  # its prediction outlived the TTL or was let go for room
    unmatched = "unmatched"  # no such prediction here


def entry_bytes(prediction: str, rows: Rows) -> int:
    size = ENTRY_OVERHEAD + len(prediction)
    for row in rows:
        size += len(row) + 49 if isinstance(row, str) else 32
    return size


@dataclass
class PendingPredictions:
    max_bytes: int
    ttl_seconds: float
    # Ids labelled recently, to tell a duplicate from an unknown id; bounded like the rest.
    max_labelled: int = 100_000
    used: int = 0
    expired: int = 0
    evicted: int = 0
    _entries: OrderedDict[str, tuple[float, Rows]] = field(default_factory=OrderedDict)
    _labelled: OrderedDict[str, None] = field(default_factory=OrderedDict)

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, prediction: str, rows: Rows, now: float) -> bool:
        """Keep a prediction; False when it alone is larger than the whole store."""
        size = entry_bytes(prediction, rows)
        if size > self.max_bytes:
            return False
        self.expire(now)
        if prediction in self._entries:  # a client reusing its request id: the last one counts
            self._drop(prediction)
        while self.used + size > self.max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest)
            self.evicted += 1
        self._entries[prediction] = (now, rows)
        self.used += size
        return True

    def take(self, prediction: str, now: float) -> tuple[Outcome, Rows]:
        """The prediction's rows, once: it is then forgotten, and its id remembered as
        labelled."""
        self.expire(now)
        entry = self._entries.pop(prediction, None)
        if entry is None:
            if prediction in self._labelled:
                return Outcome.duplicate, ()
            return Outcome.unmatched, ()
        self.used -= entry_bytes(prediction, entry[1])
        self._labelled[prediction] = None
        if len(self._labelled) > self.max_labelled:
            self._labelled.popitem(last=False)
        return Outcome.matched, entry[1]

    def expire(self, now: float) -> None:
        cutoff = now - self.ttl_seconds
        while self._entries:
            oldest, (made, _) = next(iter(self._entries.items()))
            if made > cutoff:
                return
            self._drop(oldest)
            self.expired += 1

    def _drop(self, prediction: str) -> None:
        _, rows = self._entries.pop(prediction)
        self.used -= entry_bytes(prediction, rows)
