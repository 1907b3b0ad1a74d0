#!/usr/bin/env python3
"""Container images for the real node, built here with no registry: podman builds them, and the
node's containerd imports them.

    python3 hack/images.py build [NAME ...]   build what is missing; print NAME=IMAGE lines
    python3 hack/images.py load --dir DIR [NAME ...]
                                              build, then import into the real node of the
                                              cluster in DIR
    python3 hack/images.py tags               print NAME=IMAGE for every image

Images (default: all):
  base            Debian bookworm with Python 3.11, from Debian's packages (mmdebstrap), the
                  base of the others in place of python:3.11-slim
  pause           the pod sandbox: our static pause binary in an empty image
  operator        the project's Dockerfile, built on `base`
  mlserver        MLServer + mlserver-sklearn from PyPI (hack/images/mlserver)
  kserve-sklearn  the KServe model server with scikit-learn from PyPI (hack/images/kserve-sklearn)
  vllm            vLLM's CPU build from the locked wheels of hack/vllm_env.py (hack/images/vllm)

Each image is tagged localhost/mlmodel-NAME:HASH, HASH being that of everything that goes into
it (recipe, files, base), so an unchanged image is never rebuilt or re-imported. Podman's
storage is kept in the binary cache ($MLMODEL_CACHE_DIR/podman), apart from the host's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HACK = REPO / "hack"
RECIPES = HACK / "images"
NAMES = ["base", "pause", "operator", "mlserver", "kserve-sklearn", "vllm"]
BASE_SUITE = "bookworm"
BASE_PACKAGES = ["python3", "python3-venv", "python-is-python3", "ca-certificates", "passwd"]
# podman build's options; part of each image's hash, so a change rebuilds.
BUILD_OPTIONS = ["--pull=never", "--network=host", "--layers=false"]
# What the Dockerfile copies (and .dockerignore lets in).
OPERATOR_CONTEXT = ["Dockerfile", "pyproject.toml", "README.md", "operator"]
# The images built from a recipe folder on `base`.
RECIPE_IMAGES = ["mlserver", "kserve-sklearn", "vllm"]
# Files of the repository an image's build context takes besides its recipe folder.
EXTRA_CONTEXT = {
    "kserve-sklearn": [REPO / "tests" / "integration" / "servers" / "sklearn_kserve.py"]
}


class ImageError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"[images] {msg}", file=sys.stderr, flush=True)


def cache_dir() -> Path:
    root = os.environ.get("MLMODEL_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "mlmodel-operator"
    )
    return Path(root)


def podman_env() -> dict[str, str]:
    """Podman configured for this host: runc (crun fails on its hybrid cgroups), cgroupfs (no
    systemd), no default ulimits (the VM refuses raising them), storage of our own, and no
    registry to search."""
    conf = cache_dir() / "podman"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "containers.conf").write_text(
        '[containers]\ndefault_ulimits = []\n\n[engine]\ncgroup_manager = "cgroupfs"\n'
        'runtime = "runc"\nevents_logger = "file"\ntmp_dir = "/run/mlmodel-podman/libpod"\n'
    )
    (conf / "storage.conf").write_text(
        f'[storage]\ndriver = "overlay"\ngraphroot = "{conf / "storage"}"\n'
        'runroot = "/run/mlmodel-podman/storage"\n'
    )
    (conf / "registries.conf").write_text("unqualified-search-registries = []\n")
    return {
        **os.environ,
        "CONTAINERS_CONF": str(conf / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(conf / "storage.conf"),
        "CONTAINERS_REGISTRIES_CONF": str(conf / "registries.conf"),
    }


def podman(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    if shutil.which("podman") is None:
        raise ImageError("podman is missing (Debian: apt-get install podman)")
    result = subprocess.run(["podman", *args], env=podman_env(), text=True, **kw)
    if check and result.returncode != 0:
        raise ImageError(f"podman {' '.join(args[:2])} failed (exit {result.returncode})")
    return result


def exists(image: str) -> bool:
    return podman("image", "exists", image, check=False).returncode == 0


def digest_of(paths: list[Path], *extra: str) -> str:
    h = hashlib.sha256()
    for part in extra:
        h.update(part.encode() + b"\0")
    for root in paths:
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for f in files:
            if "__pycache__" in f.parts or any(p.endswith(".egg-info") for p in f.parts):
                continue
            h.update(str(f.relative_to(REPO)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:12]


def tags() -> dict[str, str]:
    base = digest_of([], BASE_SUITE, *BASE_PACKAGES)
    tag = {"base": f"localhost/mlmodel-base:{base}"}
    tag["pause"] = "localhost/mlmodel-pause:" + digest_of(
        [RECIPES / "pause"], bin_dir("nodetools").name
    )
    tag["operator"] = "localhost/mlmodel-operator:" + digest_of(
        [REPO / p for p in OPERATOR_CONTEXT], tag["base"], *BUILD_OPTIONS
    )
    # vllm's recipe folder holds its lock, so the wheels it installs are part of its hash.
    for name in RECIPE_IMAGES:
        sources = [RECIPES / name, *EXTRA_CONTEXT.get(name, [])]
        tag[name] = f"localhost/mlmodel-{name}:" + digest_of(sources, tag["base"], *BUILD_OPTIONS)
    return tag


def build_base(image: str) -> None:
    if shutil.which("mmdebstrap") is None:
        raise ImageError("mmdebstrap is missing (Debian: apt-get install mmdebstrap)")
    with tempfile.TemporaryDirectory() as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        log(f"building {image} with mmdebstrap (Debian {BASE_SUITE}; a few minutes)")
        subprocess.run(
            [
                "mmdebstrap", "--variant=minbase", "--format=tar",
                f"--include={','.join(BASE_PACKAGES)}",
                # No apt lists or caches in the image.
                "--customize-hook=rm -rf $1/var/lib/apt/lists/* $1/var/cache/apt/*",
                BASE_SUITE, str(rootfs),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        podman(
            "import", "--change", "CMD=[\"python3\"]", "--change", "ENV=LANG=C.UTF-8",
            str(rootfs), image,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip


def build_with(
    image: str,
    context: Path,
    containerfile: Path,
    base: str | None,
    volumes: list[str] | None = None,
) -> None:
    log(f"building {image}")
    args = ["build", *BUILD_OPTIONS, "-t", image]
    for volume in volumes or []:
        args += ["--volume", volume]
    args += ["-f", str(containerfile)]
    if base:
        args += ["--build-arg", f"BASE_IMAGE={base}", "--build-arg", f"PYTHON_IMAGE={base}"]
    # pip inside the build (Debian's, which reads the system's bundle) trusts what the host
    # trusts: a TLS-intercepting proxy, say. Mounted for the build only, not in the image.
    bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    if bundle.exists():
        args += ["--volume", f"{bundle}:{bundle}:ro"]
    # Build output goes to stderr: stdout carries the result (NAME=IMAGE as JSON).
    podman(*args, str(context), stdout=sys.stderr)


def build(names: list[str]) -> dict[str, str]:
    tag = tags()
    wanted = set(names)
    if wanted & {"operator", *RECIPE_IMAGES}:
        wanted.add("base")
    for name in NAMES:
        if name not in wanted or exists(tag[name]):
            continue
        if name == "base":
            build_base(tag[name])
        elif name == "pause":
            with tempfile.TemporaryDirectory() as tmp:
                shutil.copy2(bin_dir("nodetools") / "pause", Path(tmp) / "pause")
                build_with(tag[name], Path(tmp), RECIPES / "pause" / "Containerfile", None)
        elif name == "operator":
            build_with(tag[name], REPO, REPO / "Dockerfile", tag["base"])
        else:
            with tempfile.TemporaryDirectory() as tmp:
                context = Path(tmp) / "context"
                shutil.copytree(RECIPES / name, context)
                for extra in EXTRA_CONTEXT.get(name, []):
                    shutil.copy2(extra, context / extra.name)
                build_with(
                    tag[name], context, context / "Containerfile", tag["base"], build_volumes(name)
                )
    # Earlier builds of the same images would only fill the disk; images built on an older base
    # go first, so that the base is no longer anyone's parent when its turn comes.
    for name in reversed(NAMES):
        if name in wanted:
            for old in podman_tags(name):
                if old != tag[name]:
                    podman("rmi", old, check=False, capture_output=True)
    return {name: tag[name] for name in NAMES if name in wanted}


def build_volumes(name: str) -> list[str]:
    """What a recipe's build mounts besides its context: vllm's wheels, downloaded once for
    both the image and the tests' virtualenv, and too large to copy into a build context."""
    if name != "vllm":
        return []
    sys.path.insert(0, str(HACK))
    import vllm_env  # hack/ is not a package

    try:
        return [f"{vllm_env.wheels()}:/wheels:ro"]
    except vllm_env.Unavailable as err:
        raise ImageError(f"vllm's wheels: {err}") from err


def podman_tags(name: str) -> list[str]:
    out = podman(
        "images", "--format", "{{.Repository}}:{{.Tag}}", f"localhost/mlmodel-{name}",
        capture_output=True,
    ).stdout  # fmt: skip
    return out.split()


def bin_dir(component: str) -> Path:
    out = subprocess.run(
        ["bash", str(HACK / "build-binaries.sh"), "--print"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return next(Path(p) for p in out if Path(p).name.rsplit("-", 1)[0] == component)


def import_into(socket: Path, built: dict[str, str]) -> None:
    """Import images into the containerd listening on `socket`, unless it has them already."""
    ctr = [str(bin_dir("containerd") / "ctr"), f"--address={socket}", "-n", "k8s.io", "images"]
    listed = subprocess.run(
        [*ctr, "ls", "-q"], check=True, capture_output=True, text=True
    ).stdout.split()
    for stale in stale_node_images(listed, set(built.values())):
        subprocess.run([*ctr, "rm", "--sync", stale], capture_output=True)
    for image in built.values():
        if image in listed:
            continue
        log(f"importing {image} into the node")
        with tempfile.TemporaryDirectory() as tmp:
            archive = Path(tmp) / "image.tar"
            podman("save", "--quiet", "--format=docker-archive", "-o", str(archive), image)
            # Its only chatter is a warning that cgroup v1 is deprecated.
            subprocess.run([*ctr, "import", str(archive)], check=True, capture_output=True)


def stale_node_images(listed: list[str], current: set[str]) -> list[str]:
    """The node keeps one build of each image, as podman does: other tags of the same
    repositories go, and so do the image-ID references (sha256:...) that the CRI plugin adds,
    except those of the images that stay (their IDs are podman's)."""
    repositories = {image.rsplit(":", 1)[0] for image in current}
    named = [ref for ref in listed if not ref.startswith("sha256:")]
    stale = [r for r in named if r.rsplit(":", 1)[0] in repositories and r not in current]
    ids = {ref: podman_id(ref) for ref in named if ref not in stale}
    if None in ids.values():
        return stale  # an image podman no longer has: its ID is unknown, keep every ID
    return stale + [ref for ref in listed if ref.startswith("sha256:") and ref not in ids.values()]


def podman_id(image: str) -> str | None:
    result = podman("image", "inspect", "--format", "{{.Id}}", image, check=False,
                    capture_output=True)  # fmt: skip
    return f"sha256:{result.stdout.strip()}" if result.returncode == 0 else None


def load(cluster_dir: Path, names: list[str]) -> dict[str, str]:
    """Build `names` and import them into the real node of the cluster in `cluster_dir`."""
    sys.path.insert(0, str(HACK))
    import realnode  # hack/ is not a package

    built = build(names)
    socket = realnode.RUN_DIR / "containerd" / "containerd.sock"
    if realnode.current_owner() != cluster_dir.resolve() or not socket.exists():
        raise ImageError(f"no real node runs for the cluster in {cluster_dir}")
    import_into(socket, {name: built[name] for name in names})
    return built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["build", "load", "tags"])
    parser.add_argument("names", nargs="*", metavar="NAME", help=", ".join(NAMES))
    parser.add_argument("--dir", type=Path, help="the cluster's directory (load)")
    args = parser.parse_intermixed_args(argv)
    names = args.names or NAMES
    if unknown := set(names) - set(NAMES):
        parser.error(f"unknown images: {', '.join(sorted(unknown))} (known: {', '.join(NAMES)})")
    try:
        if args.command == "tags":
            result = tags()
        elif args.command == "build":
            result = build(names)
        else:
            if args.dir is None:
                parser.error("load needs --dir")
            result = load(args.dir, names)
    except (ImageError, subprocess.CalledProcessError) as err:
        log(f"error: {err}")
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
