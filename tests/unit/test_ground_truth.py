"""Prediction ids, the store of predictions waiting for their truth, reading predictions out of
answers, and scoring them."""

from __future__ import annotations

import orjson
import pytest

from mlmodel_operator.monitor import feedback
from mlmodel_operator.monitor.feedback import BadFeedback
from mlmodel_operator.monitor.ground_truth import Unreadable, class_text, read_answer, score
from mlmodel_operator.monitor.pending import Outcome, PendingPredictions, entry_bytes
from mlmodel_operator.monitor.prediction_id import Holder, holder_of, own_id, prediction_id


@pytest.mark.parametrize("address", ["10.1.2.3", "fd00::17"])
def test_a_prediction_id_names_its_holder(address: str) -> None:
    holder = Holder(address, 7, 1_765_000_000)
    made = prediction_id(holder, "req-42")
    assert made.endswith(".req-42")
    assert holder_of(made) == holder


def test_an_id_without_a_request_id_is_random_and_still_names_its_holder() -> None:
    holder = Holder("10.0.0.1", 0, 5)
    first, second = prediction_id(holder, None), prediction_id(holder, None)
    assert first != second
    assert holder_of(first) == holder_of(second) == holder


@pytest.mark.parametrize("text", ["", "plain", "x.y", "!!!!.y", "aaaaaaaa.", "a" * 60 + ".x"])
def test_ids_that_are_not_ours_name_no_holder(text: str) -> None:
    assert holder_of(text) is None


def test_the_header_id_comes_before_the_answers_and_unsafe_ids_are_ignored() -> None:
    assert own_id("from-header", "from-body") == "from-header"
    assert own_id(None, "from-body") == "from-body"
    assert own_id("has space", "from-body") == "from-body"
    assert own_id("x" * 129, 17) is None


def test_the_store_is_bounded_in_bytes_and_lets_the_oldest_go() -> None:
    one = entry_bytes("p0", ("cat",))
    store = PendingPredictions(max_bytes=3 * one, ttl_seconds=100)
    for i in range(5):
        assert store.add(f"p{i}", ("cat",), now=float(i))
    assert len(store) == 3 and store.used <= 3 * one
    assert store.evicted == 2
    assert store.take("p0", now=5.0) == (Outcome.unmatched, ())
    assert store.take("p4", now=5.0) == (Outcome.matched, ("cat",))
    assert store.take("p4", now=5.0) == (Outcome.duplicate, ())


def test_predictions_expire_after_the_ttl() -> None:
    store = PendingPredictions(max_bytes=10_000, ttl_seconds=10)
    store.add("old", (1.0,), now=0.0)
    store.add("new", (2.0,), now=5.0)
    store.expire(now=12.0)
    assert store.expired == 1 and len(store) == 1
    assert store.take("new", now=12.0) == (Outcome.matched, (2.0,))
    assert store.used == 0


def test_a_prediction_larger_than_the_store_is_refused() -> None:
    store = PendingPredictions(max_bytes=100, ttl_seconds=10)
    assert not store.add("p", ("x" * 500,), now=0.0)
    assert len(store) == 0


def _v2(data: list, shape: list[int], datatype: str = "FP32", name: str = "out") -> bytes:
    outputs = [{"name": name, "shape": shape, "datatype": datatype, "data": data}]
    return orjson.dumps({"id": "r1", "model_name": "m", "outputs": outputs})


def test_classes_are_read_as_argmax_of_scores_labels_or_class_ids() -> None:
    scores = _v2([0.1, 0.7, 0.2, 0.6, 0.3, 0.1], [2, 3])
    assert read_answer(scores, "v2", "classification", None).rows == ("1", "0")
    labels = _v2(["cat", "dog"], [2, 1], "BYTES")
    assert read_answer(labels, "v2", "classification", "out").rows == ("cat", "dog")
    ids = _v2([2, 0, 1.0], [3])
    answer = read_answer(ids, "v2", "classification", None)
    assert answer.rows == ("2", "0", "1") and answer.id == "r1"


def test_regression_reads_one_number_per_row() -> None:
    assert read_answer(_v2([1.5, 2.5], [2, 1]), "v2", "regression", None).rows == (1.5, 2.5)
    wide = read_answer(_v2([1.5, 2.5], [1, 2]), "v2", "regression", None)
    assert wide.rows is None and wide.problem == "unreadable"


def test_the_named_output_is_read_and_a_missing_one_is_unreadable() -> None:
    body = orjson.dumps(
        {
            "outputs": [
                {"name": "probabilities", "shape": [1, 2], "datatype": "FP32", "data": [0.2, 0.8]},
                {"name": "label", "shape": [1], "datatype": "BYTES", "data": ["spam"]},
            ]
        }
    )
    assert read_answer(body, "v2", "classification", "label").rows == ("spam",)
    assert read_answer(body, "v2", "classification", None).rows == ("1",)
    assert read_answer(body, "v2", "classification", "nope").problem == "unreadable"


def test_v1_predictions_are_rows() -> None:
    body = orjson.dumps({"predictions": [[0.9, 0.1], [0.2, 0.8]]})
    assert read_answer(body, "v1", "classification", None).rows == ("0", "1")
    keyed = orjson.dumps({"predictions": [{"label": "a"}, {"label": "b"}]})
    assert read_answer(keyed, "v1", "classification", "label").rows == ("a", "b")


@pytest.mark.parametrize("body", [b"not json", b"[1]", b'{"outputs": []}', b'{"outputs": [1]}'])
def test_unreadable_answers_say_so(body: bytes) -> None:
    assert read_answer(body, "v2", "classification", None).rows is None


def test_classes_compare_as_text_with_integral_numbers_as_integers() -> None:
    assert class_text(1) == class_text(1.0) == class_text("1") == "1"
    assert class_text(0.5) == "0.5"
    result = score("classification", ("1", "0", "cat"), [1.0, "1", "cat"])
    assert (result.labelled, result.correct) == (3, 2)


def test_regression_errors_are_summed() -> None:
    result = score("regression", (1.0, 4.0), [2.0, 1.0])
    assert (result.labelled, result.absolute_error, result.squared_error) == (2, 4.0, 10.0)


def test_truth_that_does_not_fit_the_rows_is_refused() -> None:
    with pytest.raises(Unreadable):
        score("classification", ("1", "2"), "1")
    with pytest.raises(Unreadable):
        score("regression", (1.0,), "x")


def test_feedback_bodies_and_their_invalid_entries() -> None:
    good = prediction_id(Holder("10.0.0.9", 1, 0), "a")
    other = prediction_id(Holder("10.0.0.8", 0, 0), "b")
    for body in (
        [{"id": good, "truth": 1}, {"id": other, "truth": 0}, {"id": "nope", "truth": 1}, 5],
        {"feedback": [{"id": good, "truth": 1}, {"id": other, "truth": 0}, {"id": good}, 5]},
    ):
        parsed = feedback.parse(orjson.dumps(body))
        assert [e.prediction for e in parsed.entries] == [good, other]
        assert parsed.invalid == 2
    groups = feedback.by_holder(parsed.entries)
    assert set(groups) == {("10.0.0.9", 1), ("10.0.0.8", 0)}
    single = feedback.parse(orjson.dumps({"id": good, "truth": [1, 2]}))
    assert single.entries[0].truth == [1, 2]


def test_feedback_that_cannot_be_read_at_all_is_refused_whole() -> None:
    with pytest.raises(BadFeedback, match="not JSON"):
        feedback.parse(b"{")
    with pytest.raises(BadFeedback, match="at most"):
        feedback.parse(orjson.dumps([{}] * (feedback.MAX_ENTRIES + 1)))


def test_the_ledger_counts_outcomes_and_accuracy_by_version() -> None:
    from prometheus_client import REGISTRY

    from mlmodel_operator.monitor.ledger import Ledger
    from mlmodel_operator.monitor.settings import GroundTruthSettings

    now = [1000.0]
    settings = GroundTruthSettings(task="classification", ttl_seconds=60)
    ledger = Ledger(settings, "ledger-model", "v9", clock=lambda: now[0])
    holder = Holder("10.0.0.1", 0, int(now[0]))
    ids = [prediction_id(holder, f"r{i}") for i in range(4)]
    for i, prediction in enumerate(ids):
        ledger.record(prediction, (str(i % 2),))
    entries = feedback.parse(
        orjson.dumps(
            [
                {"id": ids[0], "truth": 0},  # right
                {"id": ids[1], "truth": 0},  # wrong
                {"id": ids[1], "truth": 1},  # duplicate
                {"id": prediction_id(holder, "never"), "truth": 1},  # unmatched
            ]
        )
    ).entries
    assert ledger.label(entries) == {
        "matched": 2,
        "duplicate": 1,
        "late": 0,
        "unmatched": 1,
        "invalid": 0,
        "unreachable": 0,
    }
    now[0] += 61
    ledger.publish()
    late = feedback.parse(orjson.dumps([{"id": ids[2], "truth": 0}])).entries
    assert ledger.label(late)["late"] == 1

    def value(name: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(name, {"model": "ledger-model", "version": "v9", **labels})

    assert value("mlmodel_labelled_predictions_total") == 2
    assert value("mlmodel_correct_predictions_total") == 1
    assert value("mlmodel_feedback_entries_total", outcome="late") == 1
    assert value("mlmodel_unlabelled_predictions_total", reason="expired") == 2
    assert value("mlmodel_pending_predictions") == 0
