"""The only module that talks to the API server: a transport and generic verbs.

Server-side apply (field manager `mlmodel-operator`, force), create, merge patch, status patch
and delete; GET only where the reconcile needs fresh data (after a conflict, or for peering).
An optional client-side rate limit, off by default. Calls are synchronous: they run in the
reconcile threads, never in kopf's event loop.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from mlmodel_operator import api, metrics
from mlmodel_operator.builders import ObjectRef

FIELD_MANAGER = "mlmodel-operator"
REQUEST_TIMEOUT = 30
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
    "HTTPRoute": "httproutes",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    "EndpointSlice": "endpointslices",
    "ScaledObject": "scaledobjects",
    "InferencePool": "inferencepools",
    "ServiceAccount": "serviceaccounts",
    "Role": "roles",
    "RoleBinding": "rolebindings",
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
    limiter: RateLimiter | None = None

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, Any]] | None = None,
        content_type: str = "application/json",
    ) -> Any:
        if self.limiter is not None:
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

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", resource_path(api_version, kind, namespace, name))
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def apply(
        self, obj: dict[str, Any], field_manager: str = FIELD_MANAGER, force: bool = True
    ) -> dict[str, Any]:
        """Server-side apply `obj` (always sent: the caller decides whether it is needed)."""
        meta = obj["metadata"]
        path = resource_path(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
        applied = self.request(
            "PATCH",
            path,
            body=yaml_body(obj),
            query=[("fieldManager", field_manager), ("force", "true" if force else "false")],
            content_type="application/apply-patch+yaml",
        )
        log.info("applied %s %s/%s", obj["kind"], meta["namespace"], meta["name"])
        return applied

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("POST", path, body=body)

    def merge_patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("PATCH", path, body=body, content_type="application/merge-patch+json")

    def delete(self, ref: ObjectRef, uid: str, resource_version: str) -> bool:
        """Delete the object if it is still the one with this uid, unchanged since
        `resource_version`; whether anything was deleted. Otherwise the API server refuses (409):
        a user's object that took the name in between is never deleted."""
        options = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "preconditions": {"uid": uid, "resourceVersion": resource_version},
        }
        try:
            path = resource_path(ref.api_version, ref.kind, ref.namespace, ref.name)
            self.request("DELETE", path, body=options)
            return True
        except ApiException as err:
            if err.status == 404:
                return False
            raise

    def remove_model_annotation(self, namespace: str, name: str, key: str, value: str) -> dict:
        """Remove an annotation of the MLModelDeployment if it still has `value`: a JSON patch
        whose test fails (422) when someone set it again since it was read."""
        path = resource_path(f"{api.GROUP}/{api.VERSION}", api.KIND, namespace, name)
        pointer = "/metadata/annotations/" + key.replace("~", "~0").replace("/", "~1")
        body = [{"op": "test", "path": pointer, "value": value}, {"op": "remove", "path": pointer}]
        return self.request("PATCH", path, body=body, content_type="application/json-patch+json")

    def patch_model_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str
    ) -> dict[str, Any]:
        """Write the status of the MLModelDeployment as it was at `resource_version`: 409 if it
        changed since (the status was computed from an older spec)."""
        path = resource_path(f"{api.GROUP}/{api.VERSION}", api.KIND, namespace, name, "status")
        body = {"metadata": {"resourceVersion": resource_version}, "status": status}
        return self.merge_patch(path, body)


def is_transient(err: ApiException) -> bool:
    return err.status in TRANSIENT_STATUSES or err.status == 0


def retry_after(err: ApiException) -> float | None:
    """The seconds the API server asked the client to wait (429 from API Priority and Fairness,
    503), if it said."""
    value = (err.headers or {}).get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: rare from the API server; the backoff applies


def describe_error(err: ApiException) -> str:
    """The API server's own message for an error (e.g. which permission is missing)."""
    try:
        return json.loads(err.body)["message"]
    except (TypeError, ValueError, KeyError):
        return f"{err.status} {err.reason}"


def configure(qps: float = 0, burst: int = 0) -> Kube:
    """Connect with the in-cluster ServiceAccount, or else $KUBECONFIG / ~/.kube/config.
    `qps` 0 sends requests as they come; otherwise at most `qps` a second, `burst` at once
    (0: as many as `qps`)."""
    try:
        config.load_incluster_config()
        configuration = client.Configuration.get_default_copy()
    except config.ConfigException:
        configuration = client.Configuration()
        # Read $KUBECONFIG now, not when the kubernetes package was imported.
        config.load_kube_config(
            config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration
        )
    # One connection per reconcile thread, and some for the resync and Events.
    configuration.connection_pool_maxsize = 32
    limiter = RateLimiter(qps, burst or max(1, round(qps))) if qps > 0 else None
    return Kube(client.ApiClient(configuration), limiter)
