"""vLLM for tests: its CPU build's virtualenv (hack/vllm_env.py), a tiny generated model, and
its OpenAI-compatible server as a local process.

Where this host cannot have the virtualenv (no package index, not x86-64 Linux, no Python
3.11, little disk), the tests that need it skip, saying why; any other failure fails them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from procs import free_port, http_status

REPO = Path(__file__).resolve().parent.parent
VLLM_ENV = REPO / "hack" / "vllm_env.py"
GENERATOR = Path(__file__).resolve().parent / "llm_model.py"
# hack/vllm_env.py's status for "this host cannot have it".
UNAVAILABLE = 2
# The server's KV cache: without a size vLLM's CPU backend claims 92% of the memory.
KV_CACHE_BYTES = 256 * 2**20
# Loading torch and the engine takes 20-40 s on two cores; a loaded machine may take longer.
START_TIMEOUT = 300.0


def cache_root() -> Path:
    root = os.environ.get("MLMODEL_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "mlmodel-operator"
    )
    return Path(root) / "vllm"


@cache
def vllm_python() -> Path:
    """The python of vLLM's virtualenv, built on first use (minutes, once per machine)."""
    result = subprocess.run(
        [sys.executable, str(VLLM_ENV), "python"], capture_output=True, text=True
    )
    if result.returncode == UNAVAILABLE:
        pytest.skip(f"no vLLM environment: {result.stderr.strip().splitlines()[-1]}")
    if result.returncode != 0:
        pytest.fail(f"hack/vllm_env.py python failed:\n{result.stderr[-3000:]}")
    return Path(result.stdout.strip())


def tiny_llm_cached(seed: int = 0) -> Path:
    """The tiny model for `seed`, generated once per machine (and again when its generator
    changes); read-only to its users."""
    digest = hashlib.sha256(GENERATOR.read_bytes() + f"\0{seed}".encode()).hexdigest()[:12]
    target = cache_root() / f"tiny-llm-{digest}"
    if (target / ".complete").exists():
        return target
    python = vllm_python()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / "model"
        result = subprocess.run(
            [str(python), str(GENERATOR), str(out), "--seed", str(seed)],
            capture_output=True,
            text=True,
            env=offline_env(Path(tmp)),
        )
        if result.returncode != 0:
            pytest.fail(f"generating the tiny model failed:\n{result.stderr[-3000:]}")
        (out / ".complete").touch()
        shutil.rmtree(target, ignore_errors=True)
        os.rename(out, target)
    return target


def tiny_llm(directory: Path, seed: int = 0) -> Path:
    """A copy of the tiny model in `directory` (for a volume, say): a random-weight Llama with
    head_dim 32, a trained byte-level BPE tokenizer and a chat template."""
    copy = directory / f"tiny-llm-{seed}"
    shutil.copytree(tiny_llm_cached(seed), copy, ignore=shutil.ignore_patterns(".complete"))
    return copy


def offline_env(home: Path) -> dict[str, str]:
    """An environment that fetches nothing and keeps every cache under `home`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("VLLM_", "HF_", "TRANSFORMERS_", "OMP_", "KMP_"))
    }
    env.update(
        HOME=str(home),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_CONFIG_HOME=str(home / ".config"),
        HF_HOME=str(home / "hf"),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        VLLM_CACHE_ROOT=str(home / "vllm-cache"),
        VLLM_CONFIG_ROOT=str(home / "vllm-config"),
        VLLM_NO_USAGE_STATS="1",
        DO_NOT_TRACK="1",
    )
    return env


# What vLLM's CPU server needs besides its model, here and in a pod (see hack/images/vllm).
SERVER_ENV = {
    # vLLM pins its OpenMP threads to cores, one NUMA node per rank, and binds its memory to
    # that node; "nobind" leaves both to the scheduler, so that servers can share a machine.
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
}
SERVER_ARGS = [
    # Otherwise torch.compile runs at start-up, which needs a C++ compiler and Python's headers.
    "--enforce-eager",
    "--kv-cache-memory-bytes", str(KV_CACHE_BYTES),
]  # fmt: skip


@dataclass
class VllmServer:
    url: str
    name: str
    log: Path
    process: subprocess.Popen[bytes]


@contextmanager
def vllm_server(
    model: Path, name: str, workdir: Path, extra_args: Sequence[str] = ()
) -> Iterator[VllmServer]:
    """vLLM's OpenAI-compatible server for `model` under the served name `name`, answering on
    127.0.0.1; its log and caches in `workdir`. Stopped with every process it started."""
    python = vllm_python()
    port = free_port()
    log = workdir / f"vllm-{name}.log"
    argv = [
        str(python), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model), "--served-model-name", name,
        "--host", "127.0.0.1", "--port", str(port),
        *SERVER_ARGS, *extra_args,
    ]  # fmt: skip
    home = workdir / f"vllm-{name}-home"
    home.mkdir(exist_ok=True)
    # A session of its own: vLLM runs its engine in a child process, which must stop with it.
    process = subprocess.Popen(
        argv,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env={**offline_env(home), **SERVER_ENV},
        start_new_session=True,
    )
    try:
        server = VllmServer(f"http://127.0.0.1:{port}", name, log, process)
        wait_ready(server)
        yield server
    finally:
        stop_group(process)


def wait_ready(server: VllmServer) -> None:
    """Until GET /v1/models answers 200: /health answers before the model is served."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"vLLM exited:\n{server.log.read_text()[-4000:]}")
        if http_status(f"{server.url}/v1/models") == 200:
            return
        time.sleep(0.5)
    raise AssertionError(
        f"vLLM did not serve in {START_TIMEOUT}s:\n{server.log.read_text()[-4000:]}"
    )


def group_members(pgid: int) -> list[int]:
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The fields after the command, which is in parentheses and may hold spaces.
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def stop_group(process: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    """SIGTERM to the whole process group, SIGKILL to what is left after `grace` seconds; returns
    when no process of the group is left."""
    pgid = process.pid  # start_new_session: the leader's pid is the group's id
    with_signal(pgid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)
    deadline = time.monotonic() + grace
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.2)
    with_signal(pgid, signal.SIGKILL)
    process.wait()
    while group_members(pgid):
        time.sleep(0.1)


def with_signal(pgid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def sse_events(body: bytes) -> list[str]:
    """The data fields of a server-sent event stream, in order."""
    return [
        line.removeprefix("data:").strip()
        for line in body.decode().splitlines()
        if line.startswith("data:")
    ]


def chunk_text(event: str) -> str:
    """The text a streamed chat completion chunk adds."""
    choices = json.loads(event)["choices"]
    return "".join(choice["delta"].get("content") or "" for choice in choices)
