"""vLLM's OpenAI-compatible server (CPU build) serving the tiny generated model: the endpoints
and metric names the operator and its sidecar rely on."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import pytest

from llm_helpers import VllmServer, chunk_text, sse_events, tiny_llm_cached, vllm_server
from procs import http_status

# Building the virtualenv on a machine's first run takes minutes; it happens in set-up.
pytestmark = pytest.mark.timeout(1800)

SERVED_NAME = "tiny-chat"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    workdir = tmp_path_factory.mktemp("vllm")
    with vllm_server(tiny_llm_cached(), SERVED_NAME, workdir, ["--max-model-len", "512"]) as srv:
        yield srv


def post(url: str, body: dict) -> bytes:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 200
        return response.read()


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200
        return response.read()


def test_models_lists_the_served_name(server: VllmServer) -> None:
    models = json.loads(get(f"{server.url}/v1/models"))
    assert [m["id"] for m in models["data"]] == [SERVED_NAME]


def test_health(server: VllmServer) -> None:
    assert http_status(f"{server.url}/health") == 200


def test_streamed_chat_arrives_in_chunks(server: VllmServer) -> None:
    body = post(
        f"{server.url}/v1/chat/completions",
        {
            "model": SERVED_NAME,
            "messages": [{"role": "user", "content": "Hello, how are you today?"}],
            "stream": True,
            "max_tokens": 8,
            "temperature": 0,
            # Random weights may pick the end-of-sequence token at any step.
            "ignore_eos": True,
        },
    )
    events = sse_events(body)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    with_text = [event for event in events[:-1] if chunk_text(event)]
    assert len(with_text) >= 2, events
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_completion_reports_usage(server: VllmServer) -> None:
    prompt = "The quick brown fox jumps over the lazy dog"
    answer = json.loads(
        post(
            f"{server.url}/v1/completions",
            {
                "model": SERVED_NAME,
                "prompt": prompt,
                "max_tokens": 5,
                "temperature": 0,
                "ignore_eos": True,
            },
        )
    )
    usage = answer["usage"]
    assert usage["completion_tokens"] == 5
    tokens = json.loads(post(f"{server.url}/tokenize", {"model": SERVED_NAME, "prompt": prompt}))
    assert usage["prompt_tokens"] == tokens["count"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert answer["choices"][0]["finish_reason"] == "length"


def test_metrics_has_the_scaling_signals(server: VllmServer) -> None:
    text = get(f"{server.url}/metrics").decode()
    samples = {
        line.split("{")[0].split(" ")[0]
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert "vllm:num_requests_waiting" in samples
    assert "vllm:kv_cache_usage_perc" in samples
    # The series carry the served name, which the sidecar and Prometheus select on.
    assert f'model_name="{SERVED_NAME}"' in text


def test_model_files() -> None:
    model = tiny_llm_cached()
    config = json.loads((model / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["hidden_size"] // config["num_attention_heads"] == config["head_dim"] == 32
    tokenizer_config = json.loads((model / "tokenizer_config.json").read_text())
    assert "chat_template" in tokenizer_config
