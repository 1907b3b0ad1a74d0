"""The activator's pure decisions: what it holds, when it wakes a model, when it takes one to
zero, where the Service points, and what a client is told."""

from __future__ import annotations

from typing import Any

import pytest

from mlmodel_operator.activator import decisions
from mlmodel_operator.activator.decisions import Bounds, Held, Idleness, ModelView
from mlmodel_operator.builders.meta import WOKEN_ANNOTATION

BOUNDS = Bounds(max_requests=3, max_bytes=100)


def view(**changes: Any) -> ModelView:
    base: dict[str, Any] = {
        "namespace": "ns",
        "name": "iris",
        "scale_down_delay": 60,
        "cold_start_timeout": 120,
        "autoscaler": "hpa",
        "replicas": 1,
        "ready_targets": ("10.0.0.5:8480",),
        "metrics_targets": ("10.0.0.5:9090",),
        "service_uid": "svc-uid",
        "service_serving": True,
    }
    return ModelView(**{**base, **changes})


def test_requests_are_held_within_the_bounds_and_refused_past_them_with_the_bound_named() -> None:
    assert decisions.admit(Held(2, 50), 50, BOUNDS) is None
    refused = decisions.admit(Held(3, 0), 1, BOUNDS)
    assert refused is not None and "at most 3" in refused
    too_big = decisions.admit(Held(1, 60), 41, BOUNDS)
    assert too_big is not None and "100 bytes" in too_big


@pytest.mark.parametrize(("timeout", "after"), [(1, 1), (20, 5), (120, 30), (3600, 30)])
def test_retry_after_is_a_fraction_of_the_cold_start_between_1_and_30_seconds(
    timeout: int, after: int
) -> None:
    assert decisions.retry_after(timeout) == after


def pod(ip: str, ready: bool, ports: dict[str, int], waiting: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {
        "podIP": ip,
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
    }
    if waiting:
        status["containerStatuses"] = [
            {"name": "model-server", "state": {"waiting": {"reason": waiting, "message": "boom"}}}
        ]
    containers = [{"name": n, "ports": [{"name": n, "containerPort": p}]} for n, p in ports.items()]
    return {"metadata": {"name": ip}, "spec": {"containers": containers}, "status": status}


def test_ready_pods_are_called_through_their_sidecar_else_the_model_server() -> None:
    pods = [
        pod("10.0.0.2", True, {"http": 8480, "metrics": 9090, "model-http": 8080}),
        pod("10.0.0.1", True, {"model-http": 8080}),
        pod("10.0.0.3", False, {"http": 8480, "metrics": 9090}),
    ]
    serving, metrics = decisions.ready_targets(pods)
    assert serving == ("10.0.0.1:8080", "10.0.0.2:8480")
    assert metrics == ("10.0.0.2:9090",)


def test_a_model_that_cannot_start_is_named_with_the_reason_and_one_that_waits_is_not() -> None:
    assert decisions.start_failure([pod("10.0.0.1", False, {}, "CrashLoopBackOff")]) == (
        "container model-server: CrashLoopBackOff: boom"
    )
    assert decisions.start_failure([pod("10.0.0.1", False, {}, "ContainerCreating")]) is None
    unschedulable = {
        "metadata": {"name": "p"},
        "spec": {"containers": []},
        "status": {
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/3 nodes are available",
                }
            ]
        },
    }
    # A cluster autoscaler may still add a node: held until the timeout, which says why.
    assert decisions.start_failure([unschedulable]) is None
    assert "0/3 nodes are available" in decisions.waiting_for([unschedulable])
    assert decisions.waiting_for([]) == "no pod was created yet"


METRICS = """# TYPE mlmodel_requests_total counter
mlmodel_requests_total{model="iris",status_class="2xx"} 7.0
mlmodel_requests_total{model="iris",status_class="5xx"} 1.0
mlmodel_requests_total{model="other",status_class="2xx"} 100.0
# TYPE mlmodel_requests_in_flight gauge
mlmodel_requests_in_flight{model="iris"} 2.0
"""


def test_traffic_is_what_the_sidecar_counted_for_the_model() -> None:
    assert decisions.traffic(METRICS, "iris") == (8.0, 2.0)
    assert decisions.traffic(METRICS, "absent") == (0.0, 0.0)


def test_idle_time_restarts_with_any_new_request_or_one_in_flight() -> None:
    idle = Idleness(last_traffic=0.0)
    idle.observe((0.0, 5.0), 0.0, 10.0)
    assert idle.last_traffic == 10.0  # the first reading is a change
    idle.observe((0.0, 5.0), 0.0, 20.0)
    assert idle.last_traffic == 10.0
    idle.observe((1.0, 5.0), 0.0, 30.0)  # a request reached the activator
    assert idle.last_traffic == 30.0
    idle.observe((1.0, 5.0), 1.0, 40.0)  # a long request, still in flight
    assert idle.last_traffic == 40.0


def test_an_idle_model_goes_to_zero_after_the_delay_and_only_when_nothing_is_missed() -> None:
    idle = Idleness(last_traffic=100.0)
    assert not decisions.goes_to_zero(view(), idle, 0, 159.0)
    assert decisions.goes_to_zero(view(), idle, 0, 160.0)
    assert not decisions.goes_to_zero(view(), idle, 1, 160.0)  # holding a request
    assert not decisions.goes_to_zero(view(autoscaler="keda"), idle, 0, 160.0)  # KEDA's job
    assert not decisions.goes_to_zero(view(autoscaler=None), idle, 0, 160.0)
    assert not decisions.goes_to_zero(view(replicas=0), idle, 0, 160.0)
    # A replica whose sidecar cannot be read may be serving: never to zero then.
    assert not decisions.goes_to_zero(view(replicas=2), idle, 0, 160.0)
    assert not decisions.goes_to_zero(view(woken_at="2026-12-05T10:00:00Z"), idle, 0, 160.0)


def test_a_model_is_woken_only_at_zero_and_only_when_autoscaled() -> None:
    assert decisions.wakes(view(replicas=0))
    assert not decisions.wakes(view(replicas=1))
    assert not decisions.wakes(view(replicas=0, autoscaler=None))


def test_the_service_points_at_the_activator_until_a_ready_replica_is_its_endpoint() -> None:
    assert decisions.needs_slice(view(replicas=0, ready_targets=(), service_serving=False))
    # Ready, but the endpoint controller has not listed it yet: keep the activator.
    assert decisions.needs_slice(view(service_serving=False))
    assert not decisions.needs_slice(view())
    # Set to zero while its last replica still answers: the activator takes over at once.
    assert decisions.needs_slice(view(replicas=0))
    assert not decisions.needs_slice(view(ready_targets=(), service_uid=None))
    assert not decisions.needs_slice(view(ready_targets=(), autoscaler=None))


def test_the_endpoint_controllers_slice_tells_whether_the_service_serves() -> None:
    def slice_(manager: str, ready: bool) -> dict[str, Any]:
        labels = {decisions.MANAGED_BY_LABEL: manager}
        endpoint = {"addresses": ["10.0.0.5"], "conditions": {"ready": ready}}
        return {"metadata": {"labels": labels}, "endpoints": [endpoint]}

    controller = "endpointslice-controller.k8s.io"
    assert decisions.service_serving([slice_(controller, True)])
    assert not decisions.service_serving([slice_(controller, False)])
    assert not decisions.service_serving([slice_(decisions.SLICE_MANAGER, True)])


def test_ports_are_kept_per_model_and_new_models_take_the_lowest_free_one() -> None:
    assigned = {("ns", "a"): 20000, ("ns", "c"): 20002}
    assert decisions.assign_port(assigned, ("ns", "a"), 20000) == 20000
    assert decisions.assign_port(assigned, ("ns", "b"), 20000) == 20001


def test_the_slice_sends_the_services_http_port_to_the_activator_and_is_owned_by_it() -> None:
    built = decisions.endpoint_slice(view(), "10.1.0.9", 20001)
    assert built["metadata"]["name"] == "iris-activator"
    assert built["metadata"]["labels"] == {
        "kubernetes.io/service-name": "iris",
        "endpointslice.kubernetes.io/managed-by": "mlmodel-activator",
    }
    assert built["metadata"]["ownerReferences"][0]["uid"] == "svc-uid"
    assert built["endpoints"] == [{"addresses": ["10.1.0.9"], "conditions": {"ready": True}}]
    assert built["ports"] == [{"name": "http", "port": 20001, "protocol": "TCP"}]


def test_a_wake_marks_the_deployment_and_the_mark_goes_once_woken() -> None:
    assert decisions.wake_patch("2026-12-05T10:00:00.000Z", WOKEN_ANNOTATION) == {
        "metadata": {"annotations": {WOKEN_ANNOTATION: "2026-12-05T10:00:00.000Z"}},
        "spec": {"replicas": 1},
    }
    assert decisions.woken_patch(WOKEN_ANNOTATION) == {
        "metadata": {"annotations": {WOKEN_ANNOTATION: None}}
    }
    assert decisions.wake_message(12.34, 20) == (
        "woke from zero in 12.3 s; 20 request(s) held meanwhile"
    )


def test_only_models_with_min_replicas_zero_are_the_activators() -> None:
    assert decisions.scales_to_zero({"spec": {"autoscaling": {"min_replicas": 0}}})
    assert not decisions.scales_to_zero({"spec": {"autoscaling": {"max_replicas": 2}}})
    assert not decisions.scales_to_zero({"spec": {}})
