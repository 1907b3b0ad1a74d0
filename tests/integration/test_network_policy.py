"""--network-policy on the real API server: each model gets a NetworkPolicy that opens exactly
the Service's ports, to the labelled clients and the scraper's namespaces. (Enforcement needs a
CNI plugin that implements NetworkPolicy; the local control plane stores the objects.)"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from cases import founding_manifest
from kube_helpers import TestCluster, wait_until
from model_helpers import NAME, Models


@pytest.mark.operator_env(
    MLMODEL_NETWORK_POLICY="true", MLMODEL_NETWORK_POLICY_CLIENTS="team=fraud"
)
def test_each_model_gets_a_network_policy(
    cluster: TestCluster, namespace: str, operator: Any
) -> None:
    models = Models(cluster, namespace)
    created = models.create(founding_manifest())
    models.wait_ready()
    networking = client.NetworkingV1Api(cluster.api)
    policy = wait_until(
        lambda: networking.read_namespaced_network_policy(NAME, namespace),
        what="the NetworkPolicy",
    )
    assert policy.metadata.owner_references[0].uid == created["metadata"]["uid"]
    assert policy.spec.pod_selector.match_labels == models.deployment().spec.selector.match_labels
    clients, scrapers = policy.spec.ingress
    assert [p.port for p in clients.ports] == ["http"]
    assert clients._from[0].namespace_selector.match_labels == {"team": "fraud"}
    assert clients._from[1].pod_selector.match_labels == {"team": "fraud"}
    assert [p.port for p in scrapers.ports] == ["metrics"]
    assert scrapers._from[0].namespace_selector.match_labels == {
        "kubernetes.io/metadata.name": "monitoring"
    }
