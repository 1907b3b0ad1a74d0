"""In-memory copies of the objects the reconcile reads, kept current by the operator's watches.

A steady-state reconcile reads only from here, so it sends no GET or LIST. Each object is kept
as a projection holding only what the status and the diff need: MLModelDeployments without
their managed fields; children (Deployment, Service, ConfigMap, ServiceMonitor, PrometheusRule)
as metadata, spec and data, a Deployment's status and the managers of its replica count, an
autoscaler's conditions; Pods as the handful of fields the status
reports; objects of the children's kinds that are not the operator's, as their name and
controller only. Projections are stored as compact JSON, several times smaller than the parsed dicts
(see "Scale" in docs/operating.md), and
parsed afresh on each read, so no caller can alter the store.

The watches write here (`observe`, `forget`); so do the reconcile's own writes (`record`, with
the API server's answer), so that the next reconcile does not act on the state before them.
Neither may move an object back to an older resourceVersion.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from mlmodel_operator import api
from mlmodel_operator.builders.autoscaling import HPA_KIND, KEDA_KIND, replicas_managers
from mlmodel_operator.builders.canary import TRACK_LABEL
from mlmodel_operator.builders.meta import (
    INSTANCE_LABEL,
    MANAGED_BY_LABEL,
    OPERATOR_NAME,
    VERSION_LABEL,
    controller_uid,
)
from mlmodel_operator.rollout.machine import OVERRIDE_ANNOTATION

MODEL_KIND = api.KIND
# A write's answer older than a deletion the watch reported is not brought back to life; a
# deletion is remembered this long for that (far longer than a request takes).
TOMBSTONE_SECONDS = 60.0

# Child metadata the diff compares or the reconcile needs for preconditions.
_CHILD_METADATA = (
    "name",
    "namespace",
    "uid",
    "generation",
    "labels",
    "annotations",
    "ownerReferences",
    "deletionTimestamp",
)
_MODEL_METADATA = ("name", "namespace", "uid", "generation", "labels", "deletionTimestamp")
# Pod conditions the status reads, and their fields that matter.
_POD_CONDITIONS = ("Ready", "PodScheduled")
_CONDITION_FIELDS = ("type", "status", "reason", "message")


def _pick(mapping: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {key: mapping[key] for key in keys if key in mapping}


def model_view(body: dict[str, Any]) -> dict[str, Any]:
    """An MLModelDeployment as the reconcile reads it: metadata (of its annotations only the
    rollout override), spec and status."""
    meta = body.get("metadata") or {}
    view_meta = _pick(meta, _MODEL_METADATA)
    if override := _pick(meta.get("annotations") or {}, (OVERRIDE_ANNOTATION,)):
        view_meta["annotations"] = override
    return {
        "apiVersion": body.get("apiVersion", f"{api.GROUP}/{api.VERSION}"),
        "kind": body.get("kind", api.KIND),
        "metadata": view_meta,
        "spec": body.get("spec") or {},
        "status": body.get("status") or {},
    }


def autoscaler_status(body: dict[str, Any]) -> dict[str, Any]:
    """What the status mirrors of an autoscaler: its replica counts (an HPA's) and conditions,
    without the timestamps and metric values that change at every sync."""
    status = body.get("status") or {}
    view = _pick(status, ("currentReplicas", "desiredReplicas"))
    view["conditions"] = [_pick(c, _CONDITION_FIELDS) for c in status.get("conditions") or []]
    return view


def child_view(body: dict[str, Any]) -> dict[str, Any]:
    """A child as the diff and the status read it. Only a Deployment's status is kept, with the
    field managers that own its replica count, and an autoscaler's conditions."""
    view = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": _pick(body.get("metadata") or {}, _CHILD_METADATA),
    }
    # A Role's and a RoleBinding's content is outside `spec`, at the top level.
    for key in ("spec", "data", "rules", "roleRef", "subjects"):
        if key in body:
            view[key] = body[key]
    if body.get("kind") == "Deployment":
        view["status"] = body.get("status") or {}
        view["replicasManagers"] = replicas_managers(body)
    elif body.get("kind") in (HPA_KIND, KEDA_KIND):
        view["status"] = autoscaler_status(body)
    return view


def is_ours(body: dict[str, Any]) -> bool:
    """Whether an object carries the labels of the operator's children."""
    labels = (body.get("metadata") or {}).get("labels") or {}
    return labels.get(MANAGED_BY_LABEL) == OPERATOR_NAME and INSTANCE_LABEL in labels


def foreign_view(body: dict[str, Any]) -> dict[str, Any]:
    """An object of a child's kind without the children's labels: only that its name is taken,
    and by whom (its controller), so that the operator neither takes it over nor deletes it."""
    meta = body.get("metadata") or {}
    controller = controller_uid(body)
    view_meta = _pick(meta, ("name", "namespace", "uid"))
    if controller is not None:
        view_meta["ownerReferences"] = [{"uid": controller, "controller": True}]
    return {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "metadata": view_meta}


def pod_view(body: dict[str, Any]) -> dict[str, Any]:
    """A Pod reduced to what the status reports: readiness, the scheduler's verdict, containers
    waiting (and why) or failed (with their message), the model version, and whether it is
    terminating. Fields that change
    without changing any of these (IPs, timestamps, restart counts) are left out, so that their
    changes do not trigger a reconcile."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    labels = meta.get("labels") or {}
    view_meta: dict[str, Any] = {
        "name": meta.get("name"),
        "labels": _pick(labels, (INSTANCE_LABEL, VERSION_LABEL, TRACK_LABEL)),
    }
    if meta.get("deletionTimestamp"):
        view_meta["deletionTimestamp"] = meta["deletionTimestamp"]
    conditions = [
        _pick(c, _CONDITION_FIELDS)
        for c in status.get("conditions") or []
        if c.get("type") in _POD_CONDITIONS
    ]
    containers = [_container_view(c) for c in status.get("containerStatuses") or []]
    init_containers = [_container_view(c) for c in status.get("initContainerStatuses") or []]
    view_status: dict[str, Any] = {"conditions": conditions, "containerStatuses": containers}
    if init_containers:
        view_status["initContainerStatuses"] = init_containers
    return {"metadata": view_meta, "status": view_status}


def _failed_run(state: dict[str, Any] | None) -> dict[str, Any] | None:
    terminated = (state or {}).get("terminated")
    if not terminated or terminated.get("exitCode", 0) == 0:
        return None
    return _pick(terminated, ("exitCode", "reason", "message"))


def _container_view(container: dict[str, Any]) -> dict[str, Any]:
    """A container's name, why it waits, and its last failed run with the termination message
    (an init container's: the model fetcher's one line). Successful runs and restart counts are
    left out: they change without changing what the status says."""
    entry: dict[str, Any] = {"name": container.get("name")}
    state = container.get("state") or {}
    if waiting := state.get("waiting"):
        entry["state"] = {"waiting": _pick(waiting, ("reason", "message"))}
    elif failed := _failed_run(state):
        entry["state"] = {"terminated": failed}
    if failed := _failed_run(container.get("lastState")):
        entry["lastState"] = {"terminated": failed}
    return entry


def _encode(view: dict[str, Any]) -> bytes:
    return json.dumps(view, sort_keys=True, separators=(",", ":")).encode()


def _version(resource_version: str | None) -> int:
    """resourceVersions are opaque by contract, but every API server backed by etcd hands out
    increasing integers; anything else compares as 0 (always accepted)."""
    try:
        return int(resource_version or 0)
    except ValueError:
        return 0


@dataclass(frozen=True)
class Entry:
    version: int
    resource_version: str
    content: bytes  # the projection without its resourceVersion
    # What a change must touch to be worth a reconcile: for an MLModelDeployment its metadata
    # and spec (its status is the operator's own output); None: all of `content`.
    trigger: int | None = None

    def same_trigger(self, other: Entry) -> bool:
        if self.trigger is None:
            return self.content == other.content
        return self.trigger == other.trigger


# (kind, namespace, name); kind is MODEL_KIND for MLModelDeployments.
Key = tuple[str, str, str]


def key_of(body: dict[str, Any]) -> Key:
    meta = body["metadata"]
    return (body["kind"], meta["namespace"], meta["name"])


class Cache:
    """The store. Written from kopf's event loop and from reconcile threads; safe for both."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objects: dict[Key, Entry] = {}
        # (namespace, model name) -> {pod name: entry}
        self._pods: dict[tuple[str, str], dict[str, Entry]] = {}
        # Objects whose watched state changed and whose owner has not been told yet.
        self._unclaimed: set[Key] = set()
        self._tombstones: dict[Key, tuple[int, float]] = {}
        self._crd_versions: dict[str, frozenset[str]] = {}
        self._available_api_services: set[str] = set()
        self._apis_changed = False

    # --- writes from the watches --------------------------------------------------------------

    def observe(self, body: dict[str, Any]) -> None:
        """A watch event's object (added or modified). Whether it changed anything the reconcile
        reads is remembered until `claim`."""
        key, entry = self._entry(body)
        with self._lock:
            self._tombstones.pop(key, None)
            if self._store(key, entry, body):
                self._unclaimed.add(key)

    def forget(self, body: dict[str, Any]) -> None:
        """A watch event's deleted object."""
        key = key_of(body)
        with self._lock:
            self._unclaimed.discard(key)
            now = time.monotonic()
            self._tombstones = {
                k: v for k, v in self._tombstones.items() if now - v[1] < TOMBSTONE_SECONDS
            }
            self._tombstones[key] = (_version(body["metadata"].get("resourceVersion")), now)
            if key[0] == "Pod":
                pods = self._pods.get((key[1], _instance(body)), {})
                pods.pop(key[2], None)
                if not pods:
                    self._pods.pop((key[1], _instance(body)), None)
            else:
                self._objects.pop(key, None)

    def claim(self, body: dict[str, Any]) -> bool:
        """Whether the last `observe` of this object changed what the reconcile reads; true once."""
        key = key_of(body)
        with self._lock:
            if key in self._unclaimed:
                self._unclaimed.discard(key)
                return True
            return False

    # --- writes from the reconcile ------------------------------------------------------------

    def record(self, body: dict[str, Any]) -> None:
        """The API server's answer to one of the operator's own writes. Not a change to react
        to: the operator made it. Ignored when older than what the watches already reported."""
        key, entry = self._entry(body)
        with self._lock:
            tombstone = self._tombstones.get(key)
            if tombstone is not None and entry.version <= tombstone[0]:
                return
            self._store(key, entry, body)

    def _store(self, key: Key, entry: Entry, body: dict[str, Any]) -> bool:
        """Store unless older than the stored entry; whether the content changed."""
        if key[0] == "Pod":
            pods = self._pods.setdefault((key[1], _instance(body)), {})
            current = pods.get(key[2])
            if current is not None and entry.version and entry.version < current.version:
                return False
            pods[key[2]] = entry
        else:
            current = self._objects.get(key)
            if current is not None and entry.version and entry.version < current.version:
                return False
            self._objects[key] = entry
        return current is None or not current.same_trigger(entry)

    @staticmethod
    def _entry(body: dict[str, Any]) -> tuple[Key, Entry]:
        kind = body["kind"]
        trigger = None
        if kind == MODEL_KIND:
            view = model_view(body)
            trigger = hash(_encode({k: v for k, v in view.items() if k != "status"}))
        elif kind == "Pod":
            view = pod_view(body)
        elif is_ours(body):
            view = child_view(body)
        else:
            view = foreign_view(body)
        resource_version = body["metadata"].get("resourceVersion", "")
        entry = Entry(_version(resource_version), resource_version, _encode(view), trigger)
        return key_of(body), entry

    # --- optional APIs (other projects' CRDs) ----------------------------------------------

    def observe_crd(self, name: str, served_versions: set[str]) -> None:
        """Record which versions one of OPTIONAL_APIS' CRDs serves."""
        with self._lock:
            before = self._served_apis()
            self._crd_versions[name] = frozenset(served_versions)
            if self._served_apis() != before:
                self._apis_changed = True

    def observe_api_service(self, name: str, available: bool) -> None:
        """Record whether one of OPTIONAL_API_SERVICES is Available (served by its backend)."""
        with self._lock:
            before = self._served_apis()
            if available:
                self._available_api_services.add(name)
            else:
                self._available_api_services.discard(name)
            if self._served_apis() != before:
                self._apis_changed = True

    def claim_api_change(self) -> bool:
        """Whether `served_apis()` changed since last claimed; true once."""
        with self._lock:
            changed, self._apis_changed = self._apis_changed, False
            return changed

    def served_apis(self) -> frozenset[str]:
        """The OPTIONAL_APIS the cluster serves: every one of their CRDs at its version."""
        with self._lock:
            return self._served_apis()

    def _served_apis(self) -> frozenset[str]:
        return frozenset(
            api_name
            for api_name, crds in OPTIONAL_APIS.items()
            if all(version in self._crd_versions.get(crd, ()) for crd, version in crds.items())
        ) | frozenset(
            api_name
            for api_name, service in OPTIONAL_API_SERVICES.items()
            if service in self._available_api_services
        )

    # --- reads --------------------------------------------------------------------------------

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The cached projection of one object (a fresh copy), with its resourceVersion."""
        with self._lock:
            entry = self._objects.get((kind, namespace, name))
        return None if entry is None else _decode(entry)

    def model(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get(MODEL_KIND, namespace, name)

    def models(self) -> list[tuple[str, str]]:
        """(namespace, name) of every cached MLModelDeployment."""
        with self._lock:
            return [(ns, name) for kind, ns, name in self._objects if kind == MODEL_KIND]

    def pods(self, namespace: str, model: str) -> list[dict[str, Any]]:
        """The projections of the pods labelled as this model's."""
        with self._lock:
            entries = list(self._pods.get((namespace, model), {}).values())
        return [_decode(entry) for entry in entries]

    def sizes(self) -> dict[str, int]:
        """Objects and bytes held, for the memory figures."""
        with self._lock:
            pods = [e for group in self._pods.values() for e in group.values()]
            objects = list(self._objects.values())
        return {
            "objects": len(objects),
            "pods": len(pods),
            "bytes": sum(len(e.content) for e in objects) + sum(len(e.content) for e in pods),
        }


# Other projects' APIs the operator uses when the cluster serves them: name -> {CRD: version}.
PROMETHEUS_OPERATOR = "prometheus-operator"
GATEWAY_API = "gateway-api"
INFERENCE_POOL = "inference-pool"
KEDA = "keda"
OPTIONAL_APIS: dict[str, dict[str, str]] = {
    PROMETHEUS_OPERATOR: {
        "servicemonitors.monitoring.coreos.com": "v1",
        "prometheusrules.monitoring.coreos.com": "v1",
    },
    GATEWAY_API: {"httproutes.gateway.networking.k8s.io": "v1"},
    INFERENCE_POOL: {"inferencepools.inference.networking.k8s.io": "v1"},
    KEDA: {"scaledobjects.keda.sh": "v1alpha1"},
}
OPTIONAL_CRDS = frozenset(crd for crds in OPTIONAL_APIS.values() for crd in crds)
# Aggregated APIs (no CRD: an APIService backed by another server), served when Available.
CUSTOM_METRICS = "custom-metrics"
OPTIONAL_API_SERVICES: dict[str, str] = {CUSTOM_METRICS: "v1beta1.custom.metrics.k8s.io"}


def _instance(body: dict[str, Any]) -> str:
    return ((body.get("metadata") or {}).get("labels") or {}).get(INSTANCE_LABEL, "")


def _decode(entry: Entry) -> dict[str, Any]:
    view = json.loads(entry.content)
    view.setdefault("metadata", {})["resourceVersion"] = entry.resource_version
    return view
