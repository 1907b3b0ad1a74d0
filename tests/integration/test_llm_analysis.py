"""Canary analysis of an LLM on its streams, against real parts: two tiny models (v1 and v2,
two seeds) each served by vLLM's CPU build behind a real sidecar, scraped by a real
Prometheus, and judged on time to first token and inter-token latency."""

from __future__ import annotations

import contextlib
import http.client
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from llm_helpers import tiny_llm, vllm_server
from mlmodel_operator import api
from mlmodel_operator.analysis import analyse
from prometheus_procs import ModelVersion, Prometheus, model_version, prometheus

MODEL = "assistant"
OPENAI_SIDECAR = {"protocol": "openai", "upstream_ready_path": "/v1/models"}
STREAMS = 12


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("llm-analysis")


@pytest.fixture(scope="module")
def prom(tmp: Path) -> Iterator[Prometheus]:
    with prometheus(tmp / "prometheus") as served:
        yield served


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def servers(tmp: Path) -> Iterator[dict[str, int]]:
    """The vLLM port of each version: two tiny models, two seeds."""
    with (
        vllm_server(tiny_llm(tmp, seed=1), MODEL, tmp) as one,
        vllm_server(tiny_llm(tmp, seed=2), MODEL, tmp) as two,
    ):
        yield {"v1": port_of(one.url), "v2": port_of(two.url)}


@pytest.fixture(scope="module")
def versions(
    prom: Prometheus, tmp: Path, servers: dict[str, int]
) -> Iterator[dict[str, ModelVersion]]:
    namespace = f"llm-{uuid.uuid4().hex[:6]}"
    with (
        served_version(prom, tmp, "v1", namespace, servers["v1"]) as v1,
        served_version(prom, tmp, "v2", namespace, servers["v2"]) as v2,
    ):
        yield {"v1": v1, "v2": v2}


def served_version(
    prom: Prometheus, tmp: Path, version: str, namespace: str, upstream: int
) -> contextlib.AbstractContextManager[ModelVersion]:
    return model_version(
        prom, tmp, version, namespace=namespace, model=MODEL, upstream_port=upstream,
        sidecar=OPENAI_SIDECAR,
    )  # fmt: skip


def stream(version: ModelVersion, count: int, tokens: int = 16) -> None:
    """`count` streamed chat completions through the version's sidecar, read to the end."""
    body = json.dumps({
        "model": MODEL, "stream": True, "max_tokens": tokens, "ignore_eos": True,
        "messages": [{"role": "user", "content": "Name three rivers."}],
    }).encode()  # fmt: skip
    for _ in range(count):
        conn = http.client.HTTPConnection("127.0.0.1", version.proxy_port, timeout=120)
        conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200
        assert response.read().rstrip().endswith(b"data: [DONE]")
        conn.close()
    version.sent += count


def judge(prom: Prometheus, canary: ModelVersion, **gates: float) -> api.AnalysisRecord:
    at = canary.wait_scraped()
    analysis = api.RolloutAnalysis(
        interval_seconds=600, min_requests=STREAMS, max_p99_latency_seconds=120, **gates
    )
    verdict = analyse(prom.url, canary.namespace, MODEL, canary.version, "v1", analysis, at)
    return verdict.record("2026-01-01T00:00:00Z")


def test_ttft_and_itl_gates_are_judged_from_prometheus(
    prom: Prometheus, versions: dict[str, ModelVersion]
) -> None:
    stream(versions["v1"], 3)
    stream(versions["v2"], STREAMS)
    passed = judge(prom, versions["v2"], max_p99_time_to_first_token_seconds=60,
                   max_p99_inter_token_latency_seconds=30)  # fmt: skip
    assert passed.result == api.AnalysisResult.Pass, passed.message
    assert passed.requests == STREAMS
    assert passed.p99_time_to_first_token_seconds is not None
    assert 0 < passed.p99_time_to_first_token_seconds <= 60
    assert passed.p99_inter_token_latency_seconds is not None
    assert "p99 time to first token" in passed.message
    # The same window against a gate no real stream can meet: Fail, naming it and its value.
    failed = judge(prom, versions["v2"], max_p99_time_to_first_token_seconds=1e-6)
    assert failed.result == api.AnalysisResult.Fail
    assert "max_p99_time_to_first_token_seconds 1e-06" in failed.message
    assert failed.p99_time_to_first_token_seconds == passed.p99_time_to_first_token_seconds


def test_a_gate_without_streams_is_inconclusive(
    prom: Prometheus, tmp: Path, servers: dict[str, int], versions: dict[str, ModelVersion]
) -> None:
    """A version whose clients never stream: enough requests, no time to first token at all.
    Its sidecar (v3) is a third, in front of v2's server."""
    namespace = versions["v2"].namespace
    with served_version(prom, tmp, "v3", namespace, servers["v2"]) as v3:
        body = json.dumps({"model": MODEL, "prompt": "Rivers:", "max_tokens": 4}).encode()
        for _ in range(STREAMS):
            conn = http.client.HTTPConnection("127.0.0.1", v3.proxy_port, timeout=120)
            conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
            assert conn.getresponse().status == 200
            conn.close()
        v3.sent += STREAMS
        record = judge(prom, v3, max_p99_time_to_first_token_seconds=60)
    assert record.result == api.AnalysisResult.Inconclusive
    assert record.requests == STREAMS
    assert "no time to first token measured" in record.message
