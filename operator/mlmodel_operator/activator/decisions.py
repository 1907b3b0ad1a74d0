"""Pure: what the activator decides, from what it read (no I/O here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from mlmodel_operator.status import failed_init_containers, stuck_containers, unschedulable_pods

SLICE_MANAGER = "mlmodel-activator"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
# The Service port that clients call (builders/service.py names it so).
SERVICE_PORT_NAME = "http"
# Ready pods are called on the port the Service targets: the sidecar's when it runs.
TARGET_PORT_NAMES = ("http", "model-http")
METRICS_PORT_NAME = "metrics"
REQUESTS_TOTAL = "mlmodel_requests"  # the sidecar's counter, as the parser names it
IN_FLIGHT = "mlmodel_requests_in_flight"


@dataclass(frozen=True)
class Bounds:
    """How much the activator holds for one model while it wakes."""

    max_requests: int = 1000
    max_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True)
class Held:
    requests: int = 0
    bytes: int = 0


def admit(held: Held, body_bytes: int, bounds: Bounds) -> str | None:
    """None if one more request of `body_bytes` may be held, else why not."""
    if held.requests + 1 > bounds.max_requests:
        return f"{held.requests} requests are already held (at most {bounds.max_requests})"
    if held.bytes + body_bytes > bounds.max_bytes:
        return (
            f"holding {body_bytes} more bytes would pass the {bounds.max_bytes} bytes held at most "
            f"({held.bytes} held)"
        )
    return None


def retry_after(cold_start_timeout: int) -> int:
    """Seconds a refused client should wait: a fraction of a cold start, between 1 and 30."""
    return max(1, min(30, cold_start_timeout // 4))


@dataclass(frozen=True)
class ModelView:
    """One scale-to-zero model as the activator last read it."""

    namespace: str
    name: str
    scale_down_delay: int
    cold_start_timeout: int
    autoscaler: str | None  # "hpa" (the operator's), "keda", or None: not autoscaled yet
    replicas: int  # the Deployment's spec.replicas (0: at zero); -1: no Deployment
    ready_targets: tuple[str, ...] = ()  # "ip:port" of ready pods
    metrics_targets: tuple[str, ...] = ()  # "ip:port" of their sidecars' metrics
    failure: str | None = None  # why new pods cannot start
    waiting: str = ""  # what a wake waits for
    woken_at: str | None = None  # the Deployment's woken-at annotation
    uid: str = ""
    service_uid: str | None = None
    service_serving: bool = False  # the endpoint controller's slice lists a ready pod
    api_version: str = "machine-learning.org/v1"
    kind: str = "MLModelDeployment"

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name

    def involved(self) -> dict[str, Any]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "metadata": {"name": self.name, "namespace": self.namespace, "uid": self.uid},
        }


def scales_to_zero(body: dict[str, Any]) -> bool:
    scaling = (body.get("spec") or {}).get("autoscaling") or {}
    return scaling.get("min_replicas", 1) == 0


def _pod_ready(pod: dict[str, Any]) -> bool:
    if pod["metadata"].get("deletionTimestamp") or not (pod.get("status") or {}).get("podIP"):
        return False
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _port(pod: dict[str, Any], names: tuple[str, ...]) -> int | None:
    ports = {
        p.get("name"): p.get("containerPort")
        for c in pod["spec"].get("containers") or []
        for p in c.get("ports") or []
    }
    return next((ports[n] for n in names if n in ports), None)


def ready_targets(pods: list[dict[str, Any]]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The ready pods' serving and metrics addresses ("ip:port"), sorted."""
    serving, metrics = [], []
    for pod in pods:
        if not _pod_ready(pod):
            continue
        ip = pod["status"]["podIP"]
        if (port := _port(pod, TARGET_PORT_NAMES)) is not None:
            serving.append(f"{ip}:{port}")
        if (port := _port(pod, (METRICS_PORT_NAME,))) is not None:
            metrics.append(f"{ip}:{port}")
    return tuple(sorted(serving)), tuple(sorted(metrics))


def start_failure(pods: list[dict[str, Any]]) -> str | None:
    """Why the model's new pods cannot serve without someone's help, as the status says it;
    None while they may (pods waiting for capacity may still get it: those are held until the
    cold-start timeout, whose answer names it, see `waiting_for`)."""
    if failed := failed_init_containers(pods):
        container, reason, message = failed[0]
        return f"init container {container}: {reason}: {message}".strip()
    if stuck := stuck_containers(pods):
        container, reason, message = stuck[0]
        return f"container {container}: {reason}: {message}".strip()
    return None


def waiting_for(pods: list[dict[str, Any]]) -> str:
    """What a wake is still waiting for, for the timeout's answer."""
    if pending := unschedulable_pods(pods):
        conditions = (pending[0].get("status") or {}).get("conditions") or []
        scheduled = next((c for c in conditions if c.get("type") == "PodScheduled"), {})
        return f"no node can take the pod yet: {scheduled.get('message', '')}".strip()
    if not pods:
        return "no pod was created yet"
    return "the model server is not ready yet"


def traffic(metrics_text: str, model: str) -> tuple[float, float]:
    """(requests counted, requests in flight) of `model` in a sidecar's exposition."""
    total = in_flight = 0.0
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.labels.get("model") != model:
                continue
            if sample.name == REQUESTS_TOTAL + "_total":
                total += sample.value
            elif sample.name == IN_FLIGHT:
                in_flight += sample.value
    return total, in_flight


@dataclass
class Idleness:
    """When traffic was last seen for one model: a change of what its sidecars and the
    activator counted, or a request in flight."""

    last_traffic: float
    last_seen: tuple[float, ...] = field(default_factory=tuple)

    def observe(self, counted: tuple[float, ...], in_flight: float, now: float) -> None:
        if counted != self.last_seen or in_flight > 0:
            self.last_traffic = now
        self.last_seen = counted


def goes_to_zero(view: ModelView, idle: Idleness, held: int, now: float) -> bool:
    """Whether to take the model to zero now. Only with the operator's HPA (KEDA scales to zero
    itself), only while every replica's traffic is counted, never while holding requests."""
    return (
        view.autoscaler == "hpa"
        and view.replicas > 0
        and held == 0
        and view.woken_at is None
        and len(view.metrics_targets) == view.replicas
        and now - idle.last_traffic >= view.scale_down_delay
    )


def wakes(view: ModelView) -> bool:
    return view.autoscaler is not None and view.replicas == 0


def needs_slice(view: ModelView) -> bool:
    """The Service points at the activator from the moment the model is set to zero (its last
    pods may still be going) until a replica is ready and listed in the endpoint controller's own
    slice (removed earlier, the Service would have no endpoint for a moment)."""
    return (
        view.autoscaler is not None
        and view.service_uid is not None
        and (view.replicas == 0 or not (view.ready_targets and view.service_serving))
    )


def service_serving(slices: list[dict[str, Any]]) -> bool:
    """Whether another manager's slice of the Service (the endpoint controller's) lists a ready
    endpoint."""
    return any(
        (e.get("conditions") or {}).get("ready")
        for s in slices
        if s["metadata"].get("labels", {}).get(MANAGED_BY_LABEL) != SLICE_MANAGER
        for e in s.get("endpoints") or []
    )


def assign_port(assigned: dict[tuple[str, str], int], key: tuple[str, str], low: int) -> int:
    """The port the activator listens on for `key`: its own, else the lowest one free."""
    if key in assigned:
        return assigned[key]
    used = set(assigned.values())
    port = low
    while port in used:
        port += 1
    return port


def slice_name(model: str) -> str:
    return f"{model}-activator"


def endpoint_slice(view: ModelView, ip: str, port: int) -> dict[str, Any]:
    """An EndpointSlice of the model's Service that sends its traffic to the activator. kube-proxy
    merges every slice of a Service, whoever manages it; the endpoint controller leaves this one
    alone (another manager), and the Service owns it (deleted with it)."""
    assert view.service_uid is not None
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": slice_name(view.name),
            "namespace": view.namespace,
            "labels": {SERVICE_NAME_LABEL: view.name, MANAGED_BY_LABEL: SLICE_MANAGER},
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Service", "name": view.name, "uid": view.service_uid}
            ],
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}],
        "ports": [{"name": SERVICE_PORT_NAME, "port": port, "protocol": "TCP"}],
    }


def wake_patch(now_rfc3339: str, annotation: str) -> dict[str, Any]:
    return {"metadata": {"annotations": {annotation: now_rfc3339}}, "spec": {"replicas": 1}}


def woken_patch(annotation: str) -> dict[str, Any]:
    """Removes the wake's mark once a replica is ready (the status stops saying Waking)."""
    return {"metadata": {"annotations": {annotation: None}}}


def wake_message(cold_start_seconds: float, held: int) -> str:
    return f"woke from zero in {cold_start_seconds:.1f} s; {held} request(s) held meanwhile"
