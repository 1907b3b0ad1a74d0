"""Payload logging's events, pure: which predictions are logged, the CloudEvents 1.0 made of an
exchange, and their encoding for the sink.

One exchange gives up to two events, `org.machine-learning.inference.request` and `.response`,
made with the CloudEvents SDK. Each carries the prediction id (extension `predictionid`, and the
event `id`: the prediction id with `-request` or `-response`), the model, its version and
namespace, the request's path (`endpoint`), and `time`: when the model answered for the
request, when the answer ended for the response; the response also carries its `status`.

The data is the body as it passed:

- batch_size 1, binary mode (one event per POST): the HTTP body is the body's bytes, and
  `datacontenttype` its own Content-Type (application/octet-stream without one);
- batched, `application/cloudevents-batch+json` (a JSON array of structured events): a body
  that is JSON goes in `data` as JSON, as it came (embedded, never parsed into objects and
  written again); any other body goes in `data_base64` with its Content-Type. The SDK 1.x
  writes no batches, so the array is written here, each event's attributes from the SDK's
  event.

A body over max_capture_bytes is cut: the event carries its first max_capture_bytes as
application/octet-stream, with the extensions `truncated` (true) and `bodysize` (the whole
body's length).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent

EVENT_TYPE_PREFIX = "org.machine-learning.inference."
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
OCTET_STREAM = "application/octet-stream"
KINDS = {"all": ("request", "response"), "request": ("request",), "response": ("response",)}
_SAMPLE_SCALE = 2**64


def sampled(prediction: str, percent: float) -> bool:
    """Whether the prediction is logged: decided by a hash of its id, so that its request and
    its answer are logged together or not at all, the same way in every worker and pod."""
    if percent >= 100:
        return True
    digest = hashlib.blake2b(prediction.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < percent / 100 * _SAMPLE_SCALE


@dataclass(frozen=True)
class Body:
    """A body as kept for its event: its first bytes, its Content-Type and its whole length."""

    data: bytes
    content_type: str | None
    size: int

    @property
    def truncated(self) -> bool:
        return len(self.data) < self.size


@dataclass(frozen=True)
class Origin:
    """What every event of a sidecar says of where it comes from."""

    model: str
    version: str
    namespace: str

    @property
    def source(self) -> str:
        return f"/namespaces/{self.namespace}/mlmodeldeployments/{self.model}"


@dataclass(frozen=True)
class Exchange:
    """One logged request and its answer."""

    prediction: str
    endpoint: str  # the request's path
    status: int  # as the client got it (499: it went away before the end)
    request: Body
    response: Body
    answered_at: float  # Unix time the model answered (the prediction was made)
    ended_at: float  # Unix time the answer ended


def _time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def make_events(exchange: Exchange, origin: Origin, mode: str) -> list[tuple[CloudEvent, Body]]:
    """The exchange's events for `mode` (all, request, response), each with the body it
    carries."""
    events = []
    for kind in KINDS[mode]:
        body = exchange.request if kind == "request" else exchange.response
        attributes: dict[str, Any] = {
            "type": EVENT_TYPE_PREFIX + kind,
            "source": origin.source,
            "id": f"{exchange.prediction}-{kind}",
            "time": _time(exchange.answered_at if kind == "request" else exchange.ended_at),
            "datacontenttype": body.content_type or OCTET_STREAM,
            "predictionid": exchange.prediction,
            "model": origin.model,
            "modelversion": origin.version,
            "namespace": origin.namespace,
            "endpoint": exchange.endpoint,
        }
        if kind == "response":
            attributes["status"] = exchange.status
        if body.truncated:
            attributes.update(datacontenttype=OCTET_STREAM, truncated=True, bodysize=body.size)
        events.append((CloudEvent.create(attributes, body.data), body))
    return events


def encode_binary(event: CloudEvent) -> tuple[dict[str, str], bytes]:
    """The event in binary mode: its attributes as ce- headers (values as strings), its data as
    the HTTP body, unchanged."""
    headers, data = to_binary(event, data_marshaller=lambda data: data)
    return {k: _header_value(v) for k, v in headers.items()}, bytes(data)


def _header_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def is_json_type(content_type: str | None) -> bool:
    """Whether a Content-Type says JSON (or says nothing: a body may still be JSON)."""
    if not content_type:
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def encode_structured(event: CloudEvent, body: Body) -> bytes:
    """The event in the structured JSON format, for a batch: a JSON body embedded as `data` as it
    came, any other in `data_base64`."""
    attributes = {name: event[name] for name in event}
    if not body.truncated and is_json_type(body.content_type) and _is_json(body.data):
        attributes["datacontenttype"] = "application/json"
        attributes["data"] = orjson.Fragment(body.data)
    elif body.data:
        attributes["data_base64"] = base64.b64encode(body.data).decode("ascii")
    return orjson.dumps(attributes)


def _is_json(data: bytes) -> bool:
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return bool(data.strip())


def encode_batch(events: list[bytes]) -> bytes:
    """Structured events (encode_structured) as one application/cloudevents-batch+json body."""
    return b"[" + b",".join(events) + b"]"
