"""One proxy worker's predictions and their truth: recorded after each answer, labelled when
feedback for them arrives, counted in the metrics by the worker's model version (the version
that made the prediction)."""

from __future__ import annotations

import time
from collections.abc import Callable

from mlmodel_operator.monitor import metrics
from mlmodel_operator.monitor.feedback import Entry, empty_summary
from mlmodel_operator.monitor.ground_truth import Unreadable, score
from mlmodel_operator.monitor.pending import Outcome, PendingPredictions, Rows
from mlmodel_operator.monitor.settings import GroundTruthSettings


class Ledger:
    def __init__(
        self,
        settings: GroundTruthSettings,
        model: str,
        version: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.task = settings.task
        self.ttl = settings.ttl_seconds
        self.clock = clock
        self.pending = PendingPredictions(settings.max_pending_bytes, settings.ttl_seconds)
        labels = (model, version)
        self._feedback = {o: metrics.FEEDBACK.labels(*labels, o) for o in empty_summary()}
        self._labelled = metrics.LABELLED.labels(*labels)
        self._correct = metrics.CORRECT.labels(*labels)
        self._absolute = metrics.ABSOLUTE_ERROR.labels(*labels)
        self._squared = metrics.SQUARED_ERROR.labels(*labels)
        self._unlabelled = {
            r: metrics.UNLABELLED.labels(*labels, r)
            for r in ("expired", "evicted", "unreadable", "too_large", "streamed")
        }
        self._pending = metrics.PENDING.labels(*labels)
        self._pending_bytes = metrics.PENDING_BYTES.labels(*labels)
        self._expired = self._evicted = 0

    def record(self, prediction: str, rows: Rows) -> None:
        if not self.pending.add(prediction, rows, self.clock()):
            self.unlabelled("too_large")

    def unlabelled(self, reason: str) -> None:
        """A prediction that will never be labelled, and why."""
        self._unlabelled[reason].inc()

    def label(self, entries: list[Entry]) -> dict[str, int]:
        """Join each entry's truth to its prediction; what became of them."""
        summary = empty_summary()
        now = self.clock()
        for entry in entries:
            outcome, rows = self.pending.take(entry.prediction, now)
            if outcome == Outcome.unmatched and entry.holder.time + self.ttl < now:
                outcome = Outcome.late
            if outcome == Outcome.matched:
                try:
                    result = score(self.task, rows, entry.truth)
                except Unreadable:
                    summary["invalid"] += 1
                    continue
                self._labelled.inc(result.labelled)
                self._correct.inc(result.correct)
                self._absolute.inc(result.absolute_error)
                self._squared.inc(result.squared_error)
            summary[outcome] += 1
        self.count(summary)
        return summary

    def count(self, summary: dict[str, int]) -> None:
        for outcome, n in summary.items():
            if n:
                self._feedback[outcome].inc(n)

    def publish(self) -> None:
        """The store's levels and what it let go since the last call, for the metrics."""
        self.pending.expire(self.clock())
        self._pending.set(len(self.pending))
        self._pending_bytes.set(self.pending.used)
        for reason, total, seen in (
            ("expired", self.pending.expired, self._expired),
            ("evicted", self.pending.evicted, self._evicted),
        ):
            if total > seen:
                self._unlabelled[reason].inc(total - seen)
        self._expired, self._evicted = self.pending.expired, self.pending.evicted
