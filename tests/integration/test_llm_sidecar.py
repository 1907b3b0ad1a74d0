"""The monitoring sidecar in front of vLLM's OpenAI server, both real processes: a tiny random
Llama generated offline (llm_helpers.py) served by vLLM's CPU build. Streams pass chunk by
chunk, aborts reach vLLM, and the token metrics move by what the client saw."""

from __future__ import annotations

import http.client
import json
import math
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kube_helpers import wait_until
from llm_helpers import tiny_llm, vllm_server
from monitor_procs import metric, start_sidecar

MODEL = "tiny"
CHAT = "/v1/chat/completions"
LONGEST = 480


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("llm")


@pytest.fixture(scope="module")
def vllm(tmp: Path) -> Iterator[int]:
    with vllm_server(tiny_llm(tmp), MODEL, tmp) as server:
        yield int(server.url.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def sidecar(tmp: Path, vllm: int) -> Iterator[dict[str, Any]]:
    server, config = start_sidecar(
        tmp,
        vllm,
        "llm-sidecar",
        model_name=MODEL,
        protocol="openai",
        upstream_ready_path="/v1/models",
        upstream_metrics_path="/metrics",
        drift={"window_size": 50, "check_interval_seconds": 5},
    )
    try:
        yield config
    finally:
        server.close()


def chat(stream: bool, max_tokens: int, **extra: Any) -> bytes:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Tell me a story about a quiet river."}],
        "max_tokens": max_tokens,
        "stream": stream,
        # Random weights rarely say end-of-sequence, but a fixed length must not hang on it.
        "ignore_eos": True,
        **extra,
    }
    return json.dumps(body).encode()


def open_stream(port: int, body: bytes) -> tuple[http.client.HTTPConnection, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("POST", CHAT, body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type", "").startswith("text/event-stream")
    return conn, response


def events(response: Any) -> Iterator[dict[str, Any] | None]:
    """Each SSE event's JSON as it arrives; None for [DONE]."""
    while line := response.readline():
        line = line.strip()
        if line.startswith(b"data: "):
            data = line[6:]
            yield None if data == b"[DONE]" else json.loads(data)


def text_of(event: dict[str, Any]) -> str:
    return "".join((c.get("delta") or {}).get("content") or "" for c in event.get("choices", []))


def llm_metric(config: dict[str, Any], name: str, **labels: str) -> float:
    return metric(config["metrics_port"], name, model=MODEL, **labels)


def settled(config: dict[str, Any], name: str, before: float, **labels: str) -> float:
    """The counter once it moved from `before` (the proxy counts an exchange just after it)."""
    return wait_until(
        lambda: (v := llm_metric(config, name, **labels)) != before and v,
        what=f"{name} {labels} to move from {before}",
    )


def test_a_stream_reaches_the_client_while_vllm_is_still_generating(
    sidecar: dict[str, Any], vllm: int
) -> None:
    conn, response = open_stream(sidecar["listen_port"], chat(True, LONGEST))
    try:
        received = events(response)
        first = next(e for e in received if e is not None and text_of(e))
        assert first["object"] == "chat.completion.chunk"
        # The first token is with the client, and vLLM is still running the request.
        running = metric(vllm, "vllm:num_requests_running")
        assert running == 1
        rest = list(received)
        assert rest[-1] is None  # [DONE] ends the stream
        assert sum(1 for e in rest if e is not None and text_of(e)) > 100
    finally:
        conn.close()


def test_token_metrics_move_by_what_the_client_saw(sidecar: dict[str, Any]) -> None:
    names = (
        "mlmodel_llm_time_to_first_token_seconds_count",
        "mlmodel_llm_time_to_first_token_seconds_sum",
        "mlmodel_llm_inter_token_latency_seconds_count",
    )
    ttft_count, ttft_sum, itl_count = (llm_metric(sidecar, n) for n in names)
    usage_completion = llm_metric(sidecar, "mlmodel_llm_completion_tokens_total", source="usage")
    usage_prompt = llm_metric(sidecar, "mlmodel_llm_prompt_tokens_total", source="usage")
    finished = llm_metric(sidecar, "mlmodel_llm_requests_total", endpoint="chat",
                          finish_reason="length")  # fmt: skip

    body = chat(True, 40, stream_options={"include_usage": True})
    conn, response = open_stream(sidecar["listen_port"], body)
    seen = [e for e in events(response) if e is not None]
    conn.close()
    chunks = sum(1 for e in seen if text_of(e))
    usage = next(e["usage"] for e in seen if e.get("usage"))
    assert usage["completion_tokens"] == 40

    assert settled(sidecar, names[0], ttft_count) == ttft_count + 1
    assert llm_metric(sidecar, names[1]) > ttft_sum
    assert llm_metric(sidecar, names[2]) == itl_count + chunks - 1
    completion = llm_metric(sidecar, "mlmodel_llm_completion_tokens_total", source="usage")
    assert completion == usage_completion + usage["completion_tokens"]
    prompt = llm_metric(sidecar, "mlmodel_llm_prompt_tokens_total", source="usage")
    assert prompt == usage_prompt + usage["prompt_tokens"]
    assert llm_metric(sidecar, "mlmodel_llm_requests_total", endpoint="chat",
                      finish_reason="length") == finished + 1  # fmt: skip


def test_without_usage_tokens_are_counted_as_documented(sidecar: dict[str, Any]) -> None:
    chunks_before = llm_metric(sidecar, "mlmodel_llm_completion_tokens_total", source="chunks")
    estimated_before = llm_metric(sidecar, "mlmodel_llm_prompt_tokens_total", source="estimated")
    body = chat(True, 25)
    conn, response = open_stream(sidecar["listen_port"], body)
    chunks = sum(1 for e in events(response) if e is not None and text_of(e))
    conn.close()
    counted = settled(sidecar, "mlmodel_llm_completion_tokens_total", chunks_before,
                      source="chunks")  # fmt: skip
    assert counted == chunks_before + chunks
    prompt_bytes = len(b"Tell me a story about a quiet river.")
    estimated = llm_metric(sidecar, "mlmodel_llm_prompt_tokens_total", source="estimated")
    assert estimated == estimated_before + math.ceil(prompt_bytes / 4)


def test_a_whole_completion_counts_its_usage(sidecar: dict[str, Any]) -> None:
    before = llm_metric(sidecar, "mlmodel_llm_completion_tokens_total", source="usage")
    body = json.dumps(
        {"model": MODEL, "prompt": "Once upon", "max_tokens": 7, "ignore_eos": True}
    ).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{sidecar['listen_port']}/v1/completions",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as answer:
        usage = json.load(answer)["usage"]
    assert usage["completion_tokens"] == 7
    after = settled(sidecar, "mlmodel_llm_completion_tokens_total", before, source="usage")
    assert after == before + 7


def test_an_aborted_stream_is_counted_and_stops_vllm(sidecar: dict[str, Any], vllm: int) -> None:
    aborts = llm_metric(sidecar, "mlmodel_llm_requests_total", finish_reason="client_abort")
    generated = metric(vllm, "vllm:generation_tokens_total")
    # As long as the tiny model's 512-token context allows after the prompt.
    conn, response = open_stream(sidecar["listen_port"], chat(True, LONGEST))
    next(e for e in events(response) if e is not None and text_of(e))
    conn.sock.close()  # the client goes away mid-stream
    conn.close()
    assert settled(sidecar, "mlmodel_llm_requests_total", aborts,
                   finish_reason="client_abort") == aborts + 1  # fmt: skip
    assert llm_metric(sidecar, "mlmodel_client_aborts_total", phase="response") >= 1
    # vLLM let go of the request before its end.
    wait_until(lambda: metric(vllm, "vllm:num_requests_running") == 0, what="vLLM to stop")
    assert metric(vllm, "vllm:generation_tokens_total") - generated < LONGEST


def test_the_sidecars_scrape_holds_vllms_metrics(sidecar: dict[str, Any]) -> None:
    text = urllib.request.urlopen(f"http://127.0.0.1:{sidecar['metrics_port']}/metrics").read()
    families = {f.name for f in text_string_to_metric_families(text.decode())}
    assert {"vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"} <= families
    assert "mlmodel_llm_requests" in families and "mlmodel_requests" in families


def test_scrapes_through_the_proxy_port_reach_vllm_and_are_not_requests(
    sidecar: dict[str, Any],
) -> None:
    """An endpoint picker reads vLLM's metrics through the port that serves the model."""
    requests = llm_metric(sidecar, "mlmodel_requests_total")
    for _ in range(5):
        url = f"http://127.0.0.1:{sidecar['listen_port']}/metrics"
        assert b"vllm:kv_cache_usage_perc" in urllib.request.urlopen(url).read()
    assert llm_metric(sidecar, "mlmodel_requests_total") == requests


def test_drift_watches_lengths_and_finish_reasons_never_text(sidecar: dict[str, Any]) -> None:
    port = sidecar["listen_port"]
    for n in range(110):
        body = json.dumps({"model": MODEL, "prompt": "word " * (3 + n % 5), "max_tokens": 2,
                           "ignore_eos": True}).encode()  # fmt: skip
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/completions", data=body,
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        urllib.request.urlopen(request, timeout=60).read()

    def watched() -> set[tuple[str, str]]:
        text = urllib.request.urlopen(f"http://127.0.0.1:{sidecar['metrics_port']}/metrics")
        return {
            (sample.labels["direction"], sample.labels["feature"])
            for family in text_string_to_metric_families(text.read().decode())
            if family.name == "mlmodel_drift_window_samples"
            for sample in family.samples
        }

    features = wait_until(watched, what="drift windows of the LLM's traffic", timeout=90)
    assert features == {
        ("input", "prompt_tokens"),
        ("output", "completion_tokens"),
        ("output", "finish_reason"),
    }
