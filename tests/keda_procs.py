"""KEDA, for real, beside the local cluster: its operator and its metrics server (the adapter)
run as processes on this host, built from KEDA's Go module by `hack/build-binaries.sh --keda`,
with KEDA's own CRDs from the same module.

The metrics server is an aggregated API: the API server (with the aggregation layer that
hack/localcluster.py configures) forwards `external.metrics.k8s.io` to it, and the real
HorizontalPodAutoscaler controller asks it for the metric of each HPA KEDA makes. It is reached
as an in-cluster one would be, through an APIService and a Service, here a Service without a
selector whose EndpointSlice holds this host's address on the real node's bridge (the API server
dials the endpoint itself: aggregator routing; loopback addresses are refused in endpoints).

Everything `keda()` adds to the cluster goes when it ends: the APIService first (an unavailable
aggregated API stalls discovery, and namespace deletion with it), the ScaledObjects while KEDA
still runs to take its finalizers off, then the processes and the CRDs. Cluster-scoped objects
carry the suite's label, so that an interrupted run's are removed by the next (conftest.py).
"""

from __future__ import annotations

import base64
import contextlib
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client

from kube_helpers import SUITE_LABEL, TestCluster, create_namespace, wait_until
from procs import Server, free_port

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "hack" / "build-binaries.sh"
FETCH_CRDS = REPO / "hack" / "fetch-crds.sh"
APISERVICE = "v1beta1.external.metrics.k8s.io"
SERVICE = "keda-metrics-apiserver"
KEDA_GROUP, KEDA_VERSION, SCALED_OBJECTS = "keda.sh", "v1alpha1", "scaledobjects"
FINALIZER_TIMEOUT = 180


def cache_dir(script: Path, component: str) -> Path:
    """The cache directory a hack/ script prints for `component` (its name without version)."""
    out = subprocess.run(
        ["bash", str(script), "--print"], check=True, capture_output=True, text=True
    ).stdout
    return next(Path(p) for p in out.split() if Path(p).name.rsplit("-", 1)[0] == component)


def binaries() -> tuple[Path, Path]:
    """KEDA's operator and metrics server from the binary cache; AssertionError if not built."""
    operator = cache_dir(BUILD, "keda") / "keda"
    adapter = cache_dir(BUILD, "keda-adapter") / "keda-adapter"
    for binary in (operator, adapter):
        assert binary.exists(), f"{binary} is not built: run `bash {BUILD} --keda`"
    return operator, adapter


def crd_files() -> list[Path]:
    files = sorted(cache_dir(FETCH_CRDS, "keda").glob("*.yaml"))
    assert files, f"KEDA's CRDs are not fetched: run `bash {FETCH_CRDS}`"
    return files


def certificates(directory: Path, names: list[str], ips: list[str]) -> Path:
    """A CA, and one certificate of it for both ends of KEDA's connections (the operator's
    gRPC metrics service and the metrics server's clients of it, the API server's calls to
    the metrics server), as KEDA's own certificate rotation makes them: ca.crt, tls.crt and
    tls.key in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=keda-ca",
            "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
    openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=keda",
            "-keyout", "tls.key", "-out", "tls.csr")  # fmt: skip
    alt_names = ",".join([*(f"DNS:{n}" for n in names), *(f"IP:{ip}" for ip in ips)])
    (directory / "tls.ext").write_text(
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        f"subjectAltName={alt_names}\n"
    )
    openssl("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "1", "-sha256", "-extfile", "tls.ext",
            "-out", "tls.crt")  # fmt: skip
    return directory


@dataclass
class Keda:
    namespace: str  # where its Service lives (and, for KEDA, "its own" namespace)
    operator_metrics_url: str  # the KEDA operator's own Prometheus metrics
    log_dir: Path

    def logs(self) -> str:
        """The last lines of both logs, for an assertion's message."""
        return "\n".join(
            f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-40:])
            for log in sorted(self.log_dir.glob("*.log"))
        )


def _labelled(obj: dict) -> dict:
    obj.setdefault("metadata", {}).setdefault("labels", {})[SUITE_LABEL] = "true"
    return obj


def _install_crds(cluster: TestCluster) -> list[str]:
    names = []
    for path in crd_files():
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
        name = cluster.kubectl("get", "-f", str(path), "-o", "name").stdout.strip()
        cluster.kubectl("label", "--overwrite", name, f"{SUITE_LABEL}=true")
        names.append(name)
    for name in names:
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", name)
    return [n.split("/", 1)[1] for n in names]


def _remove_crds(cluster: TestCluster, names: list[str]) -> None:
    ext = client.ApiextensionsV1Api(cluster.api)
    for name in names:
        with contextlib.suppress(client.ApiException):
            ext.delete_custom_resource_definition(name)
    wait_until(
        lambda: (
            not {c.metadata.name for c in ext.list_custom_resource_definition().items} & set(names)
        ),
        what="KEDA's CRDs to be deleted",
        timeout=120,
    )


def release_scaled_objects(cluster: TestCluster, timeout: float) -> None:
    """Wait (KEDA running) until no ScaledObject is left, then take KEDA's finalizer off any
    that still is, so that neither it nor its namespace outlives KEDA."""
    custom = client.CustomObjectsApi(cluster.api)

    def remaining() -> list[dict]:
        try:
            listed = custom.list_cluster_custom_object(KEDA_GROUP, KEDA_VERSION, SCALED_OBJECTS)
        except client.ApiException as err:
            if err.status == 404:
                return []
            raise
        return listed["items"]

    with contextlib.suppress(AssertionError):
        wait_until(lambda: not remaining(), what="ScaledObjects to be deleted", timeout=timeout)
    for obj in remaining():
        meta = obj["metadata"]
        with contextlib.suppress(client.ApiException):
            custom.patch_namespaced_custom_object(
                KEDA_GROUP, KEDA_VERSION, meta["namespace"], SCALED_OBJECTS, meta["name"],
                {"metadata": {"finalizers": None}},
            )  # fmt: skip


def _register_metrics_api(
    cluster: TestCluster, namespace: str, host_ip: str, port: int, ca: bytes
) -> None:
    core = client.CoreV1Api(cluster.api)
    core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": SERVICE},
            "spec": {"ports": [{"name": "https", "port": 443, "targetPort": port}]},
        },
    )
    client.DiscoveryV1Api(cluster.api).create_namespaced_endpoint_slice(
        namespace,
        {
            "metadata": {
                "name": SERVICE,
                "labels": {
                    "kubernetes.io/service-name": SERVICE,
                    "endpointslice.kubernetes.io/managed-by": "mlmodel-operator-tests",
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [host_ip], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        },
    )
    client.ApiregistrationV1Api(cluster.api).create_api_service(
        _labelled(
            {
                "metadata": {"name": APISERVICE},
                "spec": {
                    "group": "external.metrics.k8s.io",
                    "version": "v1beta1",
                    "service": {"name": SERVICE, "namespace": namespace, "port": 443},
                    "caBundle": base64.b64encode(ca).decode(),
                    "groupPriorityMinimum": 100,
                    "versionPriority": 100,
                },
            }
        )
    )


def _api_service_available(cluster: TestCluster) -> bool:
    service = client.ApiregistrationV1Api(cluster.api).read_api_service(APISERVICE)
    return any(
        c.type == "Available" and c.status == "True" for c in service.status.conditions or []
    )


def remove_api_service(cluster: TestCluster) -> None:
    api = client.ApiregistrationV1Api(cluster.api)
    with contextlib.suppress(client.ApiException):
        api.delete_api_service(APISERVICE)

    def gone() -> bool:
        try:
            api.read_api_service(APISERVICE)
        except client.ApiException as err:
            if err.status == 404:
                return True
            raise
        return False

    wait_until(gone, what=f"APIService {APISERVICE} to be deleted")


@contextlib.contextmanager
def keda(cluster: TestCluster, directory: Path, host_ip: str) -> Iterator[Keda]:
    """KEDA's CRDs installed, its operator and metrics server running on this host, and the
    external metrics API Available; all of it removed afterwards."""
    operator_bin, adapter_bin = binaries()
    directory.mkdir(parents=True, exist_ok=True)
    namespace = create_namespace(cluster.api, f"keda-{uuid.uuid4().hex[:6]}")
    service_host = f"{SERVICE}.{namespace}.svc"
    certs = certificates(directory / "certs", [service_host, "localhost"], ["127.0.0.1", host_ip])
    grpc_port, health_port, metrics_port = free_port(), free_port(), free_port()
    adapter_port, adapter_metrics_port = free_port(), free_port()
    kubeconfig = str(cluster.kubeconfig)
    env = {
        **cluster.env,
        # Every namespace; its own is the one its Service lives in.
        "WATCH_NAMESPACE": "",
        "POD_NAMESPACE": namespace,
        "KEDA_CLUSTER_OBJECT_NAMESPACE": namespace,
    }
    servers: list[Server] = []
    crds: list[str] = []
    try:
        crds = _install_crds(cluster)
        operator = Server(
            [
                str(operator_bin),
                f"--kubeconfig={kubeconfig}",
                "--leader-elect=false",
                f"--metrics-bind-address=127.0.0.1:{metrics_port}",
                f"--health-probe-bind-address=127.0.0.1:{health_port}",
                f"--metrics-service-bind-address=127.0.0.1:{grpc_port}",
                # The certificates are made here; nothing for KEDA to rotate or patch in.
                f"--cert-dir={certs}",
                "--enable-cert-rotation=false",
                "--enable-webhook-patching=false",
                "--enable-apiservice-patching=false",
                f"--ca-dir={certs}",
                "--zap-log-level=info",
            ],
            directory / "keda-operator.log",
            env=env,
        ).start()
        servers.append(operator)
        operator.wait_for(f"http://127.0.0.1:{health_port}/readyz")
        adapter = Server(
            [
                str(adapter_bin),
                f"--lister-kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                f"--kubeconfig={kubeconfig}",
                f"--bind-address={host_ip}",
                f"--secure-port={adapter_port}",
                f"--cert-dir={certs}",
                f"--tls-cert-file={certs / 'tls.crt'}",
                f"--tls-private-key-file={certs / 'tls.key'}",
                f"--metrics-service-address=127.0.0.1:{grpc_port}",
                f"--port={adapter_metrics_port}",
                "--v=2",
            ],
            directory / "keda-adapter.log",
            env=env,
        ).start()
        servers.append(adapter)
        _register_metrics_api(
            cluster, namespace, host_ip, adapter_port, (certs / "ca.crt").read_bytes()
        )
        running = Keda(namespace, f"http://127.0.0.1:{metrics_port}/metrics", directory)
        try:
            wait_until(
                lambda: _api_service_available(cluster),
                what=f"APIService {APISERVICE} to be Available",
                timeout=120,
            )
        except AssertionError as err:
            raise AssertionError(f"{err}\n{running.logs()}") from None
        yield running
    finally:
        with contextlib.suppress(Exception):
            remove_api_service(cluster)
        release_scaled_objects(cluster, FINALIZER_TIMEOUT)
        for server in reversed(servers):
            server.close()
        if crds:
            _remove_crds(cluster, crds)
        client.CoreV1Api(cluster.api).delete_namespace(namespace)
