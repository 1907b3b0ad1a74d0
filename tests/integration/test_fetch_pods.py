"""Model pods with the storage initializer, through the real API server and the operator: the
init container alone gets the credentials, the volume has its size limit, the model server reads
the fetched path, the pods pass the restricted Pod Security Standard, and a failed fetch reaches
status. (kwok runs no container: the fetcher's downloads are tested in test_fetch_sources.py.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from kube_helpers import TestCluster, wait_until
from model_helpers import Models, condition
from procs import free_port

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


# kwok's pod-ready stage waits this many milliseconds before (re)making a pod ready.
KWOK_READY_DELAY = "pod-ready.stage.kwok.x-k8s.io/delay"


def test_a_failed_fetch_reaches_status_with_the_fetchers_line(
    cluster: TestCluster, namespace: str, tmp_path: Path
) -> None:
    """The init container of the pod the operator made is run here as a process (nothing
    listens at the model's URL), and its termination message written into the pod's status as
    a kubelet reports a failed init container in back-off: status must carry that line."""
    models = Models(cluster, namespace)
    body = model()
    body["spec"]["model_uri"] = f"https://127.0.0.1:{free_port()}/iris/model.pkl"
    models.create(body)
    models.wait_ready(NAME)
    core = client.CoreV1Api(cluster.api)
    selector = f"app.kubernetes.io/instance={NAME}"
    [pod] = core.list_namespaced_pod(namespace, label_selector=selector).items
    [fetcher] = pod.spec.init_containers

    volume, log = tmp_path / "models", tmp_path / "termination-log"
    volume.mkdir()
    argv = [str(Path(sys.executable).parent / fetcher.command[0])]
    argv += [str(volume) if a == "/mnt/models" else a for a in fetcher.args]
    # Its one variable is HOME, the /tmp volume: here a directory of the test's.
    assert [(e.name, e.value) for e in fetcher.env] == [("HOME", "/tmp")]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    run = subprocess.run(
        [*argv, f"--termination-log={log}"], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 1, run.stdout + run.stderr
    line = log.read_text().strip()
    assert line.startswith(f"{body['spec']['model_uri']}: ConnectionError: ")

    # Keep kwok from making the pod ready again, then report the failure as a kubelet does.
    core.patch_namespaced_pod(
        pod.metadata.name, namespace, {"metadata": {"annotations": {KWOK_READY_DELAY: "3600000"}}}
    )
    now = "2026-01-01T00:00:00Z"
    core.patch_namespaced_pod_status(
        pod.metadata.name,
        namespace,
        {
            "status": {
                "phase": "Pending",
                "conditions": [
                    {"type": "Initialized", "status": "False", "lastTransitionTime": now,
                     "reason": "ContainersNotInitialized"},
                    {"type": "Ready", "status": "False", "lastTransitionTime": now,
                     "reason": "ContainersNotReady"},
                    {"type": "ContainersReady", "status": "False", "lastTransitionTime": now,
                     "reason": "ContainersNotReady"},
                ],
                "initContainerStatuses": [
                    {
                        "name": fetcher.name,
                        "image": fetcher.image,
                        "imageID": "",
                        "ready": False,
                        "restartCount": 2,
                        "state": {"waiting": {"reason": "CrashLoopBackOff",
                                              "message": "back-off 20s restarting failed "
                                              f"container={fetcher.name}"}},
                        "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                                                     "message": line + "\n",
                                                     "startedAt": now, "finishedAt": now}},
                    }
                ],
            }
        },
    )  # fmt: skip

    def failed() -> dict[str, Any] | None:
        obj = models.get(NAME)
        return obj if condition(obj, "Ready").get("reason") == "ModelFetchFailed" else None

    obj = wait_until(failed, what="status to report the failed fetch", timeout=60)
    assert obj["status"]["phase"] == "Failed"
    assert obj["status"]["message"] == f"generation 1 (model_version v1): {line}"
    assert condition(obj, "Progressing")["reason"] == "ModelFetchFailed"
    wait_until(lambda: "ModelFetchFailed" in models.events(NAME), what="a ModelFetchFailed event")
    shown = cluster.kubectl("get", "mlmd", NAME, "-n", namespace, "-o", "wide").stdout
    assert "Failed" in shown and line in shown


def test_a_service_account_that_does_not_exist_is_named(
    cluster: TestCluster, namespace: str
) -> None:
    models = Models(cluster, namespace)
    models.create(model(service_account_name="no-such-reader"))
    obj = models.wait_condition("Ready", name=NAME, reason="FailedCreate")
    assert obj["status"]["phase"] == "Failed"
    assert 'serviceaccount "no-such-reader" not found' in obj["status"]["message"]
