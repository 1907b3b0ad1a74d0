#!/usr/bin/env python3
"""A real Kubernetes control plane on loopback, with kwok simulating the nodes and their pods.

    python3 hack/localcluster.py up      start (or reuse a healthy cluster in the same directory)
    python3 hack/localcluster.py up --real-node
                                         the same with a real node (hack/realnode.py; root)
    python3 hack/localcluster.py down    stop every process and free every port
    python3 hack/localcluster.py env     print shell exports for kubectl and helm
    python3 hack/localcluster.py status  exit 0 when the cluster is up and healthy (and configured
                                         as `up` would configure it now)
    python3 hack/localcluster.py can-run-real-node
                                         exit 0 when this host can run a real node, else say why

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok run as local processes,
built from Go modules by hack/build-binaries.sh. Everything the cluster owns lives in one
directory ($MLMODEL_CLUSTER_DIR, default .cluster/ in the repository): certificates, kubeconfigs,
etcd data, state.json (pids and ports) and logs/<component>.log.

Only the standard library and the openssl command are used, so this runs before any virtualenv
exists.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import images
import realnode
from processes import http_ok, pid_alive, stop

REPO = Path(__file__).resolve().parent.parent
HACK = REPO / "hack"
DEFAULT_DIR = REPO / ".cluster"
SERVICE_CIDR = "10.96.0.0/12"
POD_CIDR = "10.244.0.0/16"
START_TIMEOUT = 90.0
STOP_TIMEOUT = 10.0
LOG_TAIL_LINES = 25

# Each component's client identity. The controller manager and scheduler get the identities their
# bootstrap RBAC roles are bound to, as on a kubeadm cluster; kwok plays every kubelet at once.
CLIENTS = {
    "admin": ("mlmodel-admin", "system:masters"),
    "kube-controller-manager": ("system:kube-controller-manager", None),
    "kube-scheduler": ("system:kube-scheduler", None),
    "kwok": ("kwok-controller", "system:masters"),
}


class ClusterError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"[localcluster] {msg}", file=sys.stderr, flush=True)


# --- binaries -------------------------------------------------------------------------------


def binary_dirs() -> dict[str, Path]:
    """Component name -> cache directory, as hack/build-binaries.sh lays them out."""
    out = subprocess.run(
        ["bash", str(HACK / "build-binaries.sh"), "--print"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    dirs = {}
    for line in out.split():
        path = Path(line)
        dirs[path.name.rsplit("-", 1)[0]] = path
    return dirs


def binaries(real_node: bool = False) -> dict[str, Path]:
    found = all_binaries()
    if not real_node:
        found = {name: found[name] for name in CONTROL_PLANE_BINARIES}
    missing = [name for name, path in found.items() if not os.access(path, os.X_OK)]
    if missing:
        flag = " REAL_NODE=1" if real_node else ""
        raise ClusterError(
            f"missing binaries: {', '.join(missing)}; build them with `make binaries{flag}` "
            "(hack/build-binaries.sh)"
        )
    return found


CONTROL_PLANE_BINARIES = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
]


def all_binaries() -> dict[str, Path]:
    dirs = binary_dirs()
    return {
        "etcd": dirs["etcd"] / "etcd",
        "kube-apiserver": dirs["kubernetes"] / "kube-apiserver",
        "kube-controller-manager": dirs["kubernetes"] / "kube-controller-manager",
        "kube-scheduler": dirs["kubernetes"] / "kube-scheduler",
        "kubectl": dirs["kubernetes"] / "kubectl",
        "kwok": dirs["kwok"] / "kwok",
        "kubelet": dirs["kubernetes-node"] / "kubelet",
        "kube-proxy": dirs["kubernetes-node"] / "kube-proxy",
        "containerd": dirs["containerd"] / "containerd",
        "ctr": dirs["containerd"] / "ctr",
        "containerd-shim-runc-v2": dirs["containerd-shim"] / "containerd-shim-runc-v2",
        "coredns": dirs["coredns"] / "coredns",
        "pause": dirs["nodetools"] / "pause",
        "cri-teardown": dirs["nodetools"] / "cri-teardown",
    }


# --- certificates and kubeconfigs -------------------------------------------------------------


def openssl(*args: str, cwd: Path) -> None:
    if shutil.which("openssl") is None:
        raise ClusterError("the openssl command is missing (Debian: apt-get install openssl)")
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(pki: Path, name: str, common_name: str) -> None:
    openssl("genrsa", "-out", f"{name}.key", "2048", cwd=pki)
    openssl(
        "req", "-x509", "-new", "-key", f"{name}.key", "-subj", f"/CN={common_name}",
        "-days", "3650", "-sha256", "-out", f"{name}.crt",
        cwd=pki,
    )  # fmt: skip


def sign(pki: Path, name: str, subject: str, extensions: str, ca: str = "ca") -> None:
    openssl("genrsa", "-out", f"{name}.key", "2048", cwd=pki)
    openssl("req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr", cwd=pki)
    (pki / f"{name}.ext").write_text(extensions)
    openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-days", "3650", "-sha256", "-extfile", f"{name}.ext",
        "-out", f"{name}.crt",
        cwd=pki,
    )  # fmt: skip


CLIENT_EXTENSIONS = (
    "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n"
)
# The API aggregation layer: the API server forwards requests for an APIService (KEDA's
# external.metrics.k8s.io, for one) with this client certificate, signed by a CA of its own, and
# the extension server trusts the user it names in the X-Remote-* headers only from that CA and
# that name (it reads both from kube-system/extension-apiserver-authentication).
FRONT_PROXY_CA = "front-proxy-ca"
FRONT_PROXY_CLIENT = "front-proxy-client"


def aggregation_flags(pki: Path) -> list[str]:
    """The API server's flags for the aggregation layer. Aggregator routing: it dials the
    APIService's endpoint address itself rather than the Service's ClusterIP, which only
    kube-proxy (the real node's) would route."""
    return [
        f"--requestheader-client-ca-file={pki / (FRONT_PROXY_CA + '.crt')}",
        f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={pki / (FRONT_PROXY_CLIENT + '.crt')}",
        f"--proxy-client-key-file={pki / (FRONT_PROXY_CLIENT + '.key')}",
        "--enable-aggregator-routing=true",
    ]


def make_pki(pki: Path, real_node: bool) -> None:
    pki.mkdir(parents=True, exist_ok=True)
    make_ca(pki, "ca", "mlmodel-local-ca")
    make_ca(pki, FRONT_PROXY_CA, "mlmodel-front-proxy-ca")
    sign(pki, FRONT_PROXY_CLIENT, f"/CN={FRONT_PROXY_CLIENT}", CLIENT_EXTENSIONS, FRONT_PROXY_CA)
    sign(
        pki,
        "apiserver",
        "/CN=kube-apiserver",
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        f"subjectAltName=IP:127.0.0.1,IP:10.96.0.1,IP:{realnode.NODE_IP},DNS:localhost,DNS:kubernetes,"
        "DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n",
    )
    clients = {**CLIENTS, **(realnode.CLIENT_CERTS if real_node else {})}
    for name, (common_name, org) in clients.items():
        subject = f"/CN={common_name}" + (f"/O={org}" if org else "")
        sign(pki, name, subject, CLIENT_EXTENSIONS)
    # ServiceAccount tokens are signed with this key pair (TokenRequest, `kubectl create token`).
    openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
    for leftover in list(pki.glob("*.csr")) + list(pki.glob("*.ext")):
        leftover.unlink()


def kubeconfig(server: str, pki: Path, client: str) -> str:
    return textwrap.dedent(
        f"""\
        apiVersion: v1
        kind: Config
        clusters:
        - name: mlmodel-local
          cluster:
            server: {server}
            certificate-authority: {pki / "ca.crt"}
        users:
        - name: {client}
          user:
            client-certificate: {pki / f"{client}.crt"}
            client-key: {pki / f"{client}.key"}
        contexts:
        - name: mlmodel-local
          context:
            cluster: mlmodel-local
            user: {client}
            namespace: default
        current-context: mlmodel-local
        """
    )


# --- processes ------------------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Cluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.pki = root / "pki"
        self.logs = root / "logs"
        self.state_file = root / "state.json"
        self.kubeconfig_path = root / "kubeconfig"

    # state.json: {"ports": {...}, "pids": {component: pid}}
    def load_state(self) -> dict | None:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None

    def save_state(self, state: dict) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_file)

    def server(self, state: dict) -> str:
        # With a real node the API server listens on the node's address (see realnode.py).
        host = realnode.NODE_IP if state.get("real_node") else "127.0.0.1"
        return f"https://{host}:{state['ports']['kube-apiserver']}"

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return ctx

    def api_ready(self, state: dict) -> bool:
        try:
            with urllib.request.urlopen(
                self.server(state) + "/readyz", context=self.ssl_context(), timeout=3
            ) as resp:
                return resp.status == 200
        except (OSError, ssl.SSLError):
            return False

    def healthy(self) -> bool:
        state = self.load_state()
        if not state or not state.get("complete"):
            return False
        if not all(pid_alive(pid) for pid in state["pids"].values()):
            return False
        return self.api_ready(state)

    # --- start -------------------------------------------------------------------------------

    def start_process(self, name: str, argv: list[str], state: dict) -> subprocess.Popen:
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{name}.log", "ab") as logf:
            # A session of its own: the cluster outlives the command that started it and is
            # stopped only by `down`, never by a Ctrl-C meant for a test run.
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.root,
            )
        state["pids"][name] = proc.pid
        self.save_state(state)
        return proc

    def wait_for(self, what: str, check, procs: dict[str, subprocess.Popen]) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            for name, proc in procs.items():
                if proc.poll() is not None:
                    raise ClusterError(
                        f"{name} exited with code {proc.returncode} during start-up; "
                        f"last lines of {self.logs / (name + '.log')}:\n"
                        f"{tail(self.logs / (name + '.log'))}"
                    )
            if check():
                return
            time.sleep(0.5)
        raise ClusterError(f"timed out after {START_TIMEOUT:.0f}s waiting for {what}")

    def kubectl(self, bins: dict[str, Path], *args: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(bins["kubectl"]), "--kubeconfig", str(self.kubeconfig_path), *args],
            capture_output=True,
            text=True,
            **kw,
        )

    def real_node(self) -> realnode.RealNode:
        return realnode.RealNode(self.root, self.pki, images.cache_dir() / "containerd")

    def outdated(self) -> str | None:
        """Why the cluster in this directory is not as `up` would start it now, or None."""
        state = self.load_state() or {}
        if not state.get("ports"):
            return None
        return outdated(state, apiserver_argv(all_binaries()["kube-apiserver"], state, self.pki))

    def up(self, real_node: bool = False) -> None:
        state = self.load_state() or {}
        stale = self.outdated()
        if self.healthy() and (state.get("real_node") or not real_node) and not stale:
            log(f"reusing the running cluster in {self.root}")
            return
        if state:
            log(f"replacing the cluster in {self.root}" + (f": {stale}" if stale else ""))
        self.down(quiet=True)
        bins = binaries(real_node)
        if real_node and (reason := realnode.unavailable_reason(bins, self.root)):
            raise ClusterError(f"cannot start a real node: {reason}")
        started = time.monotonic()
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True)
        make_pki(self.pki, real_node)

        names = [
            "etcd-client",
            "etcd-peer",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok",
        ]
        if real_node:
            names += [
                "kubelet",
                "kubelet-healthz",
                "kube-proxy-healthz",
                "kube-proxy-metrics",
                "coredns-health",
            ]
        ports = dict(zip(names, free_ports(len(names)), strict=True))
        state = {"ports": ports, "pids": {}, "complete": False, "real_node": real_node}
        self.save_state(state)
        server = self.server(state)
        for client in CLIENTS:
            path = self.kubeconfig_path if client == "admin" else self.root / f"{client}.kubeconfig"
            path.write_text(kubeconfig(server, self.pki, client))

        procs: dict[str, subprocess.Popen] = {}
        try:
            if real_node:
                # Its bridge first: the API server listens on the node's address.
                self.real_node().prepare_host()
            self._start_components(bins, state, procs)
            self._apply_nodes(bins, procs)
            if real_node:
                self._start_real_node(bins, state, procs)
        except BaseException:
            for name, proc in procs.items():
                if proc.poll() is None:
                    log(f"stopping {name}")
            self.down(quiet=True)
            raise
        state["complete"] = True
        self.save_state(state)
        log(f"cluster up in {time.monotonic() - started:.1f}s; API {server}; logs in {self.logs}")

    def _start_real_node(self, bins, state, procs) -> None:
        pause = images.build(["pause"])

        def load_pause(socket: Path) -> None:
            images.import_into(socket, pause)

        self.real_node().start(
            bins,
            state["ports"],
            self.server(state),
            lambda client: kubeconfig(self.server(state), self.pki, client),
            self.start_process,
            self.wait_for,
            lambda *args, **kw: self.kubectl(bins, *args, **kw),
            state,
            procs,
            pause["pause"],
            load_pause,
        )

    def _start_components(self, bins, state, procs) -> None:
        ports, pki, root = state["ports"], self.pki, self.root
        etcd_url = f"http://127.0.0.1:{ports['etcd-client']}"
        peer_url = f"http://127.0.0.1:{ports['etcd-peer']}"
        log("starting etcd")
        procs["etcd"] = self.start_process(
            "etcd",
            [
                str(bins["etcd"]),
                "--name=local",
                f"--data-dir={root / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=local={peer_url}",
                # A throwaway test cluster: durability is not worth an fsync per write.
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
            state,
        )
        self.wait_for("etcd", lambda: http_ok(etcd_url + "/health"), procs)

        log("starting kube-apiserver")
        argv = apiserver_argv(bins["kube-apiserver"], state, pki)
        # Kept, so that a later `up` knows whether the running API server is configured as this
        # launcher would configure it now (see outdated()).
        state["apiserver_argv"] = argv
        procs["kube-apiserver"] = self.start_process("kube-apiserver", argv, state)
        self.wait_for("kube-apiserver /readyz", lambda: self.api_ready(state), procs)

        log("starting kube-controller-manager and kube-scheduler")
        procs["kube-controller-manager"] = self.start_process(
            "kube-controller-manager",
            [
                str(bins["kube-controller-manager"]),
                *_component_auth(root / "kube-controller-manager.kubeconfig"),
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['kube-controller-manager']}",
                "--leader-elect=false",
                # Each controller gets its own ServiceAccount, so RBAC applies to them as upstream.
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--cluster-cidr={POD_CIDR}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--v=1",
            ],
            state,
        )
        procs["kube-scheduler"] = self.start_process(
            "kube-scheduler",
            [
                str(bins["kube-scheduler"]),
                *_component_auth(root / "kube-scheduler.kubeconfig"),
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['kube-scheduler']}",
                "--leader-elect=false",
                "--v=1",
            ],
            state,
        )
        log("starting kwok")
        procs["kwok"] = self.start_process(
            "kwok",
            [
                str(bins["kwok"]),
                f"--kubeconfig={root / 'kwok.kubeconfig'}",
                f"--config={HACK / 'kwok' / 'stages.yaml'}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--node-lease-duration-seconds=40",
                f"--cidr={POD_CIDR}",
                f"--server-address=127.0.0.1:{ports['kwok']}",
            ],
            state,
        )
        self.wait_for(
            "the scheduler and controller manager",
            lambda: (
                _https_ok(f"https://127.0.0.1:{ports['kube-scheduler']}/healthz")
                and _https_ok(f"https://127.0.0.1:{ports['kube-controller-manager']}/healthz")
            ),
            procs,
        )

    def _apply_nodes(self, bins, procs) -> None:
        log("creating simulated nodes")
        result = self.kubectl(bins, "apply", "-f", str(HACK / "kwok" / "nodes.yaml"))
        if result.returncode != 0:
            raise ClusterError(f"creating nodes failed: {result.stderr.strip()}")

        def nodes_ready() -> bool:
            ready = '{.status.conditions[?(@.type=="Ready")].status}'
            jsonpath = f'jsonpath={{range .items[*]}}{ready}{{" "}}{{end}}'
            out = self.kubectl(bins, "get", "nodes", "-o", jsonpath).stdout.split()
            return len(out) >= 4 and all(s == "True" for s in out)

        self.wait_for("the nodes to be Ready", nodes_ready, procs)

        def default_sa() -> bool:
            return self.kubectl(bins, "get", "serviceaccount", "default").returncode == 0

        # Pods cannot be created in a namespace before its default ServiceAccount exists.
        self.wait_for("the default ServiceAccount", default_sa, procs)

    # --- stop --------------------------------------------------------------------------------

    def down(self, quiet: bool = False) -> None:
        state = self.load_state()
        node = self.real_node()
        has_node = (state and state.get("real_node")) or realnode.current_owner() == self.root
        if has_node:
            # While the API server still runs, so that the Node object goes too.
            state = state or {"pids": {}}
            bins = all_binaries()
            api_up = state.get("ports") and self.api_ready(state)
            kubectl = (lambda *a, **kw: self.kubectl(bins, *a, **kw)) if api_up else None
            node.teardown(state, bins, kubectl)
            if state.get("ports"):
                self.save_state(state)
        if not state:
            if not quiet:
                log(f"no cluster in {self.root}")
            return
        # Reverse start order, one at a time: the API server stops cleanly only while etcd is up.
        for name, pid in list(state.get("pids", {}).items())[::-1]:
            stop(name, pid, STOP_TIMEOUT, "localcluster")
        state["pids"] = {}
        state["complete"] = False
        self.save_state(state)
        # Keep the logs of the last run for diagnosis; the data and certificates go.
        if has_node:
            node.release_host()
            for item in realnode.leftovers(node.store, self.root):
                log(f"warning: the real node left {item}")
        for sub in ("etcd", "pki"):
            shutil.rmtree(self.root / sub, ignore_errors=True)
        self.state_file.unlink(missing_ok=True)
        if not quiet:
            log(f"cluster in {self.root} stopped")

    def env(self) -> str:
        bindirs = sorted({str(p) for p in binary_dirs().values()})
        path = os.pathsep.join([*bindirs, "$PATH"])
        return f'export KUBECONFIG="{self.kubeconfig_path}"\nexport PATH="{path}"\n'


def apiserver_argv(binary: Path, state: dict, pki: Path) -> list[str]:
    """The API server's command line for the cluster in `state` (its ports, whether it has a
    real node) with its certificates in `pki`."""
    ports = state["ports"]
    if state.get("real_node"):
        address_and_authorization = realnode.apiserver_flags(pki)
    else:
        address_and_authorization = [
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            "--authorization-mode=RBAC",
        ]
    return [
        str(binary),
        f"--etcd-servers=http://127.0.0.1:{ports['etcd-client']}",
        *address_and_authorization,
        f"--secure-port={ports['kube-apiserver']}",
        f"--tls-cert-file={pki / 'apiserver.crt'}",
        f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        *aggregation_flags(pki),
        # PodNodeSelector and PodTolerationRestriction act only on namespaces annotated for them:
        # that is how a namespace's pods are put on the real node.
        "--enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,"
        "DefaultTolerationSeconds,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,"
        "ResourceQuota,PodSecurity,PodNodeSelector,PodTolerationRestriction",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--v=1",
    ]


def outdated(state: dict, wanted: list[str]) -> str | None:
    """Why a running cluster's API server is not the one `up` would start now (`wanted`, its
    command line for the same ports), or None. A cluster started by an older launcher, before
    a flag was added (the aggregation layer's, say), has to be replaced, not reused."""
    running = state.get("apiserver_argv")
    if running is None:
        return "its API server's flags were not recorded (started by an older launcher)"
    missing = [flag for flag in wanted if flag not in running]
    extra = [flag for flag in running if flag not in wanted]
    if not missing and not extra:
        return None
    changes = [f"+{flag}" for flag in missing] + [f"-{flag}" for flag in extra]
    return f"its API server's flags differ: {' '.join(changes)}"


def _component_auth(kubeconfig_path: Path) -> list[str]:
    return [
        f"--kubeconfig={kubeconfig_path}",
        f"--authentication-kubeconfig={kubeconfig_path}",
        f"--authorization-kubeconfig={kubeconfig_path}",
    ]


def _https_ok(url: str) -> bool:
    # Health endpoints of the controller manager and scheduler are served with self-signed
    # certificates and need no client authentication.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "env", "status", "can-run-real-node"])
    parser.add_argument(
        "--real-node",
        action="store_true",
        help="up: also a real node (containerd, kubelet, kube-proxy, CoreDNS; needs root)",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(os.environ.get("MLMODEL_CLUSTER_DIR", DEFAULT_DIR)),
        help="directory that holds the cluster's state (default: $MLMODEL_CLUSTER_DIR or .cluster)",
    )
    args = parser.parse_args(argv)
    cluster = Cluster(args.dir.resolve())
    try:
        if args.command == "up":
            cluster.up(real_node=args.real_node)
        elif args.command == "down":
            cluster.down()
        elif args.command == "env":
            sys.stdout.write(cluster.env())
        elif args.command == "status":
            healthy = cluster.healthy()
            if healthy and (stale := cluster.outdated()):
                # Up, but `up` would replace it: callers that reuse a running cluster start one.
                print(f"outdated: {stale}")
                return 1
            with_node = healthy and (cluster.load_state() or {}).get("real_node")
            print("up with a real node" if with_node else "up" if healthy else "down")
            return 0 if healthy else 1
        elif args.command == "can-run-real-node":
            reason = realnode.unavailable_reason(all_binaries(), cluster.root)
            if reason:
                print(reason)
                return 1
    except (ClusterError, realnode.NodeError, images.ImageError) as err:
        log(f"error: {err}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
