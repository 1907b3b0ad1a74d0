"""MLModelDeployments through the real API server, for the tests that run the operator."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from kube_helpers import TestCluster, wait_until

GROUP, VERSION, PLURAL = "machine-learning.org", "v1", "mlmodeldeployments"
NAME = "predictive-analytics-system"


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    conditions = obj.get("status", {}).get("conditions", [])
    return next((c for c in conditions if c["type"] == type_), {})


class Models:
    """MLModelDeployments in one namespace, through the real API server."""

    def __init__(self, cluster: TestCluster, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(cluster.api)
        self.apps = client.AppsV1Api(cluster.api)
        self.core = client.CoreV1Api(cluster.api)
        self.namespace = namespace

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, body
        )

    def get(self, name: str = NAME) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name
        )

    def patch_spec(self, spec: dict[str, Any], name: str = NAME) -> dict[str, Any]:
        return self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, {"spec": spec}
        )

    def wait_ready(self, name: str = NAME, timeout: float = 60) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            obj = self.get(name)
            current = (
                obj.get("status", {}).get("observedGeneration") == obj["metadata"]["generation"]
            )
            return obj if current and condition(obj, "Ready").get("status") == "True" else None

        return wait_until(ready, what=f"{name} to be Ready", timeout=timeout)

    def wait_condition(
        self, type_: str, *, name: str = NAME, status: str | None = None, reason: str | None = None
    ) -> dict[str, Any]:
        """The resource, once its `type_` condition has this status and/or reason."""

        def matches() -> dict[str, Any] | None:
            obj = self.get(name)
            cond = condition(obj, type_)
            wanted = (status is None or cond.get("status") == status) and (
                reason is None or cond.get("reason") == reason
            )
            return obj if cond and wanted else None

        return wait_until(matches, what=f"{name}: {type_} status={status} reason={reason}")

    def deployment(self, name: str = NAME) -> client.V1Deployment:
        return self.apps.read_namespaced_deployment(name, self.namespace)

    def events(self, name: str = NAME) -> list[str]:
        events = self.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={name}"
        ).items
        return [e.reason for e in sorted(events, key=lambda e: e.metadata.creation_timestamp)]

    def event_counts(self, name: str = NAME) -> dict[str, int]:
        """How often each reason was reported: a repeated reason updates its Event's count."""
        counts: dict[str, int] = {}
        for event in self.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={name}"
        ).items:
            counts[event.reason] = counts.get(event.reason, 0) + (event.count or 1)
        return counts


def reconciles_run() -> float:
    """Reconciles the in-process operator has finished, by its own metric."""
    from mlmodel_operator import metrics

    return sum(
        sample.value
        for metric in metrics.RECONCILES.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


def wait_for_reconciles(count: int) -> None:
    """Until the in-process operator has finished `count` more reconciles (resyncs included)."""
    target = reconciles_run() + count
    wait_until(lambda: reconciles_run() >= target, what=f"{count} more reconciles")


def canary_manifest(name: str, version: str, replicas: int = 2) -> dict[str, Any]:
    """A custom-image model with a two-step canary judged every 5 s: without Prometheus, each
    new version pauses at its first step on an Inconclusive verdict."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MLModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model_type": "custom",
            "image": "registry.example/iris-server:1",
            "port": 8080,
            "model_version": version,
            "replicas": replicas,
            "monitoring": {"performance_tracking": "enabled", "drift_detection": "active"},
            "rollout": {
                "strategy": "canary",
                "steps": [50, 100],
                "analysis": {"interval_seconds": 5, "min_requests": 10},
            },
        },
    }


def paused_canary(models: Models, name: str) -> None:
    """v1 Ready, then v2's canary paused at its first step (the operator has no Prometheus)."""
    models.create(canary_manifest(name, "v1"))
    models.wait_ready(name)
    models.patch_spec({"model_version": "v2"}, name)
    wait_until(
        lambda: (models.get(name).get("status", {}).get("rollout") or {}).get("phase") == "Paused",
        what="the canary to pause at its first step",
    )
