"""A real node for the local cluster: containerd, kubelet, kube-proxy and CoreDNS on this host.

hack/localcluster.py calls this module when a cluster is started with `--real-node`. Pods placed
on the node `real-node-1` really run (runc), really probe, and reach each other through
ClusterIP Services (kube-proxy, iptables) and cluster DNS (CoreDNS). It needs root, and changes
the host in ways `localcluster.py down` undoes completely (RealNode.teardown while the control
plane still runs, RealNode.release_host after):

- two bridges: `mlmnode0` carries the node's IP (the kubelet refuses a loopback one, and this
  host refuses dummy interfaces), `mlmpods0` the pods (made by the CNI bridge plugin);
- iptables chains of kube-proxy (KUBE-*), of the kubelet (KUBE-*), of the CNI plugins (CNI-*)
  and our own MLMODEL-REALNODE, which drops whatever pods would send off this machine;
- sysctls the kubelet, kube-proxy and the CNI plugins set (saved here, restored on teardown);
- mounts and cgroups of the pods, and a few directories under /run and /var.

Only one real node can run on a machine (the bridges, addresses and iptables chains are
host-wide): the cluster that holds /run/mlmodel-realnode/owner has it.

Standard library only, like hack/localcluster.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from processes import http_ok, pid_alive, stop

NODE_NAME = "real-node-1"
NODE_IP = "10.250.77.1"
NODE_BRIDGE = "mlmnode0"
POD_BRIDGE = "mlmpods0"
# Apart from the kwok nodes' 10.244.0.0/16, whose pod IPs are not routable.
POD_SUBNET = "10.245.0.0/24"
DNS_SERVICE_IP = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
# Pods go to the real node only when they ask to: its taint keeps every other test's pods (and
# images that do not exist) on the kwok nodes. See namespace_annotations().
NODE_LABEL = ("type", "real")
NODE_TAINT = "type=real:NoSchedule"
RUN_DIR = Path("/run/mlmodel-realnode")  # short: unix socket paths are limited to 108 bytes
OWNER_FILE = RUN_DIR / "owner"
CNI_BIN_DIR = Path("/usr/lib/cni")
OUR_CHAIN = "MLMODEL-REALNODE"
CHAIN_PREFIXES = ("KUBE-", "CNI-", OUR_CHAIN)
# Host directories the node's components create where they cannot be told otherwise; removed
# on teardown when they did not exist before.
HOST_DIRS = [
    Path("/run/containerd"),
    Path("/var/log/containers"),
    Path("/var/lib/cni"),
    Path("/run/netns"),
]
# Sysctls the kubelet (kernel defaults it insists on), kube-proxy and the CNI bridge plugin
# (forwarding) change; restored on teardown. Per-interface keys go with the interfaces.
SYSCTLS = [
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/forwarding",
    "net/ipv4/conf/default/forwarding",
    "net/ipv4/conf/all/route_localnet",
    "net/ipv6/conf/all/forwarding",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
    "net/netfilter/nf_conntrack_max",
    "net/netfilter/nf_conntrack_tcp_timeout_established",
    "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
    "net/netfilter/nf_conntrack_tcp_be_liberal",
    "net/netfilter/nf_conntrack_udp_timeout",
    "net/netfilter/nf_conntrack_udp_timeout_stream",
]
# Debian packages the node needs besides the binaries built from Go modules.
COMMANDS = {
    "runc": "runc",
    "iptables": "iptables",
    "ip": "iproute2",
    "mount": "mount",
}
STOP_TIMEOUT = 20.0


class NodeError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"[realnode] {msg}", flush=True, file=sys.stderr)


def run(*argv: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, **kw)
    if check and result.returncode != 0:
        raise NodeError(f"{' '.join(argv)} failed: {result.stderr.strip() or result.stdout}")
    return result


# --- can this host run it? -------------------------------------------------------------------


def unavailable_reason(bins: dict[str, Path], cluster_root: Path) -> str | None:
    """Why a real node cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "the real node needs root (it creates bridges, iptables chains and cgroups)"
    if (
        not Path("/sys/fs/cgroup/memory").is_dir()
        and not Path("/sys/fs/cgroup/cgroup.controllers").exists()
    ):
        return "no memory cgroup controller under /sys/fs/cgroup"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "the kernel has no overlay filesystem (containerd's snapshotter)"
    if not Path("/proc/sys/net/bridge").is_dir():
        # Pods reach Services on their own bridge only through bridge netfilter.
        return "the kernel has no bridge netfilter (br_netfilter)"
    missing = [
        f"{name} (Debian: {pkg})" for name, pkg in COMMANDS.items() if not shutil.which(name)
    ]
    missing += [
        f"{CNI_BIN_DIR / p} (Debian: containernetworking-plugins)"
        for p in ("bridge", "host-local", "portmap", "loopback")
        if not (CNI_BIN_DIR / p).exists()
    ]
    missing += [f"{name} (make binaries REAL_NODE=1)" for name, p in bins.items() if not p.exists()]
    if missing:
        return "missing: " + ", ".join(missing)
    owner = current_owner()
    if owner is not None and owner != cluster_root:
        return f"the real node of this machine belongs to the cluster in {owner}"
    return None


def current_owner() -> Path | None:
    """The cluster directory whose real node holds this host's bridges and chains, if any."""
    try:
        owner = Path(OWNER_FILE.read_text().strip())
    except OSError:
        return None
    # An owner whose state file is gone was torn down without teardown (a removed directory).
    return owner if (owner / "state.json").exists() else None


# --- host network and settings ---------------------------------------------------------------


def read_sysctls() -> dict[str, str]:
    values = {}
    for key in SYSCTLS:
        with contextlib.suppress(OSError):
            values[key] = Path("/proc/sys", key).read_text().strip()
    return values


def restore_sysctls(saved: dict[str, str]) -> None:
    for key, value in saved.items():
        path = Path("/proc/sys", key)
        with contextlib.suppress(OSError):
            if path.read_text().strip() != value:
                path.write_text(value)
                log(f"restored sysctl {key.replace('/', '.')} = {value}")


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def setup_host_network() -> None:
    if not link_exists(NODE_BRIDGE):
        run("ip", "link", "add", NODE_BRIDGE, "type", "bridge")
    run("ip", "addr", "replace", f"{NODE_IP}/32", "dev", NODE_BRIDGE)
    run("ip", "link", "set", NODE_BRIDGE, "up")
    # Pods talk to each other, to the node and to Services, never off this machine: the
    # network here is closed, and forwarding is on while the node runs (the CNI plugin turns
    # it on for pod-to-Service traffic). Our chain, first in FORWARD, drops the rest.
    if run("iptables", "-n", "-L", OUR_CHAIN, check=False).returncode != 0:
        run("iptables", "-N", OUR_CHAIN)
    run("iptables", "-F", OUR_CHAIN)
    for rule in (
        ["-i", POD_BRIDGE, "-o", POD_BRIDGE, "-j", "RETURN"],
        ["-i", POD_BRIDGE, "-o", NODE_BRIDGE, "-j", "RETURN"],
        ["-i", POD_BRIDGE, "-j", "DROP"],
        ["-o", POD_BRIDGE, "-s", POD_SUBNET, "-j", "RETURN"],
        ["-o", POD_BRIDGE, "-s", NODE_IP, "-j", "RETURN"],
        ["-o", POD_BRIDGE, "-j", "DROP"],
    ):
        run("iptables", "-A", OUR_CHAIN, *rule)
    if run("iptables", "-C", "FORWARD", "-j", OUR_CHAIN, check=False).returncode != 0:
        run("iptables", "-I", "FORWARD", "1", "-j", OUR_CHAIN)


def node_chains(dump: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """From iptables-save output: the (table, chain) named like ours, kube-proxy's, the
    kubelet's or the CNI plugins', and the (table, rule) of other chains that jump to them."""
    table = ""
    chains: list[tuple[str, str]] = []
    jumps: list[tuple[str, str]] = []
    for line in dump.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            name = line[1:].split()[0]
            if name.startswith(CHAIN_PREFIXES):
                chains.append((table, name))
        elif line.startswith("-A "):
            parts = line.split()
            target = parts[parts.index("-j") + 1] if "-j" in parts else ""
            if not parts[1].startswith(CHAIN_PREFIXES) and target.startswith(CHAIN_PREFIXES):
                jumps.append((table, line))
    return chains, jumps


def remove_chains() -> None:
    """Remove the node's chains and the rules that jump to them, in IPv4 and IPv6."""
    for family in ("iptables", "ip6tables"):
        if not shutil.which(family):
            continue
        chains, jumps = node_chains(run(f"{family}-save", check=False).stdout)
        for table, line in jumps:
            # iptables-save quotes comments; let the shell undo that.
            run("bash", "-c", f"{family} -t {table} -D {line[3:]}", check=False)
        for table, name in chains:
            run(family, "-t", table, "-F", name, check=False)
        for table, name in chains:
            run(family, "-t", table, "-X", name, check=False)


def nft_tables() -> list[str] | None:
    """The host's nftables tables ("ip nat", ...), or None without the nft command."""
    if not shutil.which("nft"):
        return None
    out = run("nft", "list", "tables", check=False).stdout
    return [line.removeprefix("table ").strip() for line in out.splitlines() if line.strip()]


def remove_new_tables(before: list[str] | None) -> None:
    """iptables-nft creates the tables it is first asked about (filter, nat, mangle); remove
    those that did not exist before and hold no rule any more."""
    if before is None or (now := nft_tables()) is None:
        return
    for table in now:
        if table in before:
            continue
        listing = run("nft", "list", "table", *table.split(), check=False).stdout
        rules = [
            line
            for line in listing.splitlines()
            if line.strip()
            and not line.strip().startswith(("table", "chain", "type", "policy", "}"))
        ]
        if not rules:
            run("nft", "delete", "table", *table.split(), check=False)


def leftover_chains() -> list[str]:
    found = []
    for family in ("iptables", "ip6tables"):
        if shutil.which(family):
            chains, _ = node_chains(run(f"{family}-save", check=False).stdout)
            found += [f"{family} -t {table} {name}" for table, name in chains]
    return found


def our_mounts(roots: list[Path]) -> list[str]:
    """Mount points under `roots`, deepest first."""
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if any(point == str(r) or point.startswith(f"{r}/") for r in roots):
                points.append(point)
    return sorted(set(points), key=lambda p: p.count("/"), reverse=True)


def unmount_all(roots: list[Path]) -> None:
    for point in our_mounts(roots):
        run("umount", "--lazy", point, check=False)


def pod_cgroups() -> list[Path]:
    """The kubelet's cgroups (kubepods and below) in every hierarchy, deepest first."""
    found = []
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        for top in (hierarchy / "kubepods", hierarchy / "kubepods.slice"):
            if top.is_dir():
                found += [Path(d) for d, _, _ in os.walk(top)]
        if hierarchy.name == "kubepods":  # cgroup v2: /sys/fs/cgroup/kubepods
            found += [Path(d) for d, _, _ in os.walk(hierarchy)]
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def remove_cgroups() -> None:
    for group in pod_cgroups():
        # A process still in a pod's cgroup is one of the pods' (the runtime is stopped by now).
        with contextlib.suppress(OSError):
            for pid in (group / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
    for group in pod_cgroups():
        for _ in range(50):
            try:
                group.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.1)


def shim_pids(shim: Path) -> list[int]:
    """Running containerd shims of our build (shims outlive containerd by design)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(proc / "exe") == str(shim):
                    pids.append(int(proc.name))
    return pids


# --- configuration files ---------------------------------------------------------------------


def containerd_config(root: Path, state: Path, cni_conf: Path, pause_image: str) -> str:
    return f"""\
version = 3
root = "{root}"
state = "{state}"

[grpc]
  address = "{state}/containerd.sock"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{pause_image}"

[plugins."io.containerd.cri.v1.runtime"]
  # This VM refuses a negative oom_score_adj, and the kubelet asks for -998 for every
  # sandbox: runc then fails with "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  # Network namespaces under our state directory rather than /run/netns.
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "{shutil.which("runc")}"
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{CNI_BIN_DIR}"]
    conf_dir = "{cni_conf}"
    max_conf_num = 1
"""


def cni_config(ipam_dir: Path) -> str:
    return json.dumps(
        {
            "cniVersion": "1.0.0",
            "name": "mlmodel-realnode",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": POD_BRIDGE,
                    "isGateway": True,
                    # Nothing leaves this machine, so nothing needs masquerading.
                    "ipMasq": False,
                    # A pod can reach itself through a Service.
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_SUBNET}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(ipam_dir),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        },
        indent=2,
    )


def kubelet_config(node_dir: Path, pki: Path, port: int, healthz_port: int, socket: Path) -> str:
    return f"""\
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {NODE_IP}
port: {port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {healthz_port}
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {pki / "ca.crt"}}}
authorization:
  mode: Webhook
containerRuntimeEndpoint: unix://{socket}
# This host has cgroup v1 (hybrid) and no systemd; kubelet 1.36 refuses v1 unless told.
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
clusterDNS: [{DNS_SERVICE_IP}]
clusterDomain: {CLUSTER_DOMAIN}
# Pods get cluster DNS only, not the host's resolvers: nothing is looked up off this machine.
resolvConf: ""
podLogsDir: {node_dir / "pod-logs"}
# A busy shared disk must not evict the tests' pods.
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  imagefs.available: 1%
imageGCHighThresholdPercent: 100
rotateCertificates: false
serializeImagePulls: false
"""


def kube_proxy_config(kubeconfig: Path, healthz_port: int, metrics_port: int) -> str:
    return f"""\
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: {kubeconfig}
mode: iptables
hostnameOverride: {NODE_NAME}
clusterCIDR: {POD_SUBNET}
healthzBindAddress: 127.0.0.1:{healthz_port}
metricsBindAddress: 127.0.0.1:{metrics_port}
# NodePorts on the node's own address only, never on loopback (which would also need
# route_localnet): other clusters on this machine live on loopback.
nodePortAddresses: ["{NODE_IP}/32"]
iptables:
  localhostNodePorts: false
# Leave the host's conntrack settings alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
  udpTimeout: 0s
  udpStreamTimeout: 0s
"""


def corefile(kubeconfig: Path, port: int) -> str:
    # Cluster names only; anything else is refused rather than forwarded off this machine.
    return f"""\
.:53 {{
    bind {NODE_IP}
    errors
    health 127.0.0.1:{port}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 30
}}
"""


DNS_OBJECTS = f"""\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: mlmodel-realnode:coredns
rules:
- apiGroups: [""]
  resources: [services, endpoints, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: mlmodel-realnode:coredns
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: mlmodel-realnode:coredns}}
subjects:
- {{apiGroup: rbac.authorization.k8s.io, kind: User, name: mlmodel-realnode:coredns}}
---
# CoreDNS runs on the host, on the node's address; the Service points there by hand.
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {{k8s-app: kube-dns}}
spec:
  clusterIP: {DNS_SERVICE_IP}
  ports:
  - {{name: dns, port: 53, protocol: UDP, targetPort: 53}}
  - {{name: dns-tcp, port: 53, protocol: TCP, targetPort: 53}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kube-dns-host
  namespace: kube-system
  labels:
    kubernetes.io/service-name: kube-dns
    endpointslice.kubernetes.io/managed-by: mlmodel-realnode
addressType: IPv4
endpoints:
- addresses: ["{NODE_IP}"]
  conditions: {{ready: true}}
ports:
- {{name: dns, port: 53, protocol: UDP}}
- {{name: dns-tcp, port: 53, protocol: TCP}}
"""


def namespace_annotations() -> dict[str, str]:
    """Annotations that put every pod of a namespace on the real node: a node selector
    (PodNodeSelector admission) and a toleration of its taint (PodTolerationRestriction)."""
    key, value = NODE_LABEL
    effect = NODE_TAINT.rsplit(":", 1)[1]
    toleration = {"key": key, "operator": "Equal", "value": value, "effect": effect}
    return {
        "scheduler.alpha.kubernetes.io/node-selector": f"{key}={value}",
        "scheduler.alpha.kubernetes.io/defaultTolerations": json.dumps([toleration]),
    }


# --- the node --------------------------------------------------------------------------------

StartProcess = Callable[[str, list[str], dict], subprocess.Popen]
WaitFor = Callable[[str, Callable[[], bool], dict[str, subprocess.Popen]], None]
Kubectl = Callable[..., subprocess.CompletedProcess]

# Certificates the node adds to the cluster's PKI: name -> (CN, O).
CLIENT_CERTS = {
    "node": (f"system:node:{NODE_NAME}", "system:nodes"),
    "kube-proxy": ("system:kube-proxy", None),
    "coredns": ("mlmodel-realnode:coredns", None),
    # The API server's identity towards kubelets (logs, exec, port-forward).
    "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", "system:masters"),
}
NODE_COMPONENTS = ["containerd", "kubelet", "kube-proxy", "coredns"]


def apiserver_flags(pki: Path) -> list[str]:
    """What the API server needs for a real node: pods reach it through the `kubernetes`
    Service, whose endpoint is the advertise address; it reaches the kubelet for logs, exec and
    port-forward; and kubelets are authorized as nodes."""
    return [
        f"--bind-address={NODE_IP}",
        f"--advertise-address={NODE_IP}",
        "--authorization-mode=Node,RBAC",
        f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
        "--kubelet-preferred-address-types=InternalIP,Hostname",
    ]


class RealNode:
    """The node's files live in <cluster>/node, its runtime state in /run/mlmodel-realnode;
    containerd's image store is kept across runs in the binary cache, so images are imported
    once."""

    def __init__(self, cluster_root: Path, pki: Path, store: Path) -> None:
        self.root = cluster_root
        self.pki = pki
        self.dir = cluster_root / "node"
        self.store = store  # containerd's root: images and snapshots
        self.state_dir = RUN_DIR / "containerd"
        self.socket = self.state_dir / "containerd.sock"
        self.host_file = cluster_root / "node-host.json"

    def save_host(self) -> None:
        """Record the host as it is before the node changes it, for release_host."""
        record = {
            "sysctls": read_sysctls(),
            "nft_tables": nft_tables(),
            "absent_dirs": [str(d) for d in HOST_DIRS if not d.exists()],
        }
        self.host_file.write_text(json.dumps(record, indent=2))

    def claim(self) -> None:
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        OWNER_FILE.write_text(str(self.root))

    def prepare_host(self) -> None:
        """Before the API server starts: it binds to the node's address."""
        self.save_host()
        self.claim()
        setup_host_network()

    def start(
        self,
        bins: dict[str, Path],
        ports: dict[str, int],
        server: str,
        kubeconfig: Callable[[str], str],
        start_process: StartProcess,
        wait_for: WaitFor,
        kubectl: Kubectl,
        state: dict,
        procs: dict[str, subprocess.Popen],
        pause_image: str,
        load_images: Callable[[Path], None],
    ) -> None:
        node = self.dir
        for sub in ("cni", "cni-ipam", "kubelet", "pod-logs"):
            (node / sub).mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.store.mkdir(parents=True, exist_ok=True)
        (node / "cni" / "10-mlmodel-realnode.conflist").write_text(cni_config(node / "cni-ipam"))
        (node / "containerd.toml").write_text(
            containerd_config(self.store, self.state_dir, node / "cni", pause_image)
        )
        for name in ("node", "kube-proxy", "coredns"):
            (node / f"{name}.kubeconfig").write_text(kubeconfig(name))

        # containerd finds its shim and runc on PATH.
        path = os.pathsep.join([str(bins["containerd-shim-runc-v2"].parent), os.environ["PATH"]])
        log("starting containerd")
        procs["containerd"] = start_process(
            "containerd",
            [
                "env",
                f"PATH={path}",
                str(bins["containerd"]),
                f"--config={node / 'containerd.toml'}",
            ],
            state,
        )
        wait_for("containerd", self.socket.exists, procs)

        # The pause image at least, before the kubelet makes sandboxes.
        load_images(self.socket)

        (node / "kubelet.yaml").write_text(
            kubelet_config(node, self.pki, ports["kubelet"], ports["kubelet-healthz"], self.socket)
        )
        log("starting kubelet")
        key, value = NODE_LABEL
        procs["kubelet"] = start_process(
            "kubelet",
            [
                str(bins["kubelet"]),
                f"--config={node / 'kubelet.yaml'}",
                f"--kubeconfig={node / 'node.kubeconfig'}",
                f"--root-dir={node / 'kubelet'}",
                f"--cert-dir={node / 'kubelet' / 'pki'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={NODE_IP}",
                f"--node-labels={key}={value}",
                f"--register-with-taints={NODE_TAINT}",
                "--v=1",
            ],
            state,
        )
        (node / "kube-proxy.yaml").write_text(
            kube_proxy_config(
                node / "kube-proxy.kubeconfig",
                ports["kube-proxy-healthz"],
                ports["kube-proxy-metrics"],
            )
        )
        log("starting kube-proxy")
        procs["kube-proxy"] = start_process(
            "kube-proxy",
            [str(bins["kube-proxy"]), f"--config={node / 'kube-proxy.yaml'}", "--v=1"],
            state,
        )
        result = kubectl("apply", "--server-side", "-f", "-", input=DNS_OBJECTS)
        if result.returncode != 0:
            raise NodeError(f"creating the cluster DNS objects failed: {result.stderr.strip()}")
        (node / "Corefile").write_text(
            corefile(node / "coredns.kubeconfig", ports["coredns-health"])
        )
        log("starting coredns")
        procs["coredns"] = start_process(
            "coredns", [str(bins["coredns"]), "-conf", str(node / "Corefile")], state
        )

        def node_ready() -> bool:
            jsonpath = '{.status.conditions[?(@.type=="Ready")].status}'
            out = kubectl("get", "node", NODE_NAME, "-o", f"jsonpath={jsonpath}")
            return out.returncode == 0 and out.stdout.strip() == "True"

        wait_for(f"node {NODE_NAME} to be Ready", node_ready, procs)
        wait_for(
            "CoreDNS",
            lambda: http_ok(f"http://127.0.0.1:{ports['coredns-health']}/health"),
            procs,
        )

    def teardown(self, state: dict, bins: dict[str, Path], kubectl: Kubectl | None) -> None:
        """Stop the node's processes and remove its pods, chains, mounts and cgroups, while the
        control plane still runs (its API server listens on the node bridge, which
        release_host removes afterwards). Safe to run again."""
        pids: dict[str, int] = state.get("pids", {})
        # The kubelet first, so that it recreates nothing; the pods next, through the runtime,
        # which unmounts them, releases their network (CNI DEL) and removes their cgroups.
        if "kubelet" in pids:
            stop("kubelet", pids["kubelet"], STOP_TIMEOUT, "realnode")
        if self.socket.exists() and pid_alive(pids.get("containerd", 0)):
            result = run(str(bins["cri-teardown"]), f"unix://{self.socket}", check=False)
            if result.returncode != 0:
                log(f"cri-teardown: {result.stderr.strip()}")
        for name in ("coredns", "kube-proxy", "containerd"):
            if name in pids:
                stop(name, pids[name], STOP_TIMEOUT, "realnode")
        for pid in shim_pids(bins["containerd-shim-runc-v2"]):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if bins["kube-proxy"].exists():
            run(str(bins["kube-proxy"]), "--cleanup", check=False)
        remove_chains()
        unmount_all([self.dir, self.store, RUN_DIR, Path("/run/containerd")])
        remove_cgroups()
        if link_exists(POD_BRIDGE):
            run("ip", "link", "delete", POD_BRIDGE, check=False)
        if kubectl is not None:
            kubectl("delete", "node", NODE_NAME, "--ignore-not-found", "--wait=false")
        for name in NODE_COMPONENTS:
            pids.pop(name, None)

    def release_host(self) -> None:
        """After the control plane stopped: the node bridge, our chain, the sysctls, the
        directories and the claim on this host's real node."""
        if link_exists(NODE_BRIDGE):
            run("ip", "link", "delete", NODE_BRIDGE, check=False)
        remove_chains()
        try:
            record = json.loads(self.host_file.read_text())
        except (OSError, ValueError):
            record = {}
        remove_new_tables(record.get("nft_tables"))
        restore_sysctls(record.get("sysctls", {}))
        for d in record.get("absent_dirs", []):
            unmount_all([Path(d)])
            shutil.rmtree(d, ignore_errors=True)
        shutil.rmtree(self.state_dir, ignore_errors=True)
        # The image store stays (it is a cache); its containers' snapshots went with them.
        if current_owner() in (self.root, None):
            OWNER_FILE.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                RUN_DIR.rmdir()
        self.host_file.unlink(missing_ok=True)


def leftovers(store: Path, cluster_root: Path) -> list[str]:
    """What of a real node is still on this host (empty after a complete teardown)."""
    found = []
    found += [f"link {link}" for link in (POD_BRIDGE, NODE_BRIDGE) if link_exists(link)]
    found += leftover_chains()
    found += [f"mount {m}" for m in our_mounts([cluster_root, store, RUN_DIR])]
    found += [f"cgroup {g}" for g in pod_cgroups()]
    if RUN_DIR.exists():
        found.append(f"directory {RUN_DIR}")
    return found
