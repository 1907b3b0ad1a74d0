"""PromQL for one version of one model over a window: pure strings, no I/O.

The window ends at the evaluation time of the query (the HTTP API's `time=` parameter), so
`[Ns]` covers the N seconds before it. The selectors rely on three labels: `model` and
`version`, which the sidecar puts on its metrics (the MLModelDeployment's name and the pod's
model_version), and `namespace`, which the sidecar does not export: Prometheus adds it to every
target it discovers in Kubernetes, as the Prometheus Operator's ServiceMonitor does (its
relabelling keeps the pod's namespace as `namespace`). A Prometheus scraping the sidecars some
other way must add it too, or nothing matches.
"""

from __future__ import annotations

REQUESTS_METRIC = "mlmodel_requests_total"
LATENCY_BUCKETS_METRIC = "mlmodel_request_duration_seconds_bucket"
DRIFT_METRIC = "mlmodel_drift_detected"
TTFT_METRIC = "mlmodel_llm_time_to_first_token_seconds"
ITL_METRIC = "mlmodel_llm_inter_token_latency_seconds"
LABELLED_METRIC = "mlmodel_labelled_predictions_total"
CORRECT_METRIC = "mlmodel_correct_predictions_total"
ERROR_CLASS = "5xx"

# Inside a double-quoted PromQL string (Go's escapes): a backslash or a quote would end or bend
# the string, and a raw line break is refused.
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape(value: str) -> str:
    """A label value as the inside of a double-quoted PromQL string."""
    return "".join(_ESCAPES.get(char, char) for char in value)


def selector(namespace: str, model: str, version: str, **extra: str) -> str:
    """The label matchers of one version of one model: `{namespace="..",model="..",...}`."""
    labels = {"namespace": namespace, "model": model, "version": version, **extra}
    return "{" + ",".join(f'{name}="{escape(value)}"' for name, value in labels.items()) + "}"


def requests(namespace: str, model: str, version: str, window_seconds: int) -> str:
    """Requests the version's sidecars answered in the window (every status)."""
    match = selector(namespace, model, version)
    return f"sum(increase({REQUESTS_METRIC}{match}[{window_seconds}s]))"


def errors(namespace: str, model: str, version: str, window_seconds: int) -> str:
    """Those answered 5xx (by the model server, or by the sidecar for it: 502, 504)."""
    match = selector(namespace, model, version, status_class=ERROR_CLASS)
    return f"sum(increase({REQUESTS_METRIC}{match}[{window_seconds}s]))"


def p99_latency(namespace: str, model: str, version: str, window_seconds: int) -> str:
    """The 99th percentile of their latency, from the histogram summed over pods; NaN (or no
    result) without requests."""
    match = selector(namespace, model, version)
    return (
        "histogram_quantile(0.99, sum by (le) "
        f"(increase({LATENCY_BUCKETS_METRIC}{match}[{window_seconds}s])))"
    )


def p99_of(histogram: str, namespace: str, model: str, version: str, window_seconds: int) -> str:
    """The 99th percentile of one of the sidecar's histograms (TTFT_METRIC, ITL_METRIC) over the
    version's pods in the window."""
    match = selector(namespace, model, version)
    return (
        "histogram_quantile(0.99, sum by (le) "
        f"(increase({histogram}_bucket{match}[{window_seconds}s])))"
    )


def observations(
    histogram: str, namespace: str, model: str, version: str, window_seconds: int
) -> str:
    """How many values the histogram took in the window (streamed answers, token gaps)."""
    match = selector(namespace, model, version)
    return f"sum(increase({histogram}_count{match}[{window_seconds}s]))"


def drift(namespace: str, model: str, version: str, window_seconds: int) -> str:
    """1 when any of the version's pods reported drift at any scrape in the window; no result
    when none exports the gauge (drift detection inactive)."""
    match = selector(namespace, model, version)
    return f"max(max_over_time({DRIFT_METRIC}{match}[{window_seconds}s]))"


def labelled(namespace: str, model: str, version: str, window_seconds: int) -> str:
    """The version's predictions whose truth arrived in the window (monitoring.ground_truth);
    no result when its sidecars take no feedback."""
    match = selector(namespace, model, version)
    return f"sum(increase({LABELLED_METRIC}{match}[{window_seconds}s]))"


def correct(namespace: str, model: str, version: str, window_seconds: int) -> str:
    """Those whose predicted class was the truth."""
    match = selector(namespace, model, version)
    return f"sum(increase({CORRECT_METRIC}{match}[{window_seconds}s]))"


# --- payload logging: every version of a model ----------------------------------------------------

PAYLOAD_FAILING_METRIC = "mlmodel_payload_logging_failing"
PAYLOAD_DROPPED_METRIC = "mlmodel_payload_events_dropped_total"


def model_selector(namespace: str, model: str, **extra: str) -> str:
    """The label matchers of every version of one model."""
    labels = {"namespace": namespace, "model": model, **extra}
    return "{" + ",".join(f'{name}="{escape(value)}"' for name, value in labels.items()) + "}"


def payload_sidecars(namespace: str, model: str) -> str:
    """Sidecars (one series per pod) that report payload logging's failing gauge."""
    return f"count({PAYLOAD_FAILING_METRIC}{model_selector(namespace, model)})"


def payload_failing(namespace: str, model: str) -> str:
    """Those whose latest delivery failed; no result when none."""
    return f"count({PAYLOAD_FAILING_METRIC}{model_selector(namespace, model)} == 1)"


def payload_dropped(namespace: str, model: str, window_seconds: int) -> str:
    """Events dropped in the window, but for those still queued when a sidecar stopped (every
    rollout has some; they say nothing of the sink)."""
    match = model_selector(namespace, model)[:-1] + ',reason!="shutdown"}'
    return f"sum(increase({PAYLOAD_DROPPED_METRIC}{match}[{window_seconds}s]))"
