"""An operator short of a permission says which one (from the API server's 403) in the status of
the resource it could not serve, and keeps managing what it may.

The permission taken away is writing Services; reading them (list, watch) stays, as the operator
reads every kind it manages from its watch caches and starts reconciling only once they are
filled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from pathlib import Path

import yaml

from chart_helpers import CHART, REPO, helm
from kube_helpers import TestCluster, create_namespace, wait_until


def chart_cluster_role() -> dict:
    rendered = subprocess.run(
        [helm(), "template", "probe", str(CHART), "--namespace", "probe"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return next(
        doc
        for doc in yaml.safe_load_all(rendered)
        if doc
        and doc["kind"] == "ClusterRole"
        and not doc["metadata"]["name"].endswith("-activator")  # the operator's own
    )


def without_writing_services(rules: list[dict]) -> list[dict]:
    out = []
    for rule in rules:
        if "services" in rule.get("resources", []):
            verbs = [v for v in rule["verbs"] if v in ("get", "list", "watch")]
            out.append({**rule, "resources": ["services"], "verbs": verbs})
            resources = [r for r in rule["resources"] if r != "services"]
            if resources:
                out.append({**rule, "resources": resources})
        else:
            out.append(rule)
    return out


def test_a_missing_permission_is_reported_in_status(
    cluster: TestCluster, crd: str, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:6]
    name, ns = f"no-services-{suffix}", f"no-services-{suffix}"
    rules = without_writing_services(chart_cluster_role()["rules"])
    assert not any(
        "services" in r.get("resources", []) and {"create", "patch"} & set(r["verbs"])
        for r in rules
    )
    # Watching a list of namespaces, kopf lists namespaces (the chart grants this then too).
    rules.append({"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]})
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name},
        "rules": rules,
    }
    create_namespace(cluster.api, ns)
    cluster.kubectl("create", "serviceaccount", "operator", "-n", ns)
    cluster.kubectl("apply", "-f", "-", input=json.dumps(role))
    cluster.kubectl(
        "create", "clusterrolebinding", name, f"--clusterrole={name}",
        f"--serviceaccount={ns}:operator",
    )  # fmt: skip
    token = cluster.kubectl("create", "token", "operator", "-n", ns).stdout.strip()
    kubeconfig = cluster.token_kubeconfig(token, tmp_path / "kubeconfig")
    model = {
        "apiVersion": "machine-learning.org/v1",
        "kind": "MLModelDeployment",
        "metadata": {"name": "iris"},
        "spec": {"model_type": "sklearn"},
    }
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(model))
    log = tmp_path / "operator.log"
    operator = subprocess.Popen(
        [
            str(REPO / ".venv" / "bin" / "mlmodel-operator"),
            f"--namespaces={ns}",
            "--metrics-port=0",
            "--health-port=0",
        ],
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:

        def reported() -> dict | None:
            obj = json.loads(cluster.kubectl("get", "mlmd", "iris", "-n", ns, "-o", "json").stdout)
            ready = next(
                (c for c in obj.get("status", {}).get("conditions", []) if c["type"] == "Ready"),
                {},
            )
            return ready if ready.get("reason") == "ReconcileError" else None

        ready = wait_until(reported, what="Ready=False, ReconcileError", timeout=60)
        assert ready["status"] == "False"
        # The API server's own words: which verb on which resource, for whom.
        assert 'services "iris" is forbidden' in ready["message"]
        assert f"system:serviceaccount:{ns}:operator" in ready["message"]
        # What it may manage, it did: the Deployment and the sidecar's ConfigMap exist.
        cluster.kubectl("get", "deployment", "iris", "-n", ns)
        cluster.kubectl("get", "configmap", "iris-monitor", "-n", ns)
        assert operator.poll() is None, log.read_text()[-3000:]
    finally:
        operator.send_signal(signal.SIGTERM)
        operator.wait(timeout=20)
        cluster.kubectl("delete", "clusterrolebinding", name, check=False)
        cluster.kubectl("delete", "clusterrole", name, check=False)
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
