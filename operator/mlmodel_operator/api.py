"""The MLModelDeployment API: pydantic models of spec and status, and memory quantity parsing.

The CRD's OpenAPI schema is generated from these models (see crdgen.py), so a description, bound,
pattern or default written here is what `kubectl explain` shows and what the API server enforces.
Cross-field rules are declared once as `Rule`s: each becomes a CEL rule in the CRD and a check in
the model, with the same message, so admission and the operator refuse the same specs alike.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictInt,
    field_validator,
    model_validator,
)

from mlmodel_operator.fetch.uri import FETCHED_SCHEMES, is_fetched

GROUP = "machine-learning.org"
VERSION = "v1"
KIND = "MLModelDeployment"
PLURAL = "mlmodeldeployments"
SINGULAR = "mlmodeldeployment"
SHORT_NAMES = ["mlmd"]
CATEGORIES = ["ml"]

# --- memory quantities ------------------------------------------------------------------------

DECIMAL_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
BINARY_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
# Byte-style spellings: decimal ones are powers of 10 (64GB = 64 * 10^9), binary ones powers of 2.
MEMORY_UNITS: dict[str, int] = {
    **DECIMAL_UNITS,
    **{u + "B": f for u, f in DECIMAL_UNITS.items() if u},
    "KB": 10**3,
    **BINARY_UNITS,
    **{u + "B": f for u, f in BINARY_UNITS.items()},
}
# A positive number (not all zeros) followed by one of MEMORY_UNITS. Anything else (lower-case
# "gb", "m" which Kubernetes reads as milli, bits, spaces, exponents) is refused as ambiguous.
_NUMBER = r"([0-9]*[1-9][0-9]*(\.[0-9]+)?|[0-9]+\.[0-9]*[1-9][0-9]*)"
_UNITS_LONGEST_FIRST = sorted((re.escape(u) for u in MEMORY_UNITS if u), key=len, reverse=True)
_UNIT = "(" + "|".join(_UNITS_LONGEST_FIRST) + ")?"
MEMORY_PATTERN = f"^{_NUMBER}{_UNIT}$"
_MEMORY_RE = re.compile(MEMORY_PATTERN)


def parse_memory(text: str) -> int:
    """Bytes in a memory quantity such as "64GB", "1.5GiB", "2048Mi" or "512000000".

    Fractions of a byte round up, as Kubernetes rounds resource quantities.
    """
    match = _MEMORY_RE.match(text)
    if not match:
        raise ValueError(
            f"{text!r} is not a memory quantity: use a positive number with a unit such as "
            "64GB, 512MB, 1.5GiB, 64Gi or 2048Mi (decimal units are powers of 10, binary "
            "units powers of 2)"
        )
    number, unit = match.group(1), match.group(3) or ""
    return math.ceil(Decimal(number) * MEMORY_UNITS[unit])


def format_memory(num_bytes: int) -> str:
    """The shortest exact Kubernetes quantity for a byte count ("64G", "1536Mi", "1001")."""
    candidates = [str(num_bytes)] + [
        f"{num_bytes // factor}{suffix}"
        for suffix, factor in {**DECIMAL_UNITS, **BINARY_UNITS}.items()
        if suffix and num_bytes % factor == 0
    ]
    return min(candidates, key=len)


def cpu_cores(text: str) -> Decimal:
    """The cores in a CPU quantity matching CPU_PATTERN ("500m" -> 0.5, "2" -> 2)."""
    return Decimal(text[:-1]) / 1000 if text.endswith("m") else Decimal(text)


def format_cpu(text: str) -> str:
    """The canonical Kubernetes form of a CPU quantity matching CPU_PATTERN ("0.5" -> "500m")."""
    if text.endswith("m"):
        return f"{int(text[:-1])}m"
    value = Decimal(text)
    if value == value.to_integral_value():
        return str(int(value))
    return f"{math.ceil(value * 1000)}m"


# Numbers are strict, as in the CRD schema: "4" or 2.5 is not a GPU count.
StrictFloat = Annotated[float, Strict()]  # ints are still accepted, as JSON numbers

# --- cross-field rules ------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One cross-field rule, enforced by the API server (CEL) and by the model (Python)."""

    cel: str
    message: str
    holds: Callable[[Any], bool]
    field_path: str | None = None  # the field the error names, relative to the rule's object
    reason: str | None = None  # FieldValueRequired, FieldValueForbidden, ...

    def to_openapi(self) -> dict[str, str]:
        rule = {"rule": self.cel, "message": self.message}
        if self.field_path:
            rule["fieldPath"] = self.field_path
        if self.reason:
            rule["reason"] = self.reason
        return rule


def _cel_rules(schema: dict[str, Any], model: type) -> None:
    rules = getattr(model, "rules", ())
    if rules:
        schema["x-kubernetes-validations"] = [rule.to_openapi() for rule in rules]


class CRDModel(BaseModel):
    """Base of every API model: unknown fields refused, cross-field `rules` checked."""

    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, use_enum_values=True, json_schema_extra=_cel_rules
    )
    rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _check_rules(self) -> CRDModel:
        for rule in self.rules:
            if not rule.holds(self):
                raise ValueError(rule.message)
        return self


# --- spec ---------------------------------------------------------------------------------------

LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
RESOURCE_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?$"
CPU_PATTERN = r"^([0-9]*[1-9][0-9]*(\.[0-9]+)?|[0-9]+\.[0-9]*[1-9][0-9]*|[0-9]*[1-9][0-9]*m)$"
# Unicode's White_Space characters, spelled out rather than written \s: the API server's regular
# expressions (RE2) read \s as ASCII whitespace and pydantic's (Rust regex) as Unicode whitespace,
# so with \s a URI holding a no-break space would pass admission and be refused by the operator.
# Up to U+00FF as regex escapes, which RE2, Rust regex and Python's re read alike: U+0085 must not
# appear raw in the CRD, because `kubectl apply --server-side` sends it raw inside a JSON string
# and the API server's YAML parser folds it into a space. Above U+00FF the three have no common
# escape, so those are the characters themselves (JSON and YAML carry them intact).
WHITESPACE = r"\t\n\x0b\x0c\r \x85\xa0" + "\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_NO_WHITESPACE = f"[^{WHITESPACE}]+"
MODEL_URI_PATTERN = f"^(s3|gs|https|pvc|hf)://{_NO_WHITESPACE}$"
REFERENCE_URI_PATTERN = f"^(https?://|/){_NO_WHITESPACE}$"
IMAGE_PATTERN = f"^{_NO_WHITESPACE}$"
ENDPOINT_URL_PATTERN = f"^https?://{_NO_WHITESPACE}$"
# Names of Secrets and ServiceAccounts (DNS subdomains).
OBJECT_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
FETCHED_URI_CEL = (
    f"has(self.model_uri) && self.model_uri.matches('^({'|'.join(FETCHED_SCHEMES)})://')"
)
DEFAULT_MODEL_SIZE_LIMIT = "20Gi"
# LLM weights run from a few GB to several hundred (a 70B model in bfloat16 is 140 GB); the limit
# is a cap on the volume, not a reservation, so a generous one costs nothing until it is used.
DEFAULT_LLM_SIZE_LIMIT = "500Gi"
# Ports the monitoring sidecar listens on in every model pod.
SIDECAR_PROXY_PORT = 8480
SIDECAR_METRICS_PORT = 9090
_SIDECAR_PORTS = f"[{SIDECAR_PROXY_PORT}, {SIDECAR_METRICS_PORT}]"
# With monitoring.ground_truth, sidecar worker i takes feedback from its peers on 9200 + i (at
# most 64 workers).
FEEDBACK_PORTS = range(9200, 9264)


class ModelType(StrEnum):
    neural_network = "neural_network"
    sklearn = "sklearn"
    xgboost = "xgboost"
    lightgbm = "lightgbm"
    pytorch = "pytorch"
    tensorflow = "tensorflow"
    onnx = "onnx"
    huggingface = "huggingface"
    llm = "llm"
    custom = "custom"


class ComputationalResources(CRDModel):
    """Accelerators, memory and CPU for each model server replica."""

    gpu_allocation: StrictInt = Field(
        0,
        ge=0,
        le=64,
        description="GPUs per replica, requested as the `gpu_resource` extended resource. "
        "0 runs on CPU.",
    )
    gpu_type: Annotated[str, Field(max_length=63, pattern=LABEL_VALUE_PATTERN)] | None = Field(
        None,
        description="GPU model the replicas must run on, e.g. NVIDIA-H100-80GB-HBM3; becomes a "
        "node selector on the nvidia.com/gpu.product label. Only with gpu_allocation > 0.",
    )
    gpu_resource: str = Field(
        "nvidia.com/gpu",
        max_length=253,
        pattern=RESOURCE_NAME_PATTERN,
        description="Extended resource name the GPUs are requested as: nvidia.com/gpu, "
        "amd.com/gpu, or a MIG profile such as nvidia.com/mig-1g.10gb.",
    )
    memory_requirements: str = Field(
        "2Gi",
        max_length=32,
        pattern=MEMORY_PATTERN,
        description="Memory per replica, requested and limited alike: 64GB, 512MB, 1.5GiB, 64Gi, "
        "2048Mi or a plain byte count. Decimal units (kB, MB, GB, TB, k, M, G, T) are powers "
        "of 10, binary units (KiB, MiB, GiB, TiB, Ki, Mi, Gi, Ti) powers of 2.",
    )
    cpu: Annotated[str, Field(max_length=32, pattern=CPU_PATTERN)] | None = Field(
        None,
        description="CPU per replica as a Kubernetes quantity (2, 0.5, 500m); requested, not "
        "limited. Unset: 2 per GPU with GPUs (feeding GPUs takes CPU), else the runtime's default.",
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="!has(self.gpu_type) || self.gpu_allocation > 0",
            message="gpu_type needs gpu_allocation > 0",
            holds=lambda r: r.gpu_type is None or r.gpu_allocation > 0,
            field_path=".gpu_type",
            reason="FieldValueForbidden",
        ),
    )

    @property
    def memory_bytes(self) -> int:
        return parse_memory(self.memory_requirements)

    @field_validator("memory_requirements")
    @classmethod
    def _memory_parses(cls, value: str) -> str:
        parse_memory(value)
        return value


class DriftMethod(StrEnum):
    ks = "ks"
    psi = "psi"


class DriftSettings(CRDModel):
    """How the monitoring sidecar decides that inputs or outputs have drifted."""

    reference_uri: Annotated[str, Field(max_length=2048, pattern=REFERENCE_URI_PATTERN)] | None = (
        Field(
            None,
            description="Reference data (CSV, NPY or JSON lines): an http(s) URL or a path in the "
            "model pod. Unset: the first window of live traffic becomes the reference.",
        )
    )
    window_size: StrictInt = Field(
        1000, ge=50, le=100_000, description="Samples per feature in each compared window."
    )
    check_interval_seconds: StrictInt = Field(
        60, ge=5, le=86_400, description="Seconds between drift checks (also run every window)."
    )
    method: DriftMethod = Field(
        DriftMethod.ks,
        description="Test for numeric features: ks (two-sample Kolmogorov-Smirnov) or psi "
        "(population stability index on reference quantile bins). Categorical features always "
        "use chi-squared.",
    )
    p_value_threshold: StrictFloat = Field(
        0.05,
        gt=0,
        lt=1,
        description="Drift needs a p-value below this (KS and chi-squared).",
    )
    effect_size_threshold: StrictFloat = Field(
        0.1,
        gt=0,
        le=10,
        description="Drift also needs an effect at least this large (KS statistic, PSI, or "
        "total variation distance for categories), so large windows do not flag negligible "
        "shifts.",
    )
    max_features: StrictInt = Field(
        64,
        ge=1,
        le=1024,
        description="Features watched per direction: the first max_features inputs and, apart, "
        "the first max_features outputs, in payload order (tensor by tensor, then position in "
        "a row). Values past them are not read.",
    )
    expected_samples_between_false_alarms: StrictInt = Field(
        10_000,
        ge=1_000,
        le=10_000_000,
        description="The sequential detector's thresholds are set (by bootstrap from the "
        "reference) so that, with no drift, all its charts together raise one false alarm per "
        "this many samples on average.",
    )


class PerformanceTracking(StrEnum):
    enabled = "enabled"
    disabled = "disabled"


class DriftDetection(StrEnum):
    active = "active"
    inactive = "inactive"


class AlertThresholds(CRDModel):
    """Where the PrometheusRule's alerts fire (with the Prometheus Operator installed)."""

    p99_latency_seconds: StrictFloat = Field(
        1.0, gt=0, le=3600, description="Alert when the p99 request latency stays above this."
    )
    error_ratio: StrictFloat = Field(
        0.05, gt=0, le=1, description="Alert when this share of requests fails (5xx) for 10m."
    )
    min_accuracy: StrictFloat = Field(
        0.9,
        ge=0,
        le=1,
        description="With monitoring.ground_truth task classification: alert when a version's "
        "accuracy over the labels of the last hour (at least 100) stays below this for 30m.",
    )


class GroundTruthTask(StrEnum):
    classification = "classification"
    regression = "regression"


class GroundTruth(CRDModel):
    """How a prediction is read and joined to the truth sent later to
    POST /v2/models/<name>/feedback."""

    task: GroundTruthTask = Field(
        description="classification: a prediction is a class, right or wrong. regression: a "
        "number, with its absolute and squared error."
    )
    output: Annotated[str, Field(max_length=253)] | None = Field(
        None,
        description="The Open Inference Protocol output holding the prediction (its `name`). "
        "Unset: the first output, or `predictions` for the v1 protocol. A class is read from "
        "it as: the text of a BYTES output (a label); the index of the largest value when a "
        "row holds several numbers (argmax of scores); the number itself when a row holds one.",
    )
    ttl_seconds: StrictInt = Field(
        86_400,
        ge=60,
        le=30 * 86_400,
        description="How long a prediction waits for its truth. Truth sent later is counted "
        "late, never an error.",
    )
    max_pending: Annotated[str, Field(max_length=32, pattern=MEMORY_PATTERN)] = Field(
        "64Mi",
        description="Memory for predictions waiting for their truth, per sidecar worker. When "
        "full, the oldest are let go (counted) to make room. Added to the sidecar's memory "
        "limit.",
    )


class PayloadLoggingMode(StrEnum):
    all = "all"
    request = "request"
    response = "response"


class PayloadLogging(CRDModel):
    """Each request and answer sent as a CloudEvent to an HTTP sink, off the request path."""

    url: Annotated[str, Field(max_length=2048, pattern=ENDPOINT_URL_PATTERN)] = Field(
        description="The CloudEvents sink (http:// or https://)."
    )
    mode: PayloadLoggingMode = Field(
        PayloadLoggingMode.all,
        description="all: an event for the request and one for the answer; request or "
        "response: only that one.",
    )
    sample_percent: StrictFloat = Field(
        100.0,
        gt=0,
        le=100,
        description="Share of predictions logged, chosen by prediction id so that a request "
        "and its answer are logged together or not at all.",
    )
    batch_size: StrictInt = Field(
        1,
        ge=1,
        le=1000,
        description="Events per delivery. 1: one event per HTTP request in binary mode. More: "
        "application/cloudevents-batch+json.",
    )
    batch_interval_seconds: StrictFloat = Field(
        1.0,
        gt=0,
        le=60,
        description="The longest an event waits for its batch to fill.",
    )
    secret_name: Annotated[str, Field(max_length=253, pattern=OBJECT_NAME_PATTERN)] | None = Field(
        None,
        description="A Secret in the model's namespace whose key `authorization` is sent as the "
        "Authorization header (e.g. `Bearer <token>`).",
    )
    max_queued: Annotated[str, Field(max_length=32, pattern=MEMORY_PATTERN)] = Field(
        "16Mi",
        description="Events waiting for delivery, in bytes, per sidecar worker. Past it, new "
        "events are dropped and counted: the request path never waits for the sink. Added to "
        "the sidecar's memory limit.",
    )


class Monitoring(CRDModel):
    """What the monitoring sidecar in each model pod measures."""

    performance_tracking: PerformanceTracking = Field(
        PerformanceTracking.enabled,
        description="enabled: export request rate, latency and errors as Prometheus metrics.",
    )
    drift_detection: DriftDetection = Field(
        DriftDetection.inactive,
        description="active: watch model inputs and outputs for data drift and export drift "
        "scores.",
    )
    drift: DriftSettings = Field(
        default_factory=DriftSettings,  # type: ignore[arg-type]
        description="Drift detection settings, used while drift_detection is active.",
    )
    alerts: AlertThresholds = Field(
        default_factory=AlertThresholds,  # type: ignore[arg-type]
        description="Alert thresholds for the PrometheusRule created with the Prometheus Operator.",
    )
    ground_truth: GroundTruth | None = Field(
        None,
        description="Join predictions to truth sent later, for accuracy per version. Unset: no "
        "feedback endpoint.",
    )
    payload_logging: PayloadLogging | None = Field(
        None, description="Send requests and answers to a CloudEvents sink. Unset: not logged."
    )
    sidecar_cpu: Annotated[str, Field(max_length=32, pattern=CPU_PATTERN)] = Field(
        "50m",
        description="CPU requested by the monitoring sidecar (2, 0.5, 500m). Its proxy runs one "
        "worker process per whole CPU requested (at least one, at most 64) on one port; raise "
        "it for models that answer thousands of requests per second per replica.",
    )


class LLMDtype(StrEnum):
    auto = "auto"
    half = "half"
    float16 = "float16"
    bfloat16 = "bfloat16"
    float = "float"
    float32 = "float32"


# Flags the operator sets itself from the rest of the spec; extra_args may not repeat them.
LLM_RESERVED_FLAGS = ("model", "served-model-name", "port", "host", "tensor-parallel-size")
_RESERVED_FLAG_PATTERN = "^--(" + "|".join(LLM_RESERVED_FLAGS) + ")(=.*)?$"
DEFAULT_LLM_STARTUP_SECONDS = 1800
LLMArg = Annotated[
    str, Field(min_length=1, max_length=4096, description="One argument, as it would be typed.")
]


class LLMSettings(CRDModel):
    """vLLM's OpenAI-compatible server, for model_type llm: the settings users change most.
    Anything else goes in extra_args."""

    max_model_len: StrictInt | None = Field(
        None,
        ge=16,
        le=10_000_000,
        description="Longest context (prompt plus completion, in tokens) the server accepts: "
        "vLLM's --max-model-len. Unset: the model's own, which may need more KV cache than the "
        "GPUs hold.",
    )
    dtype: LLMDtype | None = Field(
        None,
        description="Weights and activations type: vLLM's --dtype (auto, half, float16, "
        "bfloat16, float, float32). Unset: auto (the model's own, float16 for float32 models).",
    )
    gpu_memory_utilization: StrictFloat | None = Field(
        None,
        gt=0,
        le=1,
        description="Share of each GPU's memory vLLM may use for weights, activations and KV "
        "cache: vLLM's --gpu-memory-utilization. Unset: vLLM's default (0.9).",
    )
    extra_args: list[LLMArg] = Field(
        default_factory=list,
        max_length=64,
        description="More arguments for vLLM's server, as they would be typed, one per item "
        "(['--enable-prefix-caching', '--max-num-seqs=128']). Not the flags the operator sets: "
        f"{', '.join('--' + f for f in LLM_RESERVED_FLAGS)}.",
    )
    startup_timeout_seconds: StrictInt = Field(
        DEFAULT_LLM_STARTUP_SECONDS,
        ge=60,
        le=86_400,
        description="How long the server may take to load its weights and become ready before "
        "the pod is restarted (the startup probe's budget). Large models on slow disks need "
        "more.",
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="!has(self.extra_args) || "
            f"self.extra_args.all(a, !a.matches('{_RESERVED_FLAG_PATTERN}'))",
            message="extra_args must not set "
            f"{', '.join('--' + f for f in LLM_RESERVED_FLAGS)}: the operator sets them from "
            "model_uri, the resource's name, the runtime's port and gpu_allocation",
            holds=lambda s: not any(re.match(_RESERVED_FLAG_PATTERN, a) for a in s.extra_args),
            field_path=".extra_args",
            reason="FieldValueForbidden",
        ),
    )


class Storage(CRDModel):
    """How the storage initializer downloads model_uri (s3://, gs://, https://, hf://) into
    the model pod's volume. Credentials reach the initializer only, never the model server."""

    secret_name: Annotated[str, Field(max_length=253, pattern=OBJECT_NAME_PATTERN)] | None = Field(
        None,
        description="Secret in the model's namespace whose keys become the initializer's "
        "environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (AWS_SESSION_TOKEN, "
        "AWS_REGION, AWS_ROLE_ARN) for s3://; GOOGLE_CREDENTIALS_JSON (a service-account "
        "key or workload identity federation configuration) for gs://; HTTP_AUTHORIZATION "
        "(an Authorization header) for https://; HF_TOKEN (a Hugging Face access token) "
        "for hf://. Unset: the ServiceAccount's identity, or anonymous access.",
    )
    endpoint_url: Annotated[str, Field(max_length=2048, pattern=ENDPOINT_URL_PATTERN)] | None = (
        Field(
            None,
            description="S3-compatible endpoint for s3:// (MinIO, Ceph, R2, ...), e.g. "
            "https://minio.storage:9000. Unset: AWS S3. Only with an s3:// model_uri.",
        )
    )
    service_account_name: (
        Annotated[str, Field(max_length=253, pattern=OBJECT_NAME_PATTERN)] | None
    ) = Field(
        None,
        description="ServiceAccount of the model pods, for workload identity: its token, with "
        "the audience token_audience, is mounted into the initializer alone (for s3:// as "
        "AWS_WEB_IDENTITY_TOKEN_FILE, with AWS_ROLE_ARN from the Secret).",
    )
    token_audience: str = Field(
        "sts.amazonaws.com",
        min_length=1,
        max_length=512,
        description="Audience of the ServiceAccount token given to the initializer (AWS: "
        "sts.amazonaws.com; GCP: the workload identity provider's audience).",
    )
    size_limit: Annotated[str, Field(max_length=32, pattern=MEMORY_PATTERN)] | None = Field(
        None,
        description="Size limit of the volume the model is downloaded into (same units as "
        f"memory_requirements). A model larger than this is refused before it is downloaded. "
        f"Unset: {DEFAULT_MODEL_SIZE_LIMIT}, or {DEFAULT_LLM_SIZE_LIMIT} for model_type llm.",
    )


class RolloutStrategy(StrEnum):
    rolling = "rolling"
    canary = "canary"


class RolloutAnalysis(CRDModel):
    """How each canary step is judged, on the new version's own requests in the step's window
    (from the sidecar's metrics, queried at the operator's --prometheus-url)."""

    interval_seconds: StrictInt = Field(
        300,
        ge=5,
        le=86_400,
        description="How long each step is watched (from when its canary pods are ready) before "
        "it is judged; also the window of the queries. Keep it at least 4 scrape intervals.",
    )
    min_requests: StrictInt = Field(
        100,
        ge=1,
        le=1_000_000_000,
        description="Fewer requests to the new version in the window make the step "
        "Inconclusive: it is judged again after another interval, never passed or failed on "
        "too little data.",
    )
    max_error_ratio: StrictFloat = Field(
        0.01,
        ge=0,
        le=1,
        description="Share of the new version's requests answered 5xx above which the step fails.",
    )
    max_p99_latency_seconds: StrictFloat = Field(
        1.0,
        gt=0,
        le=3600,
        description="99th percentile latency of the new version's requests above which the step "
        "fails.",
    )
    fail_on_drift: bool = Field(
        True,
        description="The new version's drift detector reporting drift in the window fails the "
        "step (only while monitoring.drift_detection is active).",
    )
    min_accuracy: StrictFloat | None = Field(
        None,
        ge=0,
        le=1,
        description="Share of the new version's labelled predictions (monitoring.ground_truth, "
        "task classification) that must be right, over the window; below it the step fails. "
        "Unset: not judged.",
    )
    max_accuracy_drop: StrictFloat | None = Field(
        None,
        ge=0,
        le=1,
        description="How far the new version's accuracy may fall below the stable version's "
        "over the same window (0.02: two points); beyond it the step fails. Unset: not judged.",
    )
    min_labels: StrictInt = Field(
        100,
        ge=1,
        le=1_000_000_000,
        description="Fewer labelled predictions of a version in the window make an accuracy "
        "gate's step Inconclusive, never passed or failed.",
    )
    max_p99_time_to_first_token_seconds: StrictFloat | None = Field(
        None,
        gt=0,
        le=3600,
        description="model_type llm: 99th percentile time to the first token of the new "
        "version's streamed completions above which the step fails. A step with no streamed "
        "completion in the window is Inconclusive. Unset: not judged.",
    )
    max_p99_inter_token_latency_seconds: StrictFloat | None = Field(
        None,
        gt=0,
        le=3600,
        description="model_type llm: 99th percentile time between successive tokens of the new "
        "version's streamed completions above which the step fails. A step with no streamed "
        "tokens in the window is Inconclusive. Unset: not judged.",
    )


class GatewayParent(CRDModel):
    """A Gateway API Gateway to split traffic exactly, with an HTTPRoute."""

    name: Annotated[str, Field(max_length=253, pattern=OBJECT_NAME_PATTERN)] = Field(
        description="Name of the parent Gateway."
    )
    namespace: Annotated[str, Field(max_length=63, pattern=OBJECT_NAME_PATTERN)] | None = Field(
        None, description="Namespace of the Gateway. Unset: the model's namespace."
    )
    section_name: Annotated[str, Field(max_length=253, pattern=OBJECT_NAME_PATTERN)] | None = Field(
        None, description="Listener of the Gateway to attach to. Unset: all."
    )


MAX_STEPS = 10
StepWeight = Annotated[StrictInt, Field(ge=1, le=100, description="Percent of traffic.")]


class Rollout(CRDModel):
    """How a new model_version reaches traffic."""

    strategy: RolloutStrategy = Field(
        RolloutStrategy.rolling,
        description="rolling: a plain rolling update. canary: a new model_version first serves "
        "the share of traffic in each of `steps`, each judged by `analysis`, and is promoted "
        "after the last step or rolled back when a step fails.",
    )
    steps: list[StepWeight] = Field(
        default=[10, 50, 100],
        min_length=1,
        max_length=MAX_STEPS,
        description="Percent of traffic on the new version at each step: ascending, ending at "
        "100 (the last step is judged with all traffic on the new version).",
    )
    analysis: RolloutAnalysis = Field(
        default_factory=RolloutAnalysis,  # type: ignore[arg-type]
        description="How each step is judged.",
    )
    gateway: GatewayParent | None = Field(
        None,
        description="Split traffic exactly with a Gateway API HTTPRoute attached to this "
        "Gateway (one Service per version, weighted backends). Unset: split by replicas behind "
        "the one Service.",
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            # has(): the CRD's `rollout: {}` default is checked before its fields are defaulted.
            cel="!has(self.steps) || (self.steps.isSorted() && "
            "self.steps.all(s, self.steps.indexOf(s) == self.steps.lastIndexOf(s)))",
            message="steps must be strictly ascending, e.g. [10, 50, 100]",
            holds=lambda r: all(a < b for a, b in zip(r.steps, r.steps[1:], strict=False)),
            field_path=".steps",
            reason="FieldValueInvalid",
        ),
        Rule(
            cel="!has(self.steps) || self.steps[size(self.steps) - 1] == 100",
            message="the last step must be 100: a canary ends with all traffic on the new "
            "version, then is promoted",
            holds=lambda r: r.steps[-1] == 100,
            field_path=".steps",
            reason="FieldValueInvalid",
        ),
    )


class AutoscalingMetric(StrEnum):
    concurrency = "concurrency"
    rps = "rps"
    cpu = "cpu"
    memory = "memory"
    gpu_utilization = "gpu_utilization"
    queue = "queue"


# Metrics the target of which is a percentage, and those read from Prometheus-style metrics.
PERCENT_METRICS = ("cpu", "memory", "gpu_utilization")
TRAFFIC_METRICS = ("concurrency", "rps")
MAX_AUTOSCALED_REPLICAS = 1000


class Autoscaling(CRDModel):
    """Horizontal autoscaling of the model server on its own traffic, CPU, memory or GPU use:
    a ScaledObject where KEDA is installed, else a HorizontalPodAutoscaler."""

    min_replicas: StrictInt = Field(
        1,
        ge=0,
        le=MAX_AUTOSCALED_REPLICAS,
        description="Fewest replicas. 0 allows scale to zero: the operator's activator (or "
        "KEDA) takes the model to zero after scale_down_delay_seconds without traffic, and a "
        "request at zero is held by the activator while the model wakes.",
    )
    max_replicas: StrictInt = Field(
        ge=1, le=MAX_AUTOSCALED_REPLICAS, description="Most replicas the autoscaler may ask for."
    )
    metric: AutoscalingMetric = Field(
        AutoscalingMetric.concurrency,
        description="What is scaled on: concurrency (requests in flight per replica) or rps "
        "(requests per second per replica), from the monitoring sidecar's metrics; cpu or "
        "memory (percent of the replica's request); gpu_utilization (percent, from NVIDIA "
        "DCGM's DCGM_FI_DEV_GPU_UTIL); queue (model_type llm: requests waiting in vLLM's "
        "scheduler per replica, vllm:num_requests_waiting).",
    )
    target: StrictFloat = Field(
        gt=0,
        le=1_000_000,
        description="Target per replica: requests in flight (concurrency), requests per second "
        "(rps), requests waiting (queue), or a whole percent (cpu, memory, gpu_utilization).",
    )
    scale_down_delay_seconds: StrictInt = Field(
        300,
        ge=0,
        le=3600,
        description="How long the load must stay low before replicas are removed (the "
        "scale-down stabilization window; with min_replicas 0 also the idle time before the "
        "last replica goes).",
    )
    cold_start_timeout_seconds: StrictInt = Field(
        120,
        ge=1,
        le=3600,
        description="With min_replicas 0: how long the activator holds a request while the "
        "model wakes from zero; past it the client gets 503 with Retry-After.",
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="!has(self.min_replicas) || self.min_replicas <= self.max_replicas",
            message="min_replicas must not exceed max_replicas",
            holds=lambda a: a.min_replicas <= a.max_replicas,
            field_path=".min_replicas",
            reason="FieldValueInvalid",
        ),
        Rule(
            cel="!has(self.min_replicas) || self.min_replicas > 0 || "
            "(has(self.metric) && !(self.metric in ['cpu', 'memory', 'queue']))",
            message="min_replicas 0 needs a metric that can tell an idle model (concurrency, rps, "
            "gpu_utilization): cpu and memory autoscalers never scale to zero, and an empty "
            "queue does not mean an idle model",
            holds=lambda a: a.min_replicas > 0 or a.metric not in ("cpu", "memory", "queue"),
            field_path=".min_replicas",
            reason="FieldValueInvalid",
        ),
        Rule(
            cel=f"!has(self.metric) || !(self.metric in {list(PERCENT_METRICS)!r}) || "
            "double(int(self.target)) == self.target",
            message="target is a whole percent for cpu, memory and gpu_utilization",
            holds=lambda a: a.metric not in PERCENT_METRICS or a.target == int(a.target),
            field_path=".target",
            reason="FieldValueInvalid",
        ),
        Rule(
            cel="!has(self.metric) || self.metric != 'gpu_utilization' || self.target <= 100.0",
            message="target is at most 100 (percent) for gpu_utilization",
            holds=lambda a: a.metric != AutoscalingMetric.gpu_utilization or a.target <= 100,
            field_path=".target",
            reason="FieldValueInvalid",
        ),
    )


class MLModelDeploymentSpec(CRDModel):
    """The desired state: which model to serve, on what hardware, with what monitoring."""

    model_type: ModelType = Field(
        description="Model framework; chooses the serving runtime (Triton for neural_network, "
        "onnx, tensorflow, pytorch; MLServer for sklearn, xgboost, lightgbm; the Hugging Face "
        "server for huggingface; vLLM's OpenAI-compatible server for llm; `image` for custom).",
    )
    model_uri: Annotated[str, Field(max_length=2048, pattern=MODEL_URI_PATTERN)] | None = Field(
        None,
        description="Where the model artifact lives: s3://, gs://, https://, pvc://<claim>/<path> "
        "or hf://<org>/<name>[@<revision>] (downloaded by the storage initializer). Unset: the "
        "server starts with an empty model repository and no model loaded (Triton in explicit "
        "model-control mode, to load models through its repository API); a custom image "
        "serves what it holds. Required for huggingface and llm.",
    )
    model_version: Annotated[str, Field(max_length=63, pattern=LABEL_VALUE_PATTERN)] | None = Field(
        None,
        description="Label for the version being served; shown in status and on every pod.",
    )
    image: Annotated[str, Field(max_length=512, pattern=IMAGE_PATTERN)] | None = Field(
        None,
        description="Container image of the model server, overriding the runtime's. "
        "Required when model_type is custom.",
    )
    port: StrictInt | None = Field(
        None,
        ge=1,
        le=65535,
        description="HTTP port the custom image serves on. Only with model_type custom.",
    )
    replicas: StrictInt = Field(1, ge=0, le=1000, description="Number of model server replicas.")
    computational_resources: ComputationalResources = Field(
        default_factory=ComputationalResources,  # type: ignore[arg-type]
        description="Accelerators, memory and CPU for each replica.",
    )
    monitoring: Monitoring = Field(
        default_factory=Monitoring,  # type: ignore[arg-type]
        description="Performance and drift monitoring by the sidecar.",
    )
    storage: Storage = Field(
        default_factory=Storage,  # type: ignore[arg-type]
        description="Credentials, endpoint and volume size for downloading model_uri.",
    )
    rollout: Rollout = Field(
        default_factory=Rollout,  # type: ignore[arg-type]
        description="How a new model_version is rolled out: a rolling update, or canary steps "
        "judged on live metrics with automatic rollback.",
    )
    llm: LLMSettings | None = Field(
        None,
        description="vLLM settings for model_type llm (context length, dtype, GPU memory share, "
        "extra arguments, start-up budget). Only with model_type llm.",
    )
    autoscaling: Autoscaling | None = Field(
        None,
        description="Autoscale the model server (see the documentation's Autoscaling page). While "
        "set, replicas and `kubectl scale` only give the starting size: the autoscaler owns the "
        "replica count. Unset: no autoscaling, replicas applies.",
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="self.model_type != 'custom' || has(self.image)",
            message="image is required when model_type is custom",
            holds=lambda s: s.model_type != ModelType.custom or s.image is not None,
            field_path=".image",
            reason="FieldValueRequired",
        ),
        Rule(
            cel="self.model_type != 'huggingface' || has(self.model_uri)",
            message="model_uri is required when model_type is huggingface: the Hugging Face "
            "server's image holds no model (hf://<repo> or a storage URI)",
            holds=lambda s: s.model_type != ModelType.huggingface or s.model_uri is not None,
            field_path=".model_uri",
            reason="FieldValueRequired",
        ),
        Rule(
            cel="self.model_type != 'llm' || has(self.model_uri)",
            message="model_uri is required when model_type is llm: vLLM's image holds no model "
            "(hf://<org>/<name>, pvc://<claim>/<path> or a storage URI)",
            holds=lambda s: s.model_type != ModelType.llm or s.model_uri is not None,
            field_path=".model_uri",
            reason="FieldValueRequired",
        ),
        Rule(
            cel="!has(self.llm) || self.model_type == 'llm'",
            message="llm is only for model_type llm",
            holds=lambda s: s.llm is None or s.model_type == ModelType.llm,
            field_path=".llm",
            reason="FieldValueForbidden",
        ),
        *(
            Rule(
                cel=f"self.model_type == 'llm' || !has(self.rollout.analysis) || "
                f"!has(self.rollout.analysis.{gate})",
                message=f"rollout.analysis.{gate} is only for model_type llm: other models "
                "answer in one piece, not token by token",
                holds=lambda s, gate=gate: (
                    s.model_type == ModelType.llm or getattr(s.rollout.analysis, gate) is None
                ),
                field_path=f".rollout.analysis.{gate}",
                reason="FieldValueForbidden",
            )
            for gate in (
                "max_p99_time_to_first_token_seconds",
                "max_p99_inter_token_latency_seconds",
            )
        ),
        Rule(
            cel="!has(self.autoscaling) || !has(self.autoscaling.metric) || "
            "self.autoscaling.metric != 'queue' || self.model_type == 'llm'",
            message="autoscaling.metric queue is only for model_type llm: it is vLLM's "
            "vllm:num_requests_waiting",
            holds=lambda s: (
                s.autoscaling is None
                or s.autoscaling.metric != AutoscalingMetric.queue
                or s.model_type == ModelType.llm
            ),
            field_path=".autoscaling.metric",
            reason="FieldValueInvalid",
        ),
        Rule(
            cel="!has(self.port) || self.model_type == 'custom'",
            message="port is only for model_type custom; built-in runtimes use their own port",
            holds=lambda s: s.port is None or s.model_type == ModelType.custom,
            field_path=".port",
            reason="FieldValueForbidden",
        ),
        Rule(
            cel=f"!has(self.port) || !(self.port in {_SIDECAR_PORTS})",
            message=f"port must not be {SIDECAR_PROXY_PORT} or {SIDECAR_METRICS_PORT}: "
            "the monitoring sidecar listens there",
            holds=lambda s: s.port not in (SIDECAR_PROXY_PORT, SIDECAR_METRICS_PORT),
            field_path=".port",
            reason="FieldValueInvalid",
        ),
        Rule(
            cel=f"!has(self.port) || !has(self.monitoring.ground_truth) || self.port < "
            f"{FEEDBACK_PORTS.start} || self.port >= {FEEDBACK_PORTS.stop}",
            message=f"port must not be in {FEEDBACK_PORTS.start}-{FEEDBACK_PORTS.stop - 1} with "
            "monitoring.ground_truth: the monitoring sidecar takes feedback there",
            holds=lambda s: (
                s.port is None or s.monitoring.ground_truth is None or s.port not in FEEDBACK_PORTS
            ),
            field_path=".port",
            reason="FieldValueInvalid",
        ),
        Rule(
            cel="!has(self.storage.endpoint_url) || "
            "(has(self.model_uri) && self.model_uri.startsWith('s3://'))",
            message="storage.endpoint_url is only for an s3:// model_uri",
            holds=lambda s: (
                s.storage.endpoint_url is None or (s.model_uri or "").startswith("s3://")
            ),
            field_path=".storage.endpoint_url",
            reason="FieldValueForbidden",
        ),
        Rule(
            cel=f"!has(self.storage.secret_name) || ({FETCHED_URI_CEL})",
            message="storage.secret_name is only for a model_uri the storage initializer "
            "downloads (s3://, gs://, https://, hf://)",
            holds=lambda s: s.storage.secret_name is None or is_fetched(s.model_uri),
            field_path=".storage.secret_name",
            reason="FieldValueForbidden",
        ),
        Rule(
            cel=f"!has(self.storage.service_account_name) || ({FETCHED_URI_CEL})",
            message="storage.service_account_name is only for a model_uri the storage "
            "initializer downloads (s3://, gs://, https://, hf://)",
            holds=lambda s: s.storage.service_account_name is None or is_fetched(s.model_uri),
            field_path=".storage.service_account_name",
            reason="FieldValueForbidden",
        ),
        *(
            Rule(
                cel=f"!has(self.rollout.analysis) || !has(self.rollout.analysis.{gate}) || "
                "(has(self.monitoring.ground_truth) && "
                "self.monitoring.ground_truth.task == 'classification')",
                message=f"rollout.analysis.{gate} needs monitoring.ground_truth with task "
                "classification: accuracy is counted from labelled predictions",
                holds=lambda s, gate=gate: (
                    getattr(s.rollout.analysis, gate) is None
                    or (
                        s.monitoring.ground_truth is not None
                        and s.monitoring.ground_truth.task == GroundTruthTask.classification
                    )
                ),
                field_path=f".rollout.analysis.{gate}",
                reason="FieldValueInvalid",
            )
            for gate in ("min_accuracy", "max_accuracy_drop")
        ),
        Rule(
            cel="self.rollout.strategy != 'canary' || "
            "self.monitoring.performance_tracking == 'enabled'",
            message="rollout.strategy canary needs monitoring.performance_tracking enabled: "
            "each step is judged on the sidecar's request metrics",
            holds=lambda s: (
                s.rollout.strategy != RolloutStrategy.canary
                or s.monitoring.performance_tracking == PerformanceTracking.enabled
            ),
            field_path=".rollout.strategy",
            reason="FieldValueInvalid",
        ),
        Rule(
            cel="!has(self.autoscaling) || !has(self.autoscaling.metric) || "
            f"!(self.autoscaling.metric in {list(TRAFFIC_METRICS)!r}) || "
            "self.monitoring.performance_tracking == 'enabled'",
            message="autoscaling.metric concurrency or rps needs monitoring.performance_tracking "
            "enabled: the monitoring sidecar measures the requests",
            holds=lambda s: (
                s.autoscaling is None
                or s.autoscaling.metric not in TRAFFIC_METRICS
                or s.monitoring.performance_tracking == PerformanceTracking.enabled
            ),
            field_path=".autoscaling.metric",
            reason="FieldValueInvalid",
        ),
        Rule(
            cel="!has(self.autoscaling) || !has(self.autoscaling.metric) || "
            "self.autoscaling.metric != 'gpu_utilization' || "
            "self.computational_resources.gpu_allocation > 0",
            message="autoscaling.metric gpu_utilization needs "
            "computational_resources.gpu_allocation > 0",
            holds=lambda s: (
                s.autoscaling is None
                or s.autoscaling.metric != AutoscalingMetric.gpu_utilization
                or s.computational_resources.gpu_allocation > 0
            ),
            field_path=".autoscaling.metric",
            reason="FieldValueInvalid",
        ),
        Rule(
            cel="!has(self.autoscaling) || !has(self.autoscaling.metric) || "
            "self.autoscaling.metric != 'cpu' || has(self.computational_resources.cpu) || "
            "self.computational_resources.gpu_allocation > 0",
            message="autoscaling.metric cpu needs a CPU request: set computational_resources.cpu "
            "(utilization is a percent of the request)",
            holds=lambda s: (
                s.autoscaling is None
                or s.autoscaling.metric != AutoscalingMetric.cpu
                or s.computational_resources.cpu is not None
                or s.computational_resources.gpu_allocation > 0
            ),
            field_path=".autoscaling.metric",
            reason="FieldValueInvalid",
        ),
    )


def model_size_limit(spec: MLModelDeploymentSpec) -> int:
    """Bytes the model volume may hold: storage.size_limit, or the default for the model type."""
    if spec.storage.size_limit is not None:
        return parse_memory(spec.storage.size_limit)
    llm = spec.model_type == ModelType.llm
    return parse_memory(DEFAULT_LLM_SIZE_LIMIT if llm else DEFAULT_MODEL_SIZE_LIMIT)


# --- status -------------------------------------------------------------------------------------


class Phase(StrEnum):
    Pending = "Pending"
    Progressing = "Progressing"
    Ready = "Ready"
    Degraded = "Degraded"
    Failed = "Failed"


class Condition(BaseModel):
    """A Kubernetes-style condition (metav1.Condition)."""

    model_config = ConfigDict(populate_by_name=True)

    type: str = Field(description="Condition type: Ready, Progressing, Available, Scheduled, ...")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase reason for the last transition.")
    message: str = Field("", description="Human-readable details.")
    last_transition_time: str = Field(
        alias="lastTransitionTime",
        description="When status last changed (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
    observed_generation: int | None = Field(
        None, alias="observedGeneration", description="Generation the condition was computed for."
    )


class RolloutPhase(StrEnum):
    Idle = "Idle"
    Progressing = "Progressing"
    Paused = "Paused"
    Promoting = "Promoting"
    Promoted = "Promoted"
    RolledBack = "RolledBack"


class AnalysisResult(StrEnum):
    Pass = "Pass"
    Fail = "Fail"
    Inconclusive = "Inconclusive"


class AnalysisRecord(BaseModel):
    """The last judgement of a canary step."""

    model_config = ConfigDict(populate_by_name=True)

    result: AnalysisResult = Field(description="Pass, Fail or Inconclusive.")
    requests: float | None = Field(None, description="The new version's requests in the window.")
    error_ratio: float | None = Field(
        None, alias="errorRatio", description="Share of them answered 5xx."
    )
    p99_latency_seconds: float | None = Field(
        None, alias="p99LatencySeconds", description="Their 99th percentile latency."
    )
    drift: bool | None = Field(None, description="Whether its drift detector reported drift.")
    p99_time_to_first_token_seconds: float | None = Field(
        None,
        alias="p99TimeToFirstTokenSeconds",
        description="model_type llm: the 99th percentile time to first token of its streams.",
    )
    p99_inter_token_latency_seconds: float | None = Field(
        None,
        alias="p99InterTokenLatencySeconds",
        description="model_type llm: the 99th percentile time between tokens of its streams.",
    )
    accuracy: float | None = Field(
        None, description="Share of the new version's labelled predictions that were right."
    )
    labels: float | None = Field(
        None, description="The new version's predictions labelled in the window."
    )
    stable_accuracy: float | None = Field(
        None, alias="stableAccuracy", description="The stable version's accuracy, same window."
    )
    message: str = Field("", description="Why this result, with the stable version's figures.")
    time: str = Field(description="When it was judged (RFC 3339).")


class RolloutStatus(BaseModel):
    """Where a canary rollout stands."""

    model_config = ConfigDict(populate_by_name=True)

    phase: RolloutPhase = Field(
        description="Idle, Progressing, Paused (Inconclusive analysis), Promoting, Promoted or "
        "RolledBack."
    )
    stable_version: str | None = Field(
        None, alias="stableVersion", description="model_version of the stable pods."
    )
    canary_version: str | None = Field(
        None, alias="canaryVersion", description="model_version of the canary pods."
    )
    canary_revision: str | None = Field(
        None, alias="canaryRevision", description="Pod-template hash of the canary."
    )
    step: int | None = Field(None, description="Current step, counted from 1.")
    weight: int | None = Field(None, description="Percent of traffic on the canary.")
    step_started_at: str | None = Field(
        None,
        alias="stepStartedAt",
        description="When the current step's canary was ready and its window began.",
    )
    last_analysis: AnalysisRecord | None = Field(None, alias="lastAnalysis")
    message: str | None = Field(None, description="What the rollout is doing or waiting for.")


class Revision(BaseModel):
    """One revision of the model pods and how it ended."""

    model_config = ConfigDict(populate_by_name=True)

    version: str | None = Field(None, description="model_version of the revision.")
    pod_template_hash: str = Field(
        alias="podTemplateHash", description="Hash of the revision's pod template."
    )
    outcome: str = Field(
        description="Deployed (rolling update), Promoted, RolledBack, Aborted or Superseded."
    )
    time: str = Field(description="When the outcome was reached (RFC 3339).")


MAX_HISTORY = 10


class MLModelDeploymentStatus(BaseModel):
    """The observed state, written only by the operator."""

    model_config = ConfigDict(populate_by_name=True)

    observed_generation: int | None = Field(
        None, alias="observedGeneration", description="Generation of the spec last reconciled."
    )
    phase: Phase | None = Field(
        None, description="Pending, Progressing, Ready, Degraded or Failed."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, Progressing, Available, Scheduled, MonitoringReady, (with "
        "spec.autoscaling) Scaling and (with spec.monitoring.payload_logging) PayloadLogging "
        "conditions.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    replicas: StrictInt | None = Field(None, description="Model server pods that exist.")
    ready_replicas: StrictInt | None = Field(
        None, alias="readyReplicas", description="Pods that are ready to serve."
    )
    updated_replicas: StrictInt | None = Field(
        None, alias="updatedReplicas", description="Pods running the current spec."
    )
    ready: str | None = Field(None, description="readyReplicas/replicas, for display.")
    selector: str | None = Field(
        None, description="Label selector of the model pods (for the scale subresource)."
    )
    endpoint: str | None = Field(None, description="In-cluster URL of the inference Service.")
    model_version: str | None = Field(
        None, alias="modelVersion", description="model_version of the pods that are serving."
    )
    message: str | None = Field(None, description="Summary of the current state.")
    waking_since: str | None = Field(
        None,
        alias="wakingSince",
        description="While the model wakes from zero: when the activator woke it (RFC 3339).",
    )
    rollout: RolloutStatus | None = Field(None, description="The canary rollout, if any.")
    history: list[Revision] = Field(
        default_factory=list,
        max_length=MAX_HISTORY,
        description=f"The last {MAX_HISTORY} revisions, newest first.",
    )


class MLModelDeployment(BaseModel):
    """A model served by a Deployment with a monitoring sidecar, behind a Service."""

    model_config = ConfigDict(populate_by_name=True)

    api_version: Literal["machine-learning.org/v1"] = Field(alias="apiVersion")
    kind: Literal["MLModelDeployment"]
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: MLModelDeploymentSpec
    status: MLModelDeploymentStatus | None = None
