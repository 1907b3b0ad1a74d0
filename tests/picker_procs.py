"""The real CRDs of the Gateway API and its Inference Extension, and the Inference Extension's
lightweight endpoint picker run as a local process, as hack/fetch-crds.sh and
hack/build-binaries.sh --test-tools put them in the cache.

`endpoint_picker` runs the picker with a kubeconfig of the model's own picker ServiceAccount
(a token from the TokenRequest API), so that it reads the cluster with exactly the Role the
operator made for it. Against a cluster with a real node (hack/localcluster.py up --real-node),
the same function runs it against real vLLM pods:

    with endpoint_picker(cluster, namespace, "chat", tmp_path) as picker:
        picker.metrics()  # its Prometheus text; the pods it tracks are in picker.log

The lightweight picker only tracks the pool's pods and round-robins among them; reading each
pod's vLLM metrics is llm-d's picker's work, which is not on the Go module proxy.
"""

from __future__ import annotations

import contextlib
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from kube_helpers import REPO, TestCluster, cached_bin_dirs
from procs import Server, free_port

POOL_GROUP = "inference.networking.k8s.io"
PICKER_SUFFIX = "-epp"


def real_crds() -> dict[str, dict[str, Any]]:
    """The CRDs hack/fetch-crds.sh fetched, by name; a clear failure when it has not run."""
    out = subprocess.run(
        ["bash", str(REPO / "hack" / "fetch-crds.sh"), "--print"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    crds: dict[str, dict[str, Any]] = {}
    for directory in map(Path, out.split()):
        if not directory.is_dir():
            pytest.fail(f"{directory} is missing: run hack/fetch-crds.sh (make test-tools)")
        for path in sorted(directory.glob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                if doc and doc.get("kind") == "CustomResourceDefinition":
                    crds[doc["metadata"]["name"]] = doc
    return crds


def lwepp() -> Path:
    for directory in cached_bin_dirs():
        if directory.name.startswith("lwepp-v") and (directory / "lwepp").exists():
            return directory / "lwepp"
    pytest.fail("lwepp is not built: run `make test-tools` (hack/build-binaries.sh --test-tools)")


def service_account_kubeconfig(
    cluster: TestCluster, namespace: str, account: str, path: Path
) -> Path:
    """A kubeconfig that authenticates as `account`, with the cluster's server and CA."""
    token = cluster.kubectl("create", "token", account, "-n", namespace).stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    context = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])
    server = next(c for c in admin["clusters"] if c["name"] == context["context"]["cluster"])
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cluster", "cluster": server["cluster"]}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [
            {
                "name": "picker",
                "context": {"cluster": "cluster", "user": account, "namespace": namespace},
            }
        ],
        "current-context": "picker",
    }
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class Picker:
    server: Server
    metrics_url: str
    log: Path

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            return response.read().decode()


@contextlib.contextmanager
def endpoint_picker(cluster: TestCluster, namespace: str, pool: str, tmp: Path) -> Iterator[Picker]:
    """The picker for `pool`, as the pool's own ServiceAccount, its metrics answering."""
    kubeconfig = service_account_kubeconfig(
        cluster, namespace, pool + PICKER_SUFFIX, tmp / "picker.kubeconfig"
    )
    metrics_port = free_port()
    argv = [
        str(lwepp()),
        f"--kubeconfig={kubeconfig}",
        f"--pool-name={pool}",
        f"--pool-namespace={namespace}",
        f"--pool-group={POOL_GROUP}",
        f"--grpc-port={free_port()}",
        f"--grpc-health-port={free_port()}",
        f"--metrics-port={metrics_port}",
        "--secure-serving=false",
        "--zap-devel=false",
        # Its pool and pod events are logged at this verbosity.
        "--zap-log-level=2",
    ]
    log = tmp / "picker.log"
    # Only what it needs: no proxy settings, no KUBECONFIG of the caller's.
    server = Server(argv, log, env={"PATH": "/usr/bin:/bin"}).start()
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        server.wait_for(url)
        yield Picker(server, url, log)
    finally:
        server.close()
