"""A real Prometheus scraping real sidecars, for the canary analysis' tests and the rollout's.

`Prometheus` runs Debian's /usr/bin/prometheus on a free port with its own data directory,
scraping every second the targets in a file_sd JSON file that is rewritten as targets come and
go (read again within a second). Each target carries the labels a ServiceMonitor's Kubernetes
service discovery would give it, `namespace` first among them, which the analysis' queries
select on. It can be stopped and started again on the same port and data, for "Prometheus
down" tests. `set_pods()` points a job of its own at pods' sidecars by their addresses (the
real node's pods, reachable from the host).

`model_version()` runs one version of a model as a pod would: a model server and the real
`mlmodel-monitor` sidecar in front of it, with MLMODEL_MONITOR_MODEL_VERSION set as the
downward API sets it, registered as a target and scraped once before it is handed over. The
model server is one already running (its port), or servers/v2_faults.py, started for the
version, answering a share of its inferences 500 and/or slowly.

`send()` sends V2 inferences through a sidecar's proxy port.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from procs import Server, free_port

MONITOR = Path(sys.executable).parent / "mlmodel-monitor"
FAULTS_SERVER = Path(__file__).parent / "integration" / "servers" / "v2_faults.py"
MODEL_VERSION_ENV = "MLMODEL_MONITOR_MODEL_VERSION"  # the sidecar's; see monitor/settings.py
# One iris row: the KServe server's iris classifier takes it, v2_faults.py echoes it.
ROW = [5.1, 3.5, 1.4, 0.2]


class Prometheus:
    def __init__(self, directory: Path, scrape_interval: str = "1s") -> None:
        binary = shutil.which("prometheus")
        assert binary, (
            "prometheus is not installed (Debian package prometheus; .ci/run installs it)"
        )
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.targets_file = directory / "targets.json"
        # The operator's own endpoint: its per-model series carry their own namespace label,
        # kept with honor_labels as the chart's ServiceMonitor keeps it.
        self.operator_targets_file = directory / "operator-targets.json"
        self.pods_file = directory / "pods.json"
        self._pods: list[dict[str, Any]] = []
        self._targets: dict[int, dict[str, str]] = {}
        self._operator_targets: list[int] = []
        self._lock = threading.Lock()
        self._write_targets()
        config = directory / "prometheus.yml"
        config.write_text(
            f"global: {{scrape_interval: {scrape_interval}, scrape_timeout: {scrape_interval}}}\n"
            "scrape_configs:\n"
            "- job_name: mlmodel-sidecar\n"
            "  file_sd_configs:\n"
            f"  - {{files: ['{self.targets_file}'], refresh_interval: 1s}}\n"
            "- job_name: mlmodel-operator\n"
            "  honor_labels: true\n"
            "  file_sd_configs:\n"
            f"  - {{files: ['{self.operator_targets_file}'], refresh_interval: 1s}}\n"
            # Pods' sidecars by their own addresses (set_pods), as a PodMonitor would find them.
            "- job_name: mlmodel-pods\n"
            "  file_sd_configs:\n"
            f"  - {{files: ['{self.pods_file}'], refresh_interval: 1s}}\n"
        )
        self._server = Server(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            directory / "prometheus.log",
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Prometheus:
        """Start (or start again, on the same port and data) and wait until it is ready."""
        self._server.start().wait_for(f"{self.url}/-/ready")
        return self

    def stop(self) -> None:
        self._server.close()

    close = stop

    # --- targets ---------------------------------------------------------------------------

    def add_target(self, metrics_port: int, labels: dict[str, str]) -> None:
        """Scrape 127.0.0.1:metrics_port with these target labels (`namespace` among them)."""
        assert "namespace" in labels, "the analysis' queries select on the namespace label"
        with self._lock:
            self._targets[metrics_port] = dict(labels)
            self._write_targets()

    def add_operator_target(self, metrics_port: int) -> None:
        """Scrape the operator's metrics on 127.0.0.1:metrics_port, its labels honoured."""
        with self._lock:
            self._operator_targets.append(metrics_port)
            self._write_targets()

    def set_pods(self, pods: dict[str, dict[str, str]]) -> None:
        """Scrape exactly these pods: "ip:port" of a sidecar's metrics -> its target labels
        (`namespace`, `pod`)."""
        with self._lock:
            self._pods = [{"targets": [t], "labels": labels} for t, labels in sorted(pods.items())]
            self._write_targets()

    def remove_target(self, metrics_port: int) -> None:
        with self._lock:
            self._targets.pop(metrics_port, None)
            self._write_targets()

    def _write_targets(self) -> None:
        groups = [
            {"targets": [f"127.0.0.1:{port}"], "labels": labels}
            for port, labels in self._targets.items()
        ]
        operator = [{"targets": [f"127.0.0.1:{p}" for p in self._operator_targets]}]
        files = (
            (self.targets_file, groups),
            (self.operator_targets_file, operator),
            (self.pods_file, self._pods),
        )
        for path, content in files:
            # Whole or not at all: Prometheus may read the file at any moment.
            partial = path.with_suffix(".tmp")
            partial.write_text(json.dumps(content))
            os.replace(partial, path)

    # --- queries ---------------------------------------------------------------------------

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": promql, **({"time": f"{at:.3f}"} if at is not None else {})}
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)["data"]["result"]

    def value(self, promql: str, at: float | None = None) -> float | None:
        """The value of a query yielding at most one series; None when it yields none."""
        result = self.query(promql, at)
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, promql: str, what: str, timeout: float = 60.0) -> float:
        """Poll until the query yields a value above 0 (e.g. a comparison that holds)."""
        deadline = time.monotonic() + timeout
        last: float | None = None
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):  # not up yet, or restarting
                last = self.value(promql)
            if last:
                return last
            time.sleep(0.25)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last}")


@contextlib.contextmanager
def prometheus(directory: Path, scrape_interval: str = "1s") -> Iterator[Prometheus]:
    server = Prometheus(directory, scrape_interval).start()
    try:
        yield server
    finally:
        server.stop()


# --- model versions -----------------------------------------------------------------------------


@dataclass
class ModelVersion:
    """One version of a model: a model server and its sidecar, scraped as a pod would be."""

    prometheus: Prometheus
    namespace: str
    model: str  # the sidecar's model_name: the `model` label (the MLModelDeployment's name)
    version: str  # the `version` label
    served_model: str  # the model server's own name for it, in /v2/models/{served_model}/infer
    proxy_port: int
    metrics_port: int
    sent: int = 0  # requests send() has sent through this version
    _servers: list[Server] = field(default_factory=list)

    def selector(self) -> str:
        return f'namespace="{self.namespace}",model="{self.model}",version="{self.version}"'

    def send(self, count: int, *, rate: float | None = None, concurrency: int = 1) -> Counter:
        statuses = send(
            self.proxy_port, self.served_model, count, rate=rate, concurrency=concurrency
        )
        self.sent += count
        return statuses

    def wait_scraped(self, timeout: float = 60.0) -> float:
        """Until Prometheus' last scrape of the sidecar counts every request sent so far; the
        time of that scrape. A window ending exactly there holds no extrapolation past the
        last sample, so increase() over it gives the very count sent (the series start at 0)."""
        counted = f"mlmodel_requests_total{{{self.selector()}}}"
        return self.prometheus.wait_for(
            f"max(timestamp({counted})) and on() (sum({counted}) >= {self.sent})",
            what=f"Prometheus to count {self.sent} requests to {self.version}",
            timeout=timeout,
        )

    def close(self) -> None:
        self.prometheus.remove_target(self.metrics_port)
        for server in reversed(self._servers):
            server.close()


@contextlib.contextmanager
def model_version(
    prometheus: Prometheus,
    directory: Path,
    version: str,
    *,
    namespace: str,
    model: str,
    upstream_port: int | None = None,
    served_model: str = "iris",
    error_ratio: float = 0.0,
    delay_seconds: float = 0.0,
    extra_labels: dict[str, str] | None = None,
    sidecar: dict[str, Any] | None = None,
) -> Iterator[ModelVersion]:
    """One version of `model` in `namespace`, in front of the model server on `upstream_port`,
    or of its own servers/v2_faults.py (with error_ratio and delay_seconds) without one;
    `sidecar` overrides the sidecar's settings (protocol, readiness path).
    Yields once Prometheus has scraped its sidecar (its request series, at zero)."""
    servers: list[Server] = []
    name = f"{namespace}-{model}-{version}"
    try:
        if upstream_port is None:
            upstream_port = free_port()
            servers.append(
                Server(
                    [
                        sys.executable,
                        str(FAULTS_SERVER),
                        str(upstream_port),
                        f"--model={served_model}",
                        f"--error-ratio={error_ratio}",
                        f"--delay={delay_seconds}",
                    ],
                    directory / f"{name}-model-server.log",
                ).start()
            )
            servers[-1].wait_for(f"http://127.0.0.1:{upstream_port}/v2/health/ready")
        proxy_port, metrics_port = free_port(), free_port()
        config = directory / f"{name}-sidecar.json"
        config.write_text(
            json.dumps(
                {
                    "model_name": model,
                    "upstream": f"http://127.0.0.1:{upstream_port}",
                    "upstream_ready_path": "/v2/health/ready",
                    "listen_host": "127.0.0.1",
                    "listen_port": proxy_port,
                    "metrics_port": metrics_port,
                    **(sidecar or {}),
                }
            )
        )
        sidecar = Server(
            [str(MONITOR), f"--config={config}"],
            directory / f"{name}-sidecar.log",
            env={**os.environ, MODEL_VERSION_ENV: version},
        ).start()
        servers.append(sidecar)
        sidecar.wait_for(f"http://127.0.0.1:{proxy_port}/readyz")
        served = ModelVersion(
            prometheus,
            namespace,
            model,
            version,
            served_model,
            proxy_port,
            metrics_port,
            _servers=servers,
        )
        labels = {"namespace": namespace, "pod": f"{model}-{version}", **(extra_labels or {})}
        prometheus.add_target(metrics_port, labels)
        prometheus.wait_for(
            f"count(mlmodel_requests_total{{{served.selector()}}})",
            what=f"the first scrape of {version}'s sidecar",
        )
    except BaseException:
        for server in reversed(servers):
            server.close()
        raise
    try:
        yield served
    finally:
        served.close()


# --- traffic ------------------------------------------------------------------------------------


def infer_body(request_id: str) -> bytes:
    tensor = {"name": "x", "shape": [1, len(ROW)], "datatype": "FP64", "data": [ROW]}
    return json.dumps({"id": request_id, "inputs": [tensor]}).encode()


def send(
    port: int,
    served_model: str,
    count: int,
    *,
    rate: float | None = None,
    concurrency: int = 1,
) -> Counter:
    """`count` V2 inferences through the sidecar on `port`, from `concurrency` clients on
    keep-alive connections, at most `rate` a second in all when given; the answers' statuses."""
    statuses: Counter = Counter()
    lock = threading.Lock()
    start = time.monotonic()
    path = f"/v2/models/{served_model}/infer"
    turns = iter(range(count))

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            while True:
                with lock:
                    turn = next(turns, None)
                if turn is None:
                    return
                if rate:
                    time.sleep(max(0.0, start + turn / rate - time.monotonic()))
                conn.request(
                    "POST", path, infer_body(f"req-{turn}"), {"Content-Type": "application/json"}
                )
                response = conn.getresponse()
                response.read()
                with lock:
                    statuses[response.status] += 1
        finally:
            conn.close()

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(statuses.values()) == count, statuses
    return statuses
