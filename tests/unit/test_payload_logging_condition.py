"""The PayloadLogging condition: what the sidecars' figures in Prometheus say of delivery, and
how often the operator asks."""

from __future__ import annotations

import pytest

from mlmodel_operator.analysis import queries
from mlmodel_operator.analysis.prometheus import MetricsUnavailable
from mlmodel_operator.payload_health import DeliveryProbe, DeliveryReading, PayloadDelivery
from mlmodel_operator.status import Cond, payload_logging_condition

SINK = "http://sink.example/events"


@pytest.mark.parametrize(
    ("delivery", "status", "reason"),
    [
        (PayloadDelivery(SINK), "Unknown", "NoPrometheus"),
        (PayloadDelivery(SINK, problem="cannot reach Prometheus"), "Unknown", "MetricsUnavailable"),
        (PayloadDelivery(SINK, DeliveryReading(0, 0, 0.0)), "Unknown", "NotReported"),
        (PayloadDelivery(SINK, DeliveryReading(3, 1, 12.0)), "False", "DeliveryFailing"),
        (PayloadDelivery(SINK, DeliveryReading(3, 0, 4.0)), "False", "EventsDropped"),
        (PayloadDelivery(SINK, DeliveryReading(3, 0, 0.0)), "True", "Delivering"),
    ],
)
def test_the_condition_says_what_the_sidecars_report(
    delivery: PayloadDelivery, status: str, reason: str
) -> None:
    cond = payload_logging_condition(delivery)
    assert (cond.status, cond.reason) == (status, reason)


def test_a_failing_delivery_names_the_sink_and_the_share_of_pods() -> None:
    cond = payload_logging_condition(PayloadDelivery(SINK, DeliveryReading(3, 2, 0.0)))
    assert cond == Cond(
        "False",
        "DeliveryFailing",
        f"deliveries to {SINK} are failing in 2 of 3 pod(s); events are dropped "
        "(mlmodel_payload_events_dropped_total)",
    )


def test_the_queries_select_every_version_of_the_model_and_leave_shutdown_drops_out() -> None:
    assert queries.payload_failing("ns", 'a"b') == (
        'count(mlmodel_payload_logging_failing{namespace="ns",model="a\\"b"} == 1)'
    )
    assert queries.payload_dropped("ns", "m", 300) == (
        "sum(increase(mlmodel_payload_events_dropped_total"
        '{namespace="ns",model="m",reason!="shutdown"}[300s]))'
    )


def test_prometheus_is_asked_at_most_once_per_model_per_ttl() -> None:
    asked: list[tuple[str, str]] = []
    now = [1000.0]

    def read(url: str, namespace: str, model: str, at: float) -> DeliveryReading:
        asked.append((namespace, model))
        if model == "down":
            raise MetricsUnavailable("cannot reach Prometheus at http://p: refused")
        return DeliveryReading(1, 0, 0.0)

    probe = DeliveryProbe("http://p", ttl=30, read=read, clock=lambda: now[0])
    assert probe.check("ns", "m", SINK).reading == DeliveryReading(1, 0, 0.0)
    probe.check("ns", "m", SINK)
    assert asked == [("ns", "m")]
    now[0] += 30
    probe.check("ns", "m", SINK)
    assert asked == [("ns", "m")] * 2
    assert probe.check("ns", "down", SINK).problem == "cannot reach Prometheus at http://p: refused"
    assert DeliveryProbe(None, ttl=30, read=read).check("ns", "m", SINK) == PayloadDelivery(SINK)
