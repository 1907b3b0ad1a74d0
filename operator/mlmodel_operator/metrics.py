"""The operator's own Prometheus metrics, declared once at module level with bounded labels."""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter, Gauge, Histogram

from mlmodel_operator.model_metrics import ModelCollector

RECONCILES = Counter(
    "mlmodel_operator_reconciles_total",
    "Reconciles of MLModelDeployments by result",
    ["result"],  # ready, progressing, degraded, failed, pending, invalid, gone, error
)
RECONCILE_SECONDS = Histogram(
    "mlmodel_operator_reconcile_duration_seconds",
    "Time one reconcile takes",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
QUEUE_WAIT_SECONDS = Histogram(
    "mlmodel_operator_queue_wait_seconds",
    "Time a resource waits in the work queue before its reconcile starts",
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
MANAGED_RESOURCES = Gauge(
    "mlmodel_operator_managed_resources", "MLModelDeployments the operator manages"
)
API_WRITES = Counter(
    "mlmodel_operator_api_writes_total", "Write requests sent to the API server", ["method"]
)
API_ERRORS = Counter(
    "mlmodel_operator_api_errors_total",
    "API requests that failed, by HTTP status",
    ["method", "code"],
)
CACHE_OBJECTS = Gauge(
    "mlmodel_operator_cache_objects", "Objects in the watch cache (resources, children, pods)"
)
CACHE_BYTES = Gauge(
    "mlmodel_operator_cache_bytes", "Bytes of the projections held in the watch cache"
)
# Per-model series (replicas, the canary's weight, step and verdict), read from the watch cache
# at each scrape; the operator points it at its cache when it starts.
MODELS = ModelCollector()
REGISTRY.register(MODELS)
