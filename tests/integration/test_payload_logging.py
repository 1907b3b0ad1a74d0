"""Payload logging with real parts: the `mlmodel-monitor` sidecar in front of the KServe model
server (or of a small streaming server), sending CloudEvents to a real receiver that reads them
with the CloudEvents SDK (payload_sink.py)."""

from __future__ import annotations

import asyncio
import http.client
import json
import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web

from kube_helpers import wait_until
from mlmodel_operator.monitor.payload_events import sampled
from monitor_procs import MODEL, flowers, metric, model_server, post, start_sidecar, v2_body
from payload_sink import Sink
from procs import Server, free_port

INFER = f"/v2/models/{MODEL}/infer"
NAMESPACE = "team-a"
VERSION = "v3"


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("payload-logging")


@pytest.fixture(scope="module")
def model_port(tmp: Path) -> Iterator[int]:
    with model_server(tmp) as port:
        yield port


def logging_sidecar(
    tmp: Path, upstream: int, name: str, logging: dict[str, Any], **overrides: Any
) -> tuple[Server, dict]:
    return start_sidecar(
        tmp,
        upstream,
        name,
        env={"MLMODEL_MONITOR_MODEL_VERSION": VERSION},
        drift=None,
        namespace=NAMESPACE,
        payload_logging=logging,
        **overrides,
    )


def infer(port: int, request_id: str, rows: np.ndarray) -> tuple[int, str, bytes, bytes]:
    """One V2 inference: (status, x-prediction-id, request body, answer body)."""
    body = v2_body(rows, request_id)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", INFER, body=body, headers={"Content-Type": "application/json",
                                                    "x-request-id": request_id})  # fmt: skip
    response = conn.getresponse()
    answer = response.read()
    conn.close()
    return response.status, response.getheader("x-prediction-id") or "", body, answer


def sent(config: dict) -> float:
    return metric(config["metrics_port"], "mlmodel_payload_events_sent_total")


def dropped(config: dict, reason: str) -> float:
    return metric(config["metrics_port"], "mlmodel_payload_events_dropped_total", reason=reason)


def test_binary_mode_one_event_per_post_with_the_ids_the_client_got(
    tmp: Path, model_port: int
) -> None:
    rng = np.random.default_rng(1)
    auth = tmp / "authorization"
    auth.write_text("Bearer first-token\n")
    with Sink() as sink:
        logging = {"url": sink.url, "batch_size": 1, "authorization_file": str(auth)}
        server, config = logging_sidecar(tmp, model_port, "binary", logging)
        try:
            answers = [infer(config["listen_port"], f"req-{i}", flowers(rng, 3)) for i in range(5)]
            wait_until(lambda: len(sink.events()) >= 10, what="10 events", timeout=30)
            events = sink.by_id()
            assert len(sink.events()) == len(events) == 10
            for i, (status, prediction, body, answer) in enumerate(answers):
                # The client's own id follows the holder part of the prediction id.
                assert status == 200 and prediction.split(".", 1)[1] == f"req-{i}"
                request, response = (
                    events[f"{prediction}-request"],
                    events[f"{prediction}-response"],
                )
                assert request["type"] == "org.machine-learning.inference.request"
                assert response["type"] == "org.machine-learning.inference.response"
                for event in (request, response):
                    assert event["predictionid"] == prediction
                    assert (event["model"], event["modelversion"], event["namespace"]) == (
                        MODEL, VERSION, NAMESPACE,
                    )  # fmt: skip
                    assert event["endpoint"] == INFER
                    assert event["datacontenttype"] == "application/json"
                assert request.get_data() == json.loads(body)
                assert response.get_data() == json.loads(answer)
                assert response["status"] == "200"
            assert all(not p.batch and len(p.events) == 1 for p in sink.posts)
            assert {p.headers["authorization"] for p in sink.posts} == {"Bearer first-token"}
            wait_until(lambda: sent(config) == 10, what="10 events counted as sent", timeout=10)

            # A rotated token is used from the next delivery on, without a restart.
            replacement = tmp / "authorization.new"
            replacement.write_text("Bearer second-token")
            replacement.replace(auth)
            _, prediction, _, _ = infer(config["listen_port"], "after-rotation", flowers(rng, 1))
            wait_until(lambda: f"{prediction}-response" in sink.by_id(), what="the next events")
            assert sink.posts[-1].headers["authorization"] == "Bearer second-token"
        finally:
            server.close()


def test_batches_hold_at_most_batch_size_events_and_a_partial_one_goes_after_the_interval(
    tmp: Path, model_port: int
) -> None:
    rng = np.random.default_rng(2)
    with Sink() as sink:
        # Full batches only: their interval is far longer than the test.
        logging = {"url": sink.url, "batch_size": 4, "batch_interval_seconds": 600}
        server, config = logging_sidecar(tmp, model_port, "batched", logging)
        try:
            ids = [infer(config["listen_port"], f"b-{i}", flowers(rng, 2))[1] for i in range(8)]
            wait_until(lambda: len(sink.events()) >= 16, what="16 events", timeout=30)
            assert [len(p.events) for p in sink.posts] == [4, 4, 4, 4]
            assert all(p.batch for p in sink.posts)
            assert set(sink.by_id()) == {f"{i}-{k}" for i in ids for k in ("request", "response")}
        finally:
            server.close()
    with Sink() as sink:
        logging = {"url": sink.url, "batch_size": 100, "batch_interval_seconds": 0.5}
        server, config = logging_sidecar(tmp, model_port, "partial", logging)
        try:
            for i in range(3):
                infer(config["listen_port"], f"p-{i}", flowers(rng, 1))
            wait_until(lambda: len(sink.events()) >= 6, what="6 events", timeout=30)
            assert sum(len(p.events) for p in sink.posts) == 6
            assert all(len(p.events) < 100 for p in sink.posts)
        finally:
            server.close()


def test_a_sampled_share_of_predictions_each_logged_whole_or_not_at_all(
    tmp: Path, model_port: int
) -> None:
    """mode response at 25%: the ids logged are exactly those the hash chooses, and their number
    is within five standard deviations of a quarter."""
    rng = np.random.default_rng(3)
    count, percent = 400, 25.0
    with Sink() as sink:
        logging = {"url": sink.url, "mode": "response", "sample_percent": percent,
                   "batch_size": 50, "batch_interval_seconds": 0.2}  # fmt: skip
        server, config = logging_sidecar(tmp, model_port, "sampled", logging)
        try:
            rows = flowers(rng, 1)
            ids = [infer(config["listen_port"], f"s-{i}", rows)[1] for i in range(count)]
            chosen = {i for i in ids if sampled(i, percent)}
            wait_until(lambda: sent(config) >= len(chosen), what="the sampled events", timeout=30)
            events = sink.events()
            assert {e["predictionid"] for e in events} == chosen
            assert {e["type"] for e in events} == {"org.machine-learning.inference.response"}
            p = percent / 100
            assert abs(len(chosen) - count * p) <= 5 * math.sqrt(count * p * (1 - p))
        finally:
            server.close()


def test_mode_request_logs_requests_only(tmp: Path, model_port: int) -> None:
    rng = np.random.default_rng(5)
    with Sink() as sink:
        logging = {"url": sink.url, "mode": "request", "batch_size": 1}
        server, config = logging_sidecar(tmp, model_port, "requests-only", logging)
        try:
            ids = [infer(config["listen_port"], f"r-{i}", flowers(rng, 1))[1] for i in range(3)]
            wait_until(lambda: sent(config) >= 3, what="3 events sent", timeout=30)
            assert sorted(e["id"] for e in sink.events()) == sorted(f"{i}-request" for i in ids)
        finally:
            server.close()


# --- streams --------------------------------------------------------------------------------------


def sse_server(port: int) -> web.Application:
    """An OpenAI-style server whose chat completions stream `chunks` SSE events of `size` bytes
    (the request's own fields)."""

    async def chat(request: web.Request) -> web.StreamResponse:
        asked = await request.json()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for i in range(asked["chunks"]):
            delta = {"choices": [{"index": 0, "delta": {"content": "x" * asked["size"]}}]}
            await response.write(f"data: {json.dumps({'id': i, **delta})}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/health", health)
    return app


@pytest.fixture(scope="module")
def stream_port() -> Iterator[int]:
    port = free_port()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(sse_server(port), access_log=None, shutdown_timeout=0.5)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield port
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def chat(port: int, chunks: int, size: int) -> tuple[str, bytes]:
    body = json.dumps({"model": MODEL, "stream": True, "chunks": chunks, "size": size,
                       "messages": [{"role": "user", "content": "hi"}]}).encode()  # fmt: skip
    status, headers, data = post(port, "/v1/chat/completions", body)
    assert status == 200
    return headers["x-prediction-id"], data


def test_a_stream_is_logged_once_it_ends_and_cut_past_max_capture_bytes(
    tmp: Path, stream_port: int
) -> None:
    with Sink() as sink:
        logging = {"url": sink.url, "batch_size": 1, "max_capture_bytes": 4096}
        server, config = logging_sidecar(
            tmp, stream_port, "streams", logging, protocol="openai", upstream_ready_path="/health"
        )
        try:
            short_id, short = chat(config["listen_port"], chunks=5, size=10)
            long_id, long = chat(config["listen_port"], chunks=200, size=100)
            assert long.count(b"data: ") == 201  # the client got the whole stream
            wait_until(lambda: len(sink.events()) >= 4, what="4 events", timeout=30)
            events = sink.by_id()
            whole = events[f"{short_id}-response"]
            assert whole.get_data() == short
            assert whole["datacontenttype"] == "text/event-stream"
            assert "truncated" not in whole
            cut = events[f"{long_id}-response"]
            assert cut["truncated"] == "true"
            assert cut["bodysize"] == str(len(long))
            assert cut.get_data() == long[:4096]
            assert events[f"{long_id}-request"]["endpoint"] == "/v1/chat/completions"
        finally:
            server.close()


# --- a sink that fails ----------------------------------------------------------------------------


def test_a_down_then_slow_sink_costs_the_client_nothing(tmp: Path, model_port: int) -> None:
    """Requests are answered in full while the sink refuses connections and while it answers
    after seconds; the events that do not fit are dropped and counted, and the failing gauge
    says when deliveries fail."""
    rng = np.random.default_rng(4)
    rows = flowers(rng, 2)
    direct = post(model_port, INFER, v2_body(rows, "same"))[2]
    sink = Sink()  # not started: its port refuses connections
    logging = {"url": sink.url, "batch_size": 1, "max_queued_bytes": 16 * 1024,
               "timeout_seconds": 30}  # fmt: skip
    server, config = logging_sidecar(tmp, model_port, "failing", logging)
    port = config["metrics_port"]
    try:
        for i in range(100):
            status, prediction, _, answer = infer(config["listen_port"], "same", rows)
            assert (status, answer) == (200, direct), i
            assert prediction
        wait_until(lambda: dropped(config, "queue_full") > 0, what="queue_full drops", timeout=30)
        wait_until(lambda: dropped(config, "retries_exhausted") > 0, what="events given up",
                   timeout=60)  # fmt: skip
        assert metric(port, "mlmodel_payload_logging_failing") == 1
        assert sent(config) == 0

        with Sink(port=sink.port, delay=2.0) as slow:
            before = dropped(config, "queue_full")
            for i in range(100):
                status, _, _, answer = infer(config["listen_port"], "same", rows)
                assert (status, answer) == (200, direct), i
            wait_until(lambda: sent(config) > 0, what="a slow delivery", timeout=60)
            wait_until(lambda: metric(port, "mlmodel_payload_logging_failing") == 0,
                       what="deliveries to succeed again", timeout=60)  # fmt: skip
            assert dropped(config, "queue_full") > before
            delivered = sent(config)
            assert len(slow.events()) >= delivered
    finally:
        server.close()
