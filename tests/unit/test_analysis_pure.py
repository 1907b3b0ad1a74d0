"""Canary analysis, the pure parts: the PromQL it asks and the verdict table."""

from __future__ import annotations

import pytest

from mlmodel_operator import analysis, api
from mlmodel_operator.analysis import queries
from mlmodel_operator.analysis.verdict import WindowMetrics, inconclusive, judge

PASS, FAIL, INCONCLUSIVE = (
    api.AnalysisResult.Pass,
    api.AnalysisResult.Fail,
    api.AnalysisResult.Inconclusive,
)
ANALYSIS = api.RolloutAnalysis.model_validate(
    {
        "interval_seconds": 60,
        "min_requests": 100,
        "max_error_ratio": 0.01,
        "max_p99_latency_seconds": 0.5,
        "fail_on_drift": True,
    }
)


def window(
    requests: float = 200,
    errors: float = 0,
    p99: float | None = 0.05,
    drift: bool | None = None,
    version: str = "v2",
) -> WindowMetrics:
    return WindowMetrics(requests, errors, p99, drift, version)


# --- queries ------------------------------------------------------------------------------------


def test_queries_select_one_version_of_one_model_over_the_window() -> None:
    match = 'namespace="risk",model="fraud",version="v2"'
    assert queries.requests("risk", "fraud", "v2", 300) == (
        f"sum(increase(mlmodel_requests_total{{{match}}}[300s]))"
    )
    assert queries.errors("risk", "fraud", "v2", 300) == (
        f'sum(increase(mlmodel_requests_total{{{match},status_class="5xx"}}[300s]))'
    )
    assert queries.p99_latency("risk", "fraud", "v2", 300) == (
        "histogram_quantile(0.99, sum by (le) "
        f"(increase(mlmodel_request_duration_seconds_bucket{{{match}}}[300s])))"
    )
    assert queries.drift("risk", "fraud", "v2", 300) == (
        f"max(max_over_time(mlmodel_drift_detected{{{match}}}[300s]))"
    )


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("v2", "v2"),
        ("", ""),  # a pod without a version label
        ('a"b', 'a\\"b'),
        ("a\\b", "a\\\\b"),
        ('\\"', '\\\\\\"'),  # the backslash is escaped first: the quote stays escaped
        ("a\nb\tc\rd", "a\\nb\\tc\\rd"),
        ("1.0-rc.1_x", "1.0-rc.1_x"),
    ],
)
def test_label_values_are_escaped(value: str, escaped: str) -> None:
    assert queries.escape(value) == escaped
    assert f'version="{escaped}"' in queries.requests("ns", "m", value, 5)


def test_a_value_cannot_inject_matchers() -> None:
    query = queries.requests("ns", "m", 'x",version=~".*', 5)
    assert 'version="x\\",version=~\\".*"}' in query


# --- the verdict table -------------------------------------------------------------------------


def test_healthy_canary_passes_with_its_figures() -> None:
    verdict = judge(window(requests=340, errors=1, p99=0.012), ANALYSIS)
    assert verdict.result == PASS
    assert verdict.message == (
        "error ratio 0.00294 <= 0.01, p99 latency 0.012s <= 0.5 over 340 requests to v2 in the "
        "last 60s"
    )


@pytest.mark.parametrize("requests", [0, 3, 99, 99.9])
def test_fewer_than_min_requests_is_inconclusive(requests: float) -> None:
    verdict = judge(window(requests=requests), ANALYSIS)
    assert verdict.result == INCONCLUSIVE
    assert "fewer than min_requests 100" in verdict.message


def test_too_few_requests_is_inconclusive_even_when_all_fail_slow_and_drifting() -> None:
    verdict = judge(window(requests=3, errors=3, p99=30.0, drift=True), ANALYSIS)
    assert verdict.result == INCONCLUSIVE
    assert verdict.message == "3 requests to v2 in the last 60s, fewer than min_requests 100"


def test_exactly_min_requests_is_judged() -> None:
    assert judge(window(requests=100), ANALYSIS).result == PASS
    assert judge(window(requests=100, errors=50), ANALYSIS).result == FAIL


def test_error_ratio_above_the_maximum_fails_naming_it() -> None:
    verdict = judge(window(requests=120, errors=50.4), ANALYSIS)
    assert verdict.result == FAIL
    assert verdict.message == (
        "error ratio 0.42 > max_error_ratio 0.01 over 120 requests to v2 in the last 60s"
    )


def test_error_ratio_at_the_maximum_passes() -> None:
    assert judge(window(requests=200, errors=2), ANALYSIS).result == PASS  # 0.01 == 0.01
    assert judge(window(requests=200, errors=2.02), ANALYSIS).result == FAIL


def test_max_error_ratio_zero_fails_on_one_error() -> None:
    strict = ANALYSIS.model_copy(update={"max_error_ratio": 0.0})
    assert judge(window(errors=0), strict).result == PASS
    assert judge(window(errors=1), strict).result == FAIL


def test_p99_above_the_maximum_fails_naming_it() -> None:
    verdict = judge(window(p99=0.75), ANALYSIS)
    assert verdict.result == FAIL
    assert verdict.message.startswith("p99 latency 0.75s > max_p99_latency_seconds 0.5 over 200")


def test_p99_at_the_maximum_passes() -> None:
    assert judge(window(p99=0.5), ANALYSIS).result == PASS


def test_unknown_p99_does_not_fail() -> None:
    verdict = judge(window(p99=None), ANALYSIS)
    assert verdict.result == PASS
    assert "p99 latency unknown" in verdict.message


def test_drift_fails_only_with_fail_on_drift() -> None:
    verdict = judge(window(drift=True), ANALYSIS)
    assert verdict.result == FAIL
    assert verdict.message.startswith("drift detected (fail_on_drift) over 200 requests")
    tolerant = ANALYSIS.model_copy(update={"fail_on_drift": False})
    verdict = judge(window(drift=True), tolerant)
    assert verdict.result == PASS
    assert "drift detected, fail_on_drift off" in verdict.message
    assert "no drift" in judge(window(drift=False), ANALYSIS).message
    assert "drift" not in judge(window(drift=None), ANALYSIS).message  # detection off


def test_every_broken_threshold_is_named() -> None:
    verdict = judge(window(requests=120, errors=60, p99=2.0, drift=True), ANALYSIS)
    assert verdict.result == FAIL
    assert verdict.message == (
        "error ratio 0.5 > max_error_ratio 0.01; p99 latency 2s > max_p99_latency_seconds 0.5; "
        "drift detected (fail_on_drift) over 120 requests to v2 in the last 60s"
    )


def test_the_stable_versions_figures_are_context() -> None:
    stable = WindowMetrics(340, 0, 0.012, None, "v1")
    verdict = judge(window(requests=120, errors=50.4), ANALYSIS, stable)
    assert verdict.result == FAIL
    assert verdict.message.endswith(
        "in the last 60s (stable v1: error ratio 0, p99 0.012s over 340 requests)"
    )
    idle = WindowMetrics(0, 0, None, None, "v1")
    assert judge(window(requests=3), ANALYSIS, idle).message.endswith("(stable v1: no requests)")


def test_extrapolated_counts_are_shown_as_prometheus_gave_them() -> None:
    verdict = judge(window(requests=99.64), ANALYSIS)
    assert verdict.message.startswith("99.6 requests to v2")
    assert judge(window(requests=104.0), ANALYSIS).message.endswith(
        "over 104 requests to v2 in the last 60s"
    )


def test_error_ratio_is_none_without_requests_and_at_most_one() -> None:
    assert window(requests=0, errors=0).error_ratio is None
    assert window(requests=10, errors=10.4).error_ratio == 1.0


def test_a_verdict_becomes_the_status_record() -> None:
    verdict = judge(window(requests=120, errors=6, p99=0.25, drift=False), ANALYSIS)
    record = verdict.record("2026-01-02T03:04:05Z")
    assert record.model_dump(by_alias=True, exclude_none=True) == {
        "result": "Fail",
        "requests": 120,
        "errorRatio": 0.05,
        "p99LatencySeconds": 0.25,
        "drift": False,
        "message": verdict.message,
        "time": "2026-01-02T03:04:05Z",
    }
    bare = inconclusive("Prometheus at http://p:9090 did not answer within 10s").record("t")
    assert bare.result == INCONCLUSIVE
    assert (bare.requests, bare.error_ratio, bare.p99_latency_seconds) == (None, None, None)


def test_without_prometheus_the_step_is_inconclusive() -> None:
    for url in (None, ""):
        verdict = analysis.analyse(url, "ns", "m", "v2", "v1", ANALYSIS, at=0.0)
        assert verdict == inconclusive("no Prometheus configured (--prometheus-url)")


# --- streaming gates (model_type llm) -----------------------------------------------------------

LLM_ANALYSIS = ANALYSIS.model_copy(
    update={
        "max_p99_time_to_first_token_seconds": 0.5,
        "max_p99_inter_token_latency_seconds": 0.05,
    }
)


def streamed(ttft: float | None, itl: float | None, count: float = 150) -> WindowMetrics:
    return WindowMetrics(
        200, 0, 0.3, None, "v2",
        time_to_first_token=(count if ttft is not None else 0, ttft),
        inter_token_latency=(count * 20 if itl is not None else 0, itl),
    )  # fmt: skip


def test_streaming_gates_pass_with_their_figures() -> None:
    verdict = judge(streamed(0.2, 0.01), LLM_ANALYSIS)
    assert verdict.result == PASS
    assert "p99 time to first token 0.2s <= 0.5" in verdict.message
    assert "p99 inter-token latency 0.01s <= 0.05" in verdict.message
    record = verdict.record("2026-01-01T00:00:00Z")
    assert record.p99_time_to_first_token_seconds == 0.2
    assert record.p99_inter_token_latency_seconds == 0.01


@pytest.mark.parametrize(
    ("ttft", "itl", "named"),
    [
        (0.9, 0.01, "p99 time to first token 0.9s > max_p99_time_to_first_token_seconds 0.5"),
        (0.2, 0.08, "p99 inter-token latency 0.08s > max_p99_inter_token_latency_seconds 0.05"),
    ],
)
def test_a_slow_stream_fails_naming_the_gate(ttft: float, itl: float, named: str) -> None:
    verdict = judge(streamed(ttft, itl), LLM_ANALYSIS)
    assert verdict.result == FAIL
    assert named in verdict.message


def test_a_gate_with_no_streams_measured_is_inconclusive() -> None:
    verdict = judge(streamed(None, None), LLM_ANALYSIS)
    assert verdict.result == INCONCLUSIVE
    assert "no time to first token measured" in verdict.message
    # Not measured at all (gates unset) is not judged.
    assert judge(streamed(None, None), ANALYSIS).result == PASS


def test_streaming_queries_read_the_sidecars_histograms() -> None:
    ttft = queries.p99_of(queries.TTFT_METRIC, "ns", "m", "v2", 60)
    assert ttft == (
        "histogram_quantile(0.99, sum by (le) (increase(mlmodel_llm_time_to_first_token_seconds_"
        'bucket{namespace="ns",model="m",version="v2"}[60s])))'
    )
    assert queries.observations(queries.ITL_METRIC, "ns", "m", "v2", 60) == (
        "sum(increase(mlmodel_llm_inter_token_latency_seconds_count"
        '{namespace="ns",model="m",version="v2"}[60s]))'
    )


# --- accuracy gates -------------------------------------------------------------------------------

ACCURACY = ANALYSIS.model_copy(
    update={"min_accuracy": 0.9, "max_accuracy_drop": 0.05, "min_labels": 50}
)


def labelled(labels: float, correct: float, version: str = "v2") -> WindowMetrics:
    return WindowMetrics(200, 0, 0.05, None, version, labels=(labels, correct))


def test_accuracy_queries_count_labels_that_arrived_in_the_window() -> None:
    match = 'namespace="risk",model="fraud",version="v2"'
    assert queries.labelled("risk", "fraud", "v2", 300) == (
        f"sum(increase(mlmodel_labelled_predictions_total{{{match}}}[300s]))"
    )
    assert queries.correct("risk", "fraud", "v2", 300) == (
        f"sum(increase(mlmodel_correct_predictions_total{{{match}}}[300s]))"
    )


def test_too_few_labels_make_an_accuracy_step_inconclusive() -> None:
    verdict = judge(labelled(49, 49), ACCURACY, labelled(500, 480, "v1"))
    assert verdict.result == INCONCLUSIVE
    assert "49 labelled predictions of v2" in verdict.message
    assert "min_labels 50" in verdict.message
    few_stable = judge(labelled(100, 95), ACCURACY, labelled(10, 10, "v1"))
    assert few_stable.result == INCONCLUSIVE
    assert "of the stable version" in few_stable.message
    assert judge(labelled(100, 95), ACCURACY, None).result == INCONCLUSIVE


def test_an_accuracy_below_the_floor_or_too_far_below_stable_fails_naming_the_figures() -> None:
    low = judge(labelled(200, 160), ACCURACY, labelled(200, 196, "v1"))
    assert low.result == FAIL
    assert "accuracy 0.8 over 200 labelled predictions < min_accuracy 0.9" in low.message
    assert "0.18 below the stable version's 0.98" in low.message
    record = low.record("2026-12-05T00:00:00Z")
    assert (record.accuracy, record.labels, record.stable_accuracy) == (0.8, 200, 0.98)
    dropped = judge(
        labelled(200, 184), ACCURACY.model_copy(update={"min_accuracy": None}), labelled(200, 198)
    )
    assert dropped.result == FAIL and "> max_accuracy_drop 0.05" in dropped.message


def test_an_accurate_new_version_passes() -> None:
    verdict = judge(labelled(200, 194), ACCURACY, labelled(200, 190, "v1"))
    assert verdict.result == PASS
    assert "accuracy 0.97 over 200 labelled predictions >= min_accuracy 0.9" in verdict.message
    assert "0.02 above the stable version's 0.95" in verdict.message


def test_accuracy_gates_need_classification_ground_truth() -> None:
    base = {"model_type": "sklearn", "model_uri": "s3://b/m", "rollout": {"strategy": "canary"}}
    gated = {**base, "rollout": {"strategy": "canary", "analysis": {"min_accuracy": 0.9}}}
    with pytest.raises(ValueError, match=r"min_accuracy needs monitoring\.ground_truth"):
        api.MLModelDeploymentSpec.model_validate(gated)
    regression = {**gated, "monitoring": {"ground_truth": {"task": "regression"}}}
    with pytest.raises(ValueError, match="task classification"):
        api.MLModelDeploymentSpec.model_validate(regression)
    ok = {**gated, "monitoring": {"ground_truth": {"task": "classification"}}}
    assert api.MLModelDeploymentSpec.model_validate(ok).rollout.analysis.min_accuracy == 0.9
