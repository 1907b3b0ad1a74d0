"""The Helm chart, rendered by the pinned helm: restricted pod, least-privilege RBAC, values that
reach the operator, a schema that refuses bad values, and CRDs identical to crds/."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from chart_helpers import CHART, REPO, helm
from mlmodel_operator import __version__, crdgen
from mlmodel_operator.config import parse_args
from mlmodel_operator.runtimes import Runtime, load_catalog


def template(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [helm(), "template", "mlmodel-operator", str(CHART), "-n", "mlmodel-system", *args],
        capture_output=True,
        text=True,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def render(*args: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(template(*args).stdout) if d]


def is_activator(doc: dict[str, Any]) -> bool:
    return doc["metadata"]["name"].endswith("-activator")


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The operator's object of `kind` (the activator's are tested on their own)."""
    found = [d for d in docs if d["kind"] == kind and not is_activator(d)]
    assert len(found) == 1, [d["kind"] for d in docs]
    return found[0]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def test_chart_versions_follow_the_package() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["version"] == "0.1.0"
    assert chart["appVersion"] == __version__ == "0.1.0"


def test_chart_crds_are_the_generated_ones() -> None:
    chart_crd = CHART / "crds" / crdgen.CRD_FILE
    assert chart_crd.read_text() == (REPO / "crds" / crdgen.CRD_FILE).read_text()
    assert chart_crd.read_text() == crdgen.render_crd()


def test_peering_crds_are_the_ones_kopf_uses() -> None:
    docs = list(yaml.safe_load_all((CHART / "crds" / "kopf-peering.yaml").read_text()))
    by_kind = {d["spec"]["names"]["kind"]: d for d in docs}
    assert set(by_kind) == {"ClusterKopfPeering", "KopfPeering"}
    assert by_kind["ClusterKopfPeering"]["spec"]["scope"] == "Cluster"
    assert by_kind["KopfPeering"]["spec"]["scope"] == "Namespaced"
    for crd in docs:
        assert crd["spec"]["group"] == "kopf.dev"
        (version,) = crd["spec"]["versions"]
        assert version["name"] == "v1" and version["served"] and version["storage"]
        status = version["schema"]["openAPIV3Schema"]["properties"]["status"]
        assert status["x-kubernetes-preserve-unknown-fields"] is True


def test_operator_pod_is_restricted_with_probes_and_requests() -> None:
    docs = render()
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    ctr = container(docs)
    security = ctr["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["runAsUser"] == 65532
    ports = {p["name"]: p["containerPort"] for p in ctr["ports"]}
    assert ports == {"metrics": 8080, "health": 8081}
    for probe in ("livenessProbe", "readinessProbe"):
        assert ctr[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert set(ctr["resources"]["requests"]) == {"cpu", "memory"}
    assert ctr["image"] == f"ghcr.io/mlmodel-operator/mlmodel-operator:{__version__}"
    assert pod["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"]


def test_values_reach_the_operator_as_flags_it_accepts() -> None:
    docs = render(
        "--set", "logLevel=DEBUG",
        "--set", "resyncSeconds=60",
        "--set", "monitorImage=registry.internal/monitor:1",
        "--set", "watchNamespaces={team-a,team-b}",
    )  # fmt: skip
    args = container(docs)["args"]
    cfg = parse_args(args, environ={})
    assert cfg.log_level == "DEBUG" and cfg.resync_seconds == 60
    assert cfg.monitor_image == "registry.internal/monitor:1"
    assert cfg.namespaces == ["team-a", "team-b"]
    assert cfg.peering == "mlmodel-operator"
    assert cfg.metrics_port == 8080 and cfg.health_port == 8081


def test_monitor_image_defaults_to_the_operator_image() -> None:
    docs = render("--set", "image.tag=1.2.3")
    cfg = parse_args(container(docs)["args"], environ={})
    assert (
        cfg.monitor_image
        == container(docs)["image"]
        == ("ghcr.io/mlmodel-operator/mlmodel-operator:1.2.3")
    )


def test_runtime_catalog_is_mounted_and_read_by_the_operator(tmp_path: Path) -> None:
    docs = render("--set", "runtimeCatalog.triton.image=mirror.internal/triton:25.01")
    configmap = one(docs, "ConfigMap")
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v.get("configMap"))
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume["name"])
    (key,) = configmap["data"]
    cfg = parse_args(container(docs)["args"], environ={})
    assert cfg.runtime_catalog == Path(mount["mountPath"]) / key
    # What the operator makes of the file as mounted.
    (tmp_path / key).write_text(configmap["data"][key])
    catalog = load_catalog(tmp_path / key)
    assert catalog["triton"].image == "mirror.internal/triton:25.01"
    assert catalog["triton"].port == 8000  # the rest of the runtime is kept


def test_a_changed_runtime_catalog_rolls_the_operator() -> None:
    def checksum(*args: str) -> str:
        annotations = one(render(*args), "Deployment")["spec"]["template"]["metadata"]
        return annotations["annotations"]["checksum/runtime-catalog"]

    assert checksum() != checksum("--set", "runtimeCatalog.triton.image=x/triton:1")


def test_schema_runtime_fields_are_the_catalogs() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    fields = schema["properties"]["runtimeCatalog"]["additionalProperties"]["properties"]
    assert set(fields) == set(Runtime.model_fields) - {"name"}


def rules(role: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    ]


def test_rbac_is_least_privilege() -> None:
    docs = render()
    granted = rules(one(docs, "ClusterRole"))
    assert all("*" not in triple for triple in granted)
    assert not [t for t in granted if t[1] in ("secrets", "nodes", "clusterroles")]
    # Roles only for the endpoint pickers, and only with rights the operator holds itself.
    assert not [t for t in granted if t[2] in ("escalate", "bind", "impersonate")]
    assert not [t for t in granted if t[1] == "pods" and t[2] not in ("get", "list", "watch")]
    assert ("apiextensions.k8s.io", "customresourcedefinitions", "create") not in granted
    assert ("machine-learning.org", "mlmodeldeployments/status", "patch") in granted
    assert ("kopf.dev", "clusterkopfpeerings", "patch") in granted
    binding = one(docs, "ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "mlmodel-operator", "namespace": "mlmodel-system"}
    ]
    no_prometheus = rules(one(render("--set", "rbac.prometheusOperator=false"), "ClusterRole"))
    assert not [t for t in no_prometheus if t[0] == "monitoring.coreos.com"]


def test_watched_namespaces_get_roles_and_nothing_namespaced_cluster_wide() -> None:
    docs = render("--set", "watchNamespaces={team-a,team-b}")
    roles = [d for d in docs if d["kind"] == "Role" and not is_activator(d)]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert ("apps", "deployments", "patch") in rules(roles[0])
    assert ("kopf.dev", "kopfpeerings", "patch") in rules(roles[0])
    bindings = [d for d in docs if d["kind"] == "RoleBinding" and not is_activator(d)]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    # The activator's roles are in the watched namespaces too, and nothing of it cluster-wide.
    assert not [d for d in docs if d["kind"].startswith("Cluster") and is_activator(d)]
    cluster_wide = {t[1] for t in rules(one(docs, "ClusterRole"))}
    assert cluster_wide == {"customresourcedefinitions", "namespaces", "apiservices"}
    peerings = [d for d in docs if d["kind"] == "KopfPeering"]
    assert sorted(p["metadata"]["namespace"] for p in peerings) == ["team-a", "team-b"]


def test_high_availability() -> None:
    single = render()
    assert not [d for d in single if d["kind"] == "PodDisruptionBudget"]
    assert one(single, "ClusterKopfPeering")["metadata"]["name"] == "mlmodel-operator"
    docs = render("--set", "replicas=3")
    assert one(docs, "Deployment")["spec"]["replicas"] == 3
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    refused = template("--set", "replicas=2", "--set", "peering.enabled=false", check=False)
    assert refused.returncode != 0
    assert "replicas > 1 needs peering.enabled=true" in refused.stderr


def test_metrics_service_selects_the_operator_and_service_monitor_is_optional() -> None:
    docs = render()
    service = one(docs, "Service")
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert not [d for d in docs if d["kind"] == "ServiceMonitor"]
    refused = template("--set", "metrics.serviceMonitor.enabled=true", check=False)
    assert "needs the Prometheus Operator's CRDs" in refused.stderr
    docs = render(
        "--set", "metrics.serviceMonitor.enabled=true",
        "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor",
    )  # fmt: skip
    monitor = one(docs, "ServiceMonitor")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("replicas=-1", "at '/replicas': minimum: got -1, want 0"),
        (
            "logLevel=LOUD",
            "at '/logLevel': value must be one of 'DEBUG', 'INFO', 'WARNING', 'ERROR'",
        ),
        ("resyncSeconds=0", "at '/resyncSeconds'"),
        ("watchNamespaces={Team_A}", "at '/watchNamespaces/0'"),
        ("runtimeCatalog.triton.imag=x", "additional properties 'imag' not allowed"),
        ("runtimeCatalog.triton.port=70000", "at '/runtimeCatalog/triton/port'"),
        ("image.pullPolicy=Sometimes", "at '/image/pullPolicy'"),
        ("replica=2", "additional properties 'replica' not allowed"),
    ],
)
def test_bad_values_are_refused_by_the_schema(value: str, message: str) -> None:
    result = template("--set", value, check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr


def test_network_policy_value_reaches_the_operator_and_its_rbac() -> None:
    assert not [a for a in container(render())["args"] if a.startswith("--network-policy")]
    args = container(
        render("--set", "networkPolicy.enabled=true", "--set", "networkPolicy.clients=team=ml")
    )["args"]
    assert "--network-policy=true" in args
    assert "--network-policy-clients=team=ml" in args
    assert "--network-policy-scrapers=kubernetes.io/metadata.name=monitoring" in args
    # Granted either way: policies made while it was on are removed once it is off (and the
    # operator watches them, to know what there is without asking).
    granted = rules(one(render(), "ClusterRole"))
    verbs = {t[2] for t in granted if t[:2] == ("networking.k8s.io", "networkpolicies")}
    assert verbs == {"get", "list", "watch", "create", "patch", "delete"}
    assert template("--set", "networkPolicy.clients=no label", check=False).returncode != 0


def test_the_chart_creates_its_peering_object_and_the_operator_waits_for_it() -> None:
    # The operator's pod can start before Helm creates the object; had the operator created it,
    # `helm install` would fail on an object that already exists.
    docs = render()
    assert one(docs, "ClusterKopfPeering")
    assert parse_args(container(docs)["args"], environ={}).peering_create is False
    # The plain manifests (hack/render-manifests.sh) leave both to the operator.
    docs = render("--set", "peering.createObjects=false")
    assert not [d for d in docs if d["kind"] in ("ClusterKopfPeering", "KopfPeering")]
    assert parse_args(container(docs)["args"], environ={}).peering_create is True


def test_rbac_grants_what_the_reconcile_does_to_every_child_kind() -> None:
    """Every kind the builders apply is watched, applied and (as an absent child) deleted: a
    canary's Deployment and backend Services, a Gateway's HTTPRoute, the Prometheus objects."""
    from mlmodel_operator import api
    from mlmodel_operator.builders import BuildSettings, Owner, build_children
    from mlmodel_operator.kube import _PLURALS
    from mlmodel_operator.runtimes import DEFAULT_RUNTIMES

    settings = BuildSettings(
        runtimes=dict(DEFAULT_RUNTIMES),
        monitor_image="m:1",
        prometheus_operator=True,
        gateway_api=True,
        inference_pool=True,
        network_policy=None,
    )
    kinds: set[tuple[str, str]] = set()
    # An llm behind a Gateway adds an InferencePool and its endpoint picker.
    for model_type in ("sklearn", "llm"):
        spec = api.MLModelDeploymentSpec.model_validate(
            {
                "model_type": model_type,
                "model_uri": "pvc://weights/model",
                "rollout": {"strategy": "canary", "gateway": {"name": "gw"}},
            }
        )
        built = build_children(Owner("m", "ns", "uid"), spec, settings)
        kinds |= {(o["apiVersion"], o["kind"]) for o in built.apply}
        kinds |= {(r.api_version, r.kind) for r in built.absent}
    assert ("inference.networking.k8s.io/v1", "InferencePool") in kinds
    granted = set(rules(one(render(), "ClusterRole")))
    for api_version, kind in kinds:
        group = api_version.rpartition("/")[0]
        for verb in ("get", "list", "watch", "create", "patch", "delete"):
            assert (group, _PLURALS[kind], verb) in granted, (kind, verb)
    assert ("machine-learning.org", "mlmodeldeployments", "patch") in granted


def test_the_picker_role_grants_nothing_the_operator_does_not_hold() -> None:
    """The API server refuses a Role with rights its creator lacks (the operator holds no
    `escalate`), and a RoleBinding to it without them (no `bind`)."""
    from mlmodel_operator.builders.inference_pool import PICKER_RULES

    granted = rules(one(render(), "ClusterRole"))
    for rule in PICKER_RULES:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert (group, resource, verb) in granted, (group, resource, verb)
    assert not [t for t in granted if t[2] in ("escalate", "bind", "*")]
    no_pool = rules(one(render("--set", "rbac.inferenceExtension=false"), "ClusterRole"))
    assert not [t for t in no_pool if t[0] in ("inference.networking.k8s.io", "llm-d.ai")]
    assert not [t for t in no_pool if t[1] in ("roles", "rolebindings", "serviceaccounts")]


def test_autoscalers_are_granted_keda_only_if_asked() -> None:
    granted = rules(one(render(), "ClusterRole"))
    for verb in ("list", "watch", "create", "patch", "delete"):
        assert ("autoscaling", "horizontalpodautoscalers", verb) in granted
        assert ("keda.sh", "scaledobjects", verb) in granted
    # Read-only, and cluster-scoped: whether the custom metrics API is served.
    assert ("apiregistration.k8s.io", "apiservices", "watch") in granted
    assert not [t for t in granted if t[1] == "apiservices" and t[2] not in ("list", "watch")]
    no_keda = rules(one(render("--set", "rbac.keda=false"), "ClusterRole"))
    assert not [t for t in no_keda if t[0] == "keda.sh"]


def test_grafana_dashboard_configmap_carries_the_dashboard_for_grafanas_sidecar() -> None:
    assert not [
        d for d in render() if d["kind"] == "ConfigMap" and "dashboard" in d["metadata"]["name"]
    ]
    docs = render(
        "--set", "grafanaDashboard.enabled=true",
        "--set", "grafanaDashboard.namespace=monitoring",
        "--set", "grafanaDashboard.annotations.grafana_folder=Models",
    )  # fmt: skip
    [dashboard] = [d for d in docs if d["metadata"]["name"].endswith("-dashboard")]
    assert dashboard["kind"] == "ConfigMap"
    assert dashboard["metadata"]["namespace"] == "monitoring"
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "Models"}
    shipped = json.loads((CHART / "dashboards" / "mlmodel-operator.json").read_text())
    assert json.loads(dashboard["data"]["mlmodel-operator.json"]) == shipped


def test_service_monitor_keeps_the_per_model_namespace_label() -> None:
    # The operator's per-model series carry the model's namespace; honorLabels keeps it.
    result = template("--set", "metrics.serviceMonitor.enabled=true", "--api-versions",
                      "monitoring.coreos.com/v1/ServiceMonitor")  # fmt: skip
    monitor = one([d for d in yaml.safe_load_all(result.stdout) if d], "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True


def test_the_activator_runs_from_the_operator_image_with_its_own_least_privilege() -> None:
    docs = render("--set-json", 'watchNamespaces=["models"]')
    activator = [d for d in docs if is_activator(d)]
    (deployment,) = [d for d in activator if d["kind"] == "Deployment"]
    (operator,) = [d for d in docs if d["kind"] == "Deployment" and not is_activator(d)]
    pod = deployment["spec"]["template"]["spec"]
    (box,) = pod["containers"]
    assert box["image"] == operator["spec"]["template"]["spec"]["containers"][0]["image"]
    assert box["command"] == ["mlmodel-activator"]
    assert "--namespaces=models" in box["args"]
    assert box["securityContext"]["readOnlyRootFilesystem"] is True
    assert {e["name"] for e in box["env"]} == {"POD_IP", "POD_NAME"}
    # The operator's Services and budget must not select the activator's pod.
    operator_selector = operator["spec"]["selector"]["matchLabels"].items()
    assert not operator_selector <= deployment["spec"]["template"]["metadata"]["labels"].items()
    (role,) = [d for d in activator if d["kind"] == "Role"]
    assert role["metadata"]["namespace"] == "models"
    verbs = {
        (r["apiGroups"][0], res): set(r["verbs"]) for r in role["rules"] for res in r["resources"]
    }
    assert verbs[("apps", "deployments")] == {"get", "patch"}
    assert "delete" in verbs[("discovery.k8s.io", "endpointslices")]
    assert "--activator=true" in operator["spec"]["template"]["spec"]["containers"][0]["args"]


def test_without_the_activator_the_operator_is_not_told_it_runs() -> None:
    docs = render("--set", "activator.enabled=false")
    assert not [d for d in docs if is_activator(d)]
    assert "--activator=true" not in container(docs)["args"]
