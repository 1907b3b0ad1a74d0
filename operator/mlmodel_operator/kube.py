"""The only module that talks to the API server.

One apply helper (server-side apply, field manager `mlmodel-operator`, force) that skips the write
when the live object already matches and never takes over an object it does not control; a delete
of controlled objects only; reads, status patches and Events; a client-side rate limit. Calls are
synchronous: kopf runs the handlers that use them in its thread pool.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from mlmodel_operator import api, metrics
from mlmodel_operator.builders import ObjectRef
from mlmodel_operator.builders.meta import controller_uid
from mlmodel_operator.hashing import content_hash

FIELD_MANAGER = "mlmodel-operator"
HASH_ANNOTATION = f"{api.GROUP}/applied-hash"
REQUEST_TIMEOUT = 30
API_CACHE_SECONDS = 10.0
TRANSIENT_STATUSES = {409, 429, 500, 502, 503, 504}

_PLURALS = {
    "ConfigMap": "configmaps",
    "Deployment": "deployments",
    "Event": "events",
    "Pod": "pods",
    "Service": "services",
    api.KIND: api.PLURAL,
    "ServiceMonitor": "servicemonitors",
    "PrometheusRule": "prometheusrules",
    "NetworkPolicy": "networkpolicies",
}

log = logging.getLogger(__name__)


def resource_path(
    api_version: str, kind: str, namespace: str, name: str | None = None, sub: str | None = None
) -> str:
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{base}/namespaces/{namespace}/{_PLURALS[kind]}"
    if name:
        path += f"/{name}"
    if sub:
        path += f"/{sub}"
    return path


def covers(live: Any, desired: Any) -> bool:
    """Whether every field of `desired` has the same value in `live` (which may hold more: the
    API server's defaults and other managers' fields). Lists must match item by item."""
    if isinstance(desired, dict):
        # The API server drops empty lists and maps, so an empty desired value matches absence.
        return isinstance(live, dict) and all(
            covers(live[key], value) if key in live else value in ([], {})
            for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(live) == len(desired)
            and all(covers(lv, dv) for lv, dv in zip(live, desired, strict=True))
        )
    return live == desired


# A UTF-16 surrogate pair as json.dumps escapes a character beyond the Basic Multilingual Plane,
# not preceded by an escaped backslash (an even run of backslashes is literal text).
_SURROGATE_PAIR = re.compile(r"(?<!\\)((?:\\\\)*)\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})")


def _as_yaml_escape(match: re.Match[str]) -> str:
    high, low = int(match.group(2), 16), int(match.group(3), 16)
    code_point = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
    return f"{match.group(1)}\\U{code_point:08x}"


def yaml_body(obj: Any) -> bytes:
    """`obj` as a body for `application/apply-patch+yaml`, readable by the API server's YAML parser
    whatever its strings hold. JSON is YAML, except that YAML refuses the surrogate-pair escapes
    (`\\ud83d\\ude00`) JSON uses for characters such as emoji: those become YAML's 8-digit
    `\\U0001f600`. Every other non-ASCII character stays a `\\uXXXX` escape, which both read alike
    (raw, some of them, such as C1 controls, are not printable YAML)."""
    return _SURROGATE_PAIR.sub(_as_yaml_escape, json.dumps(obj)).encode("ascii")


class NotControlled(Exception):
    """A child's name is taken by an object this resource does not control: the operator neither
    takes it over nor deletes it."""


def with_hash(obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` with an annotation holding the hash of its content: a field dropped from the desired
    object changes the hash, which `covers` alone would not notice."""
    annotations = {**obj["metadata"].get("annotations", {}), HASH_ANNOTATION: content_hash(obj)}
    return {**obj, "metadata": {**obj["metadata"], "annotations": annotations}}


class RateLimiter:
    """Token bucket: `qps` requests per second sustained, `burst` at once."""

    def __init__(self, qps: float, burst: int) -> None:
        self.qps, self.burst = qps, burst
        self.tokens = float(burst)
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def acquire(self) -> None:
        while True:
            with self.lock:
                now = time.monotonic()
                self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.qps)
                self.stamp = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                wait = (1 - self.tokens) / self.qps
            time.sleep(wait)


@dataclass
class Kube:
    api_client: client.ApiClient
    limiter: RateLimiter
    _api_cache: dict[str, tuple[bool, float]] = field(default_factory=dict)

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, Any]] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        self.limiter.acquire()
        serialized = self.api_client.param_serialize(
            method,
            path,
            query_params=query or [],
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api_client.call_api(*serialized, _request_timeout=REQUEST_TIMEOUT)
        data = response.read()
        if not 200 <= response.status <= 299:
            metrics.API_ERRORS.labels(method=method, code=str(response.status)).inc()
            ApiException.from_response(
                http_resp=response, body=data.decode(errors="replace"), data=None
            )
        if method != "GET":
            metrics.API_WRITES.labels(method=method).inc()
            log.debug("write: %s %s", method, path)
        return json.loads(data) if data else None

    # --- reads ------------------------------------------------------------------------------

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", resource_path(api_version, kind, namespace, name))
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def list(
        self, api_version: str, kind: str, namespace: str, label_selector: str
    ) -> list[dict[str, Any]]:
        out = self.request(
            "GET",
            resource_path(api_version, kind, namespace),
            query=[("labelSelector", label_selector)],
        )
        return out.get("items", [])

    def list_models(self, namespaces: list[str]) -> list[tuple[str, str]]:
        """(namespace, name) of every MLModelDeployment in `namespaces` (all when empty)."""
        group = f"/apis/{api.GROUP}/{api.VERSION}"
        paths = [f"{group}/namespaces/{ns}/{api.PLURAL}" for ns in namespaces] or [
            f"{group}/{api.PLURAL}"
        ]
        out = []
        for path in paths:
            for item in self.request("GET", path).get("items", []):
                out.append((item["metadata"]["namespace"], item["metadata"]["name"]))
        return out

    def get_model(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get(f"{api.GROUP}/{api.VERSION}", api.KIND, namespace, name)

    def has_api(self, group_version: str) -> bool:
        """Whether the cluster serves an API group version, e.g. monitoring.coreos.com/v1."""
        try:
            self.request("GET", f"/apis/{group_version}")
            return True
        except ApiException as err:
            if err.status == 404:
                return False
            raise

    def has_api_cached(self, group_version: str) -> bool:
        """has_api, remembered for API_CACHE_SECONDS: reconciles run often, CRDs come rarely."""
        now = time.monotonic()
        cached = self._api_cache.get(group_version)
        if cached is None or now - cached[1] > API_CACHE_SECONDS:
            cached = (self.has_api(group_version), now)
            self._api_cache[group_version] = cached
        return cached[0]

    # --- writes -----------------------------------------------------------------------------

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply `obj` unless the live object already matches it; the live object.

        Raises NotControlled when an object of that name exists with another controller, or none:
        it belongs to someone else."""
        desired = with_hash(obj)
        meta = desired["metadata"]
        path = resource_path(
            desired["apiVersion"], desired["kind"], meta["namespace"], meta["name"]
        )
        live = self.get(desired["apiVersion"], desired["kind"], meta["namespace"], meta["name"])
        if live is not None and controller_uid(live) != controller_uid(desired):
            raise NotControlled(
                f"{desired['kind']} {meta['name']} exists and is not controlled by this "
                f"{api.KIND}: rename or delete it"
            )
        if live is not None and covers(live, desired):
            return live
        applied = self.request(
            "PATCH",
            path,
            body=yaml_body(desired),
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            content_type="application/apply-patch+yaml",
        )
        log.info("applied %s %s/%s", desired["kind"], meta["namespace"], meta["name"])
        return applied

    def delete_controlled(self, ref: ObjectRef, controller: str) -> bool:
        """Delete the object if the resource with uid `controller` controls it; whether anything
        was deleted. The preconditions make the API server refuse (409) if the object was
        replaced or changed since it was read, so a user's object that took the name in between
        is never deleted; the conflict is retried from a fresh read."""
        live = self.get(ref.api_version, ref.kind, ref.namespace, ref.name)
        if live is None or controller_uid(live) != controller:
            return False
        meta = live["metadata"]
        options = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "preconditions": {"uid": meta["uid"], "resourceVersion": meta["resourceVersion"]},
        }
        try:
            path = resource_path(ref.api_version, ref.kind, ref.namespace, ref.name)
            self.request("DELETE", path, body=options)
            return True
        except ApiException as err:
            if err.status == 404:
                return False
            raise

    def patch_model_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        path = resource_path(f"{api.GROUP}/{api.VERSION}", api.KIND, namespace, name, "status")
        self.request(
            "PATCH",
            path,
            body={"status": status},
            content_type="application/merge-patch+json",
        )

    def post_event(
        self, involved: dict[str, Any], event_type: str, reason: str, message: str
    ) -> None:
        meta = involved["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": involved["apiVersion"],
                "kind": involved["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "type": event_type,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": FIELD_MANAGER,
            "reportingInstance": socket.gethostname(),
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self.request("POST", resource_path("v1", "Event", meta["namespace"]), body=event)


def is_transient(err: ApiException) -> bool:
    return err.status in TRANSIENT_STATUSES or err.status == 0


def describe_error(err: ApiException) -> str:
    """The API server's own message for an error (e.g. which permission is missing)."""
    try:
        return json.loads(err.body)["message"]
    except (TypeError, ValueError, KeyError):
        return f"{err.status} {err.reason}"


_kube: Kube | None = None


def configure(qps: float, burst: int) -> Kube:
    """Connect with the in-cluster ServiceAccount, or else $KUBECONFIG / ~/.kube/config."""
    global _kube
    try:
        config.load_incluster_config()
        configuration = client.Configuration.get_default_copy()
    except config.ConfigException:
        configuration = client.Configuration()
        # Read $KUBECONFIG now, not when the kubernetes package was imported.
        config.load_kube_config(
            config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration
        )
    _kube = Kube(client.ApiClient(configuration), RateLimiter(qps, burst))
    return _kube


def kube() -> Kube:
    if _kube is None:
        raise RuntimeError("kube.configure() has not been called")
    return _kube
