"""Payload logging's pure parts: which predictions are sampled, the CloudEvents made of an
exchange and their encodings (read back with the CloudEvents SDK, as a sink would), when a
batch goes, and how deliveries are retried."""

from __future__ import annotations

import asyncio
import base64
import json
import math

import pytest
from cloudevents.conversion import from_http
from cloudevents.http import CloudEvent
from cloudevents.http import from_http as read_http

from mlmodel_operator.monitor.budget import ByteBudget
from mlmodel_operator.monitor.payload_delivery import (
    BACKOFF_CAP_SECONDS,
    Authorization,
    Verdict,
    backoff,
    parse_retry_after,
    verdict,
)
from mlmodel_operator.monitor.payload_events import (
    BATCH_CONTENT_TYPE,
    Body,
    Exchange,
    Origin,
    encode_batch,
    encode_binary,
    encode_structured,
    make_events,
    sampled,
)
from mlmodel_operator.monitor.payload_log import Copy
from mlmodel_operator.monitor.payload_queue import EventQueue, batch_wait

ORIGIN = Origin("iris", "v2", "team-a")
REQUEST = b'{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1.5, 2]}]}'
ANSWER = b'{"outputs":[{"name":"p","shape":[1],"datatype":"INT64","data":[2]}]}'


def exchange(
    request: Body | None = None, response: Body | None = None, status: int = 200
) -> Exchange:
    return Exchange(
        prediction="abcd.req-7",
        endpoint="/v2/models/iris/infer",
        status=status,
        request=request or Body(REQUEST, "application/json", len(REQUEST)),
        response=response or Body(ANSWER, "application/json", len(ANSWER)),
        answered_at=1_800_000_000.25,
        ended_at=1_800_000_000.5,
    )


# --- sampling -------------------------------------------------------------------------------------


def test_sampling_is_decided_by_the_prediction_id_alone() -> None:
    ids = [f"token.req-{i}" for i in range(2000)]
    first = [sampled(i, 30) for i in ids]
    assert first == [sampled(i, 30) for i in ids]
    assert all(sampled(i, 100) for i in ids)


@pytest.mark.parametrize("percent", [1.0, 10.0, 50.0, 90.0])
def test_the_sampled_share_is_the_percentage(percent: float) -> None:
    n = 20_000
    kept = sum(sampled(f"token.{i}", percent) for i in range(n))
    p = percent / 100
    # Five standard deviations of a binomial count: fails by chance about once in 3 million.
    assert abs(kept - n * p) <= 5 * math.sqrt(n * p * (1 - p))


def test_a_lower_percentage_keeps_a_subset() -> None:
    ids = [f"token.{i}" for i in range(5000)]
    assert {i for i in ids if sampled(i, 10)} <= {i for i in ids if sampled(i, 40)}


# --- events ---------------------------------------------------------------------------------------


def test_an_exchange_gives_a_request_and_a_response_event() -> None:
    events = [event for event, _ in make_events(exchange(), ORIGIN, "all")]
    assert [e["type"] for e in events] == [
        "org.machine-learning.inference.request",
        "org.machine-learning.inference.response",
    ]
    assert [e["id"] for e in events] == ["abcd.req-7-request", "abcd.req-7-response"]
    for event in events:
        assert event["predictionid"] == "abcd.req-7"
        assert (event["model"], event["modelversion"], event["namespace"]) == (
            "iris",
            "v2",
            "team-a",
        )
        assert event["endpoint"] == "/v2/models/iris/infer"
        assert event["source"] == "/namespaces/team-a/mlmodeldeployments/iris"
    assert "status" not in events[0]
    assert events[1]["status"] == 200
    assert events[0]["time"] == "2027-01-15T08:00:00.250000Z"
    assert events[1]["time"] == "2027-01-15T08:00:00.500000Z"


@pytest.mark.parametrize(("mode", "kinds"), [("request", ["request"]), ("response", ["response"])])
def test_a_mode_gives_only_its_event(mode: str, kinds: list[str]) -> None:
    events = make_events(exchange(), ORIGIN, mode)
    assert [e["type"].rsplit(".", 1)[1] for e, _ in events] == kinds


def test_binary_mode_sends_the_body_unchanged_with_its_content_type() -> None:
    raw = b"\x00\x01binary tensor"
    event, _ = make_events(exchange(response=Body(raw, "application/octet-stream", len(raw))),
                           ORIGIN, "response")[0]  # fmt: skip
    headers, body = encode_binary(event)
    assert body == raw
    assert headers["content-type"] == "application/octet-stream"
    assert headers["ce-status"] == "200"
    assert all(isinstance(v, str) for v in headers.values())
    parsed = from_http(CloudEvent, headers, body, data_unmarshaller=lambda d: d)
    assert parsed["predictionid"] == "abcd.req-7"
    assert parsed.get_data() == raw


def test_a_batch_embeds_json_as_json_and_other_bodies_in_base64() -> None:
    sse = b"data: one\n\ndata: two\n\n"
    events = make_events(exchange(response=Body(sse, "text/event-stream", len(sse))), ORIGIN, "all")
    batch = encode_batch([encode_structured(event, body) for event, body in events])
    documents = json.loads(batch)
    assert len(documents) == 2
    request, response = documents
    assert request["data"] == json.loads(REQUEST)
    assert request["datacontenttype"] == "application/json"
    assert "data_base64" not in request
    assert base64.b64decode(response["data_base64"]) == sse
    assert response["datacontenttype"] == "text/event-stream"
    # The SDK reads each of them back.
    structured = {"content-type": "application/cloudevents+json"}
    parsed = [read_http(structured, json.dumps(document)) for document in documents]
    assert [p["id"] for p in parsed] == ["abcd.req-7-request", "abcd.req-7-response"]
    assert parsed[0].get_data() == json.loads(REQUEST)
    assert parsed[1].get_data() == sse
    assert BATCH_CONTENT_TYPE == "application/cloudevents-batch+json"


def test_a_body_that_claims_json_but_is_not_goes_in_base64() -> None:
    bad = b'{"inputs": ['
    event, body = make_events(exchange(request=Body(bad, "application/json", len(bad))),
                              ORIGIN, "request")[0]  # fmt: skip
    document = json.loads(encode_structured(event, body))
    assert base64.b64decode(document["data_base64"]) == bad


def test_a_truncated_body_is_marked() -> None:
    body = Body(ANSWER[:10], "application/json", len(ANSWER))
    event, kept = make_events(exchange(response=body), ORIGIN, "response")[0]
    assert event["truncated"] is True
    assert event["bodysize"] == len(ANSWER)
    assert event["datacontenttype"] == "application/octet-stream"
    document = json.loads(encode_structured(event, kept))
    assert base64.b64decode(document["data_base64"]) == ANSWER[:10]
    headers, data = encode_binary(event)
    assert (headers["ce-truncated"], headers["ce-bodysize"], data) == (
        "true",
        str(len(ANSWER)),
        ANSWER[:10],
    )


# --- batching -------------------------------------------------------------------------------------


def test_a_batch_waits_until_full_or_its_oldest_event_waited_the_interval() -> None:
    assert batch_wait(0, 0.0, 10, 1.0, closing=False) is None
    assert batch_wait(3, 0.25, 10, 1.0, closing=False) == pytest.approx(0.75)
    assert batch_wait(10, 0.0, 10, 1.0, closing=False) == 0
    assert batch_wait(3, 1.0, 10, 1.0, closing=False) == 0
    assert batch_wait(3, 0.0, 10, 1.0, closing=True) == 0
    assert batch_wait(1, 0.0, 1, 1.0, closing=False) == 0


def test_the_queue_takes_an_exchange_whole_or_not_at_all() -> None:
    async def run() -> None:
        budget = ByteBudget(100)
        queue = EventQueue(budget, batch_size=2, interval=60.0)
        assert queue.offer([(b"a" * 40, None), (b"b" * 40, None)])
        assert not queue.offer([(b"c" * 10, None), (b"d" * 15, None)])
        assert len(queue) == 2 and budget.used == 80
        batch = await queue.take()  # full: goes at once
        assert [item.body[:1] for item in batch] == [b"a", b"b"]
        assert budget.used == 80  # held until delivered
        queue.done(batch)
        assert budget.used == 0

    asyncio.run(run())


def test_a_partial_batch_goes_after_the_interval() -> None:
    now = [0.0]

    async def run() -> None:
        queue = EventQueue(ByteBudget(1000), batch_size=5, interval=0.05, clock=lambda: now[0])
        queue.offer([(b"x", None)])
        taking = asyncio.create_task(queue.take())
        await asyncio.sleep(0.01)
        assert not taking.done()
        now[0] = 0.05
        assert len(await asyncio.wait_for(taking, 5)) == 1

    asyncio.run(run())


# --- delivery -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, Verdict.sent),
        (202, Verdict.sent),
        (204, Verdict.sent),
        (408, Verdict.retry),
        (429, Verdict.retry),
        (500, Verdict.retry),
        (503, Verdict.retry),
        (400, Verdict.rejected),
        (401, Verdict.rejected),
        (413, Verdict.rejected),
        (301, Verdict.rejected),
    ],
)
def test_what_an_answer_of_the_sink_means(status: int, expected: Verdict) -> None:
    assert verdict(status) is expected


def test_backoff_is_exponential_jittered_and_capped() -> None:
    assert [backoff(a, rand=lambda: 1.0) for a in range(4)] == [0.25, 0.5, 1.0, 2.0]
    assert backoff(20, rand=lambda: 1.0) == BACKOFF_CAP_SECONDS
    assert backoff(3, rand=lambda: 0.5) == 1.0
    assert backoff(0, rand=lambda: 0.0) == 0.0


def test_retry_after_is_honoured_within_the_cap() -> None:
    assert backoff(0, retry_after=3.0, rand=lambda: 0.0) == 3.0
    assert backoff(0, retry_after=600.0, rand=lambda: 0.0) == BACKOFF_CAP_SECONDS
    assert parse_retry_after("7", 0.0) == 7.0
    assert parse_retry_after("Thu, 01 Jan 1970 00:00:30 GMT", 10.0) == 20.0
    assert parse_retry_after("soon", 0.0) is None
    assert parse_retry_after(None, 0.0) is None


def test_the_authorization_is_read_again_when_its_file_changes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "authorization"
    path.write_text("Bearer one\n")
    auth = Authorization(str(path))
    assert auth.value() == "Bearer one"
    replaced = tmp_path / "new"
    replaced.write_text("Bearer two-longer")
    replaced.replace(path)  # as the kubelet swaps a Secret's files
    assert auth.value() == "Bearer two-longer"
    assert Authorization(None).value() is None


# --- the copy of an answer ------------------------------------------------------------------------


def copy_of(budget: ByteBudget, cap: int) -> Copy:
    return Copy(budget.hold(), cap, True, "p.1", "/v2/models/iris/infer", None, "text/plain")


def test_a_copy_keeps_up_to_its_cap_and_counts_the_whole_length() -> None:
    budget = ByteBudget(1000)
    copy = copy_of(budget, cap=10)
    for chunk in (b"abcd", b"efgh", b"ijkl", b"mnop"):
        copy.add(chunk)
    answer = copy.answer()
    assert (answer.data, answer.size, answer.truncated) == (b"abcdefghij", 16, True)
    assert budget.used == 10 and copy.dropped is None
    copy.hold.release()
    assert budget.used == 0


def test_a_copy_without_room_is_dropped_and_says_why() -> None:
    budget = ByteBudget(10)
    other = budget.hold()
    assert other.try_take(8)
    full = copy_of(budget, cap=100)
    full.add(b"abcd")
    assert full.dropped == "queue_full" and budget.used == 8
    other.release()
    huge = copy_of(budget, cap=100)
    huge.add(b"a" * 6)
    huge.add(b"b" * 6)
    assert huge.dropped == "too_large" and budget.used == 0
