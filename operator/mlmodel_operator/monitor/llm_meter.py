"""One OpenAI exchange as it passes the proxy (streamed or whole), and the metrics it ends in.

The proxy feeds a Reading the answer's head and chunks as it relays them; once the exchange is
over, the Reading's Completion is counted by LLMMetrics (openai.py reads the bytes)."""

from __future__ import annotations

from prometheus_client import Counter

from mlmodel_operator.monitor import metrics
from mlmodel_operator.monitor.openai import CLIENT_ABORT, Completion, StreamReader, read_answer

EVENT_STREAM = "text/event-stream"


class Reading:
    """What the proxy has seen of one answer: a stream's events as they passed, or a whole
    answer's bytes (kept up to `keep_limit` to read its usage)."""

    def __init__(self, endpoint: str, start: float, keep_limit: int) -> None:
        self.endpoint = endpoint
        self.start = start
        self.keep_limit = keep_limit
        self.answered = False  # the model server sent an answer's head
        self.stream: StreamReader | None = None
        self.kept: list[bytes] | None = []
        self.kept_bytes = 0

    def begin(self, headers: list[tuple[str, str]]) -> None:
        self.answered = True
        content_type = next((v for k, v in headers if k.lower() == "content-type"), "")
        if content_type.lower().startswith(EVENT_STREAM):
            self.stream = StreamReader(self.start)

    def chunk(self, data: bytes, now: float) -> None:
        if self.stream is not None:
            self.stream.feed(data, now)
        elif self.kept is not None:
            self.kept_bytes += len(data)
            if self.kept_bytes <= self.keep_limit:
                self.kept.append(data)
            else:
                self.kept = None  # too large to read; its usage is estimated instead

    def completion(self, request_body: bytes | bytearray, aborted: bool) -> Completion:
        if self.stream is not None:
            result = self.stream.completion(self.endpoint, request_body)
        else:
            answer = b"".join(self.kept) if self.kept else None
            result = read_answer(self.endpoint, request_body, answer)
        if aborted:
            result.finish_reason = CLIENT_ABORT
        return result


class LLMMetrics:
    """The OpenAI metrics of one sidecar's model and version; labelled children are looked up
    once each."""

    def __init__(self, model: str, version: str) -> None:
        self.labels = (model, version)
        self.ttft = metrics.TIME_TO_FIRST_TOKEN.labels(model, version)
        self.itl = metrics.INTER_TOKEN_LATENCY.labels(model, version)
        self._counters: dict[tuple[object, ...], Counter] = {}

    def _child(self, family: Counter, *labels: str) -> Counter:
        key = (family, *labels)
        child = self._counters.get(key)
        if child is None:
            child = self._counters[key] = family.labels(*self.labels, *labels)
        return child

    def record(self, completion: Completion) -> None:
        self._child(metrics.LLM_REQUESTS, completion.endpoint, completion.finish_reason).inc()
        if completion.first_token_seconds is not None:
            self.ttft.observe(completion.first_token_seconds)
        for gap in completion.token_gaps:
            self.itl.observe(gap)
        if completion.prompt_tokens:
            self._child(metrics.PROMPT_TOKENS, completion.prompt_source).inc(
                completion.prompt_tokens
            )
        if completion.completion_tokens:
            self._child(metrics.COMPLETION_TOKENS, completion.completion_source).inc(
                completion.completion_tokens
            )
