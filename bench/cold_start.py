"""Cold start of a model at zero on the real node, in parts: from a request to a model at zero to
its answer, through the activator. The floor, measured in the same run, is a bare pod of an image
already on the node going from created to running. Prints one JSON line per wake and a summary.

Run with the real node's lock (it starts the local cluster with the real node if it is not up,
and brings it down again if it started it):

    flock /work/notes/realnode.lock .venv/bin/python bench/cold_start.py [WAKES]

Parts (seconds, as this process sees them on the node's own clock, watching the API):
  wake        request sent -> the model's pod exists (the activator holds the request and sets the
              Deployment to 1; the Deployment and ReplicaSet controllers create the pod)
  scheduling  pod created -> bound to the node
  start       bound -> model-server container running (sandbox, volumes, the image already
              present: its pull policy is IfNotPresent and the image was imported)
  model load  container running -> pod Ready (the server loads the model; readiness probe)
  answer      pod Ready -> the client has its answer (the activator sees the ready replica and
              forwards; the inference itself)
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from kubernetes import client, watch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from kube_helpers import TestCluster, cached_bin_dirs, wait_until  # noqa: E402
from realnode_helpers import (  # noqa: E402
    IRIS,
    OPERATOR_UID,
    InstalledOperator,
    client_pod_result,
    install_chart,
    models_claim,
    real_node_namespace,
    restricted_pod,
    train_iris,
    uninstall_chart,
)

CLUSTER_DIR = Path(os.environ.get("MLMODEL_CLUSTER_DIR") or REPO / ".cluster")
LAUNCHER = REPO / "hack" / "localcluster.py"
NAME = "iris-cold"
PARTS = ("wake", "scheduling", "start", "model load", "answer")


def launcher(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(LAUNCHER), *args, "--dir", str(CLUSTER_DIR)],
        capture_output=True,
        text=True,
    )


def images() -> dict[str, str]:
    out = subprocess.run(
        [sys.executable, str(REPO / "hack" / "images.py"), "load", "--dir", str(CLUSTER_DIR)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


class PodTimes(threading.Thread):
    """When each stage of the model's pods was first seen (time.time())."""

    def __init__(self, cluster: TestCluster, namespace: str) -> None:
        super().__init__(daemon=True)
        self.cluster, self.namespace = cluster, namespace
        self.seen: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        core = client.CoreV1Api(self.cluster.api)
        while not self.stop.is_set():
            for event in watch.Watch().stream(
                core.list_namespaced_pod,
                self.namespace,
                label_selector=f"app.kubernetes.io/instance={NAME}",
                timeout_seconds=5,
            ):
                self.note(event["object"])

    def note(self, pod: client.V1Pod) -> None:
        now = time.time()
        if pod.metadata.deletion_timestamp:
            return
        self.seen.setdefault("created", now)
        if pod.spec.node_name:
            self.seen.setdefault("scheduled", now)
        statuses = pod.status.container_statuses or []
        if any(s.name == "model-server" and s.state.running for s in statuses):
            self.seen.setdefault("running", now)
        if any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []):
            self.seen.setdefault("ready", now)


def at_zero(cluster: TestCluster, namespace: str) -> None:
    apps, core = client.AppsV1Api(cluster.api), client.CoreV1Api(cluster.api)

    def zero() -> bool:
        scaled = apps.read_namespaced_deployment(NAME, namespace).spec.replicas == 0
        pods = core.list_namespaced_pod(
            namespace, label_selector=f"app.kubernetes.io/instance={NAME}"
        ).items
        return scaled and not pods

    wait_until(zero, what="the model at zero, its pod gone", timeout=600, interval=1)


def one_request(cluster: TestCluster, namespace: str, image: str, start_at: float) -> dict:
    """One request from a pod on the node at `start_at`: its send and answer times."""
    url = f"http://{NAME}.{namespace}.svc.cluster.local/v2/models/{NAME}/infer"
    body = {"inputs": [{"name": "x", "shape": [3, 4], "datatype": "FP64", "data": IRIS}]}
    script = (
        "import json, time, urllib.request\n"
        f"time.sleep(max(0.0, {start_at} - time.time()))\n"
        f"req = urllib.request.Request({url!r}, {json.dumps(body)!r}.encode(),\n"
        "                             {'Content-Type': 'application/json'})\n"
        "sent = time.time()\n"
        "with urllib.request.urlopen(req, timeout=600) as resp:\n"
        "    status = resp.status\n"
        "    resp.read()\n"
        "print(json.dumps({'sent': sent, 'answered': time.time(), 'status': status}))\n"
    )
    return client_pod_result(cluster, namespace, image, script)


def bare_pod_start(cluster: TestCluster, namespace: str, image: str) -> float:
    """The floor: a pod of an image already present, from created to its container running."""
    name = f"floor-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(cluster.api)
    created = time.time()
    core.create_namespaced_pod(
        namespace, restricted_pod(name, image, ["sleep", "600"], uid=OPERATOR_UID)
    )

    def running() -> float | None:
        statuses = core.read_namespaced_pod(name, namespace).status.container_statuses or []
        return time.time() if statuses and statuses[0].state.running else None

    seconds = wait_until(running, what=f"pod {name} running", interval=0.05) - created
    core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
    return seconds


def wake(cluster: TestCluster, namespace: str, image: str) -> dict[str, float]:
    at_zero(cluster, namespace)
    times = PodTimes(cluster, namespace)
    times.start()
    # The client pod starts first; its request goes when it surely runs.
    answer = one_request(cluster, namespace, image, time.time() + 8)
    times.stop.set()
    assert answer["status"] == 200, answer
    seen = times.seen
    marks = [answer["sent"], seen["created"], seen["scheduled"], seen["running"], seen["ready"],
             answer["answered"]]  # fmt: skip
    parts = {p: round(b - a, 3) for p, a, b in zip(PARTS, marks, marks[1:], strict=False)}
    parts["total"] = round(answer["answered"] - answer["sent"], 3)
    return parts


def main(wakes: int) -> None:
    started = launcher("status").returncode != 0
    if started:
        result = launcher("up", "--real-node")
        if result.returncode != 0:
            raise SystemExit(
                f"the local cluster with the real node did not start:\n{result.stderr}"
            )
    cluster = TestCluster(CLUSTER_DIR / "kubeconfig", cached_bin_dirs())
    tags = images()
    installed = InstalledOperator(
        f"mlmodel-operator-{uuid.uuid4().hex[:6]}",
        real_node_namespace(cluster, "cold-system"),
        real_node_namespace(cluster, "cold-models"),
    )
    volume = None
    try:
        catalog = {"mlserver": {"image": tags["mlserver"]}}
        install_chart(cluster, installed, tags["operator"], catalog, "180s")
        directory = CLUSTER_DIR / "models" / installed.models
        directory.mkdir(parents=True)
        directory.chmod(0o777)
        volume = models_claim(
            cluster, installed.models, {"path": str(directory), "type": "Directory"}
        )
        train_iris(cluster, installed.models, "models", tags["mlserver"], NAME)
        client.CustomObjectsApi(cluster.api).create_namespaced_custom_object(
            "machine-learning.org", "v1", installed.models, "mlmodeldeployments",
            {
                "apiVersion": "machine-learning.org/v1",
                "kind": "MLModelDeployment",
                "metadata": {"name": NAME},
                "spec": {
                    "model_type": "sklearn",
                    "model_uri": f"pvc://models/{NAME}",
                    "replicas": 0,
                    "computational_resources": {"memory_requirements": "1Gi", "cpu": "100m"},
                    "monitoring": {"performance_tracking": "enabled"},
                    "autoscaling": {"min_replicas": 0, "max_replicas": 1, "target": 4,
                                    "scale_down_delay_seconds": 5},
                },
            },
        )  # fmt: skip
        floors, runs = [], []
        for _ in range(wakes):
            floors.append(bare_pod_start(cluster, installed.models, tags["operator"]))
            parts = wake(cluster, installed.models, tags["operator"])
            runs.append(parts)
            print(json.dumps({"wake": parts, "bare_pod_start": round(floors[-1], 3)}), flush=True)
        median = {p: round(statistics.median(r[p] for r in runs), 3) for p in (*PARTS, "total")}
        floor = statistics.median(floors)
        print(json.dumps({
            "median_seconds": median,
            "bare_pod_start_floor": round(floor, 3),
            "cold_start_over_floor": round(median["total"] / floor, 1),
            "largest_part": max(PARTS, key=lambda p: median[p]),
        }))  # fmt: skip
    finally:
        uninstall_chart(cluster, installed)
        if volume:
            client.CoreV1Api(cluster.api).delete_persistent_volume(volume)
        if started:
            launcher("down")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
