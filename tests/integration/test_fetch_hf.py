"""hf:// through the fetcher as a real process, against a local stand-in for the Hub's HTTP API
(servers/hub.py): huggingface_hub's own client does the talking, with HF_ENDPOINT pointing at
it, as it would at a mirror."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers.hub import COMMIT, Hub, serve_hub

from mlmodel_operator.fetch.hf import wanted

FETCH = Path(sys.executable).parent / "mlmodel-fetch"
TOKEN = "hf_test_token"
REPO = {
    "config.json": b'{"architectures": ["LlamaForCausalLM"]}',
    "tokenizer.json": b"{}" * 50,
    "model-00001-of-00002.safetensors": b"\x01" * 3000,
    "model-00002-of-00002.safetensors": b"\x02" * 2000,
    "pytorch_model.bin": b"\x03" * 5000,
    "original/consolidated.00.pth": b"\x04" * 5000,
}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Hub]]:
    root = tmp_path_factory.mktemp("hub")
    for repo in ("acme/tiny-llm", "acme/gated-llm"):
        for name, data in REPO.items():
            path = root / repo / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    with serve_hub(root, TOKEN) as served:
        yield served


def fetch(
    endpoint: str, uri: str, dest: Path, token: str | None = TOKEN, limit: str = "1Mi"
) -> subprocess.CompletedProcess[str]:
    dest.mkdir(parents=True, exist_ok=True)
    env = {"PATH": os.environ["PATH"], "HOME": str(dest.parent), "HF_ENDPOINT": endpoint}
    if token:
        env["HF_TOKEN"] = token
    argv = [str(FETCH), uri, str(dest), f"--size-limit={limit}"]
    argv.append(f"--termination-log={dest.parent / (dest.name + '.termination')}")
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


def test_the_weights_arrive_once_in_safetensors_at_the_listed_commit(
    hub: tuple[str, Hub], tmp_path: Path
) -> None:
    endpoint, server = hub
    done = fetch(endpoint, "hf://acme/tiny-llm", tmp_path / "m")
    assert done.returncode == 0, done.stderr
    got = {
        str(p.relative_to(tmp_path / "m")): p.read_bytes()
        for p in (tmp_path / "m").rglob("*")
        if p.is_file()
    }
    expected = wanted({k: len(v) for k, v in REPO.items()})
    assert got == {name: REPO[name] for name in expected}
    assert "pytorch_model.bin" not in got and "original/consolidated.00.pth" not in got
    assert "fetched hf://acme/tiny-llm: 4 file(s)" in done.stdout
    # Every file came from the commit the listing named, not a moving branch.
    downloads = [
        path for method, path in server.requests if method == "GET" and "/resolve/" in path
    ]
    assert downloads and all(f"/resolve/{COMMIT}/" in path for path in downloads)


def test_a_revision_is_honoured_and_a_missing_one_named(
    hub: tuple[str, Hub], tmp_path: Path
) -> None:
    endpoint, _ = hub
    assert fetch(endpoint, f"hf://acme/tiny-llm@{COMMIT}", tmp_path / "a").returncode == 0
    done = fetch(endpoint, "hf://acme/tiny-llm@v9", tmp_path / "b")
    assert done.returncode == 1
    assert done.stderr.strip() == "hf://acme/tiny-llm@v9: revision 'v9' not found"


@pytest.mark.parametrize(
    ("uri", "token", "limit", "message"),
    [
        (
            "hf://acme/tiny-llm",
            None,
            "1Mi",
            "hf://acme/tiny-llm: repository not found, or private and HF_TOKEN missing or not "
            "allowed (HTTP 401)",
        ),
        (
            "hf://acme/nothing",
            TOKEN,
            "1Mi",
            "hf://acme/nothing: repository not found, or private and HF_TOKEN missing or not "
            "allowed (HTTP 404)",
        ),
        (
            "hf://acme/gated-llm",
            TOKEN,
            "1Mi",
            "hf://acme/gated-llm: gated repository: accept its terms on the Hub with the account "
            "whose HF_TOKEN the Secret in storage.secret_name holds",
        ),
        (
            "hf://acme/tiny-llm",
            TOKEN,
            "4KB",
            "hf://acme/tiny-llm: 5.0 KiB in 4 file(s) is more than the volume's size limit of "
            "3.9 KiB (raise spec.storage.size_limit)",
        ),
    ],
    ids=["no-token", "no-repository", "gated", "too-large"],
)
def test_failures_are_one_line_naming_the_cause(
    hub: tuple[str, Hub], tmp_path: Path, uri: str, token: str | None, limit: str, message: str
) -> None:
    endpoint, _ = hub
    dest = tmp_path / "m"
    done = fetch(endpoint, uri, dest, token=token, limit=limit)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == message
    assert (tmp_path / "m.termination").read_text() == message + "\n"
    assert not any(dest.iterdir())  # nothing half-downloaded is left
