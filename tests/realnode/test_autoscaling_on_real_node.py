"""Autoscaling for real, on the real node: KEDA (its operator and metrics server, built from its
Go module, see keda_procs.py) takes the ScaledObject the operator makes, reads the sidecars'
requests in flight from a real Prometheus that finds the model pods through the API server, and
the real HorizontalPodAutoscaler controller scales the model on that metric, through the API
server's aggregation layer. The load is real too: clients in a pod, calling the model's Service,
whose MLServer runtime takes its time over each request so that requests stay in flight."""

from __future__ import annotations

import contextlib
import json
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.utils import parse_quantity

from keda_procs import KEDA_GROUP, KEDA_VERSION, SCALED_OBJECTS, Keda, keda
from kube_helpers import TestCluster, wait_until
from model_helpers import Models, condition
from prometheus_procs import Prometheus, prometheus
from realnode_helpers import (
    OPERATOR_UID,
    InstalledOperator,
    client_pod_result,
    create_model,
    install_chart,
    new_installation,
    realnode,
    restricted_pod,
    uninstall_chart,
    wait_for_pod_phase,
)

pytestmark = pytest.mark.timeout(1800)
# The model's replicas scale on requests in flight: TARGET per replica, CLIENTS calling at once.
TARGET = 2
CLIENTS = 8
MAX_REPLICAS = 3
SECONDS_PER_REQUEST = 3
SCALE_TIMEOUT = 300
BODY = {
    "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [5.1, 3.5, 1.4, 0.2]}]
}

# MLServer's own way of serving a model of your code: a runtime class beside model-settings.json
# in the model's folder (MLServer puts the folder on sys.path).
SLOW_RUNTIME = '''\
"""An MLServer runtime that takes its time: each inference waits, then answers."""
import asyncio

from mlserver import MLModel
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput


class SlowModel(MLModel):
    async def load(self) -> bool:
        self.seconds = float(self.settings.parameters.extra["seconds"])
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        await asyncio.sleep(self.seconds)
        output = ResponseOutput(name="slept", shape=[1], datatype="FP64", data=[self.seconds])
        return InferenceResponse(model_name=self.name, outputs=[output])
'''


def model_pods(cluster: TestCluster) -> dict[str, dict[str, str]]:
    """Every running model pod's sidecar metrics address -> its target labels, as a PodMonitor
    on the model pods would give them (Debian's Prometheus is built without Kubernetes service
    discovery, so this plays it: the same pods, from the same API)."""
    pods = client.CoreV1Api(cluster.api).list_pod_for_all_namespaces(
        label_selector="app.kubernetes.io/managed-by=mlmodel-operator"
    )
    return {
        f"{pod.status.pod_ip}:{port.container_port}": {
            "namespace": pod.metadata.namespace,
            "pod": pod.metadata.name,
        }
        for pod in pods.items
        if pod.status.pod_ip and pod.metadata.deletion_timestamp is None
        for container in pod.spec.containers
        for port in container.ports or []
        if port.name == "metrics"
    }


@pytest.fixture(scope="module")
def prom(
    cluster: TestCluster, real_node_cluster_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    """Prometheus on this host, scraping every model pod's sidecar by the pod's address (on
    the real node's bridge, reachable from here), the pods looked up every second."""
    stop = threading.Event()
    with prometheus(tmp_path_factory.mktemp("prometheus")) as p:

        def discover() -> None:
            while not stop.wait(1.0):
                with contextlib.suppress(Exception):  # the API server busy: next second
                    p.set_pods(model_pods(cluster))

        thread = threading.Thread(target=discover, daemon=True)
        thread.start()
        try:
            yield p
        finally:
            stop.set()
            thread.join()


@pytest.fixture(scope="module")
def running_keda(
    cluster: TestCluster, real_node_cluster_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Keda]:
    with keda(cluster, tmp_path_factory.mktemp("keda"), realnode.NODE_IP) as running:
        yield running


@pytest.fixture(scope="module")
def in_cluster_operator(
    cluster: TestCluster,
    images: dict[str, str],
    crd: str,
    running_keda: Keda,
    prom: Prometheus,
) -> Iterator[InstalledOperator]:
    """The chart, installed after KEDA (the operator then makes ScaledObjects), with the
    Prometheus that KEDA's triggers query."""
    installed = new_installation(cluster)
    catalog: dict[str, Any] = {"mlserver": {"image": images["mlserver"]}}
    install_chart(
        cluster, installed, images["operator"], catalog, "180s", {"prometheusUrl": prom.url}
    )
    yield installed
    uninstall_chart(cluster, installed)


@pytest.fixture
def models(in_cluster_operator: InstalledOperator, cluster: TestCluster) -> Models:
    return Models(cluster, in_cluster_operator.models)


def slow_model(real_node_cluster_dir: Path, namespace: str, name: str) -> None:
    """The slow runtime and its settings in the claim's folder `name` (a directory of this
    host: the claim is bound to it)."""
    folder = real_node_cluster_dir / "models" / namespace / name
    folder.mkdir(mode=0o755)
    (folder / "slow_model.py").write_text(SLOW_RUNTIME)
    settings = {
        "name": name,
        "implementation": "slow_model.SlowModel",
        "parameters": {"extra": {"seconds": SECONDS_PER_REQUEST}},
    }
    (folder / "model-settings.json").write_text(json.dumps(settings))
    for path in folder.iterdir():
        path.chmod(0o644)


def spec(claim: str, name: str, **scaling: Any) -> dict[str, Any]:
    return {
        "model_type": "sklearn",
        "model_uri": f"pvc://{claim}/{name}",
        "computational_resources": {"memory_requirements": "1Gi", "cpu": "100m"},
        "monitoring": {"performance_tracking": "enabled"},
        "autoscaling": {
            "metric": "concurrency",
            "target": TARGET,
            "max_replicas": MAX_REPLICAS,
            "scale_down_delay_seconds": 15,
            **scaling,
        },
    }


def events(models: Models, name: str, reason: str) -> list[client.CoreV1Event]:
    """The Events about objects named `name` (the model, its ScaledObject) with `reason`."""
    return [
        e
        for e in models.core.list_namespaced_event(
            models.namespace, field_selector=f"involvedObject.name={name}"
        ).items
        if e.reason == reason
    ]


def infer_url(models: Models, name: str) -> str:
    return f"http://{name}.{models.namespace}.svc.cluster.local/v2/models/{name}/infer"


def start_load(cluster: TestCluster, namespace: str, image: str, url: str) -> str:
    """A pod whose CLIENTS threads call `url` one request after another until the pod is
    deleted, printing each answer's status; its name."""
    script = (
        "import json, sys, threading, time, urllib.error, urllib.request\n"
        "lock = threading.Lock()\n"
        f"url, body = {url!r}, {json.dumps(BODY)!r}.encode()\n"
        "def loop():\n"
        "    while True:\n"
        "        req = urllib.request.Request(url, body, {'Content-Type': 'application/json'})\n"
        "        try:\n"
        "            with urllib.request.urlopen(req, timeout=120) as resp:\n"
        "                resp.read()\n"
        "                status = resp.status\n"
        "        except urllib.error.HTTPError as err:\n"
        "            status = err.code\n"
        "        except OSError as err:\n"
        "            status = repr(err)\n"
        "        with lock:\n"  # one whole line per answer, whichever thread writes it
        "            sys.stdout.write(json.dumps({'status': status}) + '\\n')\n"
        "            sys.stdout.flush()\n"
        f"for _ in range({CLIENTS}):\n"
        "    threading.Thread(target=loop, daemon=True).start()\n"
        "time.sleep(86400)\n"
    )
    name = f"load-{uuid.uuid4().hex[:6]}"
    pod = restricted_pod(name, image, ["python", "-c", script], uid=OPERATOR_UID)
    client.CoreV1Api(cluster.api).create_namespaced_pod(namespace, pod)
    wait_for_pod_phase(cluster, namespace, name, "Running")
    return name


def stop_load(cluster: TestCluster, namespace: str, name: str) -> Counter:
    """Delete the load's pod, at once; how its requests were answered until then."""
    core = client.CoreV1Api(cluster.api)
    logs = core.read_namespaced_pod_log(name, namespace)
    core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
    wait_until(
        lambda: name not in {p.metadata.name for p in core.list_namespaced_pod(namespace).items},
        what=f"the load's pod {name} to be gone",
    )
    return Counter(json.loads(line)["status"] for line in logs.splitlines() if line)


def keda_hpa(cluster: TestCluster, namespace: str, name: str) -> client.V2HorizontalPodAutoscaler:
    return client.AutoscalingV2Api(cluster.api).read_namespaced_horizontal_pod_autoscaler(
        f"keda-hpa-{name}", namespace
    )


def scaled_object_condition(cluster: TestCluster, namespace: str, name: str, type_: str) -> dict:
    obj = client.CustomObjectsApi(cluster.api).get_namespaced_custom_object(
        KEDA_GROUP, KEDA_VERSION, namespace, SCALED_OBJECTS, name
    )
    return condition(obj, type_)


def at_replicas(models: Models, name: str, count: int) -> dict[str, Any]:
    """The model, once its Deployment asks for `count` replicas, all ready, and its status says
    so."""

    def reached() -> dict[str, Any] | None:
        deployment = models.deployment(name)
        obj = models.get(name)
        status = obj.get("status") or {}
        counted = (
            deployment.spec.replicas == count
            and (deployment.status.ready_replicas or 0) == count
            and (deployment.status.replicas or 0) == count
        )
        mirrored = (
            status.get("replicas") == count
            and status.get("readyReplicas") == count
            and status.get("ready") == f"{count}/{count}"
        )
        return obj if counted and mirrored else None

    return wait_until(reached, what=f"{name} at {count} ready replicas", timeout=SCALE_TIMEOUT)


def scaling_is(models: Models, name: str, reason: str) -> dict[str, Any]:
    """The model's Scaling condition, once its reason is `reason` (KEDA's Active or Idle)."""

    def matches() -> dict[str, Any] | None:
        scaling = condition(models.get(name), "Scaling")
        return scaling if scaling.get("reason") == reason else None

    return wait_until(matches, what=f"{name}'s Scaling condition {reason}", timeout=120)


def test_under_load_keda_and_the_hpa_scale_a_model_out_on_its_requests_in_flight_and_back(
    cluster: TestCluster,
    models: Models,
    images: dict[str, str],
    model_claim: str,
    real_node_cluster_dir: Path,
    prom: Prometheus,
    running_keda: Keda,
) -> None:
    name = "slow-scaled"
    slow_model(real_node_cluster_dir, models.namespace, name)
    create_model(models, name, spec(model_claim, name, min_replicas=1))
    at_replicas(models, name, 1)
    # KEDA took the ScaledObject and made its HPA, which reads the external metrics API.
    hpa = wait_until(
        lambda: keda_hpa(cluster, models.namespace, name),
        what="KEDA's HPA",
        timeout=120,
    )
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (1, MAX_REPLICAS)
    assert hpa.spec.metrics[0].type == "External"
    assert hpa.spec.behavior.scale_down.stabilization_window_seconds == 15
    # Idle: nothing in flight, and the status says what KEDA says.
    selector = f'namespace="{models.namespace}",model="{name}"'
    prom.wait_for(f"count(mlmodel_requests_in_flight{{{selector}}})", what="the sidecar scraped")
    assert scaling_is(models, name, "Idle")["status"] == "True"

    load = start_load(cluster, models.namespace, images["operator"], infer_url(models, name))
    try:
        # CLIENTS requests in flight against TARGET per replica: more than MAX_REPLICAS
        # replicas' worth, so the HPA asks for the most it may have.
        at_replicas(models, name, MAX_REPLICAS)
        # What the HPA computed from: the requests in flight per replica, from KEDA's query.
        hpa = keda_hpa(cluster, models.namespace, name)
        current = hpa.status.current_metrics[0].external.current
        assert parse_quantity(current.average_value) > 0, hpa.status
        assert scaled_object_condition(cluster, models.namespace, name, "Active")["status"] == (
            "True"
        )
        assert scaling_is(models, name, "Active")["status"] == "True"
        # Every replica takes a share: the Service spreads the load over them all.
        wait_until(
            lambda: (
                len(
                    [
                        r
                        for r in prom.query(
                            f'mlmodel_requests_total{{{selector},status_class="2xx"}}'
                        )
                        if float(r["value"][1]) > 0
                    ]
                )
                == MAX_REPLICAS
            ),
            what="each replica's sidecar to count answered requests",
            timeout=120,
        )
    finally:
        answers = stop_load(cluster, models.namespace, load)
    assert answers and set(answers) == {200}, answers

    # The load gone, nothing in flight: back to min_replicas after the stabilization window.
    obj = at_replicas(models, name, 1)
    scaling_is(models, name, "Idle")
    assert obj["status"]["phase"] == "Ready"


def test_with_keda_an_idle_model_goes_to_zero_and_a_request_wakes_it_through_the_activator(
    cluster: TestCluster,
    models: Models,
    images: dict[str, str],
    model_claim: str,
    real_node_cluster_dir: Path,
    running_keda: Keda,
) -> None:
    name = "slow-zero"
    slow_model(real_node_cluster_dir, models.namespace, name)
    create_model(models, name, spec(model_claim, name, min_replicas=0, scale_down_delay_seconds=20))
    # Created at one replica; never active, KEDA (not the activator) takes it to zero at its
    # first poll (no initialCooldownPeriod), whether or not the replica got ready by then.
    wait_until(
        lambda: (
            models.deployment(name).spec.replicas == 0
            and condition(models.get(name), "Ready").get("reason") == "ScaledToZero"
        ),
        what=f"{name} at zero and ScaledToZero",
        timeout=SCALE_TIMEOUT,
    )
    deactivated = events(models, name, "KEDAScaleTargetDeactivated")
    assert deactivated and deactivated[0].involved_object.kind == "ScaledObject"

    # The activator notices the model at zero (it reads KEDA's HPA to know KEDA scales it) and
    # points the Service at itself; until then a client would find no endpoint.
    wait_until(
        lambda: (
            client.DiscoveryV1Api(cluster.api)
            .list_namespaced_endpoint_slice(
                models.namespace, field_selector=f"metadata.name={name}-activator"
            )
            .items
        ),
        what="the activator's slice for the model at zero",
        timeout=120,
    )
    # A request at zero: the activator holds it, wakes the model, and forwards it once a
    # replica is ready.
    script = (
        "import json, urllib.request\n"
        f"url, body = {infer_url(models, name)!r}, {json.dumps(BODY)!r}.encode()\n"
        "req = urllib.request.Request(url, body, {'Content-Type': 'application/json'})\n"
        "with urllib.request.urlopen(req, timeout=300) as resp:\n"
        "    print(json.dumps({'status': resp.status, 'body': json.loads(resp.read())}))\n"
    )
    answer = client_pod_result(cluster, models.namespace, images["operator"], script)
    assert answer["status"] == 200
    assert answer["body"]["outputs"][0]["data"] == [SECONDS_PER_REQUEST]
    woken = wait_until(lambda: events(models, name, "Woken"), what="the Woken event")
    assert "1 request(s) held" in woken[0].message, woken[0].message
    # Idle again: KEDA takes it back to zero.
    wait_until(
        lambda: models.deployment(name).spec.replicas == 0,
        what=f"{name} back at zero",
        timeout=SCALE_TIMEOUT,
    )
