"""Whether this replica is the active one among its kopf peers.

kopf pauses its watches in every replica but the one with the highest priority, but work that
the operator starts itself (the periodic resync) does not go through kopf. It asks here first, and
gets the same answer kopf gives itself: the peering object's status maps each peer's identity to
its priority, lifetime and last keep-alive, and a replica is active while no live peer has a
priority as high as its own (kopf pauses every replica on a tie).
"""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes.client.exceptions import ApiException

GROUP_VERSION = "kopf.dev/v1"
# kopf's own assumption for peers that do not say how long their record lasts.
DEFAULT_LIFETIME_SECONDS = 60


def own_identity() -> str:
    """The name this replica records itself under: the pod name in a cluster (POD_ID, as kopf
    reads it), else host, process and a random suffix, unique among replicas on one host."""
    pod = os.environ.get("POD_ID")
    if pod:
        return pod
    suffix = "".join(random.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=5))
    return f"{socket.gethostname()}/{os.getpid()}/{suffix}"


def random_priority() -> int:
    # Replicas that tie all pause, so their priorities must differ: 31 random bits make a tie
    # practically impossible.
    return random.SystemRandom().randint(1, 2**31 - 1)


def _parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def is_active(
    peers: Mapping[str, Mapping[str, Any]], identity: str, priority: int, now: datetime
) -> bool:
    """kopf's verdict from a peering object's status: no live peer other than `identity` has a
    priority of `priority` or more."""
    for peer, record in peers.items():
        if peer == identity or not isinstance(record, Mapping):
            continue
        lifetime = timedelta(seconds=int(record.get("lifetime", DEFAULT_LIFETIME_SECONDS)))
        lastseen = record.get("lastseen")
        alive = lastseen is None or _parse_time(lastseen) + lifetime > now
        if alive and int(record.get("priority", 0)) >= priority:
            return False
    return True


@dataclass(frozen=True)
class Peering:
    """This replica's place in a kopf peering; `name` None means standalone (always active).

    An operator watching all namespaces peers through one ClusterKopfPeering, one watching a list
    of namespaces through a KopfPeering in each of them (`namespaced`)."""

    name: str | None = None
    identity: str = ""
    priority: int = 0
    namespaced: bool = False

    def path(self, namespace: str) -> str:
        base = f"/apis/{GROUP_VERSION}"
        if not self.namespaced:
            return f"{base}/clusterkopfpeerings/{self.name}"
        return f"{base}/namespaces/{namespace}/kopfpeerings/{self.name}"

    def active(self, kube: Any, namespace: str) -> bool:
        """Whether kopf lets this replica handle resources in `namespace` now."""
        if self.name is None:
            return True
        try:
            body = kube.request("GET", self.path(namespace))
        except ApiException as err:
            if err.status == 404:
                # ensure_objects() made it before kopf started; kopf finds no peers in one
                # deleted since, and works. So does the resync.
                return True
            raise
        return is_active(body.get("status") or {}, self.identity, self.priority, datetime.now(UTC))

    def ensure_objects(self, kube: Any, namespaces: list[str] | None) -> list[str]:
        """Create the peering objects kopf needs and does not create itself (one per watched
        namespace, or one for the cluster); returns the paths of those it created. None: the
        installer creates them (kopf resumes when one appears), so create none.

        kopf stays paused for good where its peering object does not exist, and plain manifests
        cannot carry the object: `kubectl apply` refuses a kind whose CRD the same apply creates.
        """
        created: list[str] = []
        if namespaces is None:
            return created
        for namespace in namespaces if self.namespaced else [""]:
            path = self.path(namespace)
            try:
                kube.request("GET", path)
                continue
            except ApiException as err:
                if err.status != 404:
                    raise
            kind = "KopfPeering" if self.namespaced else "ClusterKopfPeering"
            meta = {"name": self.name, **({"namespace": namespace} if self.namespaced else {})}
            body = {"apiVersion": GROUP_VERSION, "kind": kind, "metadata": meta}
            try:
                kube.request("POST", path.rsplit("/", 1)[0], body=body)
            except ApiException as err:
                if err.status != 409:  # another replica was first
                    raise
            created.append(path)
        return created


_current = Peering()


def current() -> Peering:
    """The running operator's peering (standalone unless the entry point set one)."""
    return _current


def set_current(peering: Peering) -> None:
    global _current
    _current = peering
