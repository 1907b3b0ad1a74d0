"""kopf registrations only. kopf serves as the operator's informer: its watches feed the cache
(index handlers) and say which resource to reconcile (event handlers); the reconciles run in the
operator's own work queue.

Why index handlers feed the cache: kopf runs no other handler until every indexed kind has been
listed and indexed, so the first reconcile after a start already sees every child and pod, and
does not mistake a child not yet listed for a missing one. Why event handlers (not kopf's
create/update handlers) trigger the reconciles: they keep no state in the objects, so kopf
writes nothing to the API server, and their retries are the work queue's.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import kopf

from mlmodel_operator import api, config, kube, metrics, peering
from mlmodel_operator.builders import BuildSettings, NetworkPolicySettings
from mlmodel_operator.builders.autoscaling import KEDA_API
from mlmodel_operator.builders.canary import CANARY_SUFFIX, STABLE_SUFFIX
from mlmodel_operator.builders.inference_pool import PICKER_SUFFIX
from mlmodel_operator.builders.meta import (
    INSTANCE_LABEL,
    MANAGED_BY_LABEL,
    MONITOR_CONFIG_SUFFIX,
    OPERATOR_NAME,
)
from mlmodel_operator.builders.prometheus import PROMETHEUS_API
from mlmodel_operator.cache import OPTIONAL_API_SERVICES, OPTIONAL_CRDS, Cache, is_ours
from mlmodel_operator.events import EventRecorder
from mlmodel_operator.payload_health import DeliveryProbe
from mlmodel_operator.reconcile import Context, Reconciler
from mlmodel_operator.resync import resync_forever
from mlmodel_operator.runtimes import load_catalog
from mlmodel_operator.workqueue import WorkQueue

MODEL = (api.GROUP, api.VERSION, api.PLURAL)
_PROMETHEUS_GROUP, _PROMETHEUS_VERSION = PROMETHEUS_API.split("/")
_KEDA_GROUP, _KEDA_VERSION = KEDA_API.split("/")
# Every object of these kinds is cached, the operator's own in full and others by name and
# controller: a name a child needs may be taken by an object the operator must not take over.
CHILDREN = [
    ("apps", "v1", "deployments"),
    ("", "v1", "services"),
    ("", "v1", "configmaps"),
    ("networking.k8s.io", "v1", "networkpolicies"),
    ("autoscaling", "v2", "horizontalpodautoscalers"),
    # Watched once the cluster serves them (kopf notices CRDs coming).
    (_PROMETHEUS_GROUP, _PROMETHEUS_VERSION, "servicemonitors"),
    (_PROMETHEUS_GROUP, _PROMETHEUS_VERSION, "prometheusrules"),
    ("gateway.networking.k8s.io", "v1", "httproutes"),
    ("inference.networking.k8s.io", "v1", "inferencepools"),
    # The endpoint picker's identity and rights, beside an InferencePool.
    ("", "v1", "serviceaccounts"),
    ("rbac.authorization.k8s.io", "v1", "roles"),
    ("rbac.authorization.k8s.io", "v1", "rolebindings"),
    (_KEDA_GROUP, _KEDA_VERSION, "scaledobjects"),
]
# Pods carry the instance label but are owned by ReplicaSets; their scheduling verdicts and
# readiness are what the status reports.
PODS = ("", "v1", "pods")
CRDS = ("apiextensions.k8s.io", "v1", "customresourcedefinitions")
API_SERVICES = ("apiregistration.k8s.io", "v1", "apiservices")
_API_SERVICE_NAMES = frozenset(OPTIONAL_API_SERVICES.values())
OURS = {MANAGED_BY_LABEL: OPERATOR_NAME, INSTANCE_LABEL: kopf.PRESENT}
# A rollout step changes several pods and the Deployment's status within a fraction of a second;
# waiting this long after the first change makes them one reconcile instead of several.
CHILD_SETTLE_SECONDS = 0.5

log = logging.getLogger(__name__)


@dataclass
class Running:
    """The running operator's parts, made once by `start`."""

    cache: Cache
    queue: WorkQueue
    events: EventRecorder
    stopping: threading.Event


_running: Running | None = None


def running() -> Running:
    if _running is None:
        raise RuntimeError("the operator has not started")
    return _running


@kopf.on.startup()
def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    global _running
    cfg = config.current()
    logging.getLogger("mlmodel_operator").setLevel(cfg.log_level)
    if cfg.log_level != "DEBUG":
        # kopf reports every handler call on every event at INFO; the operator's own logs say
        # what changed.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    # The operator posts its own, meaningful Events; kopf's per-handler ones would be noise.
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    build = BuildSettings(
        runtimes=load_catalog(cfg.runtime_catalog),
        monitor_image=cfg.monitor_image,
        progress_deadline_seconds=cfg.progress_deadline_seconds,
        network_policy=NetworkPolicySettings(
            clients=config.parse_labels(cfg.network_policy_clients),
            scrapers=config.parse_labels(cfg.network_policy_scrapers),
        )
        if cfg.network_policy
        else None,
        prometheus_url=cfg.prometheus_url,
        activator=cfg.activator,
    )
    # The entry point made the client; kopf run otherwise (tests, `kopf run`) has none yet.
    client = memo.get("kube") or kube.configure(cfg.api_qps, cfg.api_burst)
    cache = Cache()
    events = EventRecorder(client)
    delivery = DeliveryProbe(cfg.prometheus_url, ttl=cfg.resync_seconds)
    queue = WorkQueue(Reconciler(Context(client, cache, events, build, delivery)), cfg.workers)
    stopping = threading.Event()
    _running = Running(cache, queue, events, stopping)
    metrics.MODELS.source = lambda: cached_models(cache)
    queue.start()
    threading.Thread(
        target=resync_forever,
        name="resync",
        daemon=True,
        kwargs={
            "cache": cache,
            "interval": cfg.resync_seconds,
            "stopping": stopping,
            "enqueue": queue.add,
            # kopf pauses its own handlers on a standby replica, but not this thread.
            "is_active": lambda namespace: peering.current().active(client, namespace),
        },
    ).start()


def cached_models(cache: Cache) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Each cached model with its cached Deployments (stable, and the canary's), for the
    per-model metrics."""
    out = []
    for namespace, name in cache.models():
        body = cache.model(namespace, name)
        if body is None:
            continue
        names = (name, name + CANARY_SUFFIX)
        deployments = [cache.get("Deployment", namespace, n) for n in names]
        out.append((body, [d for d in deployments if d is not None]))
    return out


@kopf.on.cleanup()
def stop(**_: Any) -> None:
    if _running is not None:
        _running.stopping.set()
        _running.queue.stop()
        _running.events.close()


async def _index(body: kopf.Body, **_: Any) -> None:
    running().cache.observe(dict(body))


async def _model_event(type: str | None, body: kopf.Body, **_: Any) -> None:
    parts = running()
    obj = dict(body)
    if type == "DELETED":
        parts.cache.forget(obj)
        metrics.MANAGED_RESOURCES.set(len(parts.cache.models()))
        return
    if parts.cache.claim(obj):
        metrics.MANAGED_RESOURCES.set(len(parts.cache.models()))
        # A new resource or a new spec: what someone asked for goes first.
        parts.queue.add((body.metadata.namespace, body.metadata.name), urgent=True)


def _owners(parts: Running, body: dict[str, Any]) -> list[tuple[str, str]]:
    """The models an object concerns: its instance label's, or for another object, the models
    whose children would take its name."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    if is_ours(body):
        return [(namespace, meta["labels"][INSTANCE_LABEL])]
    suffixes = (MONITOR_CONFIG_SUFFIX, CANARY_SUFFIX, STABLE_SUFFIX, PICKER_SUFFIX)
    candidates = {name} | {name.removesuffix(suffix) for suffix in suffixes}
    return [(namespace, model) for model in candidates if parts.cache.model(namespace, model)]


async def _child_event(type: str | None, body: kopf.Body, **_: Any) -> None:
    parts = running()
    obj = dict(body)
    if type == "DELETED":
        parts.cache.forget(obj)
        for key in _owners(parts, obj):
            parts.queue.add(key)
    elif parts.cache.claim(obj):
        for key in _owners(parts, obj):
            parts.queue.add_soon(key, CHILD_SETTLE_SECONDS)
    # else: nothing the reconcile reads has changed


def _optional_crd(name: str, body: kopf.Body, **_: Any) -> bool:
    return name in OPTIONAL_CRDS


async def _index_crd(name: str, body: kopf.Body, **_: Any) -> None:
    served = {v["name"] for v in body["spec"]["versions"] if v.get("served")}
    running().cache.observe_crd(name, served)


async def _crd_event(type: str | None, name: str, **_: Any) -> None:
    parts = running()
    if type == "DELETED":
        parts.cache.observe_crd(name, set())
    _reconcile_all_on_api_change(parts)


def _reconcile_all_on_api_change(parts: Running) -> None:
    if parts.cache.claim_api_change():
        # Every model's objects of that API (monitoring, routes, autoscalers) come or go with it.
        for key in parts.cache.models():
            parts.queue.add(key)


def _optional_api_service(name: str, **_: Any) -> bool:
    return name in _API_SERVICE_NAMES


async def _index_api_service(name: str, body: kopf.Body, **_: Any) -> None:
    conditions = (body.get("status") or {}).get("conditions") or []
    available = any(c.get("type") == "Available" and c.get("status") == "True" for c in conditions)
    running().cache.observe_api_service(name, available)


async def _api_service_event(type: str | None, name: str, **_: Any) -> None:
    parts = running()
    if type == "DELETED":
        parts.cache.observe_api_service(name, False)
    _reconcile_all_on_api_change(parts)


kopf.index(*MODEL, id="models-cache")(_index)
kopf.on.event(*MODEL, id="models-event")(_model_event)
for _group, _version, _plural in CHILDREN:
    kopf.index(_group, _version, _plural, id=f"{_plural}-cache")(_index)
    kopf.on.event(_group, _version, _plural, id=f"{_plural}-event")(_child_event)
kopf.index(*PODS, labels=OURS, id="pods-cache")(_index)
kopf.on.event(*PODS, labels=OURS, id="pods-event")(_child_event)
kopf.index(*CRDS, when=_optional_crd, id="crds-cache")(_index_crd)
kopf.on.event(*CRDS, when=_optional_crd, id="crds-event")(_crd_event)
kopf.index(*API_SERVICES, when=_optional_api_service, id="apiservices-cache")(_index_api_service)
kopf.on.event(*API_SERVICES, when=_optional_api_service, id="apiservices-event")(_api_service_event)
