"""kopf registrations only: every handler hands the resource to the one reconcile.

The handlers are synchronous, so kopf runs them in its thread pool and the blocking API client
never stalls the event loop.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import kopf

from mlmodel_operator import api, config, kube, peering
from mlmodel_operator.builders import BuildSettings
from mlmodel_operator.builders.meta import INSTANCE_LABEL, MANAGED_BY_LABEL, OPERATOR_NAME
from mlmodel_operator.reconcile import Reconciler, TransientError
from mlmodel_operator.resync import resync_forever
from mlmodel_operator.runtimes import load_catalog

MODEL = (api.GROUP, api.VERSION, api.PLURAL)
CHILDREN = [("apps", "v1", "deployments"), ("", "v1", "services"), ("", "v1", "configmaps")]
OURS = {MANAGED_BY_LABEL: OPERATOR_NAME, INSTANCE_LABEL: kopf.PRESENT}
MAX_RETRY_DELAY_SECONDS = 60

_config = config.current()
_reconciler: Reconciler | None = None
_stopping = threading.Event()


def reconciler() -> Reconciler:
    if _reconciler is None:
        raise RuntimeError("the operator has not started")
    return _reconciler


@kopf.on.startup()
def start(settings: kopf.OperatorSettings, **_: Any) -> None:
    global _reconciler
    logging.getLogger("mlmodel_operator").setLevel(_config.log_level)
    if _config.log_level != "DEBUG":
        # kopf reports every handler call on every child event at INFO; the operator's own
        # logs say what changed.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    settings.execution.max_workers = _config.workers
    # The operator posts its own, meaningful Events; kopf's per-handler ones would be noise.
    settings.posting.enabled = False
    # Keep kopf's bookkeeping out of status, which the CRD schema owns.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=api.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=api.GROUP)
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    build = BuildSettings(
        runtimes=load_catalog(_config.runtime_catalog),
        monitor_image=_config.monitor_image,
        progress_deadline_seconds=_config.progress_deadline_seconds,
    )
    client = kube.configure(_config.api_qps, _config.api_burst)
    _reconciler = Reconciler(client, build)
    _stopping.clear()
    threading.Thread(
        target=resync_forever,
        name="resync",
        daemon=True,
        kwargs={
            "kube": client,
            "namespaces": _config.namespaces,
            "interval": _config.resync_seconds,
            "stopping": _stopping,
            "reconcile": _reconcile,
            # kopf pauses its own handlers on a standby replica, but not this thread.
            "is_active": lambda namespace: peering.current().active(client, namespace),
        },
    ).start()


@kopf.on.cleanup()
def stop(**_: Any) -> None:
    _stopping.set()


def _reconcile(namespace: str, name: str, retry: int = 0) -> None:
    try:
        outcome = reconciler()(namespace, name)
    except TransientError as err:
        # Exponential backoff: 1, 2, 4 ... seconds, at most a minute.
        delay = min(2**retry, MAX_RETRY_DELAY_SECONDS)
        raise kopf.TemporaryError(str(err), delay=delay) from err
    if outcome is not None:
        reconciler().track(namespace, name, outcome != "gone")


@kopf.on.resume(*MODEL)
@kopf.on.create(*MODEL)
@kopf.on.update(*MODEL)
def model_changed(namespace: str, name: str, retry: int, **_: Any) -> None:
    _reconcile(namespace, name, retry)


@kopf.on.delete(*MODEL, optional=True)
def model_deleted(namespace: str, name: str, **_: Any) -> None:
    reconciler().track(namespace, name, present=False)


def _child_event(namespace: str, labels: dict[str, str], **_: Any) -> None:
    try:
        _reconcile(namespace, labels[INSTANCE_LABEL])
    except kopf.TemporaryError:
        # Event handlers are not retried; the next event or the resync catches up.
        logging.getLogger(__name__).warning("transient error; will retry on the next event")


for _group, _version, _plural in CHILDREN:
    kopf.on.event(_group, _version, _plural, labels=OURS, id=f"{_plural}-event")(_child_event)
# Pods carry the instance label but are owned by ReplicaSets; their scheduling verdicts and
# readiness are what the status reports.
kopf.on.event("", "v1", "pods", labels=OURS, id="pods-event")(_child_event)
