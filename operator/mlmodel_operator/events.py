"""Kubernetes Events about MLModelDeployments, deduplicated as client-go's event correlator does:
the same reason repeated for the same object updates the existing Event (`count`,
`lastTimestamp`, the latest `message`) instead of creating another one.

Sent from a thread of their own, as client-go's recorder does, so that a reconcile never waits
for an Event: under load, Event writes were the larger part of a reconcile's requests.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from mlmodel_operator.kube import FIELD_MANAGER, Kube, describe_error, resource_path

# Objects x reasons remembered; the oldest are forgotten first (client-go keeps 4096 too).
MAX_REMEMBERED = 4096
MAX_MESSAGE = 1024
# Distinct Events waiting to be sent; beyond this they are dropped (and logged), as client-go
# drops them.
MAX_PENDING = 4096

log = logging.getLogger(__name__)


def build_event(
    involved: dict[str, Any],
    event_type: str,
    reason: str,
    message: str,
    now: datetime,
    reporting_instance: str,
) -> dict[str, Any]:
    """A new core/v1 Event about `involved` (an object with apiVersion, kind and metadata)."""
    meta = involved["metadata"]
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": involved["apiVersion"],
            "kind": involved["kind"],
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
        },
        "type": event_type,
        "reason": reason,
        "message": message[:MAX_MESSAGE],
        "source": {"component": FIELD_MANAGER},
        "reportingComponent": FIELD_MANAGER,
        "reportingInstance": reporting_instance,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


def repeat_patch(count: int, message: str, now: datetime) -> dict[str, Any]:
    """The merge patch that records one more occurrence of an existing Event."""
    return {
        "count": count,
        "lastTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "message": message[:MAX_MESSAGE],
    }


# (involved uid, type, reason): what makes two Events the same one.
EventKey = tuple[str, str, str]


@dataclass
class Pending:
    involved: dict[str, Any]
    message: str
    now: datetime
    occurrences: int


class EventRecorder:
    """Posts Events; remembers the last Event per (object, type, reason) to update it when the
    reason comes back. Events are a courtesy: one that cannot be written is logged only.

    Repeats that arrive while an Event waits to be sent are folded into it (one write, the count
    raised by all of them), so the sender falls behind by distinct Events, not by occurrences."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.instance = socket.gethostname()
        self._cond = threading.Condition()
        self._pending: OrderedDict[EventKey, Pending] = OrderedDict()
        # Sent Events: key -> (namespace, event name, count). Only the sender thread uses it.
        self._sent: OrderedDict[EventKey, tuple[str, str, int]] = OrderedDict()
        self._closed = False
        threading.Thread(target=self._send_forever, name="events", daemon=True).start()

    def close(self) -> None:
        """Stop the sender once what is queued is sent (or failed)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def record(self, involved: dict[str, Any], event_type: str, reason: str, message: str) -> None:
        """Queue an Event for sending; returns at once."""
        key = (involved["metadata"]["uid"], event_type, reason)
        now = datetime.now(UTC)
        with self._cond:
            waiting = self._pending.get(key)
            if waiting is not None:
                waiting.message, waiting.now = message, now
                waiting.occurrences += 1
                return
            if len(self._pending) >= MAX_PENDING:
                log.warning("dropped event %s: %d events wait to be sent", reason, MAX_PENDING)
                return
            self._pending[key] = Pending(involved, message, now, 1)
            self._cond.notify()

    def _send_forever(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return
                key, pending = self._pending.popitem(last=False)
            try:
                self._send(key, pending)
            except ApiException as err:
                log.warning("cannot post event %s: %s", key[2], describe_error(err))
            except Exception:  # the sender must outlive a broken connection
                log.exception("cannot post event %s", key[2])

    def _send(self, key: EventKey, pending: Pending) -> None:
        _, event_type, reason = key
        sent = self._sent.get(key)
        if sent is not None:
            namespace, name, count = sent
            count += pending.occurrences
            patch = repeat_patch(count, pending.message, pending.now)
            try:
                self.kube.merge_patch(resource_path("v1", "Event", namespace, name), patch)
                self._remember(key, (namespace, name, count))
                return
            except ApiException as err:
                if err.status != 404:  # 404: the Event expired; post a new one
                    raise
        event = build_event(
            pending.involved, event_type, reason, pending.message, pending.now, self.instance
        )
        event["count"] = pending.occurrences
        namespace = event["metadata"]["namespace"]
        created = self.kube.create(resource_path("v1", "Event", namespace), event)
        self._remember(key, (namespace, created["metadata"]["name"], pending.occurrences))

    def _remember(self, key: EventKey, value: tuple[str, str, int]) -> None:
        self._sent[key] = value
        self._sent.move_to_end(key)
        while len(self._sent) > MAX_REMEMBERED:
            self._sent.popitem(last=False)
