"""The periodic resync: every resource reconciled every resync period, in case a watch event was
missed. A loop of the operator's own rather than a kopf timer: kopf puts a finalizer on every
object that has a timer, and such objects cannot be deleted while the operator is not running.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from mlmodel_operator.kube import Kube

log = logging.getLogger(__name__)


def resync_forever(
    kube: Kube,
    namespaces: list[str],
    interval: float,
    stopping: threading.Event,
    reconcile: Callable[[str, str], None],
    is_active: Callable[[str], bool],
) -> None:
    """Until `stopping` is set: every `interval` seconds, `reconcile` each resource in a
    namespace where `is_active` (this replica is the active one there)."""
    while not stopping.wait(interval):
        try:
            models = kube.list_models(namespaces)
        except Exception:  # the API may be briefly unavailable; try again next round
            log.warning("resync: cannot list resources", exc_info=True)
            continue
        active: dict[str, bool] = {}  # per namespace, asked once a round
        for namespace, name in models:
            try:
                if namespace not in active:
                    active[namespace] = is_active(namespace)
                if active[namespace]:
                    reconcile(namespace, name)
            except Exception:
                log.exception("resync of %s/%s failed", namespace, name)
