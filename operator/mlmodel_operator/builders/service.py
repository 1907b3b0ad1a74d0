"""The inference Service: through the sidecar when there is one, else to the model server."""

from __future__ import annotations

from typing import Any

from mlmodel_operator import api
from mlmodel_operator.builders.meta import Owner, object_meta, selector_labels
from mlmodel_operator.runtimes import Runtime

HTTP_PORT = 80


def build_service(
    owner: Owner, spec: api.MLModelDeploymentSpec, runtime: Runtime, *, monitored: bool
) -> dict[str, Any]:
    ports = [
        {
            "name": "http",
            "port": HTTP_PORT,
            "targetPort": "http" if monitored else "model-http",
            "protocol": "TCP",
        }
    ]
    if monitored:
        ports.append(
            {
                "name": "metrics",
                "port": api.SIDECAR_METRICS_PORT,
                "targetPort": "metrics",
                "protocol": "TCP",
            }
        )
    elif runtime.metrics_port:
        ports.append(
            {
                "name": "metrics",
                "port": runtime.metrics_port,
                "targetPort": "model-metrics",
                "protocol": "TCP",
            }
        )
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(owner, spec, owner.name),
        "spec": {"type": "ClusterIP", "selector": selector_labels(owner), "ports": ports},
    }


def endpoint(owner: Owner) -> str:
    return f"http://{owner.name}.{owner.namespace}.svc.cluster.local"


def build_peers_service(
    owner: Owner, spec: api.MLModelDeploymentSpec, name: str, port: int
) -> dict[str, Any]:
    """A headless Service resolving to every pod of the model, ready or not, of every version:
    a sidecar sends feedback on only to the addresses it resolves to."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(owner, spec, name),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector_labels(owner),
            "ports": [{"name": "feedback", "port": port, "targetPort": port, "protocol": "TCP"}],
        },
    }
