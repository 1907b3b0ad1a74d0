"""The Inference Extension's objects: when an `llm` model behind a Gateway gets an InferencePool
and an endpoint picker, what they hold, and how a canary is split through them."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlmodel_operator import api
from mlmodel_operator.builders import BuildSettings, NetworkPolicySettings, Owner, build_children
from mlmodel_operator.builders.canary import TRACK_LABEL
from mlmodel_operator.builders.inference_pool import PLUGINS_CONFIG, pool_object_keys
from mlmodel_operator.builders.meta import selector_labels
from mlmodel_operator.hashing import content_hash
from mlmodel_operator.kube import resource_path
from mlmodel_operator.rollout.machine import advance
from mlmodel_operator.rollout.plan import Live, arrange, facts_from
from mlmodel_operator.rollout.step import next_step
from mlmodel_operator.runtimes import DEFAULT_RUNTIMES, load_catalog

OWNER = Owner(name="chat", namespace="ns", uid="uid-1")
POOL_SETTINGS = BuildSettings(
    runtimes=dict(DEFAULT_RUNTIMES),
    monitor_image="monitor:1",
    gateway_api=True,
    inference_pool=True,
)
GATEWAY = {"name": "inference", "namespace": "infra", "section_name": "http"}
PICKER = "chat-epp"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def spec(**fields: Any) -> api.MLModelDeploymentSpec:
    body = {
        "model_type": "llm",
        "model_uri": "pvc://weights/llama",
        "model_version": "v1",
        "replicas": 4,
        "rollout": {"gateway": GATEWAY},
        **fields,
    }
    return api.MLModelDeploymentSpec.model_validate(body)


def objects(children: Any) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in children.apply}


def absent(children: Any) -> set[tuple[str, str, str]]:
    return {(r.api_version, r.kind, r.name) for r in children.absent}


PICKER_KEYS = set(pool_object_keys(OWNER))


def test_an_llm_behind_a_gateway_gets_a_pool_a_picker_and_a_route_to_the_pool() -> None:
    children = build_children(OWNER, spec(), POOL_SETTINGS)
    out = objects(children)
    for api_version, kind, name in PICKER_KEYS:
        assert out[(kind, name)]["apiVersion"] == api_version
        assert out[(kind, name)]["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert not PICKER_KEYS & absent(children)
    pool = out[("InferencePool", "chat")]["spec"]
    assert pool["selector"] == {"matchLabels": selector_labels(OWNER)}
    # Through the sidecar: the picker's scrapes and the requests it routes pass through it.
    assert pool["targetPorts"] == [{"number": api.SIDECAR_PROXY_PORT}]
    assert pool["endpointPickerRef"] == {
        "kind": "Service",
        "name": PICKER,
        "port": {"number": 9002},
        "failureMode": "FailOpen",
    }
    route = out[("HTTPRoute", "chat")]["spec"]
    assert route["parentRefs"] == [
        {
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "name": "inference",
            "namespace": "infra",
            "sectionName": "http",
        }
    ]
    assert route["rules"] == [
        {
            "backendRefs": [
                {"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": "chat"}
            ]
        }
    ]


def test_without_the_sidecar_the_pool_targets_the_model_server() -> None:
    quiet = spec(monitoring={"performance_tracking": "disabled", "drift_detection": "inactive"})
    pool = objects(build_children(OWNER, quiet, POOL_SETTINGS))[("InferencePool", "chat")]
    assert pool["spec"]["targetPorts"] == [{"number": DEFAULT_RUNTIMES["vllm"].port}]


@pytest.mark.parametrize(
    ("fields", "settings", "route_backend"),
    [
        # Not an LLM: the Gateway's route goes to the Service, as before.
        ({"model_type": "custom", "image": "reg/srv:1", "model_uri": None}, POOL_SETTINGS, "chat"),
        # No InferencePools served.
        ({}, dataclasses.replace(POOL_SETTINGS, inference_pool=False), "chat"),
        # No Gateway named.
        ({"rollout": {}}, POOL_SETTINGS, None),
        # No HTTPRoutes served: a pool without a route would carry no traffic.
        ({}, dataclasses.replace(POOL_SETTINGS, gateway_api=False), None),
    ],
)
def test_otherwise_every_pool_object_is_absent(
    fields: dict[str, Any], settings: BuildSettings, route_backend: str | None
) -> None:
    children = build_children(OWNER, spec(**fields), settings)
    out = objects(children)
    assert absent(children) >= PICKER_KEYS
    assert not {(kind, name) for _, kind, name in PICKER_KEYS} & set(out)
    route = out.get(("HTTPRoute", "chat"))
    if route_backend is None:
        assert route is None
        assert ("gateway.networking.k8s.io/v1", "HTTPRoute", "chat") in absent(children)
    else:
        assert route is not None
        [backend] = route["spec"]["rules"][0]["backendRefs"]
        assert (backend["kind"], backend["name"]) == ("Service", route_backend)


def test_the_picker_serves_ext_proc_in_cleartext_and_its_metrics() -> None:
    service = objects(build_children(OWNER, spec(), POOL_SETTINGS))[("Service", PICKER)]
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert ports["grpc-ext-proc"]["port"] == 9002
    assert ports["grpc-ext-proc"]["appProtocol"] == "kubernetes.io/h2c"
    assert ports["http-metrics"]["port"] == 9090


def picker_container(deployment: dict[str, Any]) -> dict[str, Any]:
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return container


def test_the_picker_deployment_runs_the_catalog_image_on_its_own_pods() -> None:
    out = objects(build_children(OWNER, spec(), POOL_SETTINGS))
    deployment = out[("Deployment", PICKER)]
    pod = deployment["spec"]["template"]
    container = picker_container(deployment)
    assert container["image"] == DEFAULT_RUNTIMES["endpoint-picker"].image
    assert container["args"][:4] == [
        "--pool-name=chat",
        "--pool-namespace=ns",
        "--pool-group=inference.networking.k8s.io",
        "--grpc-health-port=9003",
    ]
    # Cleartext, as the Service's appProtocol says; the plugins file that is mounted.
    assert "--secure-serving=false" in container["args"]
    assert "--config-file=/config/plugins.yaml" in container["args"]
    assert container["readinessProbe"]["grpc"] == {"port": 9003, "service": "inference-extension"}
    assert pod["spec"]["serviceAccountName"] == PICKER
    assert pod["spec"]["volumes"][0] == {"name": "config", "configMap": {"name": PICKER}}
    # Neither the model's Service nor its pool may select the picker's pods.
    model_selector = selector_labels(OWNER).items()
    assert not model_selector <= pod["metadata"]["labels"].items()
    assert (
        deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    )
    service = out[("Service", PICKER)]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    configmap = out[("ConfigMap", PICKER)]
    assert pod["metadata"]["annotations"] == {
        "machine-learning.org/picker-config-hash": content_hash(configmap["data"])
    }
    assert yaml.safe_load(configmap["data"]["plugins.yaml"]) == PLUGINS_CONFIG


def test_an_installation_overrides_the_picker_image(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text("endpoint-picker:\n  image: mirror.example/epp:v9\n")
    settings = dataclasses.replace(POOL_SETTINGS, runtimes=load_catalog(catalog))
    deployment = objects(build_children(OWNER, spec(), settings))[("Deployment", PICKER)]
    assert picker_container(deployment)["image"] == "mirror.example/epp:v9"


def test_the_picker_may_only_read_and_only_in_its_namespace() -> None:
    out = objects(build_children(OWNER, spec(), POOL_SETTINGS))
    role, binding = out[("Role", PICKER)], out[("RoleBinding", PICKER)]
    assert role["metadata"]["namespace"] == "ns"
    for rule in role["rules"]:
        assert set(rule["verbs"]) <= {"get", "list", "watch"}
    read = {(g, r) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    assert {("", "pods"), ("inference.networking.k8s.io", "inferencepools")} <= read
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": PICKER,
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": PICKER, "namespace": "ns"}]


def test_with_a_network_policy_the_picker_is_a_client_of_the_model_pods() -> None:
    policy = NetworkPolicySettings(clients={"mlmodel/client": "true"}, scrapers={"p": "1"})
    settings = dataclasses.replace(POOL_SETTINGS, network_policy=policy)
    out = objects(build_children(OWNER, spec(), settings))
    labels = out[("Deployment", PICKER)]["spec"]["template"]["metadata"]["labels"]
    assert labels["mlmodel/client"] == "true"
    ingress = out[("NetworkPolicy", "chat")]["spec"]["ingress"][0]
    assert {"podSelector": {"matchLabels": {"mlmodel/client": "true"}}} in ingress["from"]


def test_every_pool_object_has_an_api_path() -> None:
    children = build_children(OWNER, spec(), POOL_SETTINGS)
    for obj in children.apply:
        assert resource_path(obj["apiVersion"], obj["kind"], "ns", obj["metadata"]["name"])
    for api_version, kind, name in PICKER_KEYS:
        assert resource_path(api_version, kind, "ns", name)


def live(deployment: dict[str, Any]) -> dict[str, Any]:
    """The stable Deployment as the API server has it, rolled out."""
    replicas = deployment["spec"]["replicas"]
    return {
        **deployment,
        "metadata": {**deployment["metadata"], "generation": 2},
        "status": {
            "observedGeneration": 2,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
        },
    }


def test_a_canary_behind_a_pool_is_split_by_replicas_through_the_one_pool() -> None:
    rollout = {"strategy": "canary", "steps": [25, 50, 100], "gateway": GATEWAY}
    v1, v2 = spec(rollout=rollout), spec(model_version="v2", rollout=rollout)
    built = build_children(OWNER, v1, POOL_SETTINGS).apply
    stable = live(
        next(o for o in built if o["kind"] == "Deployment" and o["metadata"]["name"] == "chat")
    )
    children = build_children(OWNER, v2, POOL_SETTINGS)
    body = {"metadata": {"name": "chat"}, "status": {}}
    arranged, decision = next_step(OWNER, v2, children, body, Live(stable, None), POOL_SETTINGS)
    assert decision.status is not None and decision.replicas is not None
    # The pods' share, not the step's weight: the picker spreads requests over all the pods.
    assert decision.replicas.canary == 1
    assert decision.status.weight == decision.replicas.canary_share
    out = objects(arranged)
    canary_labels = out[("Deployment", "chat-canary")]["spec"]["template"]["metadata"]["labels"]
    assert canary_labels[TRACK_LABEL] == "canary"
    pool_selector = out[("InferencePool", "chat")]["spec"]["selector"]["matchLabels"]
    assert pool_selector.items() <= canary_labels.items()
    [backend] = out[("HTTPRoute", "chat")]["spec"]["rules"][0]["backendRefs"]
    assert backend["kind"] == "InferencePool"
    assert ("Service", "chat-canary") not in out
    assert ("Service", "chat-stable") not in out


def test_the_same_canary_without_a_pool_is_split_exactly_by_the_route() -> None:
    # The contrast: a model type the pool is not for takes the weighted route.
    rollout = {"strategy": "canary", "steps": [25, 50, 100], "gateway": GATEWAY}
    fields = {"model_type": "custom", "image": "reg/srv:1", "model_uri": None, "rollout": rollout}
    v1, v2 = spec(**fields), spec(**fields, model_version="v2")
    built = build_children(OWNER, v1, POOL_SETTINGS).apply
    stable = live(next(o for o in built if o["kind"] == "Deployment"))
    children = build_children(OWNER, v2, POOL_SETTINGS)
    state = Live(stable, None)
    facts = facts_from(v2, stable, state, None, None, True)
    decision = advance(None, facts, NOW)
    out = objects(arrange(OWNER, v2, children, decision, state, True))
    backends = out[("HTTPRoute", "chat")]["spec"]["rules"][0]["backendRefs"]
    assert [(b["name"], b["weight"]) for b in backends] == [
        ("chat-stable", 75),
        ("chat-canary", 25),
    ]
