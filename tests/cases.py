"""Tables of good and bad input shared by the unit tests (pydantic, CRD pattern) and the
integration tests (the real API server), so every layer is held to the same answers."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
# The project's copy of the founding design document's manifest; tests read it, never anything
# outside the repository.
FOUNDING_MANIFEST = REPO / "manifests" / "examples" / "predictive-analytics-system.yaml"

# memory_requirements -> bytes
MEMORY_GOOD: dict[str, int] = {
    "64GB": 64 * 10**9,
    "512MB": 512 * 10**6,
    "1.5GiB": 3 * 2**29,
    "64Gi": 64 * 2**30,
    "2048Mi": 2**31,
    "512000000": 512_000_000,
    "10KB": 10_000,
    "10kB": 10_000,
    "1.5G": 1_500_000_000,
    "0.5Gi": 2**29,
    "3TiB": 3 * 2**40,
    "1Ti": 2**40,
    "2M": 2_000_000,
    "100k": 100_000,
}
# Unknown, ambiguous or non-positive: refused everywhere.
MEMORY_BAD: list[str] = [
    "lots",
    "64gb",  # lower case: bits or bytes?
    "64Gb",
    "64 GB",
    "64m",  # Kubernetes reads m as milli
    "64K",
    "64b",
    "1e9",
    "0GB",
    "0",
    "0.0Gi",
    "-1Gi",
    ".5Gi",
    "1.Gi",
    "1.5.5G",
    "GB",
    "",
]


def founding_manifest() -> dict[str, Any]:
    return yaml.safe_load(FOUNDING_MANIFEST.read_text())


def manifest(name: str = "model", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "machine-learning.org/v1",
        "kind": "MLModelDeployment",
        "metadata": {"name": name},
        "spec": spec,
    }


def with_spec(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `base` with the dotted spec `path` set to `value`."""
    out = copy.deepcopy(base)
    node = out["spec"]
    *parents, leaf = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return out


_FOUNDING = founding_manifest()
# (id, manifest, the field the refusal must name)
BAD_MANIFESTS: list[tuple[str, dict[str, Any], str]] = [
    (
        "negative-gpus",
        with_spec(_FOUNDING, "computational_resources.gpu_allocation", -1),
        "spec.computational_resources.gpu_allocation",
    ),
    (
        "fractional-gpus",
        with_spec(_FOUNDING, "computational_resources.gpu_allocation", 2.5),
        "spec.computational_resources.gpu_allocation",
    ),
    (
        "gpus-as-string",
        with_spec(_FOUNDING, "computational_resources.gpu_allocation", "4"),
        "spec.computational_resources.gpu_allocation",
    ),
    (
        "memory-lots",
        with_spec(_FOUNDING, "computational_resources.memory_requirements", "lots"),
        "spec.computational_resources.memory_requirements",
    ),
    ("unknown-model-type", with_spec(_FOUNDING, "model_type", "perceptron"), "spec.model_type"),
    (
        "performance-tracking-maybe",
        with_spec(_FOUNDING, "monitoring.performance_tracking", "maybe"),
        "spec.monitoring.performance_tracking",
    ),
    (
        "sidecar-cpu-two",
        with_spec(_FOUNDING, "monitoring.sidecar_cpu", "two"),
        "spec.monitoring.sidecar_cpu",
    ),
    (
        "drift-no-features",
        with_spec(_FOUNDING, "monitoring.drift.max_features", 0),
        "spec.monitoring.drift.max_features",
    ),
    (
        "drift-false-alarms-too-often",
        with_spec(_FOUNDING, "monitoring.drift.expected_samples_between_false_alarms", 10),
        "spec.monitoring.drift.expected_samples_between_false_alarms",
    ),
    (
        "drift-false-alarms-not-a-number",
        with_spec(_FOUNDING, "monitoring.drift.expected_samples_between_false_alarms", "rare"),
        "spec.monitoring.drift.expected_samples_between_false_alarms",
    ),
    (
        "drift-detection-on",
        with_spec(_FOUNDING, "monitoring.drift_detection", "on"),
        "spec.monitoring.drift_detection",
    ),
    ("custom-without-image", manifest(model_type="custom"), "spec.image"),
    (
        "port-without-custom",
        manifest(model_type="sklearn", port=8080),
        "spec.port",
    ),
    (
        "gpu-type-without-gpus",
        manifest(
            model_type="pytorch",
            computational_resources={"gpu_type": "NVIDIA-H100-80GB-HBM3"},
        ),
        "spec.computational_resources.gpu_type",
    ),
    ("negative-replicas", with_spec(_FOUNDING, "replicas", -1), "spec.replicas"),
    (
        "model-uri-scheme",
        with_spec(_FOUNDING, "model_uri", "ftp://models/x"),
        "spec.model_uri",
    ),
    (
        "gpu-resource-name",
        with_spec(_FOUNDING, "computational_resources.gpu_resource", "gpu"),
        "spec.computational_resources.gpu_resource",
    ),
    (
        "p-value-out-of-range",
        with_spec(_FOUNDING, "monitoring.drift", {"p_value_threshold": 1.5}),
        "spec.monitoring.drift.p_value_threshold",
    ),
    ("unknown-field", with_spec(_FOUNDING, "gpu_count", 4), "spec.gpu_count"),
    (
        "unknown-nested-field",
        with_spec(_FOUNDING, "monitoring.alerting", "on"),
        "spec.monitoring.alerting",
    ),
    ("missing-model-type", manifest(replicas=1), "spec.model_type"),
    ("huggingface-without-model-uri", manifest(model_type="huggingface"), "spec.model_uri"),
    (
        "port-reserved-by-sidecar",
        manifest(model_type="custom", image="ghcr.io/acme/m:1", port=9090),
        "spec.port",
    ),
    (
        "endpoint-url-without-s3",
        manifest(
            model_type="sklearn",
            model_uri="gs://models/iris",
            storage={"endpoint_url": "http://minio.storage:9000"},
        ),
        "spec.storage.endpoint_url",
    ),
    (
        "secret-for-a-mounted-model",
        manifest(model_type="sklearn", model_uri="pvc://models/iris", storage={"secret_name": "s"}),
        "spec.storage.secret_name",
    ),
    (
        "service-account-without-model-uri",
        manifest(model_type="sklearn", storage={"service_account_name": "fetcher"}),
        "spec.storage.service_account_name",
    ),
    (
        "size-limit-lots",
        manifest(model_type="sklearn", model_uri="s3://m/iris", storage={"size_limit": "lots"}),
        "spec.storage.size_limit",
    ),
    (
        "secret-name-not-a-name",
        manifest(model_type="sklearn", model_uri="s3://m/iris", storage={"secret_name": "S_3"}),
        "spec.storage.secret_name",
    ),
    (
        "autoscaling-min-above-max",
        manifest(
            model_type="sklearn",
            autoscaling={"min_replicas": 3, "max_replicas": 2, "target": 4},
        ),
        "spec.autoscaling.min_replicas",
    ),
    (
        "autoscaling-without-max",
        manifest(model_type="sklearn", autoscaling={"target": 4}),
        "spec.autoscaling.max_replicas",
    ),
    (
        "autoscaling-unknown-metric",
        manifest(
            model_type="sklearn",
            autoscaling={"max_replicas": 2, "target": 4, "metric": "qps"},
        ),
        "spec.autoscaling.metric",
    ),
    (
        "autoscaling-fractional-percent",
        manifest(
            model_type="sklearn",
            computational_resources={"cpu": "1"},
            autoscaling={"max_replicas": 2, "target": 70.5, "metric": "cpu"},
        ),
        "spec.autoscaling.target",
    ),
    (
        "autoscaling-gpu-over-100",
        manifest(
            model_type="pytorch",
            computational_resources={"gpu_allocation": 1},
            autoscaling={"max_replicas": 2, "target": 120, "metric": "gpu_utilization"},
        ),
        "spec.autoscaling.target",
    ),
    (
        "autoscaling-gpu-without-gpus",
        manifest(
            model_type="sklearn",
            autoscaling={"max_replicas": 2, "target": 80, "metric": "gpu_utilization"},
        ),
        "spec.autoscaling.metric",
    ),
    (
        "autoscaling-cpu-without-request",
        manifest(
            model_type="sklearn",
            autoscaling={"max_replicas": 2, "target": 80, "metric": "cpu"},
        ),
        "spec.autoscaling.metric",
    ),
    (
        "autoscaling-concurrency-without-sidecar",
        manifest(
            model_type="sklearn",
            monitoring={"performance_tracking": "disabled"},
            autoscaling={"max_replicas": 2, "target": 4},
        ),
        "spec.autoscaling.metric",
    ),
    (
        "autoscaling-to-zero-on-memory",
        manifest(
            model_type="sklearn",
            autoscaling={"min_replicas": 0, "max_replicas": 2, "target": 80, "metric": "memory"},
        ),
        "spec.autoscaling.min_replicas",
    ),
    (
        "autoscaling-zero-target",
        manifest(model_type="sklearn", autoscaling={"max_replicas": 2, "target": 0}),
        "spec.autoscaling.target",
    ),
    ("llm-without-model-uri", manifest(model_type="llm"), "spec.model_uri"),
    (
        "llm-settings-on-sklearn",
        manifest(model_type="sklearn", llm={"max_model_len": 4096}),
        "spec.llm",
    ),
    (
        "llm-extra-args-set-the-port",
        manifest(model_type="llm", model_uri="hf://org/m", llm={"extra_args": ["--port=9"]}),
        "spec.llm.extra_args",
    ),
    (
        "llm-extra-args-set-the-model",
        manifest(model_type="llm", model_uri="hf://org/m", llm={"extra_args": ["--model"]}),
        "spec.llm.extra_args",
    ),
    (
        "llm-dtype-unknown",
        manifest(model_type="llm", model_uri="hf://org/m", llm={"dtype": "int3"}),
        "spec.llm.dtype",
    ),
    (
        "llm-gpu-memory-over-one",
        manifest(model_type="llm", model_uri="hf://org/m", llm={"gpu_memory_utilization": 1.5}),
        "spec.llm.gpu_memory_utilization",
    ),
    (
        "llm-startup-too-short",
        manifest(model_type="llm", model_uri="hf://org/m", llm={"startup_timeout_seconds": 5}),
        "spec.llm.startup_timeout_seconds",
    ),
    (
        "ttft-gate-on-sklearn",
        manifest(
            model_type="sklearn",
            rollout={"analysis": {"max_p99_time_to_first_token_seconds": 0.5}},
        ),
        "spec.rollout.analysis.max_p99_time_to_first_token_seconds",
    ),
    (
        "itl-gate-on-sklearn",
        manifest(
            model_type="sklearn",
            rollout={"analysis": {"max_p99_inter_token_latency_seconds": 0.05}},
        ),
        "spec.rollout.analysis.max_p99_inter_token_latency_seconds",
    ),
    (
        "queue-metric-on-sklearn",
        manifest(
            model_type="sklearn",
            autoscaling={"max_replicas": 2, "target": 4, "metric": "queue"},
        ),
        "spec.autoscaling.metric",
    ),
    (
        "queue-metric-to-zero",
        manifest(
            model_type="llm",
            model_uri="hf://org/m",
            autoscaling={"min_replicas": 0, "max_replicas": 2, "target": 4, "metric": "queue"},
        ),
        "spec.autoscaling.min_replicas",
    ),
    (
        "accuracy-gate-without-ground-truth",
        manifest(model_type="sklearn", rollout={"analysis": {"min_accuracy": 0.9}}),
        "spec.rollout.analysis.min_accuracy",
    ),
    (
        "accuracy-drop-on-regression",
        manifest(
            model_type="sklearn",
            monitoring={"ground_truth": {"task": "regression"}},
            rollout={"analysis": {"max_accuracy_drop": 0.05}},
        ),
        "spec.rollout.analysis.max_accuracy_drop",
    ),
    (
        "ground-truth-unknown-task",
        manifest(model_type="sklearn", monitoring={"ground_truth": {"task": "ranking"}}),
        "spec.monitoring.ground_truth.task",
    ),
    (
        "ground-truth-ttl-too-short",
        manifest(
            model_type="sklearn",
            monitoring={"ground_truth": {"task": "regression", "ttl_seconds": 5}},
        ),
        "spec.monitoring.ground_truth.ttl_seconds",
    ),
    (
        "custom-port-on-a-feedback-port",
        manifest(
            model_type="custom",
            image="r/x:1",
            port=9205,
            monitoring={"ground_truth": {"task": "classification"}},
        ),
        "spec.port",
    ),
    (
        "payload-sink-not-a-url",
        manifest(model_type="sklearn", monitoring={"payload_logging": {"url": "sink:80"}}),
        "spec.monitoring.payload_logging.url",
    ),
    (
        "payload-sample-zero",
        manifest(
            model_type="sklearn",
            monitoring={"payload_logging": {"url": "http://s", "sample_percent": 0}},
        ),
        "spec.monitoring.payload_logging.sample_percent",
    ),
]

# Every Unicode White_Space character, which no URI or image reference may hold; the fuzz that
# found admission and the operator disagreeing used these.
WHITESPACE_CHARS = [
    *"\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000",
    *(chr(c) for c in range(0x2000, 0x200B)),
]
# (spec path, a good value, how to make it bad by putting `c` in it)
STRING_FIELDS: list[tuple[str, str]] = [
    ("model_uri", "s3://models/fraud-\U0001f600/v1/"),
    ("image", "ghcr.io/acme/model-\u00e9:1"),
    ("monitoring.drift.reference_uri", "https://data.example.com/ref\u00e9\U0001f600.csv"),
]
# (id, spec path, value, whether it is valid): one table for pydantic, the CRD pattern and the
# real API server, so that admission refuses exactly what the operator refuses.
STRING_CASES: list[tuple[str, str, str, bool]] = [
    *((f"{path}-good", path, good, True) for path, good in STRING_FIELDS),
    *(
        (f"{path}-U+{ord(c):04X}", path, good[:8] + c + good[8:], False)
        for path, good in STRING_FIELDS
        for c in WHITESPACE_CHARS
    ),
    # Not White_Space in Unicode, so allowed by both: an information separator and a zero-width
    # space.
    ("model_uri-U+001C", "model_uri", "s3://models/a\x1cb", True),
    ("model_uri-U+200B", "model_uri", "s3://models/a\u200bb", True),
]


def string_case_manifest(path: str, value: str) -> dict[str, Any]:
    """The founding manifest with one string field set (custom type where `image` is set)."""
    body = with_spec(_FOUNDING, path, value)
    if path == "image":
        body["spec"]["model_type"] = "custom"
    return body
