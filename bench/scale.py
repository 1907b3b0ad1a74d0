"""The operator at scale, on the local control plane, against a floor measured in the same run.

1. Adds enough simulated (kwok) nodes for the pods.
2. Floor: the children of N CPU models (sklearn, 64Mi, 10m CPU, sidecar on), built by the
   project's own builders, server-side applied by a bare client with 8 threads; timed until
   every Deployment is available.
3. The operator (its own process, default flags but for a 60 s resync so that the bench can
   wait for one): N MLModelDeployments created by 8 threads, timed until every one is Ready.
4. One resync of the unchanged models: the operator's writes (its own metric) and the reads of
   the kinds it manages (the API server's apiserver_request_total).
5. The operator's resident memory (RSS).
6. A steady 20 spec changes per second for 30 s (model_version bumps on existing models) plus
   one new model per second: apply -> Deployment updated, and apply -> Deployment exists, p50
   and p99.

Prints measurements and ratios; asserts nothing. Needs a local control plane (`make cluster-up`).

    python bench/scale.py [N ...]        (default 100)
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CLUSTER_DIR = Path(os.environ.get("MLMODEL_CLUSTER_DIR", REPO / ".cluster"))
os.environ["KUBECONFIG"] = str(CLUSTER_DIR / "kubeconfig")

from kubernetes import client  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402

from mlmodel_operator import api, kube  # noqa: E402
from mlmodel_operator.builders import BuildSettings, Owner, build_children  # noqa: E402
from mlmodel_operator.config import DEFAULT_IMAGE  # noqa: E402
from mlmodel_operator.runtimes import load_catalog  # noqa: E402

THREADS = 8
PODS_PER_NODE = 250
RESYNC_SECONDS = 60
CHANGES_PER_SECOND = 20
CHANGE_SECONDS = 30
MODEL_PATH = f"/apis/{api.GROUP}/{api.VERSION}"
MANAGED_RESOURCES = {"mlmodeldeployments", "deployments", "services", "configmaps", "pods"}


def spec(version: str = "v1") -> dict[str, Any]:
    return {
        "model_type": "sklearn",
        "model_version": version,
        "computational_resources": {"memory_requirements": "64Mi", "cpu": "10m"},
        "monitoring": {"performance_tracking": "enabled"},
    }


def model(namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{api.GROUP}/{api.VERSION}",
        "kind": api.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec(),
    }


def raw(k: kube.Kube, path: str) -> str:
    """GET a non-JSON endpoint (the API server's /metrics)."""
    request = k.api_client.param_serialize("GET", path, auth_settings=["BearerToken"])
    response = k.api_client.call_api(*request, _request_timeout=60)
    return response.read().decode()


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            labels, _, value = line.rpartition(" ")
            found = dict(re.findall(r'(\w+)="([^"]*)"', labels))
            out.append((found, float(value)))
    return out


def reads(k: kube.Kube) -> dict[tuple[str, str], float]:
    """GET and LIST requests the API server has answered, by verb and resource, for the kinds
    the operator manages."""
    out: dict[tuple[str, str], float] = {}
    for labels, value in samples(raw(k, "/metrics"), "apiserver_request_total"):
        if labels.get("verb") in ("GET", "LIST") and labels.get("resource") in MANAGED_RESOURCES:
            key = (labels["verb"], labels["resource"])
            out[key] = out.get(key, 0) + value
    return out


def add_nodes(k: kube.Kube, pods: int) -> None:
    for index in range(math.ceil(pods / PODS_PER_NODE)):
        name = f"bench-node-{index}"
        capacity = {"cpu": "256", "memory": "1Ti", "pods": str(PODS_PER_NODE)}
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {"kwok.x-k8s.io/node": "fake"},
                "labels": {"type": "kwok", "kubernetes.io/hostname": name},
            },
            "status": {"allocatable": capacity, "capacity": capacity},
        }
        k.request(
            "PATCH",
            f"/api/v1/nodes/{name}",
            body=node,
            query=[("fieldManager", "bench"), ("force", "true")],
            content_type="application/apply-patch+yaml",
        )


def create_namespace(k: kube.Kube, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    k.create("/api/v1/namespaces", {"metadata": {"name": name}})
    return name


def delete_namespace(k: kube.Kube, name: str) -> None:
    k.request("DELETE", f"/api/v1/namespaces/{name}")
    while namespace_exists(k, name):
        time.sleep(2)


def namespace_exists(k: kube.Kube, name: str) -> bool:
    try:
        k.request("GET", f"/api/v1/namespaces/{name}")
        return True
    except ApiException as err:
        if err.status == 404:
            return False
        raise


def wait_all(check: Any, what: str, timeout: float = 3600) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(1)
    return time.monotonic()


def deployments_available(k: kube.Kube, namespace: str, n: int) -> bool:
    items = k.request("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments")["items"]
    done = [
        d
        for d in items
        if d["status"].get("observedGeneration", 0) >= d["metadata"]["generation"]
        and d["status"].get("availableReplicas", 0) == d["spec"]["replicas"]
        and d["status"].get("updatedReplicas", 0) == d["spec"]["replicas"]
    ]
    return len(done) >= n


def models_ready(k: kube.Kube, namespace: str, n: int) -> bool:
    items = k.request("GET", f"{MODEL_PATH}/namespaces/{namespace}/{api.PLURAL}")["items"]
    ready = 0
    for item in items:
        status = item.get("status") or {}
        conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
        if (
            status.get("observedGeneration") == item["metadata"]["generation"]
            and conditions.get("Ready") == "True"
        ):
            ready += 1
    return ready >= n


def floor(k: kube.Kube, n: int) -> float:
    """Seconds from the first apply to every Deployment available, for the children alone."""
    namespace = create_namespace(k, "bench-floor")
    settings = BuildSettings(runtimes=load_catalog(None), monitor_image=DEFAULT_IMAGE)
    specs = api.MLModelDeploymentSpec.model_validate(spec())

    def apply_children(index: int) -> None:
        owner = Owner(name=f"m{index}", namespace=namespace, uid=str(uuid.uuid4()))
        for obj in build_children(owner, specs, settings).apply:
            # No owner: the garbage collector would delete children of an owner that is not.
            obj["metadata"].pop("ownerReferences", None)
            k.apply(obj)

    start = time.monotonic()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(apply_children, range(n)))
    end = wait_all(lambda: deployments_available(k, namespace, n), "the floor's Deployments")
    delete_namespace(k, namespace)
    return end - start


class Operator:
    """The operator in its own process, watching one namespace."""

    def __init__(self, namespace: str, log: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.log = log
        self.process = subprocess.Popen(
            [
                str(REPO / ".venv" / "bin" / "mlmodel-operator"),
                f"--namespaces={namespace}",
                f"--metrics-port={self.port}",
                "--health-port=0",
                f"--resync-seconds={RESYNC_SECONDS}",
                "--log-level=WARNING",
            ],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        wait_all(self.up, "the operator's metrics", timeout=60)

    def up(self) -> bool:
        try:
            self.metrics()
            return True
        except OSError:
            if self.process.poll() is not None:
                raise SystemExit(self.log.read_text()[-3000:]) from None
            return False

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
            return r.read().decode()

    def total(self, name: str) -> float:
        return sum(value for _, value in samples(self.metrics(), name))

    def rss_mib(self) -> tuple[float, float]:
        """Resident memory now and at its peak."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        now = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024
        peak = int(re.search(r"VmHWM:\s+(\d+)", status).group(1)) / 1024
        return now, peak

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def create_models(k: kube.Kube, namespace: str, n: int) -> float:
    path = f"{MODEL_PATH}/namespaces/{namespace}/{api.PLURAL}"
    start = time.monotonic()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(lambda i: k.create(path, model(namespace, f"m{i}")), range(n)))
    end = wait_all(lambda: models_ready(k, namespace, n), "every model to be Ready")
    return end - start


def one_resync(k: kube.Kube, operator: Operator, n: int) -> tuple[float, dict[str, float]]:
    """Writes and reads over one resync of the unchanged models (the operator resyncs every
    RESYNC_SECONDS: the window lasts until N more reconciles have run and none follows)."""
    time.sleep(10)  # let the last status writes and Deployment conditions settle
    writes0 = operator.total("mlmodel_operator_api_writes_total")
    reconciles0 = operator.total("mlmodel_operator_reconciles_total")
    reads0 = reads(k)
    deadline = time.monotonic() + RESYNC_SECONDS + 60
    while operator.total("mlmodel_operator_reconciles_total") - reconciles0 < n:
        if time.monotonic() > deadline:
            break
        time.sleep(1)
    time.sleep(3)
    writes = operator.total("mlmodel_operator_api_writes_total") - writes0
    after = reads(k)
    delta = {f"{v} {r}": after.get((v, r), 0) - reads0.get((v, r), 0) for v, r in after}
    # The bench's own two reads of /metrics are not among these kinds.
    return writes, {key: value for key, value in delta.items() if value}


def latencies(k: kube.Kube, namespace: str, n: int) -> tuple[list[float], list[float]]:
    """apply -> Deployment updated for model_version bumps at CHANGES_PER_SECOND, and apply ->
    Deployment exists for one new model per second, over CHANGE_SECONDS. A change counts as
    reached when its Deployment carries it or a later one (the operator may fold two changes of
    one model into one apply)."""
    applied: list[tuple[str, int, float]] = []  # (model, change number, when); -1: created
    seen: dict[str, list[tuple[int, float]]] = {}  # model -> (change number, when) seen
    lock = threading.Lock()

    def watch() -> None:
        # Raw JSON lines, not the client's models: deserialising each of a few hundred events
        # a second into objects would make the bench, not the operator, the slow part.
        apps = client.AppsV1Api(k.api_client)
        rv = apps.list_namespaced_deployment(namespace).metadata.resource_version
        response = apps.list_namespaced_deployment(
            namespace,
            watch=True,
            resource_version=rv,
            timeout_seconds=900,
            _preload_content=False,
        )
        buffer = b""
        for chunk in response.stream(amt=None, decode_content=True):
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            now = time.monotonic()
            for line in lines:
                if not line.strip():
                    continue
                obj = json.loads(line)["object"]
                labels = obj["spec"]["template"]["metadata"].get("labels", {})
                version = labels.get("app.kubernetes.io/version", "")
                number = int(version[1:]) if version.startswith("c") else -1
                with lock:
                    seen.setdefault(obj["metadata"]["name"], []).append((number, now))

    threading.Thread(target=watch, daemon=True).start()
    time.sleep(2)
    path = f"{MODEL_PATH}/namespaces/{namespace}/{api.PLURAL}"
    interval = 1 / CHANGES_PER_SECOND

    def timed(name: str, number: int, send: Any, *args: Any) -> None:
        # From the moment the API server has accepted the change, as `kubectl apply` returns.
        send(*args)
        with lock:
            applied.append((name, number, time.monotonic()))

    start = time.monotonic()
    # Enough threads that a slow answer does not hold back the next change.
    with ThreadPoolExecutor(4 * THREADS) as pool:
        for tick in range(CHANGES_PER_SECOND * CHANGE_SECONDS):
            time.sleep(max(0.0, start + tick * interval - time.monotonic()))
            name = f"m{tick % n}"
            patch = {"spec": {"model_version": f"c{tick}"}}
            pool.submit(timed, name, tick, k.merge_patch, f"{path}/{name}", patch)
            if tick % CHANGES_PER_SECOND == 0:
                new = f"new{tick}"
                pool.submit(timed, new, -1, k.create, path, model(namespace, new))

    def reached(name: str, number: int) -> float | None:
        with lock:
            times = [when for seen_number, when in seen.get(name, []) if seen_number >= number]
        return min(times) if times else None

    wait_all(
        lambda: all(reached(name, number) is not None for name, number, _ in applied),
        "every change to reach its Deployment",
        timeout=600,
    )
    # A Deployment may show a change before its apply's answer reaches the bench: that is 0.
    changes = [max(0, reached(name, num) - when) for name, num, when in applied if num >= 0]
    creations = [max(0, reached(name, num) - when) for name, num, when in applied if num < 0]
    return changes, creations


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def processes(operator: Operator) -> dict[str, int]:
    """The operator's and the control plane's processes, by name."""
    state = json.loads((CLUSTER_DIR / "state.json").read_text())
    return {"operator": operator.process.pid, **state["pids"]}


def cpu_use(pids: dict[str, int], since: dict[str, float], seconds: float) -> str:
    """Each process's share of one core over `seconds`."""
    return ", ".join(
        f"{name} {(cpu_seconds(pid) - since[name]) / seconds:.0%}" for name, pid in pids.items()
    )


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if values else 0.0


def run(n: int) -> None:
    k = kube.configure()
    print(f"\n== N = {n} ==", flush=True)
    add_nodes(k, 2 * n + CHANGE_SECONDS + 50)
    floor_seconds = floor(k, n)
    print(f"floor (bare client, 8 threads): {floor_seconds:.1f} s to every Deployment available")

    namespace = create_namespace(k, "bench-op")
    with tempfile.TemporaryDirectory() as tmp:
        operator = Operator(namespace, Path(tmp) / "operator.log")
        try:
            rss_start, _ = operator.rss_mib()
            operator_seconds = create_models(k, namespace, n)
            ratio = operator_seconds / floor_seconds
            print(
                f"operator: {operator_seconds:.1f} s to every model Ready: {ratio:.2f}x the floor"
            )
            writes, read_counts = one_resync(k, operator, n)
            print(f"one resync of {n} unchanged models: {writes:.0f} writes; reads: {read_counts}")
            rss, peak = operator.rss_mib()
            cache_mib = operator.total("mlmodel_operator_cache_bytes") / 2**20
            print(
                f"operator RSS: {rss_start:.0f} MiB at start, {rss:.0f} MiB now, peak {peak:.0f}; "
                f"the watch cache holds {cache_mib:.1f} MiB of projections"
            )
            pids = processes(operator)
            cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            started = time.monotonic()
            changes, creations = latencies(k, namespace, n)
            print(
                "CPU during the changes (share of one core): "
                + cpu_use(pids, cpu_before, time.monotonic() - started)
            )
            print(
                f"apply -> Deployment updated ({len(changes)} changes at "
                f"{CHANGES_PER_SECOND}/s): p50 {percentile(changes, 50):.2f} s, "
                f"p99 {percentile(changes, 99):.2f} s"
            )
            print(
                f"apply -> Deployment exists ({len(creations)} new models): "
                f"p50 {percentile(creations, 50):.2f} s, p99 {percentile(creations, 99):.2f} s"
            )
            rss, peak = operator.rss_mib()
            print(f"operator RSS after the changes: {rss:.0f} MiB, peak {peak:.0f}", flush=True)
        finally:
            operator.stop()
    delete_namespace(k, namespace)


def main(argv: list[str]) -> int:
    # Stopped from outside, still stop the operator and delete what was made (the finally blocks).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    for n in [int(a) for a in argv] or [100]:
        run(n)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
