#!/usr/bin/env python3
"""The kind node image, assembled here from the project's own builds: `kind build node-image`
pulls images even from a local Kubernetes build, and there is no registry here.

    python3 hack/kindnode.py build   build the image unless it exists; print its name
    python3 hack/kindnode.py tag     print its name (the hash of what goes into it)

The image is localhost/mlmodel-kind-node:HASH (a qualified name: kind would prefix an
unqualified one with docker.io/), HASH being that of everything that goes into it:

- a Debian bookworm root filesystem (mmdebstrap) with systemd, runc, the CNI plugins and
  iptables; bookworm's systemd still boots on cgroup v1 hosts;
- kubeadm, kubelet, kubectl, containerd and its shim from the binary cache
  (hack/build-binaries.sh), and the files under hack/kind/node: systemd units, containerd's
  configuration, a bridge CNI configuration in place of kindnetd, the manifests kind applies;
- the control plane's images (kube-apiserver, kube-controller-manager, kube-scheduler,
  kube-proxy, etcd, CoreDNS, pause) made from the same cached binaries and named as
  `kubeadm config images list` names them, imported into the node's containerd before the
  image is committed, so that kubeadm and the kubelet never pull.

Images live in kind's own podman storage (hack/kindpodman.py). Standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import kindpodman
from kindpodman import PodmanError, log, podman

REPO = Path(__file__).resolve().parent.parent
HACK = REPO / "hack"
NODE_FILES = HACK / "kind" / "node"
DEBIAN_SUITE = "bookworm"
DEBIAN_PACKAGES = [
    "systemd", "systemd-sysv", "dbus", "runc", "containernetworking-plugins", "iptables",
    "iproute2", "conntrack", "ethtool", "mount", "util-linux", "procps", "kmod",
    "ca-certificates",
]  # fmt: skip
# Units that would change the host from inside a privileged container (sysctls, binfmt, kernel
# modules, udev) or wait for a terminal nobody attaches.
MASKED_UNITS = [
    "systemd-sysctl.service", "systemd-binfmt.service", "proc-sys-fs-binfmt_misc.automount",
    "proc-sys-fs-binfmt_misc.mount", "systemd-modules-load.service", "systemd-udevd.service",
    "systemd-udevd-control.socket", "systemd-udevd-kernel.socket", "systemd-udev-trigger.service",
    "sys-kernel-config.mount", "sys-kernel-debug.mount", "sys-kernel-tracing.mount",
    "systemd-journald-audit.socket", "getty.target", "console-getty.service",
    "systemd-firstboot.service", "systemd-timesyncd.service",
]  # fmt: skip
ENABLED_UNITS = ["containerd.service", "kubelet.service"]
# Node binaries: cache component -> binaries, installed in /usr/local/bin.
NODE_BINARIES = {
    "kubeadm": ["kubeadm"],
    "kubernetes-node": ["kubelet"],
    "kubernetes": ["kubectl"],
    "containerd": ["containerd", "ctr"],
    "containerd-shim": ["containerd-shim-runc-v2"],
}
# Control-plane images: kubeadm's repository name -> (cache component, binary, entrypoint).
# Static binaries, so an image is the binary alone; kube-proxy also needs iptables and
# conntrack, which the node's root filesystem has.
COMPONENT_IMAGES = {
    "kube-apiserver": ("kubernetes", "kube-apiserver", None),
    "kube-controller-manager": ("kubernetes", "kube-controller-manager", None),
    "kube-scheduler": ("kubernetes", "kube-scheduler", None),
    "kube-proxy": ("kubernetes-node", "kube-proxy", None),
    "etcd": ("etcd", "etcd", None),
    "coredns": ("coredns", "coredns", "/coredns"),
    "pause": ("nodetools", "pause", "/pause"),
}
ENTRYPOINT = '["/usr/local/bin/mlmodel-kind-entrypoint", "/sbin/init"]'
READY_TIMEOUT = 60.0


def bin_dirs() -> dict[str, Path]:
    out = subprocess.run(
        ["bash", str(HACK / "build-binaries.sh"), "--print"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return {Path(p).name.rsplit("-", 1)[0]: Path(p) for p in out}


def kubernetes_version() -> str:
    """The release hack/build-binaries.sh pins: its cache directory is named after it."""
    return bin_dirs()["kubernetes"].name.rsplit("-", 1)[1]


def binary(component: str, name: str) -> Path:
    path = bin_dirs()[component] / name
    if not os.access(path, os.X_OK):
        raise PodmanError(f"missing {path}; build it with `make binaries-kind`")
    return path


def kubeadm_images() -> dict[str, str]:
    """Repository base name -> the image name kubeadm expects for this Kubernetes release."""
    out = subprocess.run(
        [str(binary("kubeadm", "kubeadm")), "config", "images", "list",
         f"--kubernetes-version={kubernetes_version()}"],
        check=True, capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    return {image.rsplit(":", 1)[0].rsplit("/", 1)[1]: image for image in out}


def digest(*parts: str | bytes | Path) -> str:
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            files = sorted(p for p in part.rglob("*") if p.is_file()) if part.is_dir() else [part]
            for f in files:
                name = f.relative_to(REPO) if f.is_relative_to(REPO) else f.name
                h.update(str(name).encode() + b"\0" + f.read_bytes())
        else:
            h.update(part if isinstance(part, bytes) else part.encode())
        h.update(b"\0")
    return h.hexdigest()[:12]


def debian_tag() -> str:
    return "localhost/mlmodel-kind-debian:" + digest(DEBIAN_SUITE, *DEBIAN_PACKAGES)


def node_tag() -> str:
    binaries = [binary(c, b) for c, names in NODE_BINARIES.items() for b in names]
    binaries += [binary(c, b) for c, b, _ in COMPONENT_IMAGES.values()]
    return "localhost/mlmodel-kind-node:" + digest(
        debian_tag(), Path(__file__), NODE_FILES, *MASKED_UNITS, *binaries
    )


def build_debian(image: str) -> None:
    if shutil.which("mmdebstrap") is None:
        raise PodmanError("mmdebstrap is missing (Debian: apt-get install mmdebstrap)")
    with tempfile.TemporaryDirectory() as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        log(f"building {image} with mmdebstrap (Debian {DEBIAN_SUITE}; a few minutes)")
        subprocess.run(
            [
                "mmdebstrap", "--variant=minbase", "--format=tar",
                f"--include={','.join(DEBIAN_PACKAGES)}",
                "--customize-hook=rm -rf $1/var/lib/apt/lists/* $1/var/cache/apt/*",
                DEBIAN_SUITE, str(rootfs),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        podman("import", str(rootfs), image, stdout=subprocess.DEVNULL)


def node_context(root: Path, pause_image: str) -> None:
    """The files the node image adds to the Debian root filesystem, laid out under `root`."""
    shutil.copytree(NODE_FILES, root, symlinks=True)
    config = root / "etc" / "containerd" / "config.toml"
    config.write_text(config.read_text().replace("@PAUSE_IMAGE@", pause_image))
    for component, names in NODE_BINARIES.items():
        for name in names:
            shutil.copy2(binary(component, name), root / "usr" / "local" / "bin" / name)
    (root / "kind" / "version").write_text(kubernetes_version() + "\n")
    units = root / "etc" / "systemd" / "system"
    for unit in MASKED_UNITS:
        (units / unit).symlink_to("/dev/null")
    wants = units / "multi-user.target.wants"
    wants.mkdir()
    for unit in ENABLED_UNITS:
        (wants / unit).symlink_to(f"/etc/systemd/system/{unit}")


def build_component(name: str, image: str, base: str) -> None:
    component, binary_name, entrypoint = COMPONENT_IMAGES[name]
    with tempfile.TemporaryDirectory() as tmp:
        context = Path(tmp)
        shutil.copy2(binary(component, binary_name), context / binary_name)
        path = entrypoint or f"/usr/local/bin/{binary_name}"
        lines = [
            f"FROM {base if name == 'kube-proxy' else 'scratch'}",
            f"COPY {binary_name} {path}",
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ]
        if entrypoint:
            lines.append(f'ENTRYPOINT ["{entrypoint}"]')
        if name == "kube-proxy":
            lines.append("ENTRYPOINT []")
        (context / "Containerfile").write_text("\n".join(lines) + "\n")
        podman(
            "build", "--pull=never", "--network=none", "--layers=false", "-t", image,
            str(context), stdout=subprocess.DEVNULL,
        )  # fmt: skip


def wait_for_containerd(container: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        check = podman("exec", container, "ctr", "version", check=False, capture_output=True)
        if check.returncode == 0:
            return
        time.sleep(0.5)
    logs = podman("logs", container, check=False, capture_output=True)
    raise PodmanError(f"containerd did not start in the build container:\n{logs.stdout[-2000:]}")


def import_images(container: str, names: list[str]) -> None:
    """Import `names` into the node's containerd, unpacked on first use: the image keeps only
    their layers, and containerd unpacks them when the kubelet first runs them."""
    for image in names:
        save = subprocess.Popen(
            ["podman", "save", "--format=docker-archive", image],
            env=kindpodman.env(),
            stdout=subprocess.PIPE,
        )
        imported = podman(
            "exec", "-i", container, "ctr", "--namespace=k8s.io", "images", "import",
            "--all-platforms", "--no-unpack", "-",
            stdin=save.stdout, capture_output=True, check=False,
        )  # fmt: skip
        save.wait()
        if save.returncode != 0 or imported.returncode != 0:
            raise PodmanError(f"importing {image} into the node failed: {imported.stderr}")
    listed = podman(
        "exec", container, "ctr", "--namespace=k8s.io", "images", "ls", "-q",
        capture_output=True,
    ).stdout.split()  # fmt: skip
    if missing := sorted(set(names) - set(listed)):
        raise PodmanError(f"the node's containerd lacks {missing}")


def build_node(image: str) -> None:
    debian = debian_tag()
    if not kindpodman.exists(debian):
        build_debian(debian)
    wanted = kubeadm_images()
    if unknown := set(wanted) - set(COMPONENT_IMAGES):
        raise PodmanError(f"kubeadm expects images not built here: {unknown}")
    stage = image.replace("mlmodel-kind-node:", "mlmodel-kind-node-stage:")
    container = f"mlmodel-kind-build-{os.getpid()}"
    log(f"building {image}")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            context = Path(tmp)
            node_context(context / "rootfs", wanted["pause"])
            (context / "Containerfile").write_text(f"FROM {debian}\nCOPY rootfs/ /\n")
            podman(
                "build", "--pull=never", "--network=none", "--layers=false", "-t", stage,
                str(context), stdout=subprocess.DEVNULL,
            )  # fmt: skip
        for name, component_image in wanted.items():
            build_component(name, component_image, debian)
        # containerd alone, on the image's own /var/lib/containerd; /run and /tmp stay out of it.
        podman(
            "run", "-d", "--name", container, "--privileged", "--network=none",
            "--tmpfs", "/run", "--tmpfs", "/tmp", "--entrypoint", "/usr/local/bin/containerd",
            stage, "--config", "/etc/containerd/config.toml",
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_containerd(container)
        import_images(container, list(wanted.values()))
        podman("stop", "--time", "30", container, stdout=subprocess.DEVNULL)
        podman(
            "commit", "--quiet",
            "--change", f"ENTRYPOINT {ENTRYPOINT}", "--change", "CMD []",
            "--change", "STOPSIGNAL SIGRTMIN+3", "--change", "ENV container=podman",
            container, image,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
    finally:
        podman("rm", "--force", container, check=False, capture_output=True)
        for leftover in [*wanted.values(), stage]:
            podman("rmi", leftover, check=False, capture_output=True)


def node_images() -> list[str]:
    out = podman(
        "images", "--format", "{{.Repository}}:{{.Tag}}", "localhost/mlmodel-kind-node",
        capture_output=True,
    ).stdout  # fmt: skip
    return out.split()


def build() -> str:
    """The node image, built unless it exists; older builds are removed (they only fill the
    disk), unless a cluster still runs on one."""
    image = node_tag()
    if not kindpodman.exists(image):
        started = time.monotonic()
        build_node(image)
        log(f"built {image} in {time.monotonic() - started:.0f}s")
    for old in node_images():
        if old != image:
            podman("rmi", old, check=False, capture_output=True)
    return image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["build", "tag"])
    args = parser.parse_args(argv)
    try:
        print(build() if args.command == "build" else node_tag())
    except (PodmanError, subprocess.CalledProcessError) as err:
        log(f"error: {err}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
