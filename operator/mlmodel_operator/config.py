"""Operator configuration: environment variables (MLMODEL_*), overridden by command-line flags."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlmodel_operator import __version__

ENV_PREFIX = "MLMODEL_"
DEFAULT_IMAGE = f"ghcr.io/mlmodel-operator/mlmodel-operator:{__version__}"


# One or more label pairs, k=v[,k=v]: a label key (with an optional DNS prefix) and a label value.
_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
_LABEL = rf"([a-z0-9.-]+/)?{_NAME}=({_NAME})?"
_LABELS = f"^{_LABEL}(,{_LABEL})*$"


def parse_labels(text: str) -> dict[str, str]:
    """`k=v,k2=v2` (as checked by _LABELS) as a mapping."""
    return dict(item.split("=", 1) for item in text.split(","))


class OperatorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    namespaces: list[str] = Field(
        default_factory=list, description="namespaces to watch; empty watches all"
    )
    resync_seconds: float = Field(300.0, gt=0, description="periodic reconcile of every resource")
    workers: int = Field(8, ge=1, description="reconciles run at once (threads)")
    # Off by default, as in controller-runtime since v0.21: the API server protects itself with
    # API Priority and Fairness, and its 429s are retried with backoff.
    api_qps: float = Field(
        0.0, ge=0, description="client-side limit of API requests per second; 0: no limit"
    )
    api_burst: int = Field(
        0, ge=0, description="API requests allowed in a burst under --api-qps; 0: as many as qps"
    )
    runtime_catalog: Path | None = Field(None, description="YAML/JSON runtime overrides")
    monitor_image: str = Field(
        DEFAULT_IMAGE, description="image of the monitoring sidecar and the model fetcher"
    )
    # Longer than the model server's startup probe budget (builders/deployment.py): a large model
    # still loading is not yet a stalled rollout.
    progress_deadline_seconds: int = Field(1200, ge=10, description="Deployment progress deadline")
    network_policy: bool = Field(
        False,
        description="a NetworkPolicy per model: only labelled clients reach the model port, only "
        "the scraper's namespaces the metrics port (enforced only by a CNI that implements it)",
    )
    network_policy_clients: str = Field(
        "machine-learning.org/model-client=true",
        pattern=_LABELS,
        description="labels (k=v[,k=v]) of namespaces, or of pods in the model's namespace, that "
        "may call models",
    )
    network_policy_scrapers: str = Field(
        "kubernetes.io/metadata.name=monitoring",
        pattern=_LABELS,
        description="labels (k=v[,k=v]) of the namespaces whose pods may scrape model metrics",
    )
    prometheus_url: str | None = Field(
        None,
        pattern=r"^https?://[^\s]+$",
        description="Prometheus HTTP API (http://host:9090) that scrapes the model sidecars: "
        "canary analysis queries it, KEDA triggers point at it",
    )
    activator: bool = Field(
        False,
        description="the activator (chart value activator.enabled) runs in the cluster: models "
        "with min_replicas 0 scale to zero and wake on a request without KEDA",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    metrics_port: int = Field(8080, ge=0, le=65535, description="Prometheus metrics; 0 disables")
    health_port: int = Field(8081, ge=0, le=65535, description="liveness endpoint; 0 disables")
    peering: str | None = Field(
        None,
        description="kopf peering object to coordinate replicas through (only one is active); "
        "unset runs standalone",
    )
    peering_priority: int | None = Field(
        None,
        ge=0,
        description="priority among peers (the highest is active); unset picks one at random",
    )
    # The Helm chart creates its peering objects itself: were the operator to create one first
    # (its pod can start before Helm gets to that kind), `helm install` would fail on it.
    peering_create: bool = Field(
        True,
        description="create the peering objects that are missing; false waits for them",
    )


def _list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


# Fields whose environment variable or flag is not a plain string -> how to read them.
_PARSERS = {"namespaces": _list}


def from_env(environ: Mapping[str, str] | None = None) -> OperatorConfig:
    environ = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for name in OperatorConfig.model_fields:
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is not None:
            values[name] = _PARSERS.get(name, str)(raw)
    return OperatorConfig.model_validate(values)


def parse_args(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> OperatorConfig:
    """Flags win over MLMODEL_* environment variables, which win over defaults."""
    base = from_env(environ)
    parser = argparse.ArgumentParser(
        prog="mlmodel-operator",
        description="Kubernetes operator for MLModelDeployment resources.",
    )
    for name, field in OperatorConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        env = ENV_PREFIX + name.upper()
        parser.add_argument(
            flag,
            dest=name,
            type=_PARSERS.get(name, str),
            default=None,
            help=f"{field.description or name} (env {env}; default {getattr(base, name)!r})",
        )
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None}
    return OperatorConfig.model_validate({**base.model_dump(), **overrides})


def describe_invalid(err: ValidationError) -> str:
    """A configuration error as flags: `--metrics-port: Input should be a valid integer`."""
    return "; ".join(
        f"--{str(e['loc'][0]).replace('_', '-')}: {e['msg']}" if e["loc"] else e["msg"]
        for e in err.errors()
    )


_current: OperatorConfig | None = None


def current() -> OperatorConfig:
    """The configuration the running operator uses (from the environment unless set)."""
    global _current
    if _current is None:
        _current = from_env()
    return _current


def set_current(config: OperatorConfig) -> None:
    global _current
    _current = config
