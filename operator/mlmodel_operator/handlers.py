"""kopf registrations only: every handler hands the resource to the one reconcile.

The handlers are synchronous, so kopf runs them in its thread pool and the blocking API client
never stalls the event loop.
"""

from __future__ import annotations

import logging
import threading
from functools import partial
from typing import Any

import kopf

from mlmodel_operator import api, config, kube, peering
from mlmodel_operator.builders import BuildSettings, NetworkPolicySettings
from mlmodel_operator.builders.meta import INSTANCE_LABEL, MANAGED_BY_LABEL, OPERATOR_NAME
from mlmodel_operator.reconcile import Reconciler, reconcile_once
from mlmodel_operator.resync import resync_forever
from mlmodel_operator.runtimes import load_catalog

MODEL = (api.GROUP, api.VERSION, api.PLURAL)
CHILDREN = [("apps", "v1", "deployments"), ("", "v1", "services"), ("", "v1", "configmaps")]
OURS = {MANAGED_BY_LABEL: OPERATOR_NAME, INSTANCE_LABEL: kopf.PRESENT}

_reconciler: Reconciler | None = None
_stopping = threading.Event()  # a fresh one each start: a stopped loop stays stopped


def reconciler() -> Reconciler:
    if _reconciler is None:
        raise RuntimeError("the operator has not started")
    return _reconciler


@kopf.on.startup()
def start(settings: kopf.OperatorSettings, **_: Any) -> None:
    global _reconciler, _stopping
    cfg = config.current()
    logging.getLogger("mlmodel_operator").setLevel(cfg.log_level)
    if cfg.log_level != "DEBUG":
        # kopf reports every handler call on every child event at INFO; the operator's own
        # logs say what changed.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    settings.execution.max_workers = cfg.workers
    # The operator posts its own, meaningful Events; kopf's per-handler ones would be noise.
    settings.posting.enabled = False
    # Keep kopf's bookkeeping out of status, which the CRD schema owns.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=api.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=api.GROUP)
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
    )
    client = kube.configure(cfg.api_qps, cfg.api_burst)
    _reconciler = Reconciler(partial(reconcile_once, client, build))
    _stopping = threading.Event()
    threading.Thread(
        target=resync_forever,
        name="resync",
        daemon=True,
        kwargs={
            "kube": client,
            "namespaces": cfg.namespaces,
            "interval": cfg.resync_seconds,
            "stopping": _stopping,
            "reconcile": _reconcile,
            # kopf pauses its own handlers on a standby replica, but not this thread.
            "is_active": lambda namespace: peering.current().active(client, namespace),
        },
    ).start()


@kopf.on.cleanup()
def stop(**_: Any) -> None:
    _stopping.set()
    if _reconciler is not None:
        _reconciler.close()


def _reconcile(namespace: str, name: str) -> None:
    # Never raises for a failed run: the Reconciler retries it with backoff, also when the run
    # was a coalesced one that this caller did not ask for.
    outcome = reconciler()(namespace, name)
    if outcome is not None:
        reconciler().track(namespace, name, outcome != "gone")


@kopf.on.resume(*MODEL)
@kopf.on.create(*MODEL)
@kopf.on.update(*MODEL)
def model_changed(namespace: str, name: str, **_: Any) -> None:
    _reconcile(namespace, name)


@kopf.on.delete(*MODEL, optional=True)
def model_deleted(namespace: str, name: str, **_: Any) -> None:
    reconciler().track(namespace, name, present=False)


def _child_event(namespace: str, labels: dict[str, str], **_: Any) -> None:
    _reconcile(namespace, labels[INSTANCE_LABEL])


for _group, _version, _plural in CHILDREN:
    kopf.on.event(_group, _version, _plural, labels=OURS, id=f"{_plural}-event")(_child_event)
# Pods carry the instance label but are owned by ReplicaSets; their scheduling verdicts and
# readiness are what the status reports.
kopf.on.event("", "v1", "pods", labels=OURS, id="pods-event")(_child_event)
