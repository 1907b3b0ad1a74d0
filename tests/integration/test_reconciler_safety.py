"""The reconciler never touches what it does not control, applies any string the API server
admits, and reports at once what the Deployment controller cannot do (a quota)."""

from __future__ import annotations

import json

import pytest
from kubernetes import client

from cases import founding_manifest, manifest
from kube_helpers import TestCluster, wait_until
from model_helpers import NAME, Models, condition, wait_for_reconciles

pytestmark = pytest.mark.usefixtures("operator")

MONITORING_OFF = {"performance_tracking": "disabled", "drift_detection": "inactive"}
USERS_DATA = {"owner": "a user, not the operator"}


@pytest.fixture
def models(cluster: TestCluster, namespace: str) -> Models:
    return Models(cluster, namespace)


def users_configmap(models: Models, name: str) -> client.V1ConfigMap:
    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name), data=USERS_DATA)
    return models.core.create_namespaced_config_map(models.namespace, body)


def test_a_users_object_with_a_childs_name_is_never_deleted(models: Models) -> None:
    # With monitoring off the operator wants no `<name>-monitor` ConfigMap, and deletes its own.
    mine = users_configmap(models, f"{NAME}-monitor")
    body = founding_manifest()
    body["spec"]["monitoring"] = MONITORING_OFF
    models.create(body)
    models.wait_ready()
    wait_for_reconciles(2)  # resyncs too

    kept = models.core.read_namespaced_config_map(f"{NAME}-monitor", models.namespace)
    assert kept.metadata.uid == mine.metadata.uid
    assert kept.metadata.resource_version == mine.metadata.resource_version


def test_a_name_taken_by_a_users_object_is_reported_and_left_alone(models: Models) -> None:
    mine = users_configmap(models, f"{NAME}-monitor")
    models.create(founding_manifest())

    obj = models.wait_condition("Ready", reason="ReconcileError")
    message = condition(obj, "Ready")["message"]
    assert f"ConfigMap {NAME}-monitor exists and is not controlled by this" in message
    assert obj["status"]["phase"] == "Failed"
    kept = models.core.read_namespaced_config_map(f"{NAME}-monitor", models.namespace)
    assert (kept.metadata.resource_version, kept.data) == (
        mine.metadata.resource_version,
        USERS_DATA,
    )
    assert not kept.metadata.owner_references
    # The Deployment would mount that ConfigMap by name: it is not made until the name is free.
    assert not models.apps.list_namespaced_deployment(models.namespace).items

    models.core.delete_namespaced_config_map(f"{NAME}-monitor", models.namespace)
    models.wait_ready()
    ours = models.core.read_namespaced_config_map(f"{NAME}-monitor", models.namespace)
    assert ours.metadata.owner_references[0].uid == obj["metadata"]["uid"]


def test_any_string_the_api_server_admits_is_applied(models: Models) -> None:
    uri = "s3://models/fraud-\U0001f600/v1/"
    reference = "https://data.example.com/ref-\U0001f600-\u00e9-\x7f-\u200b.csv"
    body = manifest(
        NAME,
        model_type="sklearn",
        model_uri=uri,
        monitoring={"drift_detection": "active", "drift": {"reference_uri": reference}},
    )
    models.create(body)
    obj = models.wait_ready()

    assert "ReconcileError" not in str(obj["status"])
    # The storage initializer gets the URI to download as it is.
    assert models.deployment().spec.template.spec.init_containers[0].args[0] == uri
    data = models.core.read_namespaced_config_map(f"{NAME}-monitor", models.namespace).data
    assert json.loads(data["config.json"])["drift"]["reference_uri"] == reference


def test_a_quota_that_refuses_pods_is_reported_at_once(models: Models) -> None:
    quota = client.V1ResourceQuota(
        metadata=client.V1ObjectMeta(name="no-pods"),
        spec=client.V1ResourceQuotaSpec(hard={"pods": "0"}),
    )
    models.core.create_namespaced_resource_quota(models.namespace, quota)
    models.create(founding_manifest())

    obj = models.wait_condition("Ready", reason="FailedCreate")
    ready = condition(obj, "Ready")
    assert ready["status"] == "False"
    assert "exceeded quota: no-pods" in ready["message"]
    assert obj["status"]["phase"] == "Pending"  # waiting for the quota, which may be freed
    wait_until(lambda: "FailedCreate" in models.events(), what="a FailedCreate event")
