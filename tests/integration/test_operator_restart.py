"""An operator restarted reads every child into its cache before it reconciles: for models that
did not change it sends nothing, and what changed while it was down (a child deleted by hand, a
new spec) it puts right."""

from __future__ import annotations

import os
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from cases import REPO, manifest
from kube_helpers import TestCluster, wait_until
from procs import Server, free_port

GROUP, VERSION, PLURAL = "machine-learning.org", "v1", "mlmodeldeployments"
MODELS = ("first", "second")


class Operator:
    """The operator in its own process, watching one namespace; its own metrics say what it
    did (other operators on the cluster do not count there)."""

    def __init__(self, cluster: TestCluster, namespace: str, log: Path) -> None:
        self.port = free_port()
        self.server = Server(
            [
                str(REPO / ".venv" / "bin" / "mlmodel-operator"),
                f"--namespaces={namespace}",
                f"--metrics-port={self.port}",
                "--health-port=0",
            ],
            log,
            env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
        ).start()
        self.server.wait_for(f"http://127.0.0.1:{self.port}/metrics")

    def total(self, metric: str) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            text = r.read().decode()
        return sum(float(v) for v in re.findall(rf"^{metric}(?:\{{[^}}]*\}})? (\S+)$", text, re.M))

    def stop(self) -> None:
        self.server.close()


@pytest.fixture
def start_operator(cluster: TestCluster, crd: str, namespace: str, tmp_path: Path) -> Iterator[Any]:
    started: list[Operator] = []

    def start() -> Operator:
        operator = Operator(cluster, namespace, tmp_path / f"operator-{len(started)}.log")
        started.append(operator)
        return operator

    yield start
    for operator in started:
        operator.stop()


def ready_at_generation(custom: client.CustomObjectsApi, namespace: str, name: str) -> bool:
    """Ready at the latest generation, and the Deployment's own Available condition (which the
    status mirrors, and which may follow the replica counts a moment later) True too."""
    obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    status = obj.get("status", {})
    conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
    current = status.get("observedGeneration") == obj["metadata"]["generation"]
    return current and conditions.get("Ready") == conditions.get("Available") == "True"


def test_restart_sends_nothing_for_unchanged_models_and_repairs_what_changed(
    cluster: TestCluster, namespace: str, start_operator: Any
) -> None:
    custom = client.CustomObjectsApi(cluster.api)
    core = client.CoreV1Api(cluster.api)
    apps = client.AppsV1Api(cluster.api)
    for name in MODELS:
        body = manifest(name, model_type="sklearn", model_version="v1")
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    first = start_operator()
    for name in MODELS:
        wait_until(lambda name=name: ready_at_generation(custom, namespace, name), what=name)
    first.stop()

    # Restarted with nothing changed: every model reconciled from a full cache, nothing sent.
    second = start_operator()
    wait_until(
        lambda: second.total("mlmodel_operator_reconciles_total") >= len(MODELS),
        what="the restarted operator to reconcile every model",
    )
    assert second.total("mlmodel_operator_api_writes_total") == 0
    second.stop()

    # While it is down: a child deleted by hand, and a new spec.
    core.delete_namespaced_config_map("first-monitor", namespace)
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "second", {"spec": {"replicas": 2}}
    )
    third = start_operator()
    wait_until(
        lambda: core.read_namespaced_config_map("first-monitor", namespace),
        what="the deleted ConfigMap to be restored",
    )
    wait_until(
        lambda: ready_at_generation(custom, namespace, "second"),
        what="the new spec to be served",
    )
    assert apps.read_namespaced_deployment("second", namespace).spec.replicas == 2
    assert third.total("mlmodel_operator_api_writes_total") > 0
