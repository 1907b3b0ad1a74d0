"""Scale to zero on the real node, without KEDA: the activator from the chart holds requests
to a model at zero, wakes it and forwards them once a replica is ready; an idle model goes back
to zero; a request held past the cold-start timeout, or for a model that cannot start, gets a 503
that says why."""

from __future__ import annotations

import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from kube_helpers import TestCluster, wait_until
from model_helpers import Models, condition
from realnode_helpers import (
    IRIS,
    InstalledOperator,
    client_pod_result,
    create_model,
    train_iris,
)

pytestmark = pytest.mark.timeout(1800)
CONCURRENT = 20
INFER = {"inputs": [{"name": "x", "shape": [3, 4], "datatype": "FP64", "data": IRIS}]}


@pytest.fixture
def models(in_cluster_operator: InstalledOperator, cluster: TestCluster) -> Models:
    return Models(cluster, in_cluster_operator.models)


def to_zero_spec(claim: str, path: str, **scaling: Any) -> dict[str, Any]:
    """An MLServer model that starts at zero (replicas 0 within min_replicas 0)."""
    return {
        "model_type": "sklearn",
        "model_uri": f"pvc://{claim}/{path}",
        "replicas": 0,
        "computational_resources": {"memory_requirements": "1Gi", "cpu": "100m"},
        "monitoring": {"performance_tracking": "enabled"},
        "autoscaling": {
            "min_replicas": 0,
            "max_replicas": 2,
            "metric": "concurrency",
            "target": 4,
            "scale_down_delay_seconds": 20,
            **scaling,
        },
    }


def at_zero(models: Models, name: str) -> dict[str, Any]:
    def zero() -> dict[str, Any] | None:
        obj = models.get(name)
        ready = condition(obj, "Ready")
        scaled = models.deployment(name).spec.replicas == 0
        return obj if scaled and ready.get("reason") == "ScaledToZero" else None

    return wait_until(zero, what=f"{name} at zero and ScaledToZero", timeout=300)


def activator_metrics_url(cluster: TestCluster, installed: InstalledOperator) -> str | None:
    """The metrics URL of the activator's one live pod (None while there is not exactly one)."""
    pods = [
        p
        for p in client.CoreV1Api(cluster.api)
        .list_namespaced_pod(
            installed.namespace, label_selector="app.kubernetes.io/name=mlmodel-activator"
        )
        .items
        if p.metadata.deletion_timestamp is None and p.status.pod_ip
    ]
    return f"http://{pods[0].status.pod_ip}:9090/metrics" if len(pods) == 1 else None


def concurrent_calls(
    cluster: TestCluster, namespace: str, image: str, url: str, n: int, metrics: list[str]
) -> dict[str, Any]:
    """POST INFER to `url` n times at once from a pod on the node (cluster DNS and the Service, as
    any client in the cluster); each answer's status, Retry-After and body, then `metrics`."""
    script = (
        "import json, time, urllib.request, urllib.error\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        f"url, body, n = {url!r}, {json.dumps(INFER)!r}.encode(), {n}\n"
        "def call(_):\n"
        "    start = time.monotonic()\n"
        "    req = urllib.request.Request(url, body, {'Content-Type': 'application/json'})\n"
        "    try:\n"
        "        with urllib.request.urlopen(req, timeout=600) as resp:\n"
        "            status, headers, text = resp.status, resp.headers, resp.read().decode()\n"
        "    except urllib.error.HTTPError as err:\n"
        "        status, headers, text = err.code, err.headers, err.read().decode()\n"
        "    except OSError as err:\n"  # no HTTP answer: the connection failed or was closed
        "        status, headers, text = None, {}, repr(err)\n"
        "    return {'status': status, 'retry_after': headers.get('Retry-After'),\n"
        "            'body': text, 'seconds': time.monotonic() - start}\n"
        "with ThreadPoolExecutor(n) as pool:\n"
        "    results = list(pool.map(call, range(n)))\n"
        f"metrics = [urllib.request.urlopen(u, timeout=30).read().decode() for u in {metrics!r}]\n"
        "print(json.dumps({'results': results, 'metrics': metrics}))\n"
    )
    return client_pod_result(cluster, namespace, image, script)


def samples(metrics: str, name: str, model: str) -> dict[tuple[str, ...], float]:
    return {
        tuple(f"{k}={v}" for k, v in sorted(s.labels.items()) if k not in ("model", "namespace")):
        s.value
        for family in text_string_to_metric_families(metrics)
        for s in family.samples
        if s.name == name and s.labels.get("model") == model
    }  # fmt: skip


def test_a_model_at_zero_wakes_on_requests_answers_them_all_and_goes_back_to_zero(
    cluster: TestCluster,
    models: Models,
    images: dict[str, str],
    model_claim: str,
    in_cluster_operator: InstalledOperator,
) -> None:
    name = "iris-zero"
    train_iris(cluster, models.namespace, model_claim, images["mlserver"], name)
    create_model(models, name, to_zero_spec(model_claim, name))
    obj = at_zero(models, name)
    assert obj["status"]["ready"] == "0/0"
    # Without KEDA: the operator's HPA, from one replica up; the activator owns zero.
    hpa = client.AutoscalingV2Api(cluster.api).read_namespaced_horizontal_pod_autoscaler(
        name, models.namespace
    )
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (1, 2)

    url = f"http://{name}.{models.namespace}.svc.cluster.local/v2/models/{name}/infer"
    sidecar = f"http://{name}.{models.namespace}.svc.cluster.local:9090/metrics"
    activator = activator_metrics_url(cluster, in_cluster_operator)
    assert activator is not None
    result = concurrent_calls(
        cluster, models.namespace, images["operator"], url, CONCURRENT, [activator, sidecar]
    )
    statuses = [r["status"] for r in result["results"]]
    assert statuses == [200] * CONCURRENT, result["results"]
    for r in result["results"]:
        assert json.loads(r["body"])["outputs"][0]["data"] == [0, 1, 2]
    # The metrics add up: every request reached the activator and was forwarded once, and the
    # woken replica's sidecar counted each of them.
    activator_counts = samples(result["metrics"][0], "mlmodel_activator_requests_total", name)
    assert activator_counts == {("outcome=forwarded",): CONCURRENT}
    wakes = samples(result["metrics"][0], "mlmodel_activator_wakes_total", name)
    assert wakes == {(): 1}
    sidecar_2xx = sum(
        v
        for labels, v in samples(result["metrics"][1], "mlmodel_requests_total", name).items()
        if "status_class=2xx" in labels
    )
    assert sidecar_2xx == CONCURRENT

    # One Event for the wake, with its cold-start time; the status no longer says Waking.
    woken = wait_until(
        lambda: [
            e
            for e in models.core.list_namespaced_event(
                models.namespace, field_selector=f"involvedObject.name={name}"
            ).items
            if e.reason == "Woken"
        ],
        what="the Woken event",
    )
    assert "woke from zero in" in woken[0].message
    assert woken[0].involved_object.kind == "MLModelDeployment"
    obj = models.wait_ready(name, timeout=120)
    assert obj["status"].get("wakingSince") is None
    assert condition(obj, "Ready")["reason"] == "ModelServing"

    # Idle for scale_down_delay_seconds: back to zero, and the Service points at the activator.
    at_zero(models, name)
    activator_ip = activator.split("//")[1].split(":")[0]

    def activator_slice() -> list[str] | None:
        slices = client.DiscoveryV1Api(cluster.api).list_namespaced_endpoint_slice(
            models.namespace, label_selector=f"kubernetes.io/service-name={name}"
        )
        ours = [s for s in slices.items if s.metadata.name == f"{name}-activator"]
        return ours[0].endpoints[0].addresses if ours else None

    assert wait_until(activator_slice, what="the activator's slice again") == [activator_ip]


def calls_at_zero(
    cluster: TestCluster, models: Models, image: str, name: str, spec: dict[str, Any], path: str
) -> list[dict[str, Any]]:
    """Create the model, wait until it is at zero, and call it twice at once."""
    create_model(models, name, spec)
    at_zero(models, name)
    url = f"http://{name}.{models.namespace}.svc.cluster.local{path}"
    return concurrent_calls(cluster, models.namespace, image, url, 2, [])["results"]


def test_a_request_held_past_the_cold_start_timeout_gets_503_with_retry_after(
    cluster: TestCluster,
    models: Models,
    images: dict[str, str],
    model_claim: str,
) -> None:
    name = "iris-nowhere"
    spec = to_zero_spec(model_claim, name, cold_start_timeout_seconds=3)
    # No node has this much memory: the woken pod waits for capacity, past the timeout.
    spec["computational_resources"] = {"memory_requirements": "64Ti", "cpu": "100m"}
    path = f"/v2/models/{name}/infer"
    for r in calls_at_zero(cluster, models, images["operator"], name, spec, path):
        assert r["status"] == 503, r
        assert int(r["retry_after"]) >= 1
        error = json.loads(r["body"])["error"]
        assert "cold_start_timeout_seconds (3 s)" in error
        assert "no node can take the pod" in error
    # The wake happened: the status says what the model waits for.
    models.wait_condition("Ready", name=name, reason="Unschedulable")


def test_held_requests_of_a_model_that_cannot_start_get_an_error_naming_the_reason(
    cluster: TestCluster,
    models: Models,
    images: dict[str, str],
    model_claim: str,
) -> None:
    name = "broken-zero"
    spec = to_zero_spec(model_claim, name, cold_start_timeout_seconds=600)
    # An image the node does not have and cannot pull (there is no registry).
    spec.update({"model_type": "custom", "image": "localhost/mlmodel-missing:1.0", "port": 8080})
    for r in calls_at_zero(cluster, models, images["operator"], name, spec, "/predict"):
        assert r["status"] == 503, r
        error = json.loads(r["body"])["error"]
        assert f"model {name} cannot start" in error
        assert "ErrImagePull" in error or "ImagePullBackOff" in error
        assert r["retry_after"] is not None
    # The status names it too.
    wait_until(
        lambda: (
            models.get(name)["status"]["phase"] == "Failed"
            and condition(models.get(name), "Ready")["reason"]
            in ("ErrImagePull", "ImagePullBackOff")
        ),
        what=f"{name} Failed with the image pull's reason",
    )


def test_the_activator_restarting_while_it_holds_requests_closes_them_and_its_successor_takes_over(
    cluster: TestCluster,
    models: Models,
    images: dict[str, str],
    model_claim: str,
    in_cluster_operator: InstalledOperator,
) -> None:
    name = "iris-held"
    spec = to_zero_spec(model_claim, name, cold_start_timeout_seconds=600)
    # Never ready (no node can take it): the requests stay held until the activator goes.
    spec["computational_resources"] = {"memory_requirements": "64Ti", "cpu": "100m"}
    create_model(models, name, spec)
    at_zero(models, name)
    metrics = activator_metrics_url(cluster, in_cluster_operator)
    assert metrics is not None
    url = f"http://{name}.{models.namespace}.svc.cluster.local/v2/models/{name}/infer"
    with ThreadPoolExecutor(1) as pool:
        calls = pool.submit(
            concurrent_calls, cluster, models.namespace, images["operator"], url, 2, []
        )

        def held() -> bool:
            text = urllib.request.urlopen(metrics, timeout=10).read().decode()
            return samples(text, "mlmodel_activator_held_requests", name).get(()) == 2

        wait_until(held, what="the activator holding both requests", timeout=180)
        core = client.CoreV1Api(cluster.api)
        (pod,) = core.list_namespaced_pod(
            in_cluster_operator.namespace, label_selector="app.kubernetes.io/name=mlmodel-activator"
        ).items
        core.delete_namespaced_pod(pod.metadata.name, in_cluster_operator.namespace)
        results = calls.result(timeout=300)["results"]
    # What the clients see: the connection closed without an answer (no status, no hang).
    for r in results:
        assert r["status"] is None, r
        assert "closed" in r["body"] or "reset" in r["body"].lower(), r
    # The new activator points the model's Service at itself and holds requests again.
    new_url = wait_until(
        lambda: (u := activator_metrics_url(cluster, in_cluster_operator)) != metrics and u,
        what="a new activator pod",
        timeout=180,
    )
    new_ip = new_url.split("//")[1].split(":")[0]

    def slice_address() -> list[str] | None:
        found = (
            client.DiscoveryV1Api(cluster.api)
            .list_namespaced_endpoint_slice(
                models.namespace, field_selector=f"metadata.name={name}-activator"
            )
            .items
        )
        return found[0].endpoints[0].addresses if found else None

    wait_until(
        lambda: slice_address() == [new_ip], what="the slice at the new activator", timeout=180
    )
