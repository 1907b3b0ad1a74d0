"""The operator's monitoring set-up on a real API server: scrape annotations without the
Prometheus Operator, a ServiceMonitor and a PrometheusRule once its CRDs are installed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from cases import founding_manifest
from kube_helpers import TestCluster, installed_crds, open_crd, wait_until
from model_helpers import wait_for_reconciles

pytestmark = pytest.mark.usefixtures("operator")

GROUP, VERSION, PLURAL = "machine-learning.org", "v1", "mlmodeldeployments"
NAME = "predictive-analytics-system"


PROMETHEUS = "monitoring.coreos.com"
CRDS = [
    open_crd(PROMETHEUS, "v1", "ServiceMonitor", "servicemonitors"),
    open_crd(PROMETHEUS, "v1", "PrometheusRule", "prometheusrules"),
]


def monitoring_condition(custom: client.CustomObjectsApi, namespace: str) -> dict[str, Any]:
    obj = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, NAME)
    return next(
        (c for c in obj.get("status", {}).get("conditions", []) if c["type"] == "MonitoringReady"),
        {},
    )


@pytest.fixture
def prometheus_operator_crds(cluster: TestCluster) -> Iterator[None]:
    with installed_crds(cluster.api, CRDS):
        yield


def test_without_prometheus_operator_pods_carry_scrape_annotations(
    cluster: TestCluster, namespace: str
) -> None:
    custom = client.CustomObjectsApi(cluster.api)
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, founding_manifest())
    condition = wait_until(
        lambda: (
            monitoring_condition(custom, namespace).get("reason")
            and monitoring_condition(custom, namespace)
        ),
        what="MonitoringReady",
    )
    assert (condition["status"], condition["reason"]) == ("True", "ScrapeAnnotations")
    assert "first window of live traffic" in condition["message"]
    template = (
        client.AppsV1Api(cluster.api).read_namespaced_deployment(NAME, namespace).spec.template
    )
    assert template.metadata.annotations["prometheus.io/scrape"] == "true"
    assert template.metadata.annotations["prometheus.io/port"] == "9090"


def test_with_prometheus_operator_a_service_monitor_and_rules_are_created(
    cluster: TestCluster, namespace: str, prometheus_operator_crds: None
) -> None:
    custom = client.CustomObjectsApi(cluster.api)
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, founding_manifest())

    def service_monitor() -> dict[str, Any]:
        return custom.get_namespaced_custom_object(
            "monitoring.coreos.com", "v1", namespace, "servicemonitors", NAME
        )

    monitor = wait_until(service_monitor, what="the ServiceMonitor", timeout=60)
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "30s"}
    ]
    assert monitor["metadata"]["ownerReferences"][0]["name"] == NAME
    # Applied after the ServiceMonitor, in the same reconcile: it may not be there yet.
    rule = wait_until(
        lambda: custom.get_namespaced_custom_object(
            "monitoring.coreos.com", "v1", namespace, "prometheusrules", NAME
        ),
        what="the PrometheusRule",
    )
    alerts = {r["alert"] for r in rule["spec"]["groups"][0]["rules"]}
    assert alerts == {
        "MLModelDriftDetected",
        "MLModelDriftWorkerStalled",
        "MLModelHighLatency",
        "MLModelHighErrorRatio",
    }
    condition = wait_until(
        lambda: (
            (c := monitoring_condition(custom, namespace)).get("reason") == "ServiceMonitorReady"
            and c
        ),
        what="MonitoringReady=ServiceMonitorReady",
    )
    assert condition["status"] == "True"

    # Monitoring switched off: the sidecar's objects go, the model keeps serving.
    custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        NAME,
        {
            "spec": {
                "monitoring": {"performance_tracking": "disabled", "drift_detection": "inactive"}
            }
        },
    )
    wait_until(
        lambda: (
            not custom.list_namespaced_custom_object(
                "monitoring.coreos.com", "v1", namespace, "servicemonitors"
            )["items"]
        ),
        what="the ServiceMonitor to be removed",
    )
    # The status is written after the deletes.
    wait_until(
        lambda: monitoring_condition(custom, namespace).get("reason") == "Disabled",
        what="MonitoringReady=Disabled",
    )


def test_a_users_service_monitor_and_rule_of_the_same_name_are_left_alone(
    cluster: TestCluster, namespace: str, prometheus_operator_crds: None
) -> None:
    # Monitoring off: the operator wants no ServiceMonitor or PrometheusRule named after the
    # model, and deletes its own; these are a user's.
    custom = client.CustomObjectsApi(cluster.api)
    mine = {}
    for kind, plural in (
        ("ServiceMonitor", "servicemonitors"),
        ("PrometheusRule", "prometheusrules"),
    ):
        body = {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": kind,
            "metadata": {"name": NAME},
            "spec": {"owner": "a user"},
        }
        created = custom.create_namespaced_custom_object(
            "monitoring.coreos.com", "v1", namespace, plural, body
        )
        mine[plural] = created["metadata"]["resourceVersion"]
    body = founding_manifest()
    body["spec"]["monitoring"] = {"performance_tracking": "disabled", "drift_detection": "inactive"}
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    wait_until(
        lambda: monitoring_condition(custom, namespace).get("reason") == "Disabled",
        what="MonitoringReady=Disabled",
    )
    wait_for_reconciles(2)

    for plural, resource_version in mine.items():
        kept = custom.get_namespaced_custom_object(
            "monitoring.coreos.com", "v1", namespace, plural, NAME
        )
        assert kept["metadata"]["resourceVersion"] == resource_version
