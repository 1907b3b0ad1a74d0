"""The activator's API reads and writes (synchronous: run in a thread)."""

from __future__ import annotations

import logging
import urllib.request
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from mlmodel_operator import api
from mlmodel_operator.activator import decisions
from mlmodel_operator.activator.decisions import ModelView
from mlmodel_operator.builders.meta import WOKEN_ANNOTATION
from mlmodel_operator.events import build_event
from mlmodel_operator.kube import Kube

log = logging.getLogger(__name__)
SCRAPE_TIMEOUT = 2.0


def now_rfc3339() -> str:
    # Fractions of a second: the Event's cold-start time is computed from it.
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_rfc3339(text: str) -> datetime:
    return datetime.fromisoformat(text)


class ActivatorKube:
    def __init__(self, kube: Kube, namespaces: list[str], instance: str) -> None:
        self.kube, self.namespaces, self.instance = kube, namespaces, instance

    def _get(self, path: str, query: list[tuple[str, Any]] | None = None) -> Any:
        try:
            return self.kube.request("GET", path, query=query)
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def _models(self) -> list[dict[str, Any]]:
        base = f"/apis/{api.GROUP}/{api.VERSION}"
        if not self.namespaces:
            return self._get(f"{base}/{api.PLURAL}")["items"]
        items: list[dict[str, Any]] = []
        for namespace in self.namespaces:
            items += self._get(f"{base}/namespaces/{namespace}/{api.PLURAL}")["items"]
        return items

    def views(self) -> list[ModelView]:
        """Every model with min_replicas 0, as it is now."""
        return [self._view(m) for m in self._models() if decisions.scales_to_zero(m)]

    def _view(self, model: dict[str, Any]) -> ModelView:
        meta = model["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        scaling = model["spec"]["autoscaling"]
        ns_path = f"/namespaces/{namespace}"
        autoscaler = None
        if self._get(f"/apis/autoscaling/v2{ns_path}/horizontalpodautoscalers/{name}"):
            autoscaler = "hpa"
        elif self._get(f"/apis/autoscaling/v2{ns_path}/horizontalpodautoscalers/keda-hpa-{name}"):
            autoscaler = "keda"
        deployment = self._get(f"/apis/apps/v1{ns_path}/deployments/{name}")
        service = self._get(f"/api/v1{ns_path}/services/{name}")
        selector = (model.get("status") or {}).get("selector")
        pods = (
            self._get(f"/api/v1{ns_path}/pods", [("labelSelector", selector)])["items"]
            if selector and deployment
            else []
        )
        serving, metrics = decisions.ready_targets(pods)
        slices = self._get(
            f"/apis/discovery.k8s.io/v1{ns_path}/endpointslices",
            [("labelSelector", f"{decisions.SERVICE_NAME_LABEL}={name}")],
        )
        annotations = (deployment or {}).get("metadata", {}).get("annotations") or {}
        return ModelView(
            namespace=namespace,
            name=name,
            scale_down_delay=scaling.get("scale_down_delay_seconds", 300),
            cold_start_timeout=scaling.get("cold_start_timeout_seconds", 120),
            autoscaler=autoscaler if deployment else None,
            replicas=(deployment or {}).get("spec", {}).get("replicas", 1) if deployment else -1,
            ready_targets=serving,
            metrics_targets=metrics,
            failure=decisions.start_failure(pods),
            waiting=decisions.waiting_for(pods),
            woken_at=annotations.get(WOKEN_ANNOTATION),
            uid=meta.get("uid", ""),
            service_uid=(service or {}).get("metadata", {}).get("uid"),
            service_serving=decisions.service_serving((slices or {}).get("items") or []),
            api_version=model.get("apiVersion", f"{api.GROUP}/{api.VERSION}"),
        )

    def existing_slices(self) -> dict[tuple[str, str], int]:
        """The ports of the slices an earlier activator left (kept across restarts, so that
        kube-proxy's rules change only in the address)."""
        query = [("labelSelector", f"{decisions.MANAGED_BY_LABEL}={decisions.SLICE_MANAGER}")]
        paths = [f"/namespaces/{n}" for n in self.namespaces] if self.namespaces else [""]
        found: dict[tuple[str, str], int] = {}
        for prefix in paths:
            listed = self._get(f"/apis/discovery.k8s.io/v1{prefix}/endpointslices", query)
            for item in (listed or {}).get("items") or []:
                model = item["metadata"]["labels"][decisions.SERVICE_NAME_LABEL]
                ports = item.get("ports") or []
                if ports:
                    found[(item["metadata"]["namespace"], model)] = ports[0]["port"]
        return found

    def apply_slice(self, view: ModelView, ip: str, port: int) -> None:
        self.kube.apply(
            decisions.endpoint_slice(view, ip, port), field_manager=decisions.SLICE_MANAGER
        )

    def delete_slice(self, view: ModelView) -> bool:
        path = (
            f"/apis/discovery.k8s.io/v1/namespaces/{view.namespace}/endpointslices/"
            f"{decisions.slice_name(view.name)}"
        )
        try:
            self.kube.request("DELETE", path)
            return True
        except ApiException as err:
            if err.status == 404:
                return False
            raise

    def _patch_deployment(self, view: ModelView, body: dict[str, Any]) -> None:
        path = f"/apis/apps/v1/namespaces/{view.namespace}/deployments/{view.name}"
        self.kube.merge_patch(path, body)

    def wake(self, view: ModelView) -> str:
        stamp = now_rfc3339()
        self._patch_deployment(view, decisions.wake_patch(stamp, WOKEN_ANNOTATION))
        log.info("woke %s/%s", view.namespace, view.name)
        return stamp

    def woken(self, view: ModelView, held: int) -> float:
        """The wake is over: the mark removed and an Event with the cold-start time; its seconds."""
        assert view.woken_at is not None
        seconds = (datetime.now(UTC) - parse_rfc3339(view.woken_at)).total_seconds()
        self._patch_deployment(view, decisions.woken_patch(WOKEN_ANNOTATION))
        event = build_event(
            view.involved(), "Normal", "Woken", decisions.wake_message(seconds, held),
            datetime.now(UTC), self.instance,
        )  # fmt: skip
        self.kube.create(f"/api/v1/namespaces/{view.namespace}/events", event)
        return seconds

    def to_zero(self, view: ModelView) -> None:
        self._patch_deployment(view, {"spec": {"replicas": 0}})
        log.info("scaled idle %s/%s to zero", view.namespace, view.name)


def scrape(target: str) -> str | None:
    """A sidecar's metrics; None if it cannot be read now."""
    try:
        with urllib.request.urlopen(f"http://{target}/metrics", timeout=SCRAPE_TIMEOUT) as resp:
            return resp.read().decode()
    except OSError:
        return None
