"""Canary rollouts, end to end: the operator on the local control plane, with --prometheus-url
pointing at a real Prometheus that scrapes real `mlmodel-monitor` sidecars in front of real
model servers. kwok pods run nothing, so the sidecar processes stand in for the stable and
canary pods, labelled as the pods' would be (namespace, model, version); the test drives their
traffic."""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from kube_helpers import TestCluster, installed_crds, open_crd, wait_until
from model_helpers import Models, condition
from prometheus_procs import ModelVersion, Prometheus, infer_body, model_version, prometheus

pytestmark = pytest.mark.integration

NAME = "iris"
OVERRIDE = "machine-learning.org/rollout"
VERSION_LABEL = "app.kubernetes.io/version"
ROUTE = ("gateway.networking.k8s.io", "v1", "httproutes")


def manifest(version: str, **rollout: Any) -> dict[str, Any]:
    return {
        "apiVersion": "machine-learning.org/v1",
        "kind": "MLModelDeployment",
        "metadata": {"name": NAME},
        "spec": {
            "model_type": "custom",
            "image": "registry.example/iris-server:1",
            "port": 8080,
            "model_version": version,
            "replicas": 4,
            "rollout": {
                "strategy": "canary",
                "steps": [25, 50, 100],
                "analysis": {
                    "interval_seconds": 5,
                    "min_requests": 10,
                    "max_error_ratio": 0.05,
                    "max_p99_latency_seconds": 0.5,
                },
                **rollout,
            },
        },
    }


class Traffic:
    """Requests sent to each version's sidecar until stopped, a few a second each, as the
    Service would spread them."""

    def __init__(self, *versions: ModelVersion, rate: float = 8.0) -> None:
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._drive, args=(v, rate), daemon=True) for v in versions
        ]

    def _drive(self, version: ModelVersion, rate: float) -> None:
        while not self._stop.is_set():
            version.send(int(rate), rate=rate, concurrency=2)

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


@pytest.fixture(scope="module")
def prom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    with prometheus(tmp_path_factory.mktemp("prometheus")) as server:
        yield server


@pytest.fixture
def canary_operator(
    request: pytest.FixtureRequest, prom: Prometheus, monkeypatch: pytest.MonkeyPatch
) -> Any:
    """The operator, told where Prometheus is (unless the test says otherwise)."""
    marker = request.node.get_closest_marker("no_prometheus")
    if marker is None:
        monkeypatch.setenv("MLMODEL_PROMETHEUS_URL", prom.url)
    else:
        monkeypatch.delenv("MLMODEL_PROMETHEUS_URL", raising=False)
    return request.getfixturevalue("operator")


@pytest.fixture
def models(cluster: TestCluster, namespace: str, canary_operator: Any) -> Models:
    return Models(cluster, namespace)


def rollout(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("status", {}).get("rollout") or {}


def wait_rollout(
    models: Models, check: Callable[[dict[str, Any]], bool], what: str, timeout: float = 120
) -> dict[str, Any]:
    return wait_until(lambda: (lambda o: o if check(o) else None)(models.get(NAME)), what=what,
                      timeout=timeout)  # fmt: skip


def deployment_version(models: Models, name: str = NAME) -> str:
    return models.deployment(name).spec.template.metadata.labels.get(VERSION_LABEL)


def canary_exists(models: Models) -> bool:
    try:
        models.deployment(NAME + "-canary")
    except client.ApiException as err:
        if err.status == 404:
            return False
        raise
    return True


def wait_canary_removed(models: Models) -> None:
    wait_until(lambda: not canary_exists(models), what="the canary Deployment to be removed")


def start_v1(models: Models) -> str:
    """v1 created and Ready; the stable Deployment's pod template, for later comparison."""
    models.create(manifest("v1"))
    models.wait_ready(NAME)
    return models.deployment(NAME).metadata.annotations["machine-learning.org/revision"]


def sidecars(prom: Prometheus, tmp_path: Path, namespace: str, **canary: Any) -> Any:
    """Sidecars for v1 and v2 (v2 with the given faults), as one context manager."""
    stack = contextlib.ExitStack()
    v1 = stack.enter_context(model_version(prom, tmp_path, "v1", namespace=namespace, model=NAME))
    v2 = stack.enter_context(
        model_version(prom, tmp_path, "v2", namespace=namespace, model=NAME, **canary)
    )
    return stack, v1, v2


def test_a_healthy_canary_is_promoted_through_every_step(
    models: Models, prom: Prometheus, tmp_path: Path, namespace: str
) -> None:
    start_v1(models)
    stack, v1, v2 = sidecars(prom, tmp_path, namespace)
    with stack, Traffic(v1, v2):
        models.patch_spec({"model_version": "v2"}, NAME)
        seen_steps: set[tuple[int, int]] = set()
        windows: dict[int, set[str]] = {}

        def promoted(obj: dict[str, Any]) -> bool:
            state = rollout(obj)
            if state.get("phase") in ("Progressing", "Paused"):
                seen_steps.add((state["step"], state["weight"]))
                if "stepStartedAt" in state:
                    windows.setdefault(state["step"], set()).add(state["stepStartedAt"])
                # The stable version serves all along.
                assert condition(obj, "Ready")["status"] == "True", obj["status"]
            return state.get("phase") == "Promoted"

        obj = wait_rollout(models, promoted, "v2 to be promoted", timeout=180)
    assert {step for step, _ in seen_steps} >= {1, 2, 3}, seen_steps
    assert (1, 25) in seen_steps and (2, 50) in seen_steps and (3, 100) in seen_steps
    # Each step is watched in a window of its own, after the previous one was judged.
    starts = [max(windows[step]) for step in sorted(windows)]
    assert starts == sorted(set(starts)), windows
    assert rollout(obj)["stableVersion"] == "v2"
    assert rollout(obj)["lastAnalysis"]["result"] == "Pass"
    assert deployment_version(models) == "v2"
    wait_canary_removed(models)
    obj = models.wait_ready(NAME)
    wait_until(lambda: models.get(NAME)["status"]["modelVersion"] == "v2", what="v2 alone")
    history = models.get(NAME)["status"]["history"]
    assert history[0]["version"] == "v2" and history[0]["outcome"] == "Promoted"
    reasons = models.events(NAME)
    assert "CanaryStarted" in reasons and "StepPassed" in reasons and "Promoted" in reasons


@pytest.mark.parametrize(
    ("faults", "metric"),
    [({"error_ratio": 0.5}, "error ratio"), ({"delay_seconds": 0.8}, "p99")],
    ids=["5xx", "slow"],
)
def test_a_bad_canary_is_rolled_back_naming_the_metric(
    models: Models,
    prom: Prometheus,
    tmp_path: Path,
    namespace: str,
    faults: dict[str, float],
    metric: str,
) -> None:
    stable_revision = start_v1(models)
    stack, v1, v2 = sidecars(prom, tmp_path, namespace, **faults)
    with stack, Traffic(v1, v2):
        models.patch_spec({"model_version": "v2"}, NAME)
        obj = wait_rollout(
            models, lambda o: rollout(o).get("phase") == "RolledBack", "a rollback", timeout=120
        )
    assert obj["status"]["phase"] == "Degraded"
    ready = condition(obj, "Ready")
    assert ready["reason"] == "RolledBack" and metric in ready["message"], ready
    assert metric in rollout(obj)["lastAnalysis"]["message"]
    assert rollout(obj)["lastAnalysis"]["result"] == "Fail"
    wait_canary_removed(models)
    # The stable version was never touched.
    stable = models.deployment(NAME)
    assert stable.metadata.annotations["machine-learning.org/revision"] == stable_revision
    assert stable.spec.replicas == 4 and deployment_version(models) == "v1"
    assert models.get(NAME)["status"]["history"][0]["outcome"] == "RolledBack"
    assert "RolledBack" in models.events(NAME)


def judged_twice_paused(models: Models) -> dict[str, Any]:
    """Two judgements in a row while paused: never promoted, never rolled back."""
    first = wait_rollout(
        models, lambda o: rollout(o).get("phase") == "Paused", "the rollout to pause"
    )
    first_time = rollout(first)["lastAnalysis"]["time"]
    return wait_rollout(
        models,
        lambda o: (
            rollout(o).get("phase") == "Paused" and rollout(o)["lastAnalysis"]["time"] != first_time
        ),
        "a second inconclusive judgement",
    )


def test_no_traffic_pauses_the_canary_as_inconclusive(
    models: Models, prom: Prometheus, tmp_path: Path, namespace: str
) -> None:
    start_v1(models)
    stack, _, _ = sidecars(prom, tmp_path, namespace)
    with stack:
        models.patch_spec({"model_version": "v2"}, NAME)
        obj = judged_twice_paused(models)
    state = rollout(obj)
    assert state["step"] == 1 and state["lastAnalysis"]["result"] == "Inconclusive"
    assert "min_requests" in state["lastAnalysis"]["message"]
    assert condition(obj, "Progressing")["reason"] == "AnalysisInconclusive"
    assert condition(obj, "Ready")["status"] == "True"
    assert canary_exists(models) and deployment_version(models) == "v1"


def test_prometheus_gone_mid_rollout_is_inconclusive_never_a_verdict(
    models: Models, prom: Prometheus, tmp_path: Path, namespace: str
) -> None:
    start_v1(models)
    stack, v1, v2 = sidecars(prom, tmp_path, namespace)
    with stack, Traffic(v1, v2):
        models.patch_spec({"model_version": "v2"}, NAME)
        wait_rollout(models, lambda o: rollout(o).get("step") == 2, "step 2")
        prom.stop()
        try:
            obj = judged_twice_paused(models)
        finally:
            prom.start()
        state = rollout(obj)
        assert state["step"] == 2 and prom.url.split("//")[1] in state["lastAnalysis"]["message"]
        assert canary_exists(models) and deployment_version(models) == "v1"
        # Back: the rollout goes on from where it paused.
        wait_rollout(models, lambda o: rollout(o).get("phase") == "Promoted", "the promotion",
                     timeout=180)  # fmt: skip


@pytest.mark.no_prometheus
def test_overrides_abort_retry_and_promote_act_once(models: Models) -> None:
    start_v1(models)
    models.patch_spec({"model_version": "v2"}, NAME)
    wait_rollout(models, lambda o: rollout(o).get("phase") == "Paused", "inconclusive: no URL")
    obj = models.get(NAME)
    assert "--prometheus-url" in rollout(obj)["lastAnalysis"]["message"]

    def annotate(value: str) -> None:
        models.custom.patch_namespaced_custom_object(
            "machine-learning.org", "v1", models.namespace, "mlmodeldeployments", NAME,
            {"metadata": {"annotations": {OVERRIDE: value}}},
        )  # fmt: skip

    def handled() -> bool:
        return OVERRIDE not in (models.get(NAME)["metadata"].get("annotations") or {})

    annotate("abort")
    wait_rollout(models, lambda o: rollout(o).get("phase") == "RolledBack", "the abort")
    wait_until(handled, what="the annotation to be removed")
    assert models.get(NAME)["status"]["history"][0]["outcome"] == "Aborted"
    wait_canary_removed(models)

    annotate("retry")
    wait_rollout(models, lambda o: rollout(o).get("phase") in ("Progressing", "Paused"), "retry")
    wait_until(handled, what="the annotation to be removed")

    annotate("promote")
    wait_rollout(models, lambda o: rollout(o).get("phase") == "Promoted", "the promotion")
    wait_until(handled, what="the annotation to be removed")
    assert deployment_version(models) == "v2"
    reasons = models.events(NAME)
    assert {"RolledBack", "RolloutRetried", "Promoting", "Promoted"} <= set(reasons)


@pytest.mark.no_prometheus
def test_a_spec_change_restarts_and_the_stable_version_ends_the_canary(models: Models) -> None:
    start_v1(models)
    models.patch_spec({"model_version": "v2"}, NAME)
    wait_rollout(models, lambda o: rollout(o).get("canaryVersion") == "v2", "a canary of v2")
    models.patch_spec({"model_version": "v3"}, NAME)
    obj = wait_rollout(models, lambda o: rollout(o).get("canaryVersion") == "v3", "v3")
    assert rollout(obj)["step"] == 1 and rollout(obj)["stableVersion"] == "v1"
    wait_until(lambda: deployment_version(models, NAME + "-canary") == "v3", what="canary v3")
    assert deployment_version(models) == "v1"
    assert obj["status"]["history"][0]["outcome"] == "Superseded"
    models.patch_spec({"model_version": "v1"}, NAME)
    obj = wait_rollout(models, lambda o: rollout(o).get("phase") == "Idle", "the canary to end")
    wait_canary_removed(models)
    assert obj["status"]["history"][0]["outcome"] == "Aborted"
    models.wait_ready(NAME)


@pytest.fixture
def gateway_api(cluster: TestCluster) -> Iterator[None]:
    # Groups under k8s.io need the approval annotation, which the real Gateway API CRDs carry.
    approved = {
        "api-approved.kubernetes.io": "https://github.com/kubernetes-sigs/gateway-api/pull/2466"
    }
    with installed_crds(cluster.api, [open_crd(*ROUTE[:2], "HTTPRoute", ROUTE[2], approved)]):
        yield


@pytest.mark.no_prometheus
def test_with_a_gateway_the_split_is_exact_through_an_httproute(
    gateway_api: None, models: Models
) -> None:
    gateway = {"gateway": {"name": "public", "namespace": "infra"}}
    models.create(manifest("v1", **gateway))
    models.wait_ready(NAME)

    def route() -> dict[str, Any]:
        return models.custom.get_namespaced_custom_object(
            ROUTE[0], ROUTE[1], models.namespace, ROUTE[2], NAME
        )

    def backends() -> list[tuple[str, int | None]]:
        refs = route()["spec"]["rules"][0]["backendRefs"]
        return [(ref["name"], ref.get("weight")) for ref in refs]

    wait_until(lambda: backends() == [(NAME, None)], what="the route to the model Service")
    assert route()["spec"]["parentRefs"][0]["name"] == "public"
    models.patch_spec({"model_version": "v2"}, NAME)
    wait_until(
        lambda: backends() == [(NAME + "-stable", 75), (NAME + "-canary", 25)],
        what="the route to split 75/25",
    )
    stable_svc = models.core.read_namespaced_service(NAME + "-stable", models.namespace)
    canary_svc = models.core.read_namespaced_service(NAME + "-canary", models.namespace)
    assert stable_svc.spec.selector[VERSION_LABEL] == "v1"
    assert canary_svc.spec.selector["machine-learning.org/track"] == "canary"
    obj = wait_rollout(models, lambda o: rollout(o).get("phase") == "Paused", "inconclusive")
    assert rollout(obj)["weight"] == 25  # exact: the route's weight, not the pods' share


@pytest.mark.no_prometheus
def test_beside_an_autoscaler_the_canary_is_added_and_the_stable_count_left_to_it(
    models: Models,
) -> None:
    """The HPA (the real controller) owns the stable count; the canary is sized from it and the
    operator never writes the stable Deployment's replicas."""
    body = manifest("v1")
    body["spec"]["replicas"] = 3
    body["spec"]["computational_resources"] = {"cpu": "500m"}
    body["spec"]["autoscaling"] = {"min_replicas": 2, "max_replicas": 6, "metric": "cpu",
                                   "target": 60}  # fmt: skip
    models.create(body)
    models.wait_ready(NAME)
    # As the HPA would: through the scale subresource.
    models.apps.patch_namespaced_deployment_scale(NAME, models.namespace, {"spec": {"replicas": 3}})
    models.patch_spec({"model_version": "v2"}, NAME)
    wait_until(
        lambda: canary_exists(models) and models.deployment(NAME + "-canary").spec.replicas == 1,
        what="a canary of one replica beside three (25%)",
    )
    stable = models.apps.read_namespaced_deployment(NAME, models.namespace)
    assert stable.spec.replicas == 3
    owners = {
        entry.manager
        for entry in stable.metadata.managed_fields
        if "f:replicas" in (entry.fields_v1 or {}).get("f:spec", {})
    }
    assert "mlmodel-operator" not in owners, owners


# --- the accuracy gate ----------------------------------------------------------------------------


class LabelledTraffic(Traffic):
    """Predictions through each version's sidecar, each followed by its truth sent to
    /feedback: the echo server's class is always "0" (argmax of the row), and the truth says 0
    except for the share `wrong` of a version's predictions, spread evenly."""

    def __init__(self, *versions: tuple[ModelVersion, float]) -> None:
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._label, args=(v, wrong), daemon=True)
            for v, wrong in versions
        ]

    def _label(self, version: ModelVersion, wrong: float) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", version.proxy_port, timeout=30)
        sent = 0
        while not self._stop.is_set():
            conn.request("POST", f"/v2/models/{NAME}/infer", infer_body(f"r{sent}"),
                         {"Content-Type": "application/json"})  # fmt: skip
            response = conn.getresponse()
            response.read()
            truth = 1 if math.floor((sent + 1) * wrong) > math.floor(sent * wrong) else 0
            body = json.dumps({"id": response.getheader("x-prediction-id"), "truth": truth})
            conn.request("POST", f"/v2/models/{NAME}/feedback", body,
                         {"Content-Type": "application/json"})  # fmt: skip
            conn.getresponse().read()
            sent += 1
            time.sleep(0.1)
        conn.close()


def truth_sidecars(prom: Prometheus, tmp_path: Path, namespace: str) -> Any:
    stack = contextlib.ExitStack()
    versions = []
    for version, base in (("v1", 9300), ("v2", 9310)):
        sidecar = {"ground_truth": {"task": "classification", "feedback_port_base": base}}
        versions.append(
            stack.enter_context(
                model_version(
                    prom, tmp_path, version, namespace=namespace, model=NAME, sidecar=sidecar
                )
            )
        )
    return stack, *versions


def accuracy_manifest(version: str, **analysis: Any) -> dict[str, Any]:
    body = manifest(version)
    body["spec"]["monitoring"] = {"ground_truth": {"task": "classification"}}
    body["spec"]["rollout"]["analysis"].update(analysis)
    return body


def test_a_canary_worse_on_labels_is_rolled_back_naming_its_accuracy(
    models: Models, prom: Prometheus, tmp_path: Path, namespace: str
) -> None:
    models.create(accuracy_manifest("v1", min_accuracy=0.9, max_accuracy_drop=0.05, min_labels=10))
    models.wait_ready(NAME)
    stack, v1, v2 = truth_sidecars(prom, tmp_path, namespace)
    with stack, Traffic(v1, v2), LabelledTraffic((v1, 0.0), (v2, 0.4)):
        models.patch_spec({"model_version": "v2"}, NAME)
        obj = wait_rollout(
            models, lambda o: rollout(o).get("phase") == "RolledBack", "a rollback", timeout=120
        )
    analysis = rollout(obj)["lastAnalysis"]
    assert analysis["result"] == "Fail"
    # 40% of v2's labels say it was wrong; the window's edges move the figure a little.
    assert analysis["accuracy"] == pytest.approx(0.6, abs=0.1)
    assert analysis["stableAccuracy"] == 1.0 and analysis["labels"] >= 10
    named = f"accuracy {analysis['accuracy']:.3g} over "
    assert named in analysis["message"] and "< min_accuracy 0.9" in analysis["message"]
    assert "below the stable version's 1 " in analysis["message"]
    assert named in condition(obj, "Ready")["message"]
    wait_canary_removed(models)
    assert deployment_version(models) == "v1"


def test_too_few_labels_pause_an_accuracy_gated_canary(
    models: Models, prom: Prometheus, tmp_path: Path, namespace: str
) -> None:
    models.create(accuracy_manifest("v1", min_accuracy=0.9, min_labels=1_000_000))
    models.wait_ready(NAME)
    stack, v1, v2 = truth_sidecars(prom, tmp_path, namespace)
    with stack, Traffic(v1, v2), LabelledTraffic((v1, 0.0), (v2, 0.0)):
        models.patch_spec({"model_version": "v2"}, NAME)
        obj = judged_twice_paused(models)
    state = rollout(obj)
    assert state["lastAnalysis"]["result"] == "Inconclusive"
    assert "fewer than min_labels 1000000" in state["lastAnalysis"]["message"]
    assert canary_exists(models) and deployment_version(models) == "v1"
