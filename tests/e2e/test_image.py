"""What can be checked of the Dockerfile without a Docker engine: its builder stage, replayed step
by step in a temporary directory (a clean virtualenv, the files it copies, the pip command it
runs), yields a package whose two entry points start; and the final stage is the conventional,
non-root, compiler-free image the README describes."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def stages(text: str) -> dict[str, list[tuple[str, str]]]:
    args = {}
    found: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for keyword, rest in instructions(text):
        if keyword == "ARG" and current is None:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            image, *alias = re.split(r"\s+[Aa][Ss]\s+", rest)
            for name, value in args.items():
                image = image.replace("${" + name + "}", value)
            current = [("FROM", image)]
            found[alias[0] if alias else "final"] = current
        elif current is not None:
            current.append((keyword, rest))
    return found


STAGES = stages(DOCKERFILE.read_text())


def test_both_stages_use_the_slim_python_base() -> None:
    assert set(STAGES) == {"builder", "final"}
    for stage in STAGES.values():
        assert stage[0] == ("FROM", "python:3.11-slim")


def test_final_stage_is_non_root_without_compilers_with_oci_labels() -> None:
    final = STAGES["final"]
    user = [rest for keyword, rest in final if keyword == "USER"]
    assert user == ["65532:65532"]  # numeric, so runAsNonRoot can verify it
    runs = " ".join(rest for keyword, rest in final if keyword == "RUN")
    assert not re.search(r"apt-get|apk |gcc|g\+\+|build-essential|pip install", runs)
    assert ("COPY", "--from=builder /opt/venv /opt/venv") in final
    labels = " ".join(rest for keyword, rest in final if keyword == "LABEL")
    for key in ("title", "description", "version", "revision", "licenses", "source"):
        assert f"org.opencontainers.image.{key}=" in labels
    assert final[-1] == ("ENTRYPOINT", '["mlmodel-operator"]')


def test_dockerignore_keeps_the_context_to_what_is_copied() -> None:
    lines = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line]
    rules = [line for line in lines if not line.startswith("#")]
    assert rules[0] == "*"
    allowed = {line[1:].rstrip("/") for line in rules if line.startswith("!")}
    copied = {
        src
        for keyword, rest in STAGES["builder"]
        if keyword == "COPY"
        for src in shlex.split(rest)[:-1]
    }
    assert allowed == copied == {"pyproject.toml", "README.md", "operator"}


def replay_builder(root: Path) -> Path:
    """Run the builder stage's steps with /opt/venv and the work directory under `root`; returns
    where /opt/venv went."""
    venv, workdir = root / "opt-venv", root / "src"
    python = Path(getattr(sys, "_base_executable", sys.executable))

    def mapped(text: str) -> str:
        return text.replace("/opt/venv", str(venv)).replace("/src", str(workdir))

    env: dict[str, str] = {"PATH": "/usr/bin:/bin", "HOME": str(root)}
    for keyword, rest in STAGES["builder"][1:]:
        if keyword == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", rest)))
        elif keyword == "WORKDIR":
            assert rest == "/src"
            workdir.mkdir(parents=True)
        elif keyword == "COPY":
            *sources, dest = shlex.split(rest)
            target = workdir / dest
            for source in sources:
                path = REPO / source
                if path.is_dir():
                    shutil.copytree(
                        path,
                        target if dest != "./" else workdir / source,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
                    )
                else:
                    shutil.copy2(path, workdir / path.name if dest == "./" else target)
        elif keyword == "RUN":
            command = mapped(rest).replace("python -m venv", f"{python} -m venv", 1)
            result = subprocess.run(
                ["bash", "-c", command],
                cwd=workdir if workdir.exists() else root,
                env=env,
                capture_output=True,
                text=True,
            )
            assert result.returncode == 0, f"RUN {rest}\n{result.stdout}\n{result.stderr}"
        else:
            pytest.fail(f"the replay does not know {keyword}; extend it")
    return venv


def test_package_installs_as_the_dockerfile_does_and_its_entry_points_start(
    tmp_path: Path,
) -> None:
    assert sys.version_info[:2] == (3, 11), "the image runs Python 3.11"
    venv = replay_builder(tmp_path)
    for command in ("mlmodel-operator", "mlmodel-monitor", "mlmodel-fetch"):
        result = subprocess.run(
            [str(venv / "bin" / command), "--help"],
            capture_output=True,
            text=True,
            env={"PATH": f"{venv / 'bin'}:/usr/bin:/bin"},
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"usage: {command}")
    # Installed from the copied files, not from the checkout.
    show = subprocess.run(
        [str(venv / "bin" / "pip"), "show", "-f", "mlmodel-operator"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"Location: {venv}" in show
