"""The chart on the real API server: installed under the restricted Pod Security Standard, its
ServiceAccount proven sufficient (the operator run with its token reconciles the founding
manifest) and no more than that, upgraded, and uninstalled down to the CRDs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from kube_helpers import TestCluster, create_namespace, wait_until

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "mlmodel-operator"
FOUNDING = REPO / "manifests" / "examples" / "predictive-analytics-system.yaml"
CRDS = [
    "mlmodeldeployments.machine-learning.org",
    "clusterkopfpeerings.kopf.dev",
    "kopfpeerings.kopf.dev",
]
RESTRICTED = "pod-security.kubernetes.io/enforce=restricted"


@dataclass
class Release:
    name: str  # also the full name of every object, since it contains the chart's name
    namespace: str
    models: str  # a namespace for MLModelDeployments, restricted too


def helm(cluster: TestCluster, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["helm", *args], capture_output=True, text=True, env=cluster.env)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed: {result.stderr}")
    return result


def get_json(cluster: TestCluster, *args: str) -> dict[str, Any]:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def restricted_namespace(cluster: TestCluster, name: str) -> None:
    key, _, value = RESTRICTED.partition("=")
    create_namespace(cluster.api, name, {key: value})


@pytest.fixture(scope="module")
def release(cluster: TestCluster) -> Iterator[Release]:
    suffix = uuid.uuid4().hex[:6]
    rel = Release(f"mlmodel-operator-{suffix}", f"mlmodel-system-{suffix}", f"e2e-models-{suffix}")
    restricted_namespace(cluster, rel.namespace)
    restricted_namespace(cluster, rel.models)
    yield rel
    helm(cluster, "uninstall", rel.name, "-n", rel.namespace, "--wait", check=False)
    for namespace in (rel.models, rel.namespace):
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.fixture(scope="module")
def installed(cluster: TestCluster, release: Release, crd: str) -> Release:
    # crd: Helm installs the chart's CRD only where there is none; on a cluster reused from an
    # older checkout, the fixture brings it to this one (as an upgrade's first step would).
    helm(
        cluster, "install", release.name, str(CHART), "-n", release.namespace,
        "--wait", "--timeout", "120s",
    )  # fmt: skip
    return release


def test_chart_lints_strictly(cluster: TestCluster) -> None:
    result = helm(cluster, "lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("replicas=-1", "at '/replicas': minimum: got -1, want 0"),
        ("logLevel=LOUD", "at '/logLevel': value must be one of"),
    ],
)
def test_invalid_values_fail_the_install_with_the_schemas_message(
    cluster: TestCluster, release: Release, value: str, message: str
) -> None:
    result = helm(
        cluster, "install", f"{release.name}-bad", str(CHART), "-n", release.namespace,
        "--set", value, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr
    listed = helm(cluster, "list", "-n", release.namespace, "-q", "-a").stdout.split()
    assert f"{release.name}-bad" not in listed


def test_operator_is_admitted_under_restricted(cluster: TestCluster, installed: Release) -> None:
    ns = installed.namespace
    # Pod Security admission is on in this namespace: a root pod is refused...
    refused = cluster.kubectl(
        "run", "root-probe", "-n", ns, "--image=busybox", "--dry-run=server",
        "--overrides", '{"spec":{"securityContext":{"runAsUser":0}}}', check=False,
    )  # fmt: skip
    assert refused.returncode != 0 and "violates PodSecurity" in refused.stderr
    # ... and the operator's pod runs.
    deployment = get_json(cluster, "deployment", installed.name, "-n", ns)
    assert deployment["status"].get("availableReplicas") == 1
    pods = get_json(cluster, "pods", "-n", ns, "-l", f"app.kubernetes.io/instance={installed.name}")
    assert [p["status"]["phase"] for p in pods["items"]] == ["Running"]
    peering = get_json(cluster, "clusterkopfpeering", installed.name)
    assert peering["metadata"]["labels"]["app.kubernetes.io/instance"] == installed.name


@pytest.fixture(scope="module")
def token_kubeconfig(
    cluster: TestCluster, installed: Release, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    token = cluster.kubectl(
        "create", "token", installed.name, "-n", installed.namespace, "--duration=1h"
    ).stdout.strip()
    path = tmp_path_factory.mktemp("sa") / "kubeconfig"
    return cluster.token_kubeconfig(token, path)


def operator_args(cluster: TestCluster, release: Release, workdir: Path) -> list[str]:
    """The arguments of the chart's operator container, with the runtime catalog it mounts
    written to `workdir` and the ports left to the pod."""
    deployment = get_json(cluster, "deployment", release.name, "-n", release.namespace)
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    configmap = get_json(cluster, "configmap", f"{release.name}-runtimes", "-n", release.namespace)
    args = []
    for arg in container["args"]:
        flag, _, value = arg.partition("=")
        if flag == "--runtime-catalog":
            catalog = workdir / Path(value).name
            catalog.write_text(configmap["data"][catalog.name])
            arg = f"{flag}={catalog}"
        elif flag in ("--metrics-port", "--health-port"):
            arg = f"{flag}=0"
        args.append(arg)
    return args


def test_operator_with_the_chart_serviceaccount_reconciles_the_founding_manifest(
    cluster: TestCluster, installed: Release, token_kubeconfig: Path, tmp_path: Path
) -> None:
    models = installed.models
    cluster.kubectl("apply", "-n", models, "-f", str(FOUNDING))
    name = yaml.safe_load(FOUNDING.read_text())["metadata"]["name"]
    time.sleep(2)
    # Whatever reconciles it from here on is the process below: no other operator is watching.
    untouched = get_json(cluster, "mlmd", name, "-n", models)
    assert "status" not in untouched, "another operator is reconciling this cluster's models"

    args = operator_args(cluster, installed, tmp_path)
    assert f"--peering={installed.name}" in args
    assert not [a for a in args if a.startswith("--namespaces")]  # all namespaces, as installed
    log = tmp_path / "operator.log"
    env = {**os.environ, "KUBECONFIG": str(token_kubeconfig)}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(REPO / ".venv" / "bin" / "mlmodel-operator"), *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        waited = cluster.kubectl(
            "wait", "-n", models, "--for=condition=Ready", "--timeout=60s", f"mlmd/{name}",
            check=False,
        )  # fmt: skip
        text = log.read_text(errors="replace")
        assert waited.returncode == 0, text[-4000:]
        obj = get_json(cluster, "mlmd", name, "-n", models)
        assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
        assert obj["status"]["phase"] == "Ready"
        # The model pods were admitted under restricted too.
        pods = get_json(cluster, "pods", "-n", models, "-l", obj["status"]["selector"])
        assert [p["status"]["phase"] for p in pods["items"]] == ["Running"]
        assert process.poll() is None, text[-4000:]
        # The ModelServing event is the last write for a model that became Ready.
        wait_until(
            lambda: "ModelServing"
            in cluster.kubectl(
                "get", "events", "-n", models, "--field-selector", f"involvedObject.name={name}",
                "-o", "jsonpath={.items[*].reason}",
            ).stdout,
            what="the ModelServing event",
        )  # fmt: skip
        text = log.read_text(errors="replace")
        assert "forbidden" not in text.lower(), [ln for ln in text.splitlines() if "orbidden" in ln]
        assert "applied Deployment" in text  # this process wrote the children
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)


@pytest.mark.parametrize(
    ("verb", "resource", "allowed"),
    [
        ("get", "secrets", "no"),
        ("list", "secrets", "no"),
        ("delete", "nodes", "no"),
        ("create", "clusterroles", "no"),
        # The endpoint pickers' Roles and RoleBindings (rbac.inferenceExtension): only rights the
        # operator holds itself, as it may neither bind nor escalate.
        ("create", "rolebindings", "yes"),
        ("create", "clusterrolebindings", "no"),
        ("bind", "clusterroles", "no"),
        ("escalate", "roles", "no"),
        ("create", "pods", "no"),
        ("delete", "mlmodeldeployments.machine-learning.org", "no"),
        # Besides the status, only the machine-learning.org/rollout annotation it acted on is
        # removed (a JSON patch); kopf keeps nothing in the resource.
        ("patch", "mlmodeldeployments.machine-learning.org", "yes"),
        ("update", "mlmodeldeployments.machine-learning.org", "no"),
        ("patch", "deployments.apps", "yes"),
        ("patch", "mlmodeldeployments.machine-learning.org/status", "yes"),
        ("patch", "events", "yes"),
    ],
)
def test_the_serviceaccount_can_do_its_job_and_nothing_more(
    cluster: TestCluster, installed: Release, token_kubeconfig: Path,
    verb: str, resource: str, allowed: str,
) -> None:  # fmt: skip
    resource, _, subresource = resource.partition("/")
    extra = [f"--subresource={subresource}"] if subresource else []
    result = cluster.kubectl(
        "auth", "can-i", verb, resource, *extra, "-A", kubeconfig=token_kubeconfig, check=False
    )
    assert result.stdout.strip() == allowed, result.stderr


def test_helm_upgrade_with_a_changed_value_rolls_the_operator(
    cluster: TestCluster, installed: Release
) -> None:
    ns = installed.namespace
    before = get_json(cluster, "deployment", installed.name, "-n", ns)
    helm(
        cluster, "upgrade", installed.name, str(CHART), "-n", ns, "--reuse-values",
        "--set", "logLevel=DEBUG", "--wait", "--timeout", "120s",
    )  # fmt: skip
    after = get_json(cluster, "deployment", installed.name, "-n", ns)
    assert after["metadata"]["generation"] > before["metadata"]["generation"]
    assert "--log-level=DEBUG" in after["spec"]["template"]["spec"]["containers"][0]["args"]
    selector = f"app.kubernetes.io/instance={installed.name}"

    def rolled() -> list[str] | None:
        sets = get_json(cluster, "replicasets", "-n", ns, "-l", selector)["items"]
        live = [s for s in sets if s["status"].get("readyReplicas")]
        fresh = [s for s in live if "--log-level=DEBUG" in str(s["spec"]["template"])]
        return [s["metadata"]["name"] for s in sets] if len(sets) == 2 and live == fresh else None

    wait_until(rolled, what="a new ReplicaSet serving, the old one scaled down", timeout=60)
    history = helm(cluster, "history", installed.name, "-n", ns, "-o", "json").stdout
    assert [r["revision"] for r in json.loads(history)] == [1, 2]


def test_helm_uninstall_removes_everything_but_the_crds(
    cluster: TestCluster, installed: Release
) -> None:
    ns, name = installed.namespace, installed.name
    helm(cluster, "uninstall", name, "-n", ns, "--wait", "--timeout", "120s")
    selector = f"app.kubernetes.io/instance={name}"
    kinds = "deployments,replicasets,services,configmaps,serviceaccounts,poddisruptionbudgets"

    def gone() -> bool:
        left = get_json(cluster, kinds, "-n", ns, "-l", selector)["items"]
        pods = get_json(cluster, "pods", "-n", ns, "-l", selector)["items"]
        return not left and not pods

    wait_until(gone, what="the release's objects to go", timeout=60)
    for kind in ("clusterrole", "clusterrolebinding", "clusterkopfpeering"):
        result = cluster.kubectl("get", kind, name, check=False)
        assert result.returncode != 0 and "NotFound" in result.stderr, (kind, result.stdout)
    for crd in CRDS:
        assert get_json(cluster, "crd", crd)["metadata"]["name"] == crd
    # The models, and what the operator made for them, stay: they are the users'.
    assert get_json(cluster, "mlmd", "-n", installed.models)["items"]
