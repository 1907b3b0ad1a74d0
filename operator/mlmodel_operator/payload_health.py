"""Whether a model's payload logging delivers, as its sidecars report it to Prometheus: how many
pods report `mlmodel_payload_logging_failing`, how many of them are failing, and how many events
were dropped lately. The status turns this into the PayloadLogging condition
(status.payload_logging_condition).

The sidecars know, the operator does not: it asks the Prometheus of --prometheus-url, at most
once per model every `ttl` seconds (the resync period), so that the reconciles that child
events bring in a burst do not each query it. The periodic resync reconciles every model, so
the condition follows the sidecars within about one resync period and a scrape. Blocking: the
work queue's threads call it, like the canary analysis.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from mlmodel_operator.analysis import queries
from mlmodel_operator.analysis.prometheus import MetricsUnavailable, instant

DROPS_WINDOW_SECONDS = 300
QUERY_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class DeliveryReading:
    pods: int  # sidecars reporting the failing gauge
    failing: int  # of them, those whose latest delivery failed
    dropped: float  # events dropped in the last DROPS_WINDOW_SECONDS (shutdown aside)


@dataclass(frozen=True)
class PayloadDelivery:
    """What the status is told of a model's payload logging: a reading, or why there is none."""

    url: str  # the sink
    reading: DeliveryReading | None = None
    problem: str | None = None  # None with no reading: no Prometheus configured


def read_delivery(prometheus: str, namespace: str, model: str, at: float) -> DeliveryReading:
    """The model's figures at `at` (Unix time); raises MetricsUnavailable."""
    pods, failing, dropped = instant(
        prometheus,
        [
            queries.payload_sidecars(namespace, model),
            queries.payload_failing(namespace, model),
            queries.payload_dropped(namespace, model, DROPS_WINDOW_SECONDS),
        ],
        at,
        QUERY_TIMEOUT_SECONDS,
    )
    return DeliveryReading(int(pods or 0), int(failing or 0), dropped or 0.0)


class DeliveryProbe:
    def __init__(
        self,
        prometheus: str | None,
        ttl: float,
        read: Callable[[str, str, str, float], DeliveryReading] = read_delivery,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.prometheus = prometheus
        self.ttl = ttl
        self._read = read
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], tuple[float, PayloadDelivery]] = {}

    def check(self, namespace: str, model: str, url: str) -> PayloadDelivery:
        if not self.prometheus:
            return PayloadDelivery(url)
        now = self._clock()
        with self._lock:
            last = self._last.get((namespace, model))
        if last is not None and now - last[0] < self.ttl and last[1].url == url:
            return last[1]
        try:
            found = PayloadDelivery(url, self._read(self.prometheus, namespace, model, now))
        except MetricsUnavailable as err:
            found = PayloadDelivery(url, problem=str(err))
        with self._lock:
            self._last[(namespace, model)] = (now, found)
        return found

    def forget(self, namespace: str, model: str) -> None:
        with self._lock:
            self._last.pop((namespace, model), None)
