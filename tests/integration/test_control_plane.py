"""The local control plane is a real one: controllers roll out, the scheduler schedules GPUs,
the garbage collector collects, and RBAC, ServiceAccount tokens and Pod Security are enforced."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from kube_helpers import TestCluster, wait_until

PAUSE = "registry.k8s.io/pause:3.10"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def gpu_pod(name: str, gpus: int) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "tolerations": [GPU_TOLERATION],
            "containers": [
                {
                    "name": "model",
                    "image": PAUSE,
                    "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
                }
            ],
        },
    }


def pod_condition(pod: client.V1Pod, type_: str) -> client.V1PodCondition | None:
    return next((c for c in pod.status.conditions or [] if c.type == type_), None)


def test_api_server_reports_the_pinned_version(cluster: TestCluster) -> None:
    version = client.VersionApi(cluster.api).get_code()
    assert version.git_version == "v1.36.3"


def test_nodes_cpu_and_gpu_are_ready(cluster: TestCluster) -> None:
    nodes = client.CoreV1Api(cluster.api).list_node().items
    ready = {
        n.metadata.name
        for n in nodes
        if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions)
    }
    gpu = [n for n in nodes if n.status.allocatable.get("nvidia.com/gpu") == "8"]
    cpu = [n for n in nodes if "nvidia.com/gpu" not in n.status.allocatable]
    assert len(gpu) >= 2 and len(cpu) >= 2
    assert {n.metadata.name for n in nodes} <= ready
    for node in gpu:
        assert node.metadata.labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
        assert any(t.key == "nvidia.com/gpu" and t.effect == "NoSchedule" for t in node.spec.taints)


def test_deployment_rolls_out_and_is_garbage_collected(
    cluster: TestCluster, namespace: str
) -> None:
    apps, core = client.AppsV1Api(cluster.api), client.CoreV1Api(cluster.api)
    labels = {"app": "smoke"}
    apps.create_namespaced_deployment(
        namespace,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "smoke"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "c", "image": PAUSE}]},
                },
            },
        },
    )

    def available() -> bool:
        status = apps.read_namespaced_deployment_status("smoke", namespace).status
        return status.available_replicas == 2 and any(
            c.type == "Available" and c.status == "True" for c in status.conditions or []
        )

    wait_until(available, what="the Deployment to become Available")
    pods = core.list_namespaced_pod(namespace, label_selector="app=smoke").items
    assert len(pods) == 2
    assert all(p.status.phase == "Running" and p.spec.node_name for p in pods)

    apps.delete_namespaced_deployment("smoke", namespace, propagation_policy="Background")
    wait_until(
        lambda: (
            not apps.list_namespaced_replica_set(namespace).items
            and not core.list_namespaced_pod(namespace).items
        ),
        what="the ReplicaSet and Pods to be garbage-collected",
    )


def test_gpu_pod_lands_on_a_gpu_node(cluster: TestCluster, namespace: str) -> None:
    core = client.CoreV1Api(cluster.api)
    core.create_namespaced_pod(namespace, gpu_pod("four-gpus", 4))
    pod = wait_until(
        lambda: (
            (p := core.read_namespaced_pod("four-gpus", namespace)).status.phase == "Running" and p
        ),
        what="the 4-GPU pod to run",
    )
    node = core.read_node(pod.spec.node_name)
    assert node.status.allocatable["nvidia.com/gpu"] == "8"


def test_unsatisfiable_gpu_request_is_unschedulable(cluster: TestCluster, namespace: str) -> None:
    core = client.CoreV1Api(cluster.api)
    core.create_namespaced_pod(namespace, gpu_pod("sixteen-gpus", 16))
    condition = wait_until(
        lambda: pod_condition(core.read_namespaced_pod("sixteen-gpus", namespace), "PodScheduled"),
        what="the scheduler's verdict on the 16-GPU pod",
    )
    assert condition.status == "False"
    assert condition.reason == "Unschedulable"
    assert "Insufficient nvidia.com/gpu" in condition.message
    assert core.read_namespaced_pod("sixteen-gpus", namespace).status.phase == "Pending"


def test_rbac_and_service_account_tokens_are_enforced(
    cluster: TestCluster, namespace: str, tmp_path: Path
) -> None:
    client.CoreV1Api(cluster.api).create_namespaced_service_account(
        namespace, {"metadata": {"name": "nobody"}}
    )
    token = cluster.kubectl("create", "token", "nobody", "-n", namespace).stdout.strip()
    assert token.count(".") == 2  # a signed JWT

    as_nobody = cluster.token_kubeconfig(token, tmp_path / "nobody.kubeconfig")
    whoami = cluster.kubectl("auth", "whoami", "-o", "json", kubeconfig=as_nobody)
    user = json.loads(whoami.stdout)["status"]["userInfo"]["username"]
    assert user == f"system:serviceaccount:{namespace}:nobody"

    denied = cluster.kubectl("get", "pods", "-n", namespace, kubeconfig=as_nobody, check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()


@pytest.mark.parametrize("compliant", [False, True])
def test_pod_security_restricted_is_enforced(
    cluster: TestCluster, namespace: str, compliant: bool
) -> None:
    core = client.CoreV1Api(cluster.api)
    core.patch_namespace(
        namespace,
        {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}},
    )
    restricted = {
        "allowPrivilegeEscalation": False,
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "psa"},
        "spec": {
            "containers": [
                {"name": "c", "image": PAUSE, "securityContext": restricted if compliant else {}}
            ]
        },
    }
    if compliant:
        core.create_namespaced_pod(namespace, pod)
    else:
        with pytest.raises(ApiException) as err:
            core.create_namespaced_pod(namespace, pod)
        assert err.value.status == 403
        assert 'violates PodSecurity "restricted:latest"' in json.loads(err.value.body)["message"]
