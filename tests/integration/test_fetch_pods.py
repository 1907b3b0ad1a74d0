"""Model pods with the storage initializer, through the real API server and the operator: the
init container alone gets the credentials, the volume has its size limit, the model server reads
the fetched path, and the pods pass the restricted Pod Security Standard. (kwok runs no
container: the fetcher itself runs in tests/integration/test_fetch.py.)"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from kube_helpers import TestCluster, wait_until
from model_helpers import Models

pytestmark = pytest.mark.usefixtures("operator")

NAME = "iris"


def model(**storage: Any) -> dict[str, Any]:
    return {
        "apiVersion": "machine-learning.org/v1",
        "kind": "MLModelDeployment",
        "metadata": {"name": NAME},
        "spec": {
            "model_type": "sklearn",
            "model_uri": "s3://models/iris",
            "model_version": "v1",
            "storage": storage,
        },
    }


def test_credentials_reach_the_fetcher_alone(cluster: TestCluster, namespace: str) -> None:
    cluster.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted"
    )
    core = client.CoreV1Api(cluster.api)
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="s3-creds"),
            string_data={"AWS_ACCESS_KEY_ID": "reader", "AWS_SECRET_ACCESS_KEY": "secret"},
        ),
    )
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="model-reader"))
    )
    models = Models(cluster, namespace)
    models.create(
        model(
            secret_name="s3-creds",
            endpoint_url="http://minio.storage:9000",
            service_account_name="model-reader",
            size_limit="2Gi",
        )
    )
    models.wait_ready(NAME, timeout=90)

    # The pod as the API server admitted it (restricted, ServiceAccount admission applied).
    pods = core.list_namespaced_pod(namespace, label_selector=f"app.kubernetes.io/instance={NAME}")
    [pod] = [client.ApiClient().sanitize_for_serialization(p) for p in pods.items]
    spec = pod["spec"]
    [fetcher] = spec["initContainers"]
    assert fetcher["command"] == ["mlmodel-fetch"]
    assert fetcher["args"][:2] == ["s3://models/iris", "/mnt/models"]
    assert "--endpoint-url=http://minio.storage:9000" in fetcher["args"]
    assert fetcher["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert fetcher["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert spec["serviceAccountName"] == "model-reader"
    assert spec["automountServiceAccountToken"] is False
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["model-store"]["emptyDir"] == {"sizeLimit": "2Gi"}
    # No API token volume was injected: the one token is the projected one, for the fetcher.
    token_volumes = [name for name, v in volumes.items() if "projected" in v]
    assert token_volumes == ["fetch-token"]
    assert any(m["name"] == "fetch-token" for m in fetcher["volumeMounts"])
    for container in spec["containers"]:
        assert "envFrom" not in container
        assert all(m["name"] != "fetch-token" for m in container["volumeMounts"])
        assert not any(e["name"].startswith("AWS_") for e in container.get("env", []))
    server = spec["containers"][0]
    assert {"name": "MLSERVER_MODEL_URI", "value": "/mnt/models"} in server["env"]
    mount = next(m for m in server["volumeMounts"] if m["mountPath"] == "/mnt/models")
    assert (mount["name"], mount.get("readOnly")) == ("model-store", True)


def test_a_new_size_limit_rolls_the_pods(cluster: TestCluster, namespace: str) -> None:
    models = Models(cluster, namespace)
    models.create(model())
    models.wait_ready(NAME)
    models.patch_spec({"storage": {"size_limit": "500MB"}}, NAME)

    def volume_limit() -> str | None:
        template = models.deployment(NAME).spec.template.spec
        volume = next(v for v in template.volumes if v.name == "model-store")
        return volume.empty_dir.size_limit

    wait_until(lambda: volume_limit() == "500M", what="the new size limit in the Deployment")
    ready = models.wait_ready(NAME, timeout=90)
    assert ready["status"]["updatedReplicas"] == 1
