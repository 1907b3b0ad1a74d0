"""The sidecar's Prometheus metrics, declared once. Labels are bounded: the model name and its
version (one pair per sidecar: the pod's model_version, so that a canary's requests can be told
from the stable version's), the protocol (v2, v1, openai, other), the status class, an OpenAI
endpoint and finish reason (a fixed set, see openai.py), and drift features
(at most drift.max_features per direction, made safe by labels.py); never a raw path.

The sidecar runs several processes (proxy workers and the analyst), so the metrics use
prometheus_client's multiprocess mode: each process writes its values to memory-mapped files,
and the one metrics endpoint sums them. Each gauge says how its processes' values combine:
livesum over the live processes for what each worker holds, max for timestamps, mostrecent for
what only the analyst sets."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# About 1 ms to 30 s: fast tabular models to large generative ones.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
SIZE_BUCKETS = tuple(float(4**k) for k in range(4, 15))  # 256 B .. 256 MiB

REQUESTS = Counter(
    "mlmodel_requests_total",
    "Requests through the sidecar",
    ["model", "version", "protocol", "status_class"],
)
LATENCY = Histogram(
    "mlmodel_request_duration_seconds",
    "Time from request to the end of the response, as the client sees it",
    ["model", "version", "protocol"],
    buckets=LATENCY_BUCKETS,
)
IN_FLIGHT = Gauge(
    "mlmodel_requests_in_flight",
    "Requests being served",
    ["model", "version"],
    multiprocess_mode="livesum",
)
REQUEST_SIZE = Histogram(
    "mlmodel_request_size_bytes",
    "Request body sizes",
    ["model", "version", "protocol"],
    buckets=SIZE_BUCKETS,
)
RESPONSE_SIZE = Histogram(
    "mlmodel_response_size_bytes",
    "Response body sizes",
    ["model", "version", "protocol"],
    buckets=SIZE_BUCKETS,
)
CLIENT_ABORTS = Counter(
    "mlmodel_client_aborts_total",
    "Requests whose client went away before the exchange ended (also counted as status 499)",
    ["model", "version", "phase"],  # phase: request (while sending its body) or response
)
REFUSED_REQUESTS = Counter(
    "mlmodel_refused_requests_total",
    "Requests the sidecar answered itself: bad_request (refused by its HTTP parser), "
    "body_too_large, body_timeout, busy (no room to buffer the body), connection_limit",
    ["model", "version", "reason"],
)
OPEN_CONNECTIONS = Gauge(
    "mlmodel_client_connections",
    "Client connections open",
    ["model", "version"],
    multiprocess_mode="livesum",
)
BUFFERED_BYTES = Gauge(
    "mlmodel_buffered_bytes",
    "Request and response bytes the proxy holds in memory",
    ["model", "version"],
    multiprocess_mode="livesum",
)
UPSTREAM_ERRORS = Counter(
    "mlmodel_upstream_errors_total",
    "Requests the model server did not answer: connect errors, timeouts, broken responses",
    ["model", "version", "kind"],
)
UNREADABLE_PAYLOADS = Counter(
    "mlmodel_unreadable_payloads_total",
    "Inference payloads the drift detector could not read (passed through untouched)",
    ["model", "version", "protocol"],
)
DROPPED_PAYLOADS = Counter(
    "mlmodel_drift_dropped_payloads_total",
    "Payloads not analysed: sampled (an even share kept out while the analyst is behind), "
    "queue_full (no room left in the hand-off), too_large (a body over max_capture_bytes), "
    "analyst_down",
    ["model", "version", "reason"],
)
ANALYSED_PAYLOADS = Counter(
    "mlmodel_drift_analysed_payloads_total",
    "Payloads the analyst took from the hand-off (each request is either this or dropped)",
    ["model", "version"],
)
DRIFT_QUEUED_BYTES = Gauge(
    "mlmodel_drift_queued_bytes",
    "Payload bytes waiting for the analyst",
    ["model", "version"],
    multiprocess_mode="livesum",
)
DRIFT_WORKER_HEARTBEAT = Gauge(
    "mlmodel_drift_worker_heartbeat_timestamp_seconds",
    "Unix time the analyst last went round its loop (at least every second while it "
    "is alive and not stuck)",
    ["model", "version"],
    multiprocess_mode="max",
)
DRIFT_WORKER_ERRORS = Counter(
    "mlmodel_drift_worker_errors_total",
    "Failures the analyst survived, by stage: reference, ingest, check",
    ["model", "version", "stage"],
)
REJECTED_VALUES = Counter(
    "mlmodel_drift_rejected_values_total",
    "Values left out of drift windows: nonfinite, type (not of the feature's kind), overflow "
    "(a feature past max_features seen after the first ones), over_budget (past max_features "
    "in a payload, never read)",
    ["model", "version", "reason"],
)
DRIFT_SCORE = Gauge(
    "mlmodel_drift_score",
    "Drift effect size per feature: KS statistic, PSI, or total variation distance",
    ["model", "version", "direction", "feature", "method"],
    multiprocess_mode="mostrecent",
)
DRIFT_P_VALUE = Gauge(
    "mlmodel_drift_p_value",
    "Drift test p-value per feature",
    ["model", "version", "direction", "feature", "method"],
    multiprocess_mode="mostrecent",
)
DRIFT_FEATURE_DETECTED = Gauge(
    "mlmodel_drift_feature_detected",
    "1 when this feature has drifted (by either detector)",
    ["model", "version", "direction", "feature"],
    multiprocess_mode="mostrecent",
)
DRIFT_DETECTED = Gauge(
    "mlmodel_drift_detected",
    "1 when any feature has drifted, by the windowed test or the sequential charts",
    ["model", "version"],
    multiprocess_mode="mostrecent",
)
DRIFT_ALARMS = Counter(
    "mlmodel_drift_alarms_total",
    "Alarms of the sequential drift detector, by feature and chart: cusum_mean, cusum_scale, "
    "categorical",
    ["model", "version", "direction", "feature", "detector"],
)
DRIFT_DETECTOR_DETECTED = Gauge(
    "mlmodel_drift_detector_detected",
    "1 while a detector holds a feature drifted: windowed (the last windowed test), or a "
    "sequential chart (cusum_mean, cusum_scale, categorical) that raised an alarm within the "
    "feature's last window_size samples",
    ["model", "version", "direction", "feature", "detector"],
    multiprocess_mode="mostrecent",
)
DRIFT_WINDOW_SAMPLES = Gauge(
    "mlmodel_drift_window_samples",
    "Samples in the compared window",
    ["model", "version", "direction", "feature"],
    multiprocess_mode="mostrecent",
)
DRIFT_LAST_CHECK = Gauge(
    "mlmodel_drift_last_check_timestamp_seconds",
    "Unix time of the last drift check",
    ["model", "version"],
    multiprocess_mode="max",
)
DRIFT_REFERENCE_AVAILABLE = Gauge(
    "mlmodel_drift_reference_available",
    "1 when reference data is loaded (or the live baseline is in use), 0 when it cannot be read",
    ["model", "version", "source"],  # source: uri or live
    multiprocess_mode="mostrecent",
)

# --- OpenAI API (model_type llm) ---------------------------------------------------------------

# From a token of a small model on a GPU to a long prompt's prefill on a loaded server.
TTFT_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
ITL_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5,
)  # fmt: skip

LLM_REQUESTS = Counter(
    "mlmodel_llm_requests_total",
    "OpenAI API requests the model server answered, by endpoint (chat, completions, "
    "embeddings) and finish_reason (stop, length, tool_calls, content_filter, abort, error, "
    "other, none; client_abort when the client went away first)",
    ["model", "version", "endpoint", "finish_reason"],
)
TIME_TO_FIRST_TOKEN = Histogram(
    "mlmodel_llm_time_to_first_token_seconds",
    "Time from a streamed request's arrival to the first chunk of generated text sent on",
    ["model", "version"],
    buckets=TTFT_BUCKETS,
)
INTER_TOKEN_LATENCY = Histogram(
    "mlmodel_llm_inter_token_latency_seconds",
    "Time between successive chunks of generated text of a streamed answer",
    ["model", "version"],
    buckets=ITL_BUCKETS,
)
PROMPT_TOKENS = Counter(
    "mlmodel_llm_prompt_tokens_total",
    "Prompt tokens, from the answer's usage (source=usage) or estimated from the request's "
    "text, 4 bytes a token (source=estimated)",
    ["model", "version", "source"],
)
COMPLETION_TOKENS = Counter(
    "mlmodel_llm_completion_tokens_total",
    "Generated tokens, from the answer's usage (source=usage), one per streamed chunk of text "
    "(source=chunks), or estimated from the text, 4 bytes a token (source=estimated)",
    ["model", "version", "source"],
)

# --- ground truth (monitoring.ground_truth) ------------------------------------------------------
# Counted by the version that made the prediction, on the pod that holds it: accuracy over any
# window is increase(correct) / increase(labelled).

FEEDBACK = Counter(
    "mlmodel_feedback_entries_total",
    "Feedback entries by outcome: matched (joined to its prediction), duplicate (already "
    "labelled), late (its prediction outlived ttl_seconds or was let go), unmatched (no such "
    "prediction), invalid (no usable id or truth), unreachable (the pod holding it did not "
    "answer)",
    ["model", "version", "outcome"],
)
LABELLED = Counter(
    "mlmodel_labelled_predictions_total",
    "Predicted rows joined to their truth",
    ["model", "version"],
)
CORRECT = Counter(
    "mlmodel_correct_predictions_total",
    "Labelled rows whose predicted class was the truth (task classification)",
    ["model", "version"],
)
ABSOLUTE_ERROR = Counter(
    "mlmodel_prediction_absolute_error_total",
    "Sum of |prediction - truth| over labelled rows (task regression): MAE is its increase over "
    "the labelled rows' increase",
    ["model", "version"],
)
SQUARED_ERROR = Counter(
    "mlmodel_prediction_squared_error_total",
    "Sum of (prediction - truth)^2 over labelled rows (task regression), for RMSE",
    ["model", "version"],
)
UNLABELLED = Counter(
    "mlmodel_unlabelled_predictions_total",
    "Predictions that can no longer be labelled: expired (past ttl_seconds), evicted (let go "
    "for room under max_pending), unreadable (no prediction read from the answer), too_large "
    "(too many rows), streamed (an answer too large to read whole)",
    ["model", "version", "reason"],
)
PENDING = Gauge(
    "mlmodel_pending_predictions",
    "Predictions waiting for their truth",
    ["model", "version"],
    multiprocess_mode="livesum",
)
PENDING_BYTES = Gauge(
    "mlmodel_pending_predictions_bytes",
    "Memory held by predictions waiting for their truth",
    ["model", "version"],
    multiprocess_mode="livesum",
)

# --- payload logging (monitoring.payload_logging) ------------------------------------------------

PAYLOAD_EVENTS_SENT = Counter(
    "mlmodel_payload_events_sent_total",
    "CloudEvents the payload sink accepted (2xx)",
    ["model", "version"],
)
PAYLOAD_EVENTS_DROPPED = Counter(
    "mlmodel_payload_events_dropped_total",
    "CloudEvents not delivered: queue_full (no room left in the worker's queue), too_large (an "
    "event larger than the whole queue), rejected (the sink answered 4xx other than 408 and "
    "429), retries_exhausted (failed on every attempt), shutdown (still queued when the "
    "sidecar stopped)",
    ["model", "version", "reason"],
)
PAYLOAD_QUEUED_BYTES = Gauge(
    "mlmodel_payload_queued_bytes",
    "Bytes held for payload logging: bodies kept for their events, events waiting and in delivery",
    ["model", "version"],
    multiprocess_mode="livesum",
)
PAYLOAD_LOGGING_FAILING = Gauge(
    "mlmodel_payload_logging_failing",
    "1 while a worker's latest delivery to the payload sink failed (an error, a timeout, a "
    "refusal), 0 once one succeeds",
    ["model", "version"],
    multiprocess_mode="livemax",
)
