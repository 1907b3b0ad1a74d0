"""Prometheus Operator objects for a monitored model: a ServiceMonitor that scrapes the
sidecar, and a PrometheusRule with its alerts. Created only where the cluster serves the
monitoring.coreos.com API; elsewhere the pods' prometheus.io/scrape annotations remain."""

from __future__ import annotations

from typing import Any

from mlmodel_operator import api
from mlmodel_operator.builders.meta import (
    COMPONENT_LABEL,
    MODEL_SERVER,
    Owner,
    object_meta,
    selector_labels,
)

PROMETHEUS_API = "monitoring.coreos.com/v1"


DEFAULT_SCRAPE_SECONDS = 30
MIN_SCRAPE_SECONDS = 5


def scrape_interval(spec: api.MLModelDeploymentSpec) -> str:
    """Every 30 s; under a canary, often enough that each step's window holds at least four
    samples (increase() over fewer is a rough estimate), and never more often than every 5 s."""
    seconds = DEFAULT_SCRAPE_SECONDS
    if spec.rollout.strategy == api.RolloutStrategy.canary:
        window = spec.rollout.analysis.interval_seconds
        seconds = max(MIN_SCRAPE_SECONDS, min(seconds, window // 4))
    return f"{seconds}s"


def build_service_monitor(owner: Owner, spec: api.MLModelDeploymentSpec) -> dict[str, Any]:
    return {
        "apiVersion": PROMETHEUS_API,
        "kind": "ServiceMonitor",
        "metadata": object_meta(owner, spec, owner.name),
        "spec": {
            # The model Service only, not a route's backend Services for the same pods.
            "selector": {"matchLabels": {**selector_labels(owner), COMPONENT_LABEL: MODEL_SERVER}},
            "namespaceSelector": {"matchNames": [owner.namespace]},
            "endpoints": [
                {"port": "metrics", "path": "/metrics", "interval": scrape_interval(spec)}
            ],
        },
    }


def alert_rules(owner: Owner, spec: api.MLModelDeploymentSpec) -> list[dict[str, Any]]:
    """The alerting rules for one model, in Prometheus's rule format."""
    monitoring = spec.monitoring
    match = f'namespace="{owner.namespace}",model="{owner.name}"'
    where = f"model {owner.namespace}/{owner.name}"
    rules: list[dict[str, Any]] = []
    if monitoring.drift_detection == "active":
        rules.append(
            {
                "alert": "MLModelDriftDetected",
                "expr": f"max(mlmodel_drift_detected{{{match}}}) == 1",
                "for": "5m",
                "labels": {"severity": "warning"},
                "annotations": {
                    "summary": f"Data drift in {where}",
                    "description": "Inputs or outputs differ from the reference; see "
                    "mlmodel_drift_feature_detected for the features.",
                },
            }
        )
        # The drift analyst beats every second while it runs; a pod whose heartbeat is old has
        # a dead or stuck analyst, and drift goes unwatched there.
        rules.append(
            {
                "alert": "MLModelDriftWorkerStalled",
                "expr": "time() - mlmodel_drift_worker_heartbeat_timestamp_seconds"
                f"{{{match}}} > 120",
                "for": "5m",
                "labels": {"severity": "warning"},
                "annotations": {
                    "summary": f"Drift detection has stopped in a pod of {where}",
                    "description": "The drift analyst's heartbeat is over 2 minutes old.",
                },
            }
        )
    if monitoring.performance_tracking == "enabled":
        thresholds = monitoring.alerts
        requests = f"sum(rate(mlmodel_requests_total{{{match}}}[5m]))"
        errors = f'sum(rate(mlmodel_requests_total{{{match},status_class="5xx"}}[5m]))'
        rules += [
            {
                "alert": "MLModelHighLatency",
                "expr": "histogram_quantile(0.99, sum by (le) "
                f"(rate(mlmodel_request_duration_seconds_bucket{{{match}}}[5m]))) "
                f"> {thresholds.p99_latency_seconds}",
                "for": "10m",
                "labels": {"severity": "warning"},
                "annotations": {
                    "summary": f"p99 latency of {where} above {thresholds.p99_latency_seconds}s",
                },
            },
            {
                "alert": "MLModelHighErrorRatio",
                "expr": f"{errors} / {requests} > {thresholds.error_ratio}",
                "for": "10m",
                "labels": {"severity": "critical"},
                "annotations": {
                    "summary": f"Over {thresholds.error_ratio:.0%} of requests to {where} fail",
                },
            },
        ]
    truth = monitoring.ground_truth
    if truth is not None and truth.task == api.GroundTruthTask.classification:
        floor = monitoring.alerts.min_accuracy
        labelled = f"sum by (version) (increase(mlmodel_labelled_predictions_total{{{match}}}[1h]))"
        correct = f"sum by (version) (increase(mlmodel_correct_predictions_total{{{match}}}[1h]))"
        rules.append(
            {
                "alert": "MLModelLowAccuracy",
                # Only on enough labels: a handful of late labels says little.
                "expr": f"({correct} / {labelled} < {floor}) and ({labelled} >= 100)",
                "for": "30m",
                "labels": {"severity": "warning"},
                "annotations": {
                    "summary": f"Accuracy of {where} version {{{{ $labels.version }}}} below "
                    f"{floor:g}",
                    "description": "Share of the last hour's labelled predictions that were "
                    "right: {{ $value | humanizePercentage }}.",
                },
            }
        )
    return rules


def build_prometheus_rule(owner: Owner, spec: api.MLModelDeploymentSpec) -> dict[str, Any]:
    return {
        "apiVersion": PROMETHEUS_API,
        "kind": "PrometheusRule",
        "metadata": object_meta(owner, spec, owner.name),
        "spec": {
            "groups": [
                {
                    "name": f"mlmodel.{owner.namespace}.{owner.name}",
                    "rules": alert_rules(owner, spec),
                }
            ]
        },
    }
