"""The one idempotent reconcile: read the resource, apply its children, write its status.

Level-based: create, update, resume, resync and every event of a child call the same function,
which looks only at the current state, never at what changed. Calls for one resource never run
at once; a call that arrives during a run makes exactly one more run afterwards. A run that fails
is retried by the Reconciler itself, with exponential backoff, whoever asked for it: the caller
of a coalesced call has already returned and cannot retry it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from mlmodel_operator import api, metrics
from mlmodel_operator.builders import BuildSettings, Owner, build_children
from mlmodel_operator.builders.deployment import no_model_note
from mlmodel_operator.builders.meta import selector_string
from mlmodel_operator.builders.monitor import monitor_enabled
from mlmodel_operator.builders.prometheus import PROMETHEUS_API
from mlmodel_operator.builders.service import endpoint
from mlmodel_operator.kube import Kube, NotControlled, describe_error, is_transient
from mlmodel_operator.runtimes import runtime_for
from mlmodel_operator.status import (
    MonitoringSetup,
    Observation,
    compute_status,
    transition_events,
)

log = logging.getLogger(__name__)

MAX_RETRY_DELAY_SECONDS = 60.0


class TransientError(Exception):
    """The API server failed in a way worth retrying (conflict, throttling, 5xx)."""


def permanent_error(err: ApiException) -> str:
    """The API server's message for an error worth reporting; an error worth retrying (conflict,
    throttling, 5xx) is raised as TransientError instead."""
    if is_transient(err):
        raise TransientError(describe_error(err)) from err
    return describe_error(err)


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def invalid_spec_message(err: ValidationError) -> str:
    parts = []
    for error in err.errors():
        path = ".".join(["spec", *(str(p) for p in error["loc"])])
        parts.append(f"{path}: {error['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


def reconcile_once(kube: Kube, settings: BuildSettings, namespace: str, name: str) -> str:
    """Bring one MLModelDeployment's children and status up to date; returns the outcome."""
    body = kube.get_model(namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return "gone"  # the garbage collector removes the children
    owner = Owner.from_body(body)
    previous = body.get("status") or {}
    generation = body["metadata"].get("generation", 1)
    common = {
        "generation": generation,
        "endpoint": endpoint(owner),
        "selector": selector_string(owner),
    }
    try:
        spec = api.MLModelDeploymentSpec.model_validate(body.get("spec") or {})
    except ValidationError as err:
        observation = Observation(
            desired_replicas=0,
            gpu_resource="",
            invalid_spec=invalid_spec_message(err),
            **common,
        )
        return _write_status(kube, body, previous, observation, outcome="invalid")

    prometheus_operator = kube.has_api_cached(PROMETHEUS_API)
    children = build_children(
        owner, spec, replace(settings, prometheus_operator=prometheus_operator)
    )
    if not previous:
        created = ", ".join(f"{o['kind']} {o['metadata']['name']}" for o in children.apply)
        _post_event(kube, body, "Normal", "Created", f"creating {created}")
    live: dict[str, dict[str, Any]] = {}
    errors = []
    for obj in children.apply:
        try:
            live[obj["kind"]] = kube.apply(obj)
        except ApiException as err:
            errors.append(f"{obj['kind']} {obj['metadata']['name']}: {permanent_error(err)}")
        except NotControlled as err:
            # Later children refer to this one by name (the Deployment mounts the ConfigMap):
            # applying them would make them use someone else's object.
            errors.append(str(err))
            break
    for ref in children.absent:
        try:
            kube.delete_controlled(ref, owner.uid)
        except ApiException as err:
            errors.append(f"deleting {ref.kind} {ref.name}: {permanent_error(err)}")

    try:
        pods = kube.list("v1", "Pod", namespace, selector_string(owner))
    except ApiException as err:
        errors.append(f"listing pods: {permanent_error(err)}")
        pods = []
    monitoring = spec.monitoring
    drift_active = monitoring.drift_detection == "active"
    observation = Observation(
        desired_replicas=spec.replicas,
        gpu_resource=spec.computational_resources.gpu_resource,
        deployment=live.get("Deployment"),
        pods=pods,
        reconcile_error="; ".join(errors) or None,
        model_note=no_model_note(spec, runtime_for(spec.model_type, settings.runtimes)),
        model_version=spec.model_version,
        monitoring=MonitoringSetup(
            sidecar=monitor_enabled(spec),
            prometheus_operator=prometheus_operator,
            drift_reference=(monitoring.drift.reference_uri or "") if drift_active else None,
        ),
        **common,
    )
    return _write_status(kube, body, previous, observation)


def _write_status(
    kube: Kube,
    body: dict[str, Any],
    previous: dict[str, Any],
    observation: Observation,
    outcome: str | None = None,
) -> str:
    status = compute_status(observation, previous, now_rfc3339())
    meta = body["metadata"]
    if any(previous.get(key) != value for key, value in status.items()):
        try:
            kube.patch_model_status(meta["namespace"], meta["name"], status)
        except ApiException as err:
            message = permanent_error(err)
            if err.status == 404:  # deleted while this run read it: nothing left to report on
                log.debug("%s/%s is gone; status not written", meta["namespace"], meta["name"])
                return "gone"
            # Nowhere left to report it but the log: retrying would only repeat the refusal.
            log.error(
                "cannot write the status of %s/%s: %s", meta["namespace"], meta["name"], message
            )
            return "error"
    for event in transition_events(previous, status):
        _post_event(kube, body, event.type, event.reason, event.message)
    return outcome or status["phase"].lower()


def _post_event(kube: Kube, body: dict[str, Any], kind: str, reason: str, message: str) -> None:
    """Events are a courtesy: one that cannot be posted is logged, and the reconcile goes on."""
    try:
        kube.post_event(body, kind, reason, message)
    except ApiException as err:
        log.warning("cannot post event %s: %s", reason, describe_error(err))


class Reconciler:
    """Serialises and coalesces reconciles per resource, retries failed ones, and records their
    metrics. `run(namespace, name)` is one reconcile; it returns its outcome."""

    def __init__(
        self,
        run: Callable[[str, str], str],
        *,
        retry_delay: float = 1.0,
        max_retry_delay: float = MAX_RETRY_DELAY_SECONDS,
    ) -> None:
        self.run = run
        self.retry_delay, self.max_retry_delay = retry_delay, max_retry_delay
        self._lock = threading.Lock()
        self._running: set[tuple[str, str]] = set()
        self._again: set[tuple[str, str]] = set()
        self._known: set[tuple[str, str]] = set()
        self._failures: dict[tuple[str, str], int] = {}
        self._retries: dict[tuple[str, str], threading.Timer] = {}
        self._closed = False

    def __call__(self, namespace: str, name: str) -> str | None:
        """Reconcile now, or, if a reconcile of the same resource is running, make it run once
        more when it ends (and return None). A failed run is retried later; its outcome is
        "retrying"."""
        key = (namespace, name)
        with self._lock:
            if key in self._running:
                self._again.add(key)
                return None
            self._running.add(key)
        try:
            while True:
                outcome = self._attempt(key)
                with self._lock:
                    if key not in self._again:
                        return outcome
                    self._again.discard(key)
        finally:
            with self._lock:
                self._running.discard(key)
                self._again.discard(key)

    def _attempt(self, key: tuple[str, str]) -> str:
        start = time.perf_counter()
        try:
            outcome = self.run(*key)
        except TransientError as err:
            metrics.RECONCILES.labels(result="error").inc()
            self._retry_later(key, str(err))
            return "retrying"
        except Exception:
            # A bug or an unforeseen answer: logged in full, and retried like a transient error,
            # so that a fix of the cause (or a spec change) is picked up without a restart.
            metrics.RECONCILES.labels(result="error").inc()
            log.exception("reconcile of %s/%s failed", *key)
            self._retry_later(key, "unexpected error")
            return "retrying"
        finally:
            metrics.RECONCILE_SECONDS.observe(time.perf_counter() - start)
        metrics.RECONCILES.labels(result=outcome).inc()
        with self._lock:
            self._failures.pop(key, None)
            pending = self._retries.pop(key, None)
        if pending is not None:
            pending.cancel()  # this run did what the retry would have done
        return outcome

    def _retry_later(self, key: tuple[str, str], why: str) -> None:
        """Run `key` again after an exponential backoff (one pending retry per resource)."""
        with self._lock:
            if self._closed or key in self._retries:
                return
            failures = self._failures[key] = self._failures.get(key, 0) + 1
            delay = min(self.retry_delay * 2 ** (failures - 1), self.max_retry_delay)
            timer = threading.Timer(delay, self._retry, args=key)
            timer.daemon = True
            self._retries[key] = timer
        log.warning("reconcile of %s/%s failed (%s); retrying in %.0f s", *key, why, delay)
        timer.start()

    def _retry(self, namespace: str, name: str) -> None:
        with self._lock:
            self._retries.pop((namespace, name), None)
        self(namespace, name)

    def close(self) -> None:
        """Cancel pending retries; none is scheduled afterwards."""
        with self._lock:
            self._closed = True
            timers, self._retries = list(self._retries.values()), {}
        for timer in timers:
            timer.cancel()

    def track(self, namespace: str, name: str, present: bool) -> None:
        with self._lock:
            (self._known.add if present else self._known.discard)((namespace, name))
            metrics.MANAGED_RESOURCES.set(len(self._known))
