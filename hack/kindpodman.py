"""Podman as kind uses it here: storage, networks and run state of its own, apart from the
host's and from the real node's image store (hack/images.py).

kind's podman provider runs the `podman` command with the environment it is given, so every kind
and podman command of hack/kindnode.py, hack/kindcluster.py and the kind tests runs with env().
Standard library only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import images

RUN_DIR = Path("/run/mlmodel-kind")
NETAVARK = Path("/usr/lib/podman/netavark")


class PodmanError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"[kind] {msg}", file=sys.stderr, flush=True)


def config_dir() -> Path:
    return images.cache_dir() / "kind" / "podman"


def env() -> dict[str, str]:
    """The environment of kind and podman: netavark networks (its chains are NETAVARK-*, apart
    from the CNI-* and KUBE-* of the real node), cgroupfs (no systemd on the host), runc, and no
    registry to search: an unqualified image name would otherwise get docker.io/."""
    conf = config_dir()
    (conf / "networks").mkdir(parents=True, exist_ok=True)
    (conf / "containers.conf").write_text(
        "[containers]\ndefault_ulimits = []\n\n"
        '[engine]\ncgroup_manager = "cgroupfs"\nruntime = "runc"\nevents_logger = "file"\n'
        f'tmp_dir = "{RUN_DIR / "libpod"}"\n\n'
        f'[network]\nnetwork_backend = "netavark"\nnetwork_config_dir = "{conf / "networks"}"\n'
    )
    (conf / "storage.conf").write_text(
        f'[storage]\ndriver = "overlay"\ngraphroot = "{conf / "storage"}"\n'
        f'runroot = "{RUN_DIR / "storage"}"\n'
    )
    (conf / "registries.conf").write_text("unqualified-search-registries = []\n")
    return {
        **os.environ,
        "CONTAINERS_CONF": str(conf / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(conf / "storage.conf"),
        "CONTAINERS_REGISTRIES_CONF": str(conf / "registries.conf"),
        # kind picks docker whenever a docker client answers.
        "KIND_EXPERIMENTAL_PROVIDER": "podman",
    }


def podman(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    if shutil.which("podman") is None:
        raise PodmanError("podman is missing (Debian: apt-get install podman)")
    kw.setdefault("text", True)
    result = subprocess.run(["podman", *args], env=env(), **kw)
    if check and result.returncode != 0:
        detail = (result.stderr or "").strip() if kw.get("capture_output") else ""
        raise PodmanError(f"podman {' '.join(args[:3])} failed (exit {result.returncode}) {detail}")
    return result


def exists(image: str) -> bool:
    return podman("image", "exists", image, check=False).returncode == 0


def missing_tools() -> list[str]:
    """What kind needs of the host and lacks: the commands, with their Debian packages."""
    missing = [
        f"{cmd} (Debian: {pkg})"
        for cmd, pkg in (("podman", "podman"), ("mmdebstrap", "mmdebstrap"))
        if shutil.which(cmd) is None
    ]
    if not NETAVARK.exists():
        missing.append(f"{NETAVARK} (Debian: netavark)")
    return missing
