#!/usr/bin/env python3
"""kind clusters on this host: kind's podman provider, the node image of hack/kindnode.py.

    python3 hack/kindcluster.py up        create the cluster (or reuse a running one), then load
                                          the project's images into it
    python3 hack/kindcluster.py down      delete it and undo what it changed on the host
    python3 hack/kindcluster.py load [NAME ...]
                                          build the project's images (hack/images.py) and load
                                          them into the node (default: operator, mlserver)
    python3 hack/kindcluster.py env       print shell exports for kubectl, helm and kind
    python3 hack/kindcluster.py status    exit 0 when the cluster's node is Ready
    python3 hack/kindcluster.py can-run   exit 0 when this host can run kind, else say why
    python3 hack/kindcluster.py leftovers print what of kind clusters is still on this host

--name (default mlmodel-kind) names the cluster, its podman network and its bridge; the
kubeconfig goes to $MLMODEL_KIND_DIR (default .kind-cluster/ in the repository).

A kind cluster lives beside the local control plane and its real node without sharing anything
with them: its API server is a port on 127.0.0.1 that podman forwards into the node; its
Services, pods and their iptables chains are inside the node's network namespace; the host gets
one podman network per cluster (a bridge named mlmk<hash>, podman's NETAVARK-* chains), where
the real node has mlmnode0/mlmpods0 and KUBE-*, CNI-* and MLMODEL-REALNODE chains. What the
node's kubelet changes of the host (global sysctls it sets to its defaults) is saved before the
first cluster starts and restored after the last one is deleted, and so is /lib/modules, which
kind mounts into the node and which `up` creates when the host has none.

Standard library only, like hack/localcluster.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import images
import kindnode
import kindpodman
import realnode
from kindpodman import RUN_DIR, PodmanError, log, podman

REPO = Path(__file__).resolve().parent.parent
DEFAULT_NAME = "mlmodel-kind"
DEFAULT_DIR = REPO / ".kind-cluster"
DEFAULT_IMAGES = ["operator", "mlserver"]
HOST_RECORD = RUN_DIR / "host.json"
LIB_MODULES = Path("/lib/modules")
CLUSTER_LABEL = "io.x-k8s.kind.cluster"
WAIT = "180s"


class KindError(RuntimeError):
    pass


def kind_bin() -> Path:
    return kindnode.binary("kind", "kind")


def kubectl_bin() -> Path:
    return kindnode.binary("kubernetes", "kubectl")


def run_kind(*args: str, name: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    env = {**kindpodman.env(), "KIND_EXPERIMENTAL_PODMAN_NETWORK": network_name(name)}
    kw.setdefault("text", True)
    result = subprocess.run([str(kind_bin()), *args], env=env, **kw)
    if check and result.returncode != 0:
        detail = (result.stderr or "").strip() if kw.get("capture_output") else ""
        raise KindError(f"kind {' '.join(args[:2])} failed (exit {result.returncode}) {detail}")
    return result


# --- can this host run it? -------------------------------------------------------------------


def unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "kind with podman needs root here (rootless podman cannot run a node on cgroup v1)"
    missing = kindpodman.missing_tools()
    dirs = kindnode.bin_dirs()
    wanted = {**kindnode.NODE_BINARIES, "kind": ["kind"]}
    wanted.update({c: [b] for c, b, _ in kindnode.COMPONENT_IMAGES.values() if c not in wanted})
    missing += [
        f"{dirs[c] / b} (make binaries-kind)"
        for c, names in wanted.items()
        for b in names
        if not os.access(dirs[c] / b, os.X_OK)
    ]
    if missing:
        return "missing: " + ", ".join(missing)
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "the kernel has no overlay filesystem (podman's storage, the node's containerd)"
    return None


# --- the host: network, sysctls, /lib/modules ------------------------------------------------


def network_name(cluster: str) -> str:
    return cluster


def network_settings(cluster: str) -> tuple[str, str]:
    """The bridge and subnet of a cluster's network: fixed by its name, so that two clusters
    never pick the same, and apart from the real node's 10.250.77.1 and 10.245.0.0/24."""
    code = zlib.crc32(cluster.encode())
    return f"mlmk{code:08x}", f"10.251.{code % 250}.0/24"


def ensure_network(cluster: str) -> None:
    name = network_name(cluster)
    if podman("network", "exists", name, check=False).returncode == 0:
        return
    bridge, subnet = network_settings(cluster)
    # No DNS (aardvark-dns): the node resolves nothing through podman.
    podman(
        "network", "create", "--driver=bridge", f"--subnet={subnet}", "--disable-dns",
        "--opt", "isolate=true", name,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    # podman 4.3 has no option for the bridge's name; its network file has.
    path = kindpodman.config_dir() / "networks" / f"{name}.json"
    record = json.loads(path.read_text())
    record["network_interface"] = bridge
    path.write_text(json.dumps(record, indent=2))


def remove_network(cluster: str) -> None:
    name = network_name(cluster)
    if podman("network", "exists", name, check=False).returncode == 0:
        podman("network", "rm", name, check=False, capture_output=True)


def kind_containers() -> list[str]:
    out = podman(
        "ps", "-a", "--filter", f"label={CLUSTER_LABEL}", "--format", "{{.Names}}",
        capture_output=True,
    ).stdout  # fmt: skip
    return out.split()


def prepare_host(cluster: str) -> None:
    """Before a cluster starts: the host as it is is recorded by the first cluster only."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    if not HOST_RECORD.exists():
        record = {
            "sysctls": realnode.read_sysctls(),
            "created_lib_modules": not LIB_MODULES.exists(),
            "nft_tables": realnode.nft_tables(),
        }
        HOST_RECORD.write_text(json.dumps(record, indent=2))
    LIB_MODULES.mkdir(exist_ok=True)
    ensure_network(cluster)


def release_host(cluster: str) -> None:
    """After a cluster is deleted: its network; after the last one, everything else."""
    remove_network(cluster)
    if kind_containers():
        return
    try:
        record = json.loads(HOST_RECORD.read_text())
    except (OSError, ValueError):
        record = {}
    remove_idle_netavark_chains()
    realnode.remove_new_tables(record.get("nft_tables"))
    realnode.restore_sysctls(record.get("sysctls", {}))
    if record.get("created_lib_modules"):
        try:
            LIB_MODULES.rmdir()
        except OSError as err:
            log(f"warning: {LIB_MODULES} was created for kind and is kept: {err}")
    HOST_RECORD.unlink(missing_ok=True)
    forget_run_state()


def forget_run_state() -> None:
    """podman's run state of kind's storage (locks, the container state of no container now):
    every podman command recreates it."""
    realnode.unmount_all([RUN_DIR])
    shutil.rmtree(RUN_DIR, ignore_errors=True)


def iptables_dumps() -> dict[str, str]:
    return {
        family: subprocess.run([f"{family}-save"], capture_output=True, text=True).stdout
        for family in ("iptables", "ip6tables")
        if shutil.which(f"{family}-save")
    }


def netavark_chains(dump: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]], bool]:
    """From iptables-save output: the (table, chain) of netavark, the (table, rule) of other
    chains that jump to them, and whether any of them still holds a rule (a network in use)."""
    table, chains, jumps, in_use = "", [], [], False
    for line in dump.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":NETAVARK"):
            chains.append((table, line[1:].split()[0]))
        elif line.startswith("-A "):
            chain = line.split()[1]
            if chain.startswith("NETAVARK") and chain not in NETAVARK_FIXED_RULES:
                in_use = True
            elif "-j NETAVARK" in line:
                jumps.append((table, line))
    return chains, jumps, in_use


# Chains whose rules netavark adds once, whatever its networks: a rule elsewhere is a network's.
NETAVARK_FIXED_RULES = {"NETAVARK-HOSTPORT-MASQ", "NETAVARK-HOSTPORT-SETMARK"}


def remove_idle_netavark_chains() -> None:
    """netavark keeps its chains after its last network goes; once they are all empty, no
    netavark network on this host needs them."""
    for family, dump in iptables_dumps().items():
        chains, jumps, in_use = netavark_chains(dump)
        if in_use:
            continue
        for table, line in jumps:
            # iptables-save quotes comments; let the shell undo that.
            subprocess.run(["bash", "-c", f"{family} -t {table} -D {line[3:]}"], check=False)
        for table, name in chains:
            subprocess.run([family, "-t", table, "-F", name], check=False)
        for table, name in chains:
            subprocess.run([family, "-t", table, "-X", name], check=False)


def leftovers() -> list[str]:
    """What of kind clusters is still on this host (empty after the last `down`)."""
    found = [f"container {c}" for c in kind_containers()]
    networks = podman("network", "ls", "--format", "{{.Name}}", capture_output=True).stdout
    found += [f"podman network {n}" for n in networks.split() if n != "podman"]
    found += [f"link {link.name}" for link in Path("/sys/class/net").glob("mlmk*")]
    for family, dump in iptables_dumps().items():
        found += [f"{family} -t {table} {name}" for table, name in netavark_chains(dump)[0]]
    if HOST_RECORD.exists():
        found.append(f"file {HOST_RECORD}")
    if not found:
        forget_run_state()
    return found


# --- the cluster ------------------------------------------------------------------------------


class KindCluster:
    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.root = root
        self.kubeconfig = root / "kubeconfig"

    def exists(self) -> bool:
        out = run_kind("get", "clusters", name=self.name, capture_output=True).stdout
        return self.name in out.split()

    def kubectl(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(kubectl_bin()), "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            **kw,
        )

    def ready(self) -> bool:
        if not self.kubeconfig.exists():
            return False
        jsonpath = '{.items[*].status.conditions[?(@.type=="Ready")].status}'
        out = self.kubectl("get", "nodes", "-o", f"jsonpath={jsonpath}", timeout=30)
        return out.returncode == 0 and out.stdout.split() == ["True"]

    def up(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.exists() and self.ready():
            log(f"reusing the running kind cluster {self.name}")
            return
        if self.exists():
            log(f"kind cluster {self.name} exists but is not Ready: recreating it")
            self.delete()
        image = kindnode.build()
        prepare_host(self.name)
        log(f"creating kind cluster {self.name} from {image}")
        started = time.monotonic()
        run_kind(
            "create", "cluster", f"--name={self.name}", f"--image={image}",
            f"--kubeconfig={self.kubeconfig}", f"--wait={WAIT}",
            name=self.name,
        )  # fmt: skip
        log(f"kind create cluster took {time.monotonic() - started:.0f}s")

    def delete(self) -> None:
        run_kind(
            "delete", "cluster", f"--name={self.name}", f"--kubeconfig={self.kubeconfig}",
            name=self.name, check=False, capture_output=True,
        )  # fmt: skip

    def down(self) -> None:
        self.delete()
        release_host(self.name)
        self.kubeconfig.unlink(missing_ok=True)
        for item in [] if kind_containers() else leftovers():
            log(f"warning: kind left {item}")
        log(f"kind cluster {self.name} deleted")

    def env(self) -> str:
        bindirs = sorted({str(p) for p in kindnode.bin_dirs().values()})
        path = os.pathsep.join([*bindirs, "$PATH"])
        return f'export KUBECONFIG="{self.kubeconfig}"\nexport PATH="{path}"\n'


def load_images(cluster: str, names: list[str]) -> dict[str, str]:
    """Build the project's images with podman (hack/images.py, cached by content) and load them
    into the cluster's node; returns NAME -> image."""
    tags = images.tags()
    # images.build also removes older builds of what it builds: only when one is missing.
    missing = [name for name in names if not images.exists(tags[name])]
    built = {**tags, **(images.build(missing) if missing else {})}
    for name in names:
        load_image(cluster, built[name], images.podman)
    return {name: built[name] for name in names}


def load_image(cluster: str, image: str, podman_of_store: Callable[..., object]) -> None:
    """Load `image` from the podman storage that `podman_of_store` runs on into the node. An
    archive: `kind load docker-image` runs the docker command whatever the provider."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "image.tar"
        podman_of_store("save", "--quiet", "--format=docker-archive", "-o", str(archive), image)
        run_kind(
            "load", "image-archive", f"--name={cluster}", str(archive),
            name=cluster, capture_output=True,
        )  # fmt: skip
    log(f"loaded {image} into {cluster}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "command", choices=["up", "down", "load", "env", "status", "can-run", "leftovers"]
    )
    parser.add_argument("images", nargs="*", metavar="IMAGE", help=", ".join(images.NAMES))
    parser.add_argument("--name", default=DEFAULT_NAME, help="the kind cluster's name")
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(os.environ.get("MLMODEL_KIND_DIR", DEFAULT_DIR)),
        help="where its kubeconfig goes (default: $MLMODEL_KIND_DIR or .kind-cluster)",
    )
    args = parser.parse_intermixed_args(argv)
    cluster = KindCluster(args.name, args.dir.resolve())
    try:
        needs_kind = args.command in ("up", "load", "status")
        if needs_kind and (reason := unavailable_reason()):
            log(f"error: this host cannot run kind: {reason}")
            return 1
        if args.command == "up":
            cluster.up()
            load_images(args.name, args.images or DEFAULT_IMAGES)
        elif args.command == "load":
            print(json.dumps(load_images(args.name, args.images or DEFAULT_IMAGES), indent=2))
        elif args.command == "down":
            cluster.down()
        elif args.command == "env":
            sys.stdout.write(cluster.env())
        elif args.command == "status":
            ready = cluster.exists() and cluster.ready()
            print("up" if ready else "down")
            return 0 if ready else 1
        elif args.command == "can-run":
            if reason := unavailable_reason():
                print(reason)
                return 1
        elif args.command == "leftovers":
            found = leftovers()
            print("\n".join(found))
            return 1 if found else 0
    except (KindError, PodmanError, images.ImageError, subprocess.CalledProcessError) as err:
        log(f"error: {err}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
