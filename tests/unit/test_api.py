import re

import pytest
from pydantic import ValidationError

from cases import (
    BAD_MANIFESTS,
    MEMORY_BAD,
    MEMORY_GOOD,
    STRING_CASES,
    founding_manifest,
    manifest,
    string_case_manifest,
)
from mlmodel_operator import api, crdgen


def crd_spec_schema() -> dict:
    return crdgen.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
        "spec"
    ]


@pytest.mark.parametrize(("text", "expected"), MEMORY_GOOD.items())
def test_parse_memory_good(text: str, expected: int) -> None:
    assert api.parse_memory(text) == expected


@pytest.mark.parametrize("text", MEMORY_BAD)
def test_parse_memory_bad(text: str) -> None:
    with pytest.raises(ValueError, match="not a memory quantity"):
        api.parse_memory(text)


@pytest.mark.parametrize("text", [*MEMORY_GOOD, *MEMORY_BAD])
def test_crd_memory_pattern_agrees_with_parser(text: str) -> None:
    pattern = crd_spec_schema()["properties"]["computational_resources"]["properties"][
        "memory_requirements"
    ]["pattern"]
    assert (re.search(pattern, text) is not None) == (text in MEMORY_GOOD)


def schema_at(path: str) -> dict:
    """The CRD schema of the dotted spec `path`."""
    node = crd_spec_schema()
    for key in path.split("."):
        node = node["properties"][key]
    return node


@pytest.mark.parametrize(
    ("path", "value", "valid"),
    [case[1:] for case in STRING_CASES],
    ids=[case[0] for case in STRING_CASES],
)
def test_string_fields_pydantic_and_crd_pattern_agree(path: str, value: str, valid: bool) -> None:
    assert (re.search(schema_at(path)["pattern"], value) is not None) == valid
    body = string_case_manifest(path, value)
    if valid:
        api.MLModelDeploymentSpec.model_validate(body["spec"])
    else:
        with pytest.raises(ValidationError, match=path.rsplit(".", 1)[-1]):
            api.MLModelDeploymentSpec.model_validate(body["spec"])


@pytest.mark.parametrize(
    ("num_bytes", "quantity"),
    [
        (64 * 10**9, "64G"),
        (3 * 2**29, "1536Mi"),
        (64 * 2**30, "64Gi"),
        (1000, "1k"),
        (1001, "1001"),
    ],
)
def test_format_memory(num_bytes: int, quantity: str) -> None:
    assert api.format_memory(num_bytes) == quantity


def test_founding_manifest_parses_with_defaults() -> None:
    model = api.MLModelDeployment.model_validate(founding_manifest())
    spec = model.spec
    assert spec.model_type == "neural_network"
    assert spec.replicas == 1
    assert spec.computational_resources.gpu_allocation == 4
    assert spec.computational_resources.gpu_resource == "nvidia.com/gpu"
    assert spec.computational_resources.memory_bytes == 64 * 10**9
    assert spec.monitoring.performance_tracking == "enabled"
    assert spec.monitoring.drift_detection == "active"
    assert spec.monitoring.drift.window_size == 1000


def test_minimal_spec_gets_defaults() -> None:
    spec = api.MLModelDeploymentSpec.model_validate({"model_type": "sklearn"})
    assert spec.computational_resources.gpu_allocation == 0
    assert spec.computational_resources.memory_requirements == "2Gi"
    assert spec.monitoring.drift_detection == "inactive"


@pytest.mark.parametrize(
    ("case", "body", "field"), BAD_MANIFESTS, ids=[c[0] for c in BAD_MANIFESTS]
)
def test_bad_manifests_are_refused_naming_the_field(case: str, body: dict, field: str) -> None:
    with pytest.raises(ValidationError) as err:
        api.MLModelDeployment.model_validate(body)
    named = set()
    for error in err.value.errors():
        path = ".".join(str(part) for part in error["loc"])
        named.add(path)
        # A cross-field rule is reported at its object and names the field first in its message.
        named.add(f"{path}.{error['msg'].removeprefix('Value error, ').split()[0]}")
    assert field in named, named


def test_custom_model_with_image_and_port_is_accepted() -> None:
    body = manifest(model_type="custom", image="ghcr.io/acme/model:1.0", port=9000)
    assert api.MLModelDeployment.model_validate(body).spec.port == 9000


def test_gpu_type_with_gpus_is_accepted() -> None:
    body = manifest(
        model_type="pytorch",
        computational_resources={"gpu_allocation": 1, "gpu_type": "NVIDIA-H100-80GB-HBM3"},
    )
    assert api.MLModelDeployment.model_validate(body).spec.computational_resources.gpu_type


def test_every_rule_is_in_the_crd_with_its_message() -> None:
    crd_rules = []

    def collect(schema: dict) -> None:
        crd_rules.extend(schema.get("x-kubernetes-validations", []))
        for prop in schema.get("properties", {}).values():
            collect(prop)

    collect(crd_spec_schema())
    model_rules = [
        rule.to_openapi() for model in api.CRDModel.__subclasses__() for rule in model.rules
    ]
    by_rule = lambda r: r["rule"]  # noqa: E731
    assert sorted(crd_rules, key=by_rule) == sorted(model_rules, key=by_rule)


def test_autoscaling_is_optional_with_defaults() -> None:
    plain = api.MLModelDeployment.model_validate(manifest(model_type="sklearn"))
    assert plain.spec.autoscaling is None
    scaling = api.MLModelDeployment.model_validate(
        manifest(model_type="sklearn", autoscaling={"max_replicas": 8, "target": 4})
    ).spec.autoscaling
    assert scaling is not None
    assert (scaling.min_replicas, scaling.metric, scaling.scale_down_delay_seconds) == (
        1,
        "concurrency",
        300,
    )


def test_autoscaling_to_zero_is_admitted() -> None:
    # Whether KEDA is installed is known only to the operator, which says so in status.
    scaling = {"min_replicas": 0, "max_replicas": 2, "target": 1.5}
    body = manifest(model_type="sklearn", autoscaling=scaling)
    assert api.MLModelDeployment.model_validate(body).spec.autoscaling.min_replicas == 0
