"""The model pods' NetworkPolicy: who may reach the inference port and the metrics port.

The ports are the Service's target ports, so the policy opens exactly what the Service serves:
the sidecar's ports when it runs, else the model server's. Traffic inside the pod (the sidecar
calling the model server on loopback) is not subject to NetworkPolicy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlmodel_operator import api
from mlmodel_operator.builders.meta import Owner, object_meta, selector_labels


@dataclass(frozen=True)
class NetworkPolicySettings:
    """Labels that admit traffic, installation-wide."""

    # Namespaces, or pods in the model's own namespace, with these labels may call the model.
    clients: dict[str, str]
    # Pods in namespaces with these labels (the Prometheus scraper's) may read the metrics.
    scrapers: dict[str, str]


def _target_port(service: dict[str, Any], name: str) -> str | None:
    return next((p["targetPort"] for p in service["spec"]["ports"] if p["name"] == name), None)


def build_network_policy(
    owner: Owner,
    spec: api.MLModelDeploymentSpec,
    service: dict[str, Any],
    settings: NetworkPolicySettings,
    feedback_ports: range | None = None,
) -> dict[str, Any]:
    ingress: list[dict[str, Any]] = [
        {
            "from": [
                {"namespaceSelector": {"matchLabels": settings.clients}},
                {"podSelector": {"matchLabels": settings.clients}},
            ],
            "ports": [{"protocol": "TCP", "port": _target_port(service, "http")}],
        }
    ]
    if feedback_ports is not None:
        # Feedback sent on between the model's own pods (monitor/feedback_service.py).
        ingress.append(
            {
                "from": [{"podSelector": {"matchLabels": selector_labels(owner)}}],
                "ports": [
                    {
                        "protocol": "TCP",
                        "port": feedback_ports.start,
                        "endPort": feedback_ports.stop - 1,
                    }
                ],
            }
        )
    if metrics := _target_port(service, "metrics"):
        ingress.append(
            {
                "from": [{"namespaceSelector": {"matchLabels": settings.scrapers}}],
                "ports": [{"protocol": "TCP", "port": metrics}],
            }
        )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": object_meta(owner, spec, owner.name),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(owner)},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }
