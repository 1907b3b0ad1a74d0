"""Helpers of the real node's tests: namespaces whose pods it runs, pods that pass the restricted
Pod Security Standard, and the operator installed from the chart."""

from __future__ import annotations

import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client

from kube_helpers import TestCluster, create_namespace, wait_until

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "hack"))
import realnode  # noqa: E402  (hack/ is not a package)

NODE = realnode.NODE_NAME
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}


@dataclass
class InstalledOperator:
    release: str
    namespace: str
    models: str  # the namespace it watches


def real_node_namespace(cluster: TestCluster, prefix: str) -> str:
    """A namespace whose every pod runs on the real node (a node selector and a toleration by
    admission), under the restricted Pod Security Standard."""
    name = create_namespace(cluster.api, f"{prefix}-{uuid.uuid4().hex[:6]}", RESTRICTED)
    client.CoreV1Api(cluster.api).patch_namespace(
        name, {"metadata": {"annotations": realnode.namespace_annotations()}}
    )
    return name


def restricted_pod(
    name: str, image: str, command: list[str], uid: int = 1000, **spec: Any
) -> dict[str, Any]:
    """A pod of one container that runs `command` once, admitted under restricted."""
    container = {
        "name": "main",
        "image": image,
        "imagePullPolicy": "Never",
        "command": command,
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        **spec.pop("container", {}),
    }
    security = {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": security,
            "containers": [container],
            **spec,
        },
    }


def wait_for_pod_phase(cluster: TestCluster, namespace: str, name: str, phase: str) -> None:
    core = client.CoreV1Api(cluster.api)

    def reached() -> bool:
        current = core.read_namespaced_pod(name, namespace).status.phase
        if current == "Failed" and phase != "Failed":
            logs = core.read_namespaced_pod_log(name, namespace)
            raise AssertionError(f"pod {namespace}/{name} failed:\n{logs}")
        return current == phase

    wait_until(reached, what=f"pod {namespace}/{name} to reach {phase}", timeout=180)
