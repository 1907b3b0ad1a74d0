"""Reading OpenAI API traffic: endpoints, stream events cut at any chunk boundary, tokens from
usage or counted, finish reasons, and what the drift detector is handed."""

from __future__ import annotations

import orjson
import pytest

from mlmodel_operator.monitor import openai
from mlmodel_operator.monitor.llm_meter import Reading
from mlmodel_operator.monitor.payloads import Exchange, parse, protocol_of


def event(document: object) -> bytes:
    return b"data: " + orjson.dumps(document) + b"\n\n"


def chat_chunk(content: str | None, finish: str | None = None, role: bool = False) -> bytes:
    delta: dict[str, str] = {"role": "assistant"} if role else {}
    if content is not None:
        delta["content"] = content
    return event({"object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": delta, "finish_reason": finish}
    ]})  # fmt: skip


STREAM = (
    chat_chunk("", role=True)
    + chat_chunk("Hel")
    + chat_chunk("lo")
    + chat_chunk(" there", finish="length")
    + b"data: [DONE]\n\n"
)
CHAT_REQUEST = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 41}]})


@pytest.mark.parametrize(
    ("method", "path", "endpoint", "protocol"),
    [
        ("POST", "/v1/chat/completions", "chat", "openai"),
        ("POST", "/v1/completions", "completions", "openai"),
        ("POST", "/v1/embeddings", "embeddings", "openai"),
        ("GET", "/v1/models", None, "other"),
        ("GET", "/v1/chat/completions", None, "other"),
        ("POST", "/v1/models/iris:predict", None, "v1"),
    ],
)
def test_endpoints(method: str, path: str, endpoint: str | None, protocol: str) -> None:
    assert openai.endpoint_of(method, path) == endpoint
    assert protocol_of(method, path) == protocol


@pytest.mark.parametrize("size", [1, 2, 7, 64, len(STREAM)])
def test_a_stream_cut_anywhere_gives_the_same_facts(size: int) -> None:
    reader = openai.StreamReader(start=100.0)
    pieces = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    for n, piece in enumerate(pieces):
        reader.feed(piece, now=101.0 + n)
    done = reader.completion("chat", CHAT_REQUEST)
    assert done.streamed and done.finish_reason == "length"
    # Three chunks carried text (the first, role-only one did not): one token each.
    assert (done.completion_tokens, done.completion_source) == (3, "chunks")
    # No usage in the stream: the prompt is estimated from its 41 bytes.
    assert (done.prompt_tokens, done.prompt_source) == (11, "estimated")
    first_text_ends = len(chat_chunk("", role=True) + chat_chunk("Hel")) - 1
    assert done.first_token_seconds == 1.0 + first_text_ends // size
    assert len(done.token_gaps) == 2 and all(gap >= 0 for gap in done.token_gaps)


def test_ttft_is_the_first_text_not_the_first_event() -> None:
    reader = openai.StreamReader(start=0.0)
    reader.feed(chat_chunk("", role=True), now=0.5)
    assert reader.first_token_seconds is None
    reader.feed(chat_chunk("a"), now=2.0)
    reader.feed(chat_chunk("b") + chat_chunk("c"), now=2.25)
    assert reader.first_token_seconds == 2.0
    assert reader.gaps == [0.25, 0.0]


def test_usage_in_the_stream_wins_over_counting() -> None:
    usage = event({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 5}})
    reader = openai.StreamReader(start=0.0)
    reader.feed(STREAM.replace(b"data: [DONE]", usage.rstrip() + b"\n\ndata: [DONE]"), now=1.0)
    done = reader.completion("chat", CHAT_REQUEST)
    assert (done.prompt_tokens, done.prompt_source) == (7, "usage")
    assert (done.completion_tokens, done.completion_source) == (5, "usage")


def test_crlf_events_and_a_completions_stream() -> None:
    body = (
        b'data: {"choices":[{"index":0,"text":"a","finish_reason":null}]}\r\n\r\n'
        b'data: {"choices":[{"index":0,"text":"b","finish_reason":"stop"}]}\r\n\r\n'
        b"data: [DONE]\r\n\r\n"
    )
    reader = openai.StreamReader(start=0.0)
    reader.feed(body, now=1.0)
    done = reader.completion("completions", orjson.dumps({"prompt": [1, 2, 3]}))
    assert (done.finish_reason, done.completion_tokens) == ("stop", 2)
    assert done.prompt_tokens == 3  # token ids are counted as they are


def test_an_oversized_event_is_skipped_and_the_rest_still_read() -> None:
    reader = openai.StreamReader(start=0.0)
    reader.feed(b"data: " + b"x" * (openai.MAX_EVENT_BYTES + 10), now=1.0)
    reader.feed(b"still the same event\n\n" + chat_chunk("a", finish="stop"), now=2.0)
    assert reader.token_chunks == 1 and reader.finish == "stop"
    assert len(reader.pending) == 0


def test_whole_answers_use_usage_and_bound_finish_reasons() -> None:
    answer = orjson.dumps({
        "choices": [{"index": 0, "message": {"content": "hi"}, "finish_reason": "weird"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
    })  # fmt: skip
    done = openai.read_answer("chat", CHAT_REQUEST, answer)
    assert (done.prompt_tokens, done.completion_tokens, done.finish_reason) == (9, 2, "other")
    assert not done.streamed and done.first_token_seconds is None


def test_whole_answers_without_usage_are_estimated() -> None:
    answer = orjson.dumps({"choices": [{"text": "abcdefghi", "finish_reason": "stop"}]})
    done = openai.read_answer("completions", orjson.dumps({"prompt": "abcd"}), answer)
    assert (done.completion_tokens, done.completion_source) == (3, "estimated")
    assert (done.prompt_tokens, done.prompt_source) == (1, "estimated")


def test_embeddings_count_prompt_tokens_only() -> None:
    answer = orjson.dumps({"data": [{"embedding": [0.1, 0.2]}], "usage": {"prompt_tokens": 4}})
    done = openai.read_answer("embeddings", orjson.dumps({"input": ["a", "b"]}), answer)
    assert (done.prompt_tokens, done.completion_tokens, done.finish_reason) == (4, None, "none")


def test_an_error_answer_and_an_unreadable_one() -> None:
    error = orjson.dumps({"object": "error", "message": "too long", "code": 400})
    assert openai.read_answer("chat", CHAT_REQUEST, error).finish_reason == "error"
    garbled = openai.read_answer("chat", b"not json", b"<html>")
    assert garbled.prompt_tokens is None and garbled.finish_reason == "none"


def test_a_reading_keeps_whole_answers_within_its_limit_and_marks_aborts() -> None:
    answer = orjson.dumps({"choices": [{"text": "x", "finish_reason": "stop"}]})
    reading = Reading("completions", start=0.0, keep_limit=len(answer))
    reading.begin([("Content-Type", "application/json")])
    reading.chunk(answer, now=1.0)
    assert reading.completion(b"{}", aborted=False).finish_reason == "stop"
    small = Reading("completions", start=0.0, keep_limit=len(answer) - 1)
    small.begin([("content-type", "application/json")])
    small.chunk(answer, now=1.0)
    assert small.completion(b"{}", aborted=False).finish_reason == "none"
    streamed = Reading("chat", start=0.0, keep_limit=0)
    streamed.begin([("content-type", "text/event-stream; charset=utf-8")])
    streamed.chunk(chat_chunk("a"), now=0.1)
    done = streamed.completion(CHAT_REQUEST, aborted=True)
    assert (done.finish_reason, done.completion_tokens) == ("client_abort", 1)


def test_the_analyst_gets_lengths_and_the_finish_reason_never_the_text() -> None:
    done = openai.read_answer(
        "chat",
        CHAT_REQUEST,
        orjson.dumps(
            {
                "choices": [{"message": {"content": "secret"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1},
            }
        ),
    )
    inputs, outputs = openai.drift_features(done)
    exchange = Exchange("openai", 200, orjson.dumps(inputs), orjson.dumps(outputs))
    parsed = parse(exchange)
    assert parsed.inputs == {"prompt_tokens": [3]}
    assert parsed.outputs == {"finish_reason": ["stop"], "completion_tokens": [1]}
    assert b"secret" not in exchange.request_body + (exchange.response_body or b"")
