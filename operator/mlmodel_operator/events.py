"""Kubernetes Events about MLModelDeployments, deduplicated as client-go's event correlator does:
the same reason repeated for the same object updates the existing Event (`count`,
`lastTimestamp`, the latest `message`) instead of creating another one.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from mlmodel_operator.kube import FIELD_MANAGER, Kube, describe_error, resource_path

# Objects x reasons remembered; the oldest are forgotten first (client-go keeps 4096 too).
MAX_REMEMBERED = 4096
MAX_MESSAGE = 1024

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


class EventRecorder:
    """Posts Events; remembers the last Event per (object, type, reason) to update it when the
    reason comes back. Events are a courtesy: one that cannot be written is logged only."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.instance = socket.gethostname()
        self._lock = threading.Lock()
        # (uid, type, reason) -> (namespace, event name, count)
        self._seen: OrderedDict[tuple[str, str, str], tuple[str, str, int]] = OrderedDict()

    def record(self, involved: dict[str, Any], event_type: str, reason: str, message: str) -> None:
        key = (involved["metadata"]["uid"], event_type, reason)
        now = datetime.now(UTC)
        with self._lock:
            seen = self._seen.get(key)
        try:
            if seen is not None and self._repeat(seen, message, now):
                namespace, name, count = seen
                self._remember(key, (namespace, name, count + 1))
                return
            event = build_event(involved, event_type, reason, message, now, self.instance)
            namespace = event["metadata"]["namespace"]
            created = self.kube.create(resource_path("v1", "Event", namespace), event)
            self._remember(key, (namespace, created["metadata"]["name"], 1))
        except ApiException as err:
            log.warning("cannot post event %s: %s", reason, describe_error(err))

    def _repeat(self, seen: tuple[str, str, int], message: str, now: datetime) -> bool:
        """Update the Event already posted; False when it is gone (Events expire)."""
        namespace, name, count = seen
        try:
            self.kube.merge_patch(
                resource_path("v1", "Event", namespace, name), repeat_patch(count + 1, message, now)
            )
            return True
        except ApiException as err:
            if err.status == 404:
                return False
            raise

    def _remember(self, key: tuple[str, str, str], value: tuple[str, str, int]) -> None:
        with self._lock:
            self._seen[key] = value
            self._seen.move_to_end(key)
            while len(self._seen) > MAX_REMEMBERED:
                self._seen.popitem(last=False)
