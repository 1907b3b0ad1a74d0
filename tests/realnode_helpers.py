"""Helpers of the real node's tests: namespaces whose pods it runs, pods that pass the restricted
Pod Security Standard, the operator installed from the chart, clients in pods and
port-forwards."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from kubernetes import client

from kube_helpers import TestCluster, create_namespace, wait_until
from model_helpers import Models, condition

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "hack"))
import realnode  # noqa: E402  (hack/ is not a package)

NODE = realnode.NODE_NAME
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}


@dataclass
class InstalledOperator:
    release: str
    namespace: str
    models: str  # the namespace it watches


def new_installation(cluster: TestCluster) -> InstalledOperator:
    """A release name and its two namespaces on the real node (the operator's, the models')."""
    return InstalledOperator(
        f"mlmodel-operator-{uuid.uuid4().hex[:6]}",
        real_node_namespace(cluster, "rn-system"),
        real_node_namespace(cluster, "rn-models"),
    )


def create_model(models: Models, name: str, spec: dict[str, Any]) -> None:
    models.create(
        {
            "apiVersion": "machine-learning.org/v1",
            "kind": "MLModelDeployment",
            "metadata": {"name": name},
            "spec": spec,
        }
    )


def real_node_namespace(cluster: TestCluster, prefix: str) -> str:
    """A namespace whose every pod runs on the real node (a node selector and a toleration by
    admission), under the restricted Pod Security Standard."""
    name = create_namespace(cluster.api, f"{prefix}-{uuid.uuid4().hex[:6]}", RESTRICTED)
    client.CoreV1Api(cluster.api).patch_namespace(
        name, {"metadata": {"annotations": realnode.namespace_annotations()}}
    )
    return name


def restricted_pod(
    name: str, image: str, command: list[str], uid: int = 1000, **spec: Any
) -> dict[str, Any]:
    """A pod of one container that runs `command` once, admitted under restricted."""
    container = {
        "name": "main",
        "image": image,
        "imagePullPolicy": "Never",
        "command": command,
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        **spec.pop("container", {}),
    }
    security = {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": security,
            "containers": [container],
            **spec,
        },
    }


def wait_for_pod_phase(cluster: TestCluster, namespace: str, name: str, phase: str) -> None:
    core = client.CoreV1Api(cluster.api)

    def reached() -> bool:
        current = core.read_namespaced_pod(name, namespace).status.phase
        if current == "Failed" and phase != "Failed":
            logs = core.read_namespaced_pod_log(name, namespace)
            raise AssertionError(f"pod {namespace}/{name} failed:\n{logs}")
        return current == phase

    wait_until(reached, what=f"pod {namespace}/{name} to reach {phase}", timeout=180)


REQUESTS = 5
OPERATOR_UID = 65532


def call_from_a_pod(
    cluster: TestCluster, namespace: str, image: str, url: str, body: dict, metrics_url: str
) -> dict[str, Any]:
    """POST `body` to `url` REQUESTS times from a pod on the node, then read `metrics_url`:
    cluster DNS, the Service's ClusterIP and the sidecar, as any client in the cluster."""
    script = (
        "import json, urllib.request\n"
        f"url, body, n = {url!r}, {json.dumps(body)!r}.encode(), {REQUESTS}\n"
        "answers = []\n"
        "for _ in range(n):\n"
        "    req = urllib.request.Request(url, body, {'Content-Type': 'application/json'})\n"
        "    with urllib.request.urlopen(req, timeout=30) as resp:\n"
        "        answers.append(json.loads(resp.read()))\n"
        f"metrics = urllib.request.urlopen({metrics_url!r}, timeout=30).read().decode()\n"
        "print(json.dumps({'answers': answers, 'metrics': metrics}))\n"
    )
    return client_pod_result(cluster, namespace, image, script)


def client_pod_result(cluster: TestCluster, namespace: str, image: str, script: str) -> Any:
    """Run a Python `script` in a pod on the node, as the operator's user; the JSON it printed
    last."""
    name = f"client-{uuid.uuid4().hex[:6]}"
    pod = restricted_pod(name, image, ["python", "-c", script], uid=OPERATOR_UID)
    core = client.CoreV1Api(cluster.api)
    core.create_namespaced_pod(namespace, pod)
    try:
        wait_for_pod_phase(cluster, namespace, name, "Succeeded")
    finally:
        logs = core.read_namespaced_pod_log(name, namespace)
    return json.loads(logs.strip().splitlines()[-1])


def port_forwarded_get(
    cluster: TestCluster, namespace: str, target: str, port: int, path: str
) -> str:
    """GET `path` from `target`'s `port` through `kubectl port-forward`."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        local = probe.getsockname()[1]
    forward = subprocess.Popen(
        ["kubectl", "port-forward", "-n", namespace, target, f"{local}:{port}"],
        env=cluster.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def answer() -> str | None:
        assert forward.poll() is None, forward.stderr.read().decode() if forward.stderr else ""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{local}{path}", timeout=10) as resp:
                return resp.read().decode()
        except OSError:
            return None  # not listening yet

    try:
        return wait_until(answer, what=f"{path} through a port-forward to {target}")
    finally:
        forward.terminate()
        forward.wait()


def when(timestamp: Any) -> datetime:
    return timestamp if isinstance(timestamp, datetime) else datetime.fromisoformat(timestamp)


def assert_pods_really_ready(
    cluster: TestCluster,
    namespace: str,
    name: str,
    images: set[str],
    model: dict[str, Any],
    reported_at: datetime | None = None,
) -> None:
    """The model's pods run on the real node with the given images, never restarted, and
    were Ready before the resource said so: before its Ready condition turned True, or, for a
    model that stayed Ready while its pods were replaced (a promotion), before `reported_at`,
    when the status was seen reporting the new pods."""
    pods = (
        client.CoreV1Api(cluster.api)
        .list_namespaced_pod(namespace, label_selector=f"app.kubernetes.io/instance={name}")
        .items
    )
    assert pods, f"no pods of {name}"
    resource_ready = reported_at or when(condition(model, "Ready")["lastTransitionTime"])
    for pod in pods:
        assert pod.spec.node_name == NODE
        assert {c.image for c in pod.spec.containers} == images
        for status in pod.status.container_statuses:
            last = status.last_state.terminated
            assert status.ready and status.started and status.restart_count == 0, (
                f"{status.name}: ready={status.ready} restarts={status.restart_count} "
                f"last exit={last and (last.reason, last.exit_code, last.message)}"
            )
        pod_ready = next(c for c in pod.status.conditions if c.type == "Ready")
        assert pod_ready.status == "True"
        assert pod_ready.last_transition_time <= resource_ready


CHART = REPO / "charts" / "mlmodel-operator"


def helm(cluster: TestCluster, *args: str) -> str:
    result = subprocess.run(["helm", *args], capture_output=True, text=True, env=cluster.env)
    if result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed: {result.stderr}")
    return result.stdout


def install_chart(
    cluster: TestCluster,
    installed: InstalledOperator,
    operator_image: str,
    catalog: dict[str, Any],
    timeout: str,
    values: dict[str, Any] | None = None,
) -> None:
    """The chart installed with the locally built operator image and this runtime catalog,
    watching `installed.models` only; `values`: other chart values."""
    repository, tag = operator_image.rsplit(":", 1)
    more = [
        arg for k, v in (values or {}).items() for arg in ("--set-json", f"{k}={json.dumps(v)}")
    ]
    helm(
        cluster, "install", installed.release, str(CHART), "-n", installed.namespace,
        "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
        # Images come from the node's containerd; there is no registry.
        "--set", "image.pullPolicy=Never",
        "--set-json", f"runtimeCatalog={json.dumps(catalog)}",
        "--set-json", f"watchNamespaces={json.dumps([installed.models])}",
        *more,
        "--wait", "--timeout", timeout,
    )  # fmt: skip


def uninstall_chart(cluster: TestCluster, installed: InstalledOperator) -> None:
    subprocess.run(
        ["helm", "uninstall", installed.release, "-n", installed.namespace, "--wait"],
        capture_output=True,
        env=cluster.env,
    )
    core = client.CoreV1Api(cluster.api)
    for namespace in (installed.models, installed.namespace):
        core.delete_namespace(namespace)


def models_claim(cluster: TestCluster, namespace: str, host_path: dict[str, str]) -> str:
    """A claim `models` in `namespace`, bound to a PersistentVolume of the node's `host_path`
    (the operator mounts pvc:// at /mnt/models); the volume's name, to delete afterwards."""
    core = client.CoreV1Api(cluster.api)
    volume = f"models-{namespace}"
    core.create_persistent_volume(
        {
            "metadata": {"name": volume},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "",
                "hostPath": host_path,
            },
        }
    )
    core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "metadata": {"name": "models"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": "",
                "volumeName": volume,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    return volume


IRIS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.1, 4.7, 1.5], [6.3, 3.3, 6.0, 2.5]]


def train_iris(cluster: TestCluster, namespace: str, claim: str, image: str, path: str) -> None:
    """Fit a classifier in `image` (the scikit-learn it serves with) and save it on the claim as
    model.joblib (MLServer) and model.pkl (the KServe server)."""
    script = (
        "import os, pickle, joblib\n"
        "from sklearn.datasets import load_iris\n"
        "from sklearn.linear_model import LogisticRegression\n"
        "X, y = load_iris(return_X_y=True)\n"
        f"os.makedirs('/mnt/models/{path}', exist_ok=True)\n"
        "model = LogisticRegression(max_iter=1000).fit(X, y)\n"
        f"joblib.dump(model, '/mnt/models/{path}/model.joblib')\n"
        f"pickle.dump(model, open('/mnt/models/{path}/model.pkl', 'wb'))\n"
    )
    name = f"train-{path}"
    pod = restricted_pod(
        name,
        image,
        ["python", "-c", script],
        container={"volumeMounts": [{"name": "models", "mountPath": "/mnt/models"}]},
        volumes=[{"name": "models", "persistentVolumeClaim": {"claimName": claim}}],
    )
    client.CoreV1Api(cluster.api).create_namespaced_pod(namespace, pod)
    wait_for_pod_phase(cluster, namespace, name, "Succeeded")
