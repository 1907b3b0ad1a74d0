"""The OpenAI API as the sidecar reads it: which requests are completions, chat completions or
embeddings; a server-sent event stream cut into events as its chunks pass; and what an answer
says of tokens and of why generation stopped. Pure: bytes and times in, facts out; the text of
prompts and completions is measured (in bytes) and never kept.

Token counts come from the answer's `usage` when the server sends it: always in a whole answer
from vLLM, and in a stream only when the client asked for it (`stream_options.include_usage`).
Otherwise they are counted here, and labelled so:
- a streamed completion: one token per chunk that carries generated text (`chunks`); vLLM sends
  one chunk per decoding step, which is one token unless speculative decoding accepts several;
- a prompt, or a whole answer without usage: its UTF-8 bytes / 4, rounded up (`estimated`), the
  usual rule of thumb for English text with BPE tokenizers; a prompt given as token ids counts
  them exactly.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

ENDPOINTS = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}
# finish_reason values kept as labels; anything else is "other", so labels stay bounded.
FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter", "abort", "error"})
NO_FINISH = "none"  # an answer that names none (embeddings, a broken stream)
CLIENT_ABORT = "client_abort"  # the client went away before the answer ended
BYTES_PER_TOKEN = 4
# A stream event larger than this is skipped rather than held (vLLM's are a few hundred bytes).
MAX_EVENT_BYTES = 2**20
_EVENT_END = re.compile(rb"\r?\n\r?\n")


def endpoint_of(method: str, path: str) -> str | None:
    """chat, completions or embeddings for a POST to one of them, else None."""
    return ENDPOINTS.get(path) if method == "POST" else None


def finish_label(reason: object) -> str:
    if reason is None:
        return NO_FINISH
    return reason if isinstance(reason, str) and reason in FINISH_REASONS else "other"


@dataclass
class Completion:
    """What one OpenAI request came to, for the metrics and the drift detector."""

    endpoint: str
    streamed: bool = False
    finish_reason: str = NO_FINISH
    prompt_tokens: int | None = None
    prompt_source: str = "usage"  # usage or estimated
    completion_tokens: int | None = None
    completion_source: str = "usage"  # usage, chunks or estimated
    first_token_seconds: float | None = None  # streamed answers with generated text only
    token_gaps: list[float] = field(default_factory=list)  # between successive token chunks


def _usage(document: dict[str, Any]) -> tuple[int | None, int | None] | None:
    usage = document.get("usage")
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return (
        prompt if type(prompt) is int else None,
        completion if type(completion) is int else None,
    )


def _generated(choice: dict[str, Any]) -> str | None:
    """The generated text of one choice of a stream chunk or an answer: `text` (completions),
    the delta's or message's content, reasoning or tool calls (chat); None if it holds none."""
    text = choice.get("text")
    if isinstance(text, str) and text:
        return text
    part = choice.get("delta") or choice.get("message")
    if not isinstance(part, dict):
        return None
    pieces = [part.get(key) for key in ("content", "reasoning_content", "reasoning")]
    found = "".join(p for p in pieces if isinstance(p, str))
    if found:
        return found
    calls = part.get("tool_calls")
    return orjson.dumps(calls).decode() if calls else None


class StreamReader:
    """Cuts an SSE stream into events as its chunks pass, and notes when each event that carries
    generated text arrived. Only an unfinished event is held between chunks."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.pending = bytearray()
        self.skipping = False  # inside an event over MAX_EVENT_BYTES
        self.last_token_at: float | None = None
        self.token_chunks = 0
        self.text_bytes = 0
        self.finish: str | None = None
        self.usage: tuple[int | None, int | None] | None = None
        self.first_token_seconds: float | None = None
        self.gaps: list[float] = []

    def feed(self, chunk: bytes | bytearray, now: float) -> None:
        self.pending += chunk
        position = 0
        for end in _EVENT_END.finditer(self.pending):
            if self.skipping:
                self.skipping = False
            else:
                self._event(bytes(self.pending[position : end.start()]), now)
            position = end.end()
        del self.pending[:position]
        if len(self.pending) > MAX_EVENT_BYTES:
            self.pending.clear()
            self.skipping = True

    def _event(self, event: bytes, now: float) -> None:
        data = b"\n".join(
            line[5:].lstrip(b" ") for line in event.splitlines() if line.startswith(b"data:")
        )
        if not data or data == b"[DONE]":
            return
        try:
            document = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(document, dict):
            return
        if "error" in document:
            self.finish = "error"
        usage = _usage(document)
        if usage is not None:
            self.usage = usage
        choices = document.get("choices")
        if not isinstance(choices, list):
            return
        carried = 0
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            text = _generated(choice)
            if text:
                carried += 1
                self.text_bytes += len(text.encode())
            if choice.get("finish_reason") is not None:
                self.finish = finish_label(choice["finish_reason"])
        if carried:
            self.token_chunks += carried
            if self.last_token_at is None:
                self.first_token_seconds = now - self.start
            else:
                self.gaps.append(now - self.last_token_at)
            self.last_token_at = now

    def completion(self, endpoint: str, request_body: bytes | bytearray) -> Completion:
        result = Completion(endpoint, streamed=True, finish_reason=self.finish or NO_FINISH)
        result.first_token_seconds = self.first_token_seconds
        result.token_gaps = self.gaps
        prompt, completion = self.usage or (None, None)
        if completion is None:
            completion, result.completion_source = self.token_chunks, "chunks"
        result.completion_tokens = completion
        _fill_prompt(result, prompt, request_body)
        return result


def read_answer(
    endpoint: str, request_body: bytes | bytearray, answer: bytes | bytearray | None
) -> Completion:
    """The facts of a whole (not streamed) answer; an answer that is not JSON, or none, gives
    what the request alone tells."""
    result = Completion(endpoint)
    document: Any = None
    if answer:
        try:
            document = orjson.loads(answer)
        except orjson.JSONDecodeError:
            document = None
    if not isinstance(document, dict):
        _fill_prompt(result, None, request_body)
        return result
    if "error" in document or ("object" in document and document["object"] == "error"):
        result.finish_reason = "error"
    prompt, completion = _usage(document) or (None, None)
    choices = document.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        result.finish_reason = finish_label(choices[0].get("finish_reason"))
        if completion is None:
            text = "".join(_generated(c) or "" for c in choices if isinstance(c, dict)).encode()
            completion, result.completion_source = _estimate(len(text)), "estimated"
    if endpoint != "embeddings":
        result.completion_tokens = completion
    _fill_prompt(result, prompt, request_body)
    return result


def _fill_prompt(result: Completion, prompt: int | None, request_body: bytes | bytearray) -> None:
    if prompt is not None:
        result.prompt_tokens = prompt
        return
    result.prompt_tokens, result.prompt_source = estimate_prompt_tokens(request_body), "estimated"


def _estimate(num_bytes: int) -> int:
    return math.ceil(num_bytes / BYTES_PER_TOKEN)


def estimate_prompt_tokens(request_body: bytes | bytearray) -> int | None:
    """The prompt's tokens as estimated from the request: chat messages' text, a completion's
    prompt, or an embedding's input; token ids are counted as they are. None if unreadable."""
    try:
        request = orjson.loads(request_body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(request, dict):
        return None
    if isinstance(request.get("messages"), list):
        size = 0
        for message in request["messages"]:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                size += len(content.encode())
            elif isinstance(content, list):
                size += sum(
                    len(part["text"].encode())
                    for part in content
                    if isinstance(part, dict) and isinstance(part.get("text"), str)
                )
        return _estimate(size)
    prompt = request.get("prompt", request.get("input"))
    return _prompt_tokens(prompt)


def _prompt_tokens(prompt: Any) -> int | None:
    if isinstance(prompt, str):
        return _estimate(len(prompt.encode()))
    if isinstance(prompt, list):
        if all(type(item) is int for item in prompt):
            return len(prompt)  # token ids
        counts = [_prompt_tokens(item) for item in prompt]
        return None if None in counts else sum(c for c in counts if c is not None)
    return None


def drift_features(completion: Completion) -> tuple[dict[str, Any], dict[str, Any]]:
    """What the drift detector watches of an LLM's traffic without reading its text: the
    prompt's length (inputs), the completion's length and the finish reason (outputs)."""
    inputs = {} if completion.prompt_tokens is None else {"prompt_tokens": completion.prompt_tokens}
    outputs: dict[str, Any] = {"finish_reason": completion.finish_reason}
    if completion.completion_tokens is not None:
        outputs["completion_tokens"] = completion.completion_tokens
    return inputs, outputs
