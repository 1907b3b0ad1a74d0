"""The PayloadLogging condition, end to end: the operator on the local control plane with
--prometheus-url pointing at a real Prometheus that scrapes a real `mlmodel-monitor` sidecar
logging payloads to a sink. kwok pods run nothing, so the sidecar process stands in for the
model's pod, labelled as its pod would be (namespace, model)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kube_helpers import TestCluster, wait_until
from model_helpers import Models, condition
from payload_sink import Sink
from prometheus_procs import Prometheus, model_version, prometheus

pytestmark = pytest.mark.integration

NAME = "iris"


@pytest.fixture(scope="module")
def prom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    with prometheus(tmp_path_factory.mktemp("prometheus")) as server:
        yield server


def manifest(sink_url: str) -> dict[str, Any]:
    return {
        "apiVersion": "machine-learning.org/v1",
        "kind": "MLModelDeployment",
        "metadata": {"name": NAME},
        "spec": {
            "model_type": "custom",
            "image": "registry.example/iris-server:1",
            "port": 8080,
            "model_version": "v1",
            "monitoring": {"payload_logging": {"url": sink_url}},
        },
    }


def wait_condition(models: Models, reason: str, timeout: float = 90) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        cond = condition(models.get(NAME), "PayloadLogging")
        return cond if cond.get("reason") == reason else None

    return wait_until(found, what=f"PayloadLogging {reason}", timeout=timeout)


def test_the_condition_follows_the_sidecars_delivery(
    cluster: TestCluster,
    namespace: str,
    prom: Prometheus,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    monkeypatch.setenv("MLMODEL_PROMETHEUS_URL", prom.url)
    request.getfixturevalue("operator")
    models = Models(cluster, namespace)
    sink = Sink()  # not started yet: its port refuses connections
    models.create(manifest(sink.url))
    # No sidecar reports yet: the operator cannot tell.
    assert wait_condition(models, "NotReported")["status"] == "Unknown"

    logging = {"url": sink.url, "batch_size": 1, "max_queued_bytes": 16 * 1024}
    with model_version(
        prom, tmp_path, "v1", namespace=namespace, model=NAME,
        sidecar={"namespace": namespace, "payload_logging": logging},
    ) as pod:  # fmt: skip
        pod.send(20)
        failing = wait_condition(models, "DeliveryFailing")
        assert failing["status"] == "False"
        assert sink.url in failing["message"] and "1 of 1 pod(s)" in failing["message"]
        with sink:
            pod.send(5)
            # Delivering again, but events were lost within the window: not yet True.
            assert wait_condition(models, "EventsDropped")["status"] == "False"
            assert sink.events()


def test_without_prometheus_the_condition_is_unknown(
    cluster: TestCluster, namespace: str, monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:  # fmt: skip
    monkeypatch.delenv("MLMODEL_PROMETHEUS_URL", raising=False)
    request.getfixturevalue("operator")
    models = Models(cluster, namespace)
    models.create(manifest("http://sink.example/events"))
    cond = wait_condition(models, "NoPrometheus")
    assert cond["status"] == "Unknown"
    # The rest of the status is as without payload logging.
    assert condition(models.get(NAME), "MonitoringReady")["status"] == "True"
