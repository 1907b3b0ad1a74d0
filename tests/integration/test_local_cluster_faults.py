"""The launcher's fault handling, with real binaries and one broken on purpose."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from kube_helpers import REPO, cached_bin_dirs


def test_a_component_dying_at_start_up_is_reported_and_the_others_stopped(
    tmp_path: Path,
) -> None:
    # A binary cache in which kube-apiserver fails at once; everything else is the real thing.
    cache = tmp_path / "cache"
    for real in cached_bin_dirs():
        fake = cache / "bin" / real.name
        fake.mkdir(parents=True)
        for binary in real.iterdir():
            (fake / binary.name).symlink_to(binary)
    apiserver = next((cache / "bin").glob("kubernetes-v*")) / "kube-apiserver"
    apiserver.unlink()
    apiserver.write_text("#!/bin/sh\necho 'E0101 flag provided but not defined: -oops'\nexit 3\n")
    apiserver.chmod(0o755)

    state = tmp_path / "cluster"
    env = {**os.environ, "MLMODEL_CACHE_DIR": str(cache), "MLMODEL_CLUSTER_DIR": str(state)}
    launcher = [sys.executable, str(REPO / "hack" / "localcluster.py")]
    result = subprocess.run([*launcher, "up"], env=env, capture_output=True, text=True)

    assert result.returncode == 1
    assert "kube-apiserver exited with code 3 during start-up" in result.stderr
    assert "flag provided but not defined: -oops" in result.stderr  # its last log lines
    # etcd, started before it, was stopped: no process runs from this cluster's directory.
    leftovers = subprocess.run(
        ["pgrep", "-f", str(state)], capture_output=True, text=True
    ).stdout.split()
    assert leftovers == []
    status = subprocess.run([*launcher, "status"], env=env, capture_output=True, text=True)
    assert status.returncode == 1 and status.stdout.strip() == "down"
