"""The periodic resync: every cached resource is reconciled every resync period, in case a watch
event was missed or a reconcile's outcome depends on time. It walks the cache and only enqueues:
a resync of unchanged resources reads nothing from the API server and writes nothing.

A loop of the operator's own rather than a kopf timer: kopf puts a finalizer on every object that
has a timer, and such objects cannot be deleted while the operator is not running.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from mlmodel_operator import metrics
from mlmodel_operator.cache import Cache

log = logging.getLogger(__name__)


def resync_forever(
    cache: Cache,
    interval: float,
    stopping: threading.Event,
    enqueue: Callable[[tuple[str, str]], None],
    is_active: Callable[[str], bool],
) -> None:
    """Until `stopping` is set: every `interval` seconds, `enqueue` each cached resource in a
    namespace where `is_active` (this replica is the active one there)."""
    while not stopping.wait(interval):
        sizes = cache.sizes()
        metrics.CACHE_OBJECTS.set(sizes["objects"] + sizes["pods"])
        metrics.CACHE_BYTES.set(sizes["bytes"])
        active: dict[str, bool] = {}  # per namespace, asked once a round
        for namespace, name in cache.models():
            try:
                if namespace not in active:
                    active[namespace] = is_active(namespace)
            except Exception as err:  # the API may be briefly unavailable; try next round
                log.warning("resync: cannot tell whether this replica is active: %s", err)
                active[namespace] = False
            if active[namespace]:
                enqueue((namespace, name))
