"""The pure parts of the apply helper: when the live object already matches."""

import json

import yaml

from mlmodel_operator.builders.meta import controller_uid
from mlmodel_operator.compare import HASH_ANNOTATION, covers, with_hash
from mlmodel_operator.kube import resource_path, yaml_body


def test_covers_ignores_fields_added_by_the_server() -> None:
    desired = {"spec": {"containers": [{"name": "a", "image": "x"}]}}
    live = {"spec": {"containers": [{"name": "a", "image": "x", "imagePullPolicy": "Always"}]}}
    assert covers(live, desired)


def test_covers_notices_changed_values_and_list_lengths() -> None:
    desired = {"spec": {"replicas": 1, "containers": [{"name": "a"}]}}
    assert not covers({"spec": {"replicas": 3, "containers": [{"name": "a"}]}}, desired)
    assert not covers(
        {"spec": {"replicas": 1, "containers": [{"name": "a"}, {"name": "b"}]}}, desired
    )
    assert not covers({"spec": {}}, desired)


def test_hash_changes_when_a_field_is_dropped() -> None:
    full = {"metadata": {"name": "x"}, "spec": {"a": 1, "b": 2}}
    smaller = {"metadata": {"name": "x"}, "spec": {"a": 1}}
    live = with_hash(full)
    assert covers(live, with_hash(full))
    # covers() alone would accept `smaller`; the hash annotation does not.
    assert not covers(live, with_hash(smaller))
    assert HASH_ANNOTATION in live["metadata"]["annotations"]


def test_resource_paths() -> None:
    assert resource_path("v1", "Service", "ns", "s") == "/api/v1/namespaces/ns/services/s"
    assert (
        resource_path("machine-learning.org/v1", "MLModelDeployment", "ns", "m", "status")
        == "/apis/machine-learning.org/v1/namespaces/ns/mlmodeldeployments/m/status"
    )


def test_empty_desired_lists_and_maps_match_their_absence() -> None:
    # The API server stores `args: []` as no args at all.
    assert covers({"name": "a"}, {"name": "a", "args": [], "env": {}})
    assert not covers({"name": "a"}, {"name": "a", "args": ["--x"]})


def test_yaml_body_reads_back_as_the_object_whatever_its_strings_hold() -> None:
    strings = [
        "s3://models/fraud-\U0001f600/v1/",  # beyond the Basic Multilingual Plane
        "\\ud83d\\ude00 as text",  # looks like an escape, is not one
        "\\\U0001f600",  # a backslash, then an emoji
        "\\\\\U0001f600",
        "caf\u00e9 \u2028 \x85 \x7f \x01 \ufeff \U0010ffff",  # not all printable YAML when raw
    ]
    obj = {"data": {str(i): s for i, s in enumerate(strings)}, "list": strings}
    body = yaml_body(obj)
    assert yaml.safe_load(body.decode("ascii")) == obj
    assert json.loads(yaml_body({"plain": "ascii"})) == {"plain": "ascii"}


def test_controller_uid_is_the_controlling_owner_reference() -> None:
    def obj(*refs: dict) -> dict:
        return {"metadata": {"ownerReferences": list(refs)}}

    assert controller_uid({"metadata": {}}) is None
    assert controller_uid(obj({"uid": "a"})) is None  # an owner, not a controller
    assert controller_uid(obj({"uid": "a"}, {"uid": "b", "controller": True})) == "b"
