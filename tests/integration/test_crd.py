"""The generated CRD on the real API server: the founding manifest is accepted verbatim with
defaults filled in, and bad input is refused by `kubectl apply` itself, naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from cases import (
    BAD_MANIFESTS,
    FOUNDING_MANIFEST,
    MEMORY_BAD,
    MEMORY_GOOD,
    STRING_CASES,
    founding_manifest,
    string_case_manifest,
    with_spec,
)
from kube_helpers import TestCluster

pytestmark = pytest.mark.usefixtures("crd")

GROUP, VERSION, PLURAL = "machine-learning.org", "v1", "mlmodeldeployments"


def test_founding_manifest_applies_verbatim_with_defaults(
    cluster: TestCluster, namespace: str
) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", str(FOUNDING_MANIFEST))
    stored = json.loads(
        cluster.kubectl(
            "get", "mlmd", "predictive-analytics-system", "-n", namespace, "-o", "json"
        ).stdout
    )
    spec = stored["spec"]
    assert spec["model_type"] == "neural_network"
    assert spec["replicas"] == 1
    resources = spec["computational_resources"]
    assert resources == {
        "gpu_allocation": 4,
        "memory_requirements": "64GB",
        "gpu_resource": "nvidia.com/gpu",
    }
    assert spec["monitoring"]["performance_tracking"] == "enabled"
    assert spec["monitoring"]["drift_detection"] == "active"
    assert spec["monitoring"]["drift"] == {
        "window_size": 1000,
        "check_interval_seconds": 60,
        "method": "ks",
        "p_value_threshold": 0.05,
        "effect_size_threshold": 0.1,
        "max_features": 64,
        "expected_samples_between_false_alarms": 10_000,
    }
    assert spec["monitoring"]["sidecar_cpu"] == "50m"


@pytest.mark.parametrize(
    ("case", "body", "field"), BAD_MANIFESTS, ids=[c[0] for c in BAD_MANIFESTS]
)
def test_bad_manifest_is_refused_naming_the_field(
    cluster: TestCluster, namespace: str, case: str, body: dict, field: str
) -> None:
    result = cluster.kubectl(
        "apply", "-n", namespace, "-f", "-", input=json.dumps(body), check=False
    )
    assert result.returncode != 0, f"{case} was accepted"
    assert field in result.stderr, result.stderr
    assert not cluster.kubectl("get", "mlmd", "-n", namespace, "-o", "name").stdout.strip()


def admitted(cluster: TestCluster, namespace: str, body: dict[str, Any], path: str) -> bool:
    """Whether the API server admits `body` (a dry run); a refusal must name spec.`path`."""
    try:
        client.CustomObjectsApi(cluster.api).create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, body, dry_run="All"
        )
        return True
    except ApiException as err:
        assert err.status == 422, err.body
        assert f"spec.{path}" in err.body, err.body
        return False


def test_memory_pattern_on_the_server_agrees_with_the_parser(
    cluster: TestCluster, namespace: str
) -> None:
    path = "computational_resources.memory_requirements"
    disagreements = [
        text
        for text in [*MEMORY_GOOD, *MEMORY_BAD]
        if admitted(cluster, namespace, with_spec(founding_manifest(), path, text), path)
        != (text in MEMORY_GOOD)
    ]
    assert not disagreements


def test_string_fields_on_the_server_agree_with_the_operator(
    cluster: TestCluster, namespace: str
) -> None:
    """Any string the API server admits, the operator's model accepts, and the other way round."""
    disagreements = [
        case
        for case, path, value, valid in STRING_CASES
        if admitted(cluster, namespace, string_case_manifest(path, value), path) != valid
    ]
    assert not disagreements


def test_kubectl_explain_shows_the_descriptions(cluster: TestCluster) -> None:
    out = cluster.kubectl("explain", "mlmodeldeployment.spec.computational_resources").stdout
    assert "Accelerators, memory and CPU for each replica." in out
    for field in ("gpu_allocation", "gpu_type", "gpu_resource", "memory_requirements", "cpu"):
        assert field in out
    assert "powers of 10" in out


def test_kubectl_get_shows_the_printer_columns(cluster: TestCluster, namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", str(FOUNDING_MANIFEST))
    header, row = cluster.kubectl("get", "mlmd", "-n", namespace).stdout.splitlines()
    assert header.split() == [
        "NAME", "MODEL", "GPUS", "MEMORY", "READY", "PHASE", "REASON", "WAKING", "AGE"
    ]  # fmt: skip
    assert row.split()[:4] == ["predictive-analytics-system", "neural_network", "4", "64GB"]
    wide = cluster.kubectl("get", "ml", "-n", namespace, "-o", "wide").stdout.splitlines()[0]
    assert {"VERSION", "ENDPOINT", "MESSAGE"} <= set(wide.split())


def test_scale_subresource(cluster: TestCluster, namespace: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", str(FOUNDING_MANIFEST))
    cluster.kubectl("scale", "mlmd/predictive-analytics-system", "-n", namespace, "--replicas=3")
    replicas = cluster.kubectl(
        "get",
        "mlmd",
        "predictive-analytics-system",
        "-n",
        namespace,
        "-o",
        "jsonpath={.spec.replicas}",
    ).stdout
    assert replicas == "3"
