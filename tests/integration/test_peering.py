"""Two replicas of the operator, as `replicas: 2` in the chart runs them: through kopf peering
exactly one reconciles, the other stands by, and takes over when the first goes away."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from cases import REPO, founding_manifest
from kube_helpers import TestCluster, wait_until

GROUP, VERSION, PLURAL = "machine-learning.org", "v1", "mlmodeldeployments"
PEERING_CRDS = REPO / "charts" / "mlmodel-operator" / "crds" / "kopf-peering.yaml"
PEERING = "mlmodel-operator"
PAUSED = "Pausing operations in favour of"
RESUMED = "Resuming operations after the pause"
RESYNC_SECONDS = 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Replica:
    process: subprocess.Popen[bytes]
    log: Path
    metrics_port: int

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def priority(self) -> int:
        match = re.search(r"with priority (\d+)", self.text())
        assert match, self.text()
        return int(match.group(1))

    def state(self) -> str:
        """What kopf last said this replica does: it starts paused."""
        said = re.findall(f"{PAUSED}|{RESUMED}", self.text())
        return "active" if said and said[-1] == RESUMED else "paused"

    def reconciles(self) -> float:
        """Reconciles this process has run, from its own Prometheus metrics."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            body = response.read().decode()
        counts = re.findall(r"^mlmodel_operator_reconciles_total\{[^}]*\} (\S+)$", body, re.M)
        return sum(float(c) for c in counts)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def replicas(
    cluster: TestCluster, crd: str, namespace: str, tmp_path: Path
) -> Iterator[list[Replica]]:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(PEERING_CRDS))
    for name in ("kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"):
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{name}")
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    started = []
    for index in range(2):
        log = tmp_path / f"replica-{index}.log"
        port = free_port()
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    str(REPO / ".venv" / "bin" / "mlmodel-operator"),
                    f"--namespaces={namespace}",
                    f"--peering={PEERING}",
                    f"--resync-seconds={RESYNC_SECONDS}",
                    f"--metrics-port={port}",
                    "--health-port=0",
                ],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        started.append(Replica(process, log, port))
    yield started
    for replica in started:
        replica.stop()


def peers(cluster: TestCluster, namespace: str) -> dict[str, Any]:
    """The live records in the peering object: kopf's view of the replicas."""
    body = client.CustomObjectsApi(cluster.api).get_namespaced_custom_object(
        "kopf.dev", "v1", namespace, "kopfpeerings", PEERING
    )
    return {k: v for k, v in (body.get("status") or {}).items() if v}


def patch_spec(cluster: TestCluster, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return client.CustomObjectsApi(cluster.api).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "predictive-analytics-system", {"spec": spec}
    )


def wait_ready(cluster: TestCluster, namespace: str, generation: int) -> dict[str, Any]:
    custom = client.CustomObjectsApi(cluster.api)

    def ready() -> dict[str, Any] | None:
        obj = custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "predictive-analytics-system"
        )
        status = obj.get("status", {})
        conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
        current = status.get("observedGeneration") == generation
        return obj if current and conditions.get("Ready") == "True" else None

    return wait_until(ready, what=f"Ready at generation {generation}", timeout=60)


def test_exactly_one_replica_is_active_and_the_other_takes_over(
    cluster: TestCluster, namespace: str, replicas: list[Replica]
) -> None:
    # kopf starts every peer paused and resumes the one that finds no live peer with a priority
    # as high as its own; one that was alone for a moment resumes and then pauses ("Pausing
    # operations in favour of ...") when the other appears. Its last word is its state.
    def settled() -> tuple[Replica, Replica] | None:
        running = [r for r in replicas if r.process.poll() is None]
        assert len(running) == 2, [r.text()[-2000:] for r in replicas]
        active = [r for r in replicas if r.state() == "active"]
        if len(active) != 1 or len(peers(cluster, namespace)) != 2:
            return None
        return active[0], next(r for r in replicas if r is not active[0])

    active, passive = wait_until(settled, what="one replica active, one standing by", timeout=45)
    # The active one is the one with the higher priority, as kopf's peering decides.
    assert active.priority() > passive.priority()

    custom = client.CustomObjectsApi(cluster.api)
    body = custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, founding_manifest()
    )
    wait_ready(cluster, namespace, body["metadata"]["generation"])
    time.sleep(2.5 * RESYNC_SECONDS)  # at least two resync rounds in each replica

    assert active.reconciles() > 0
    assert passive.reconciles() == 0, "the standby replica reconciled"
    assert "applied " not in passive.text()
    # Still Ready after the resyncs, at the same generation: nothing fought over the children.
    wait_ready(cluster, namespace, body["metadata"]["generation"])

    # The active replica goes away (a rolling update, a drained node): the standby takes over.
    active.stop()
    wait_until(lambda: passive.state() == "active", what="the standby to resume", timeout=30)
    updated = patch_spec(cluster, namespace, {"replicas": 2})
    after = wait_ready(cluster, namespace, updated["metadata"]["generation"])
    assert after["status"]["readyReplicas"] == 2
    assert passive.reconciles() > 0
