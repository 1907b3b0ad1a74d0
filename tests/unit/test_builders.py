"""Builders are pure: spec in, plain dicts out."""

from __future__ import annotations

import json
from typing import Any

import pytest

from cases import founding_manifest
from mlmodel_operator import api
from mlmodel_operator.builders import (
    BuildSettings,
    NetworkPolicySettings,
    ObjectRef,
    Owner,
    build_children,
)
from mlmodel_operator.builders.deployment import model_location, no_model_note
from mlmodel_operator.builders.meta import VERSION_LABEL
from mlmodel_operator.monitor.settings import MODEL_VERSION_ENV
from mlmodel_operator.runtimes import DEFAULT_RUNTIMES, load_catalog, runtime_for

OWNER = Owner(name="m", namespace="ns", uid="uid-1")
SETTINGS = BuildSettings(runtimes=dict(DEFAULT_RUNTIMES), monitor_image="monitor:1")


def spec(**fields: Any) -> api.MLModelDeploymentSpec:
    return api.MLModelDeploymentSpec.model_validate(fields)


def children(s: api.MLModelDeploymentSpec) -> dict[str, dict[str, Any]]:
    return {obj["kind"]: obj for obj in build_children(OWNER, s, SETTINGS).apply}


def founding() -> api.MLModelDeploymentSpec:
    return api.MLModelDeploymentSpec.model_validate(founding_manifest()["spec"])


def test_founding_manifest_children() -> None:
    built = children(founding())
    assert list(built) == ["ConfigMap", "Deployment", "Service"]
    pod = built["Deployment"]["spec"]["template"]["spec"]
    server, sidecar = pod["containers"]
    assert server["image"].startswith("nvcr.io/nvidia/tritonserver:")
    assert server["resources"] == {
        "requests": {"memory": "64G", "cpu": "8"},  # 2 CPUs per GPU by default
        "limits": {"memory": "64G", "nvidia.com/gpu": "4"},
    }
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert "nodeSelector" not in pod
    assert sidecar["image"] == "monitor:1"
    assert {p["name"] for p in sidecar["ports"]} == {"http", "metrics"}
    assert server["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"


def test_the_sidecar_takes_its_model_version_from_its_pod() -> None:
    # The ConfigMap is shared by the stable and the canary pods: the version is the pod's label.
    deployment = children(spec(model_type="sklearn", model_version="v2"))["Deployment"]
    template = deployment["spec"]["template"]
    assert template["metadata"]["labels"][VERSION_LABEL] == "v2"
    _, sidecar = template["spec"]["containers"]
    assert sidecar["env"][0] == {
        "name": MODEL_VERSION_ENV,
        "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{VERSION_LABEL}']"}},
    }
    built = children(spec(model_type="sklearn", model_version="v2"))["ConfigMap"]
    (config,) = (json.loads(text) for text in built["data"].values())
    assert config["model_version"] == ""


@pytest.mark.parametrize(
    ("cpu", "workers", "memory"),
    [(None, 1, "256Mi"), ("500m", 1, "256Mi"), ("1500m", 1, "256Mi"), ("2", 2, "416Mi"),
     ("4.5", 4, "736Mi")],
)  # fmt: skip
def test_the_sidecar_runs_a_worker_per_whole_cpu_it_requests(
    cpu: str | None, workers: int, memory: str
) -> None:
    monitoring = {"performance_tracking": "enabled"} | ({"sidecar_cpu": cpu} if cpu else {})
    built = children(spec(model_type="sklearn", monitoring=monitoring))
    (config,) = (json.loads(text) for text in built["ConfigMap"]["data"].values())
    assert config["workers"] == workers
    pod = built["Deployment"]["spec"]["template"]["spec"]
    _, sidecar = pod["containers"]
    assert sidecar["resources"]["requests"]["cpu"] == api.format_cpu(cpu or "50m")
    assert sidecar["resources"]["limits"]["memory"] == memory
    # The processes' metric files: a writable, memory-backed emptyDir (the root is read-only).
    (metrics_dir,) = (e["value"] for e in sidecar["env"] if e["name"] == "PROMETHEUS_MULTIPROC_DIR")
    (mount,) = (m for m in sidecar["volumeMounts"] if m["mountPath"] == metrics_dir)
    (volume,) = (v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["emptyDir"]["medium"] == "Memory"
    assert sidecar["securityContext"]["readOnlyRootFilesystem"] is True


def test_every_child_is_owned_and_labelled() -> None:
    for obj in children(founding()).values():
        meta = obj["metadata"]
        assert meta["namespace"] == "ns"
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "machine-learning.org/v1",
                "kind": "MLModelDeployment",
                "name": "m",
                "uid": "uid-1",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        for label in ("name", "instance", "managed-by", "part-of"):
            assert f"app.kubernetes.io/{label}" in meta["labels"]


def test_gpu_rollout_never_needs_spare_gpus() -> None:
    strategy = children(founding())["Deployment"]["spec"]["strategy"]
    assert strategy["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}


def test_cpu_rollout_surges() -> None:
    deployment = children(spec(model_type="sklearn"))["Deployment"]
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {
        "maxSurge": "25%",
        "maxUnavailable": 0,
    }
    # Longer than the startup probe's budget: a model still loading has not stalled.
    startup = deployment["spec"]["template"]["spec"]["containers"][0]["startupProbe"]
    budget = startup["periodSeconds"] * startup["failureThreshold"]
    assert deployment["spec"]["progressDeadlineSeconds"] > budget
    pod = deployment["spec"]["template"]["spec"]
    assert "tolerations" not in pod
    assert "nvidia.com/gpu" not in pod["containers"][0]["resources"]["limits"]


def test_gpu_type_becomes_node_selector_and_mig_tolerates_nvidia_taint() -> None:
    s = spec(
        model_type="pytorch",
        computational_resources={
            "gpu_allocation": 1,
            "gpu_type": "NVIDIA-A100-SXM4-80GB",
            "gpu_resource": "nvidia.com/mig-1g.10gb",
        },
    )
    pod = children(s)["Deployment"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/mig-1g.10gb"] == "1"


def test_amd_gpus_tolerate_their_own_taint() -> None:
    s = spec(
        model_type="onnx",
        computational_resources={"gpu_allocation": 2, "gpu_resource": "amd.com/gpu"},
    )
    pod = children(s)["Deployment"]["spec"]["template"]["spec"]
    assert pod["tolerations"][0]["key"] == "amd.com/gpu"


def test_restricted_pod_security() -> None:
    pod = children(founding())["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for container in pod["containers"]:
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert container["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize(
    ("model_type", "image_prefix", "port"),
    [
        ("neural_network", "nvcr.io/nvidia/tritonserver", 8000),
        ("onnx", "nvcr.io/nvidia/tritonserver", 8000),
        ("sklearn", "docker.io/seldonio/mlserver", 8080),
        ("xgboost", "docker.io/seldonio/mlserver", 8080),
        ("huggingface", "docker.io/kserve/huggingfaceserver", 8080),
        ("llm", "docker.io/vllm/vllm-openai", 8000),
    ],
)
def test_runtime_catalog_by_model_type(model_type: str, image_prefix: str, port: int) -> None:
    uri = {"model_uri": "hf://org/bert"} if model_type in ("huggingface", "llm") else {}
    server = children(spec(model_type=model_type, **uri))["Deployment"]["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert server["image"].startswith(image_prefix)
    assert server["ports"][0]["containerPort"] == port


def test_image_override_and_custom_runtime() -> None:
    s = spec(model_type="custom", image="ghcr.io/acme/m:1", port=9000)
    server = children(s)["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert server["image"] == "ghcr.io/acme/m:1"
    assert server["ports"][0]["containerPort"] == 9000
    assert server["readinessProbe"] == {
        "tcpSocket": {"port": "model-http"},
        "periodSeconds": 5,
        "failureThreshold": 3,
    }
    overridden = children(spec(model_type="sklearn", image="registry.local/mlserver:2"))
    containers = overridden["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert containers[0]["image"] == "registry.local/mlserver:2"


def test_installation_catalog_overrides(tmp_path: Any) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text("triton:\n  image: mirror.local/triton:1\n")
    catalog = load_catalog(path)
    assert catalog["triton"].image == "mirror.local/triton:1"
    assert catalog["triton"].port == 8000  # everything else kept
    assert catalog["mlserver"] == DEFAULT_RUNTIMES["mlserver"]


@pytest.mark.parametrize(
    ("model_type", "uri", "arg", "env", "claim"),
    [
        # Object storage and the web are downloaded by the storage initializer into /mnt/models.
        ("neural_network", "s3://bucket/repo", "--model-repository=/mnt/models", None, None),
        ("neural_network", None, "--model-repository=/mnt/models", None, None),
        ("onnx", "pvc://models/resnet", "--model-repository=/mnt/models/resnet", None, "models"),
        ("sklearn", "gs://b/iris", None, ("MLSERVER_MODEL_URI", "/mnt/models"), None),
        # hf:// too, for every runtime: the token reaches the initializer alone.
        ("huggingface", "hf://org/bert", "--model_dir=/mnt/models", None, None),
        ("llm", "hf://org/llama@main", "--model=/mnt/models", None, None),
        ("custom", "https://x/y", None, ("MODEL_URI", "/mnt/models"), None),
    ],
)
def test_model_uri_reaches_the_runtime_its_way(
    model_type: str, uri: str | None, arg: str | None, env: tuple | None, claim: str | None
) -> None:
    fields: dict[str, Any] = {"model_type": model_type}
    if uri:
        fields["model_uri"] = uri
    if model_type == "custom":
        fields["image"] = "x:1"
    s = spec(**fields)
    args, env_vars, volumes, mounts = model_location(s, runtime_for(s.model_type, DEFAULT_RUNTIMES))
    assert (arg in args) if arg else not args
    if env:
        assert env_vars[env[0]] == env[1]
    if claim:
        assert volumes[0]["persistentVolumeClaim"] == {"claimName": claim, "readOnly": True}
        assert mounts[0]["mountPath"] == "/mnt/models"


def test_memory_and_cpu_are_canonical_quantities() -> None:
    s = spec(
        model_type="sklearn",
        computational_resources={"memory_requirements": "1.5GiB", "cpu": "0.5"},
    )
    resources = children(s)["Deployment"]["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["requests"] == {"memory": "1536Mi", "cpu": "500m"}
    assert resources["limits"] == {"memory": "1536Mi"}


def test_monitoring_off_means_no_sidecar_and_configmap_absent() -> None:
    s = spec(
        model_type="sklearn",
        monitoring={"performance_tracking": "disabled", "drift_detection": "inactive"},
    )
    built = build_children(OWNER, s, SETTINGS)
    kinds = [obj["kind"] for obj in built.apply]
    assert kinds == ["Deployment", "Service"]
    assert [(r.kind, r.name) for r in built.absent] == [
        ("ConfigMap", "m-monitor"),
        ("Service", "m-peers"),  # no ground truth
        ("HTTPRoute", "m"),  # no Gateway named
        # Not an llm behind a Gateway: no InferencePool, nor its endpoint picker.
        ("InferencePool", "m"),
        ("Service", "m-epp"),
        ("Deployment", "m-epp"),
        ("ConfigMap", "m-epp"),
        ("RoleBinding", "m-epp"),
        ("Role", "m-epp"),
        ("ServiceAccount", "m-epp"),
        ("NetworkPolicy", "m"),  # the option is off
        ("HorizontalPodAutoscaler", "m"),  # autoscaling is off
    ]
    deployment = built.apply[0]
    assert [c["name"] for c in deployment["spec"]["template"]["spec"]["containers"]] == [
        "model-server"
    ]
    service_ports = {p["name"]: p["targetPort"] for p in built.apply[1]["spec"]["ports"]}
    assert service_ports == {"http": "model-http", "metrics": "model-metrics"}


def test_sidecar_config_follows_spec_and_rolls_pods_when_changed() -> None:
    quiet = children(spec(model_type="sklearn"))
    drifting = children(spec(model_type="sklearn", monitoring={"drift_detection": "active"}))
    assert '"drift": null' in quiet["ConfigMap"]["data"]["config.json"]
    assert '"window_size": 1000' in drifting["ConfigMap"]["data"]["config.json"]
    hash_key = "machine-learning.org/monitor-config-hash"

    def config_hash(built: dict[str, Any]) -> str:
        return built["Deployment"]["spec"]["template"]["metadata"]["annotations"][hash_key]

    assert config_hash(quiet) != config_hash(drifting)


def test_building_is_deterministic() -> None:
    assert build_children(OWNER, founding(), SETTINGS) == build_children(
        OWNER, founding(), SETTINGS
    )


def test_model_version_labels_pods() -> None:
    deployment = children(spec(model_type="sklearn", model_version="2024-06"))["Deployment"]
    assert deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"] == (
        "2024-06"
    )
    # The selector never includes the version: a Deployment's selector cannot change.
    assert "app.kubernetes.io/version" not in deployment["spec"]["selector"]["matchLabels"]


def test_prometheus_operator_objects_only_where_the_api_exists() -> None:
    from dataclasses import replace

    with_operator = replace(SETTINGS, prometheus_operator=True)
    kinds = [o["kind"] for o in build_children(OWNER, founding(), with_operator).apply]
    assert kinds == ["ConfigMap", "Deployment", "Service", "ServiceMonitor", "PrometheusRule"]
    assert "ServiceMonitor" not in [
        o["kind"] for o in build_children(OWNER, founding(), SETTINGS).apply
    ]
    quiet = spec(
        model_type="sklearn",
        monitoring={"performance_tracking": "disabled", "drift_detection": "inactive"},
    )
    absent = {r.kind for r in build_children(OWNER, quiet, with_operator).absent}
    assert absent == {
        "ConfigMap",
        "ServiceMonitor",
        "PrometheusRule",
        "NetworkPolicy",
        "HorizontalPodAutoscaler",
        "HTTPRoute",
        # No InferencePool, nor its endpoint picker: not an llm behind a Gateway.
        "InferencePool",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
    }


def test_alert_rules_follow_the_spec() -> None:
    from mlmodel_operator.builders.prometheus import alert_rules

    rules = {r["alert"]: r for r in alert_rules(OWNER, founding())}
    assert set(rules) == {
        "MLModelDriftDetected",
        "MLModelDriftWorkerStalled",
        "MLModelHighLatency",
        "MLModelHighErrorRatio",
    }
    assert 'namespace="ns",model="m"' in rules["MLModelDriftDetected"]["expr"]
    assert 'namespace="ns",model="m"' in rules["MLModelDriftWorkerStalled"]["expr"]
    tuned = spec(model_type="sklearn", monitoring={"alerts": {"p99_latency_seconds": 0.25}})
    tuned_rules = {r["alert"]: r for r in alert_rules(OWNER, tuned)}
    assert "MLModelDriftDetected" not in tuned_rules  # drift detection is inactive
    assert "MLModelDriftWorkerStalled" not in tuned_rules
    assert tuned_rules["MLModelHighLatency"]["expr"].endswith("> 0.25")


def volume_for(pod: dict[str, Any], container: dict[str, Any], path: str) -> dict[str, Any]:
    """The volume mounted at `path` in `container`, with the mount's readOnly flag."""
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == path)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    return {**volume, "readOnly": mount.get("readOnly", False)}


@pytest.mark.parametrize(
    ("model_uri", "repository", "explicit", "volume", "read_only"),
    [
        # No artifact: an empty, writable repository and explicit model control, so the server
        # starts with no model and models can be loaded through its repository API.
        (None, "/mnt/models", True, "emptyDir", False),
        # Triton could read object storage itself, but then it would need the credentials: the
        # storage initializer downloads the repository, which Triton only reads.
        ("s3://bucket/models", "/mnt/models", False, "emptyDir", True),
        ("gs://bucket/models", "/mnt/models", False, "emptyDir", True),
        ("pvc://claim/triton", "/mnt/models/triton", False, "persistentVolumeClaim", True),
    ],
)
def test_triton_container_follows_its_documentation(
    model_uri: str | None, repository: str, explicit: bool, volume: str, read_only: bool
) -> None:
    """Flags, ports, paths and probes as Triton documents them (`tritonserver --help`; the
    model management guide; the KServe v2 health endpoints), since no Triton runs here."""
    fields = {"model_type": "onnx", **({"model_uri": model_uri} if model_uri else {})}
    pod = children(spec(**fields))["Deployment"]["spec"]["template"]["spec"]
    server = pod["containers"][0]
    assert server["command"] == ["tritonserver"]
    args = server["args"]
    assert {"--http-port=8000", "--grpc-port=8001", "--metrics-port=8002"} <= set(args)
    assert [a for a in args if a.startswith("--model-repository=")] == [
        f"--model-repository={repository}"
    ]
    assert ("--model-control-mode=explicit" in args) == explicit
    assert all(a.split("=")[0].startswith("--") and "=" in a for a in args)
    ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    assert ports == {"model-http": 8000, "model-metrics": 8002}
    for probe, path in (
        ("startupProbe", "/v2/health/ready"),
        ("readinessProbe", "/v2/health/ready"),
        ("livenessProbe", "/v2/health/live"),
    ):
        assert server[probe]["httpGet"] == {"path": path, "port": "model-http"}
    mounted = volume_for(pod, server, "/mnt/models")
    assert volume in mounted
    # Explicit mode may write models into the repository; a claim or a download is only read.
    assert mounted["readOnly"] == read_only
    # The root filesystem is read-only: Triton's scratch space and HOME are the /tmp volume.
    assert volume_for(pod, server, "/tmp")["emptyDir"] == {}
    assert {"name": "HOME", "value": "/tmp"} in server["env"]
    # The NGC image's server user is triton-server, UID 1000.
    assert pod["securityContext"]["runAsUser"] == 1000


def test_an_image_of_ones_own_keeps_what_it_holds_at_the_model_path() -> None:
    s = spec(model_type="pytorch", image="ghcr.io/acme/triton-with-models:1")
    pod = children(s)["Deployment"]["spec"]["template"]["spec"]
    server = pod["containers"][0]
    assert "--model-control-mode=explicit" not in server["args"]
    assert all(m["mountPath"] != "/mnt/models" for m in server["volumeMounts"])
    assert no_model_note(s, runtime_for(s.model_type, SETTINGS.runtimes)) is None


def test_no_model_note_says_plainly_that_nothing_is_loaded() -> None:
    note = no_model_note(founding(), runtime_for(founding().model_type, SETTINGS.runtimes))
    assert note is not None
    assert note.startswith("no model is loaded: model_uri is unset")
    assert "repository API" in note
    with_uri = spec(model_type="onnx", model_uri="s3://b/m")
    assert no_model_note(with_uri, runtime_for(with_uri.model_type, SETTINGS.runtimes)) is None


@pytest.mark.parametrize(
    ("resources", "cpu"),
    [
        ({"gpu_allocation": 4}, "8"),
        ({"gpu_allocation": 1}, "2"),
        ({"gpu_allocation": 4, "cpu": "500m"}, "500m"),
        ({"cpu": "2"}, "2"),
        ({}, None),
    ],
)
def test_cpu_request_defaults_to_two_per_gpu(resources: dict[str, Any], cpu: str | None) -> None:
    server = children(spec(model_type="pytorch", computational_resources=resources))["Deployment"][
        "spec"
    ]["template"]["spec"]["containers"][0]
    assert server["resources"]["requests"].get("cpu") == cpu
    assert "cpu" not in server["resources"]["limits"]


NETWORK_POLICY = NetworkPolicySettings(
    clients={"machine-learning.org/model-client": "true"},
    scrapers={"kubernetes.io/metadata.name": "monitoring"},
)


@pytest.mark.parametrize(
    ("fields", "ports"),
    [
        # The sidecar's ports: the model server is reached only through it, on loopback.
        ({"model_type": "sklearn"}, ["http", "metrics"]),
        (
            {"model_type": "onnx", "monitoring": {"performance_tracking": "disabled"}},
            ["model-http", "model-metrics"],
        ),
        (
            {
                "model_type": "custom",
                "image": "ghcr.io/acme/m:1",
                "monitoring": {"performance_tracking": "disabled"},
            },
            ["model-http"],
        ),
    ],
)
def test_network_policy_opens_what_the_service_serves(
    fields: dict[str, Any], ports: list[str]
) -> None:
    settings = BuildSettings(
        runtimes=dict(DEFAULT_RUNTIMES), monitor_image="monitor:1", network_policy=NETWORK_POLICY
    )
    built = {o["kind"]: o for o in build_children(OWNER, spec(**fields), settings).apply}
    policy = built["NetworkPolicy"]
    assert policy["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert policy["spec"]["podSelector"] == built["Deployment"]["spec"]["selector"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    service_targets = [p["targetPort"] for p in built["Service"]["spec"]["ports"]]
    opened = [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]]
    assert opened == ports == service_targets
    clients, *scrapers = policy["spec"]["ingress"]
    assert clients["from"] == [
        {"namespaceSelector": {"matchLabels": NETWORK_POLICY.clients}},
        {"podSelector": {"matchLabels": NETWORK_POLICY.clients}},
    ]
    for rule in scrapers:
        assert rule["from"] == [{"namespaceSelector": {"matchLabels": NETWORK_POLICY.scrapers}}]


def test_without_the_option_a_network_policy_is_removed() -> None:
    absent = build_children(OWNER, founding(), SETTINGS).absent
    assert ObjectRef("networking.k8s.io/v1", "NetworkPolicy", "ns", "m") in absent


def test_mlserver_is_ready_when_its_model_is() -> None:
    # MLServer's server-wide readiness answers 200 with no model loaded (seen on the real node,
    # a model that failed to load); the model's own endpoint does not.
    built = children(spec(model_type="sklearn"))
    server, _ = built["Deployment"]["spec"]["template"]["spec"]["containers"]
    for probe in ("startupProbe", "readinessProbe"):
        assert server[probe]["httpGet"]["path"] == "/v2/models/m/ready"
    assert server["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    (monitor,) = (json.loads(text) for text in built["ConfigMap"]["data"].values())
    assert monitor["upstream_ready_path"] == "/v2/models/m/ready"


# --- model_type llm (vLLM) ----------------------------------------------------------------------


def llm_pod(**fields: Any) -> dict[str, Any]:
    base = {
        "model_type": "llm",
        "model_uri": "hf://meta-llama/Llama-3.1-70B-Instruct",
        "computational_resources": {"gpu_allocation": 4, "memory_requirements": "64GB"},
    }
    return children(spec(**{**base, **fields}))["Deployment"]["spec"]["template"]["spec"]


def test_a_four_gpu_llm_runs_vllm_with_tensor_parallelism_and_shared_memory() -> None:
    pod = llm_pod(llm={"max_model_len": 8192, "dtype": "bfloat16", "gpu_memory_utilization": 0.92,
                       "extra_args": ["--enable-prefix-caching"]})  # fmt: skip
    server = pod["containers"][0]
    assert server["image"] == "docker.io/vllm/vllm-openai:v0.32.0"
    assert server["command"] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    assert server["args"] == [
        "--model=/mnt/models",
        "--served-model-name=m",
        "--port=8000",
        "--tensor-parallel-size=4",
        "--max-model-len=8192",
        "--dtype=bfloat16",
        "--gpu-memory-utilization=0.92",
        "--enable-prefix-caching",
    ]
    assert server["resources"] == {
        "requests": {"memory": "64G", "cpu": "8"},  # 2 CPUs per GPU
        "limits": {"memory": "64G", "nvidia.com/gpu": "4"},
    }
    # 2 GiB of memory-backed /dev/shm per GPU, within half the memory.
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}} in pod["volumes"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in server["volumeMounts"]
    env = {e["name"]: e["value"] for e in server["env"]}
    assert env["HF_HUB_OFFLINE"] == "1" and env["HOME"] == "/tmp"
    # Ready once the model is served (/v1/models), alive while the process answers (/health);
    # the default start-up budget is 30 minutes.
    assert server["startupProbe"]["httpGet"]["path"] == "/v1/models"
    assert (
        server["startupProbe"]["periodSeconds"] * server["startupProbe"]["failureThreshold"] == 1800
    )
    assert server["readinessProbe"]["httpGet"]["path"] == "/v1/models"
    assert server["livenessProbe"]["httpGet"]["path"] == "/health"


def test_llm_weights_from_the_hub_go_through_the_initializer_with_the_token() -> None:
    pod = llm_pod(storage={"secret_name": "hf-token"})
    fetcher = pod["initContainers"][0]
    assert fetcher["args"][:2] == ["hf://meta-llama/Llama-3.1-70B-Instruct", "/mnt/models"]
    assert fetcher["envFrom"] == [{"secretRef": {"name": "hf-token"}}]
    volume = next(v for v in pod["volumes"] if v["name"] == "model-store")
    assert volume["emptyDir"]["sizeLimit"] == "500Gi"  # the llm default
    assert f"--size-limit={500 * 2**30}" in fetcher["args"]
    assert not any(e.get("envFrom") for e in pod["containers"])  # the token stays there


def test_a_cpu_llm_has_no_tensor_parallelism_and_a_smaller_shm() -> None:
    pod = llm_pod(
        model_uri="pvc://weights/tiny",
        computational_resources={"memory_requirements": "3Gi"},
        llm={"startup_timeout_seconds": 125},
    )
    server = pod["containers"][0]
    assert not any(a.startswith("--tensor-parallel-size") for a in server["args"])
    assert "--model=/mnt/models/tiny" in server["args"]
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["sizeLimit"] == "1536Mi"  # half of 3Gi, under 2 GiB
    assert server["startupProbe"]["failureThreshold"] == 63  # 125 s in 2 s probes, rounded up


def test_the_llm_sidecar_reads_openai_and_adds_vllms_metrics() -> None:
    config = children(spec(model_type="llm", model_uri="pvc://w/m"))["ConfigMap"]["data"]
    settings = json.loads(config["config.json"])
    assert settings["protocol"] == "openai"
    assert settings["upstream_ready_path"] == "/v1/models"
    assert settings["upstream_metrics_path"] == "/metrics"
    assert settings["upstream"] == "http://127.0.0.1:8000"


def test_ground_truth_and_payload_logging_shape_the_sidecar_and_its_peers() -> None:
    s = spec(
        model_type="sklearn",
        monitoring={
            "sidecar_cpu": "2",
            "ground_truth": {"task": "classification", "max_pending": "32Mi"},
            "payload_logging": {
                "url": "http://sink.logs.svc/events",
                "secret_name": "sink-token",
                "max_queued": "8Mi",
            },
        },
    )
    settings = BuildSettings(
        runtimes=dict(DEFAULT_RUNTIMES), monitor_image="monitor:1", network_policy=NETWORK_POLICY
    )
    built = {
        (o["kind"], o["metadata"]["name"]): o for o in build_children(OWNER, s, settings).apply
    }
    config = json.loads(built[("ConfigMap", "m-monitor")]["data"]["config.json"])
    assert config["ground_truth"]["peers_host"] == "m-peers.ns.svc"
    assert config["ground_truth"]["max_pending_bytes"] == 32 * 2**20
    assert (
        config["payload_logging"]["authorization_file"] == "/etc/mlmodel-monitor-sink/authorization"
    )
    assert config["namespace"] == "ns"
    peers = built[("Service", "m-peers")]["spec"]
    assert peers["clusterIP"] == "None" and peers["publishNotReadyAddresses"] is True
    pod = built[("Deployment", "m")]["spec"]["template"]["spec"]
    sidecar = next(c for c in pod["containers"] if c["name"] == "monitor")
    assert {
        "name": "MLMODEL_MONITOR_POD_IP",
        "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
    } in sidecar["env"]
    assert [p["containerPort"] for p in sidecar["ports"] if p["name"].startswith("feedback")] == [
        9200,
        9201,
    ]
    # Two workers: 256 + 160 MiB, and each worker's 32 MiB of predictions and 8 MiB of events.
    assert sidecar["resources"]["limits"]["memory"] == f"{256 + 160 + 2 * 40}Mi"
    secret = next(v for v in pod["volumes"] if v["name"] == "monitor-sink-auth")
    assert secret["secret"]["secretName"] == "sink-token"
    policy = built[("NetworkPolicy", "m")]["spec"]["ingress"]
    peer_rule = next(r for r in policy if r["ports"][0]["port"] == 9200)
    assert peer_rule["ports"][0]["endPort"] == 9201
    assert peer_rule["from"] == [{"podSelector": {"matchLabels": pod_selector(built)}}]


def pod_selector(built: dict) -> dict[str, str]:
    return built[("Deployment", "m")]["spec"]["selector"]["matchLabels"]


def test_a_custom_port_must_leave_the_feedback_ports_free() -> None:
    fields = {"model_type": "custom", "image": "x:1", "port": 9201}
    assert spec(**fields).port == 9201
    with pytest.raises(ValueError, match="9200-9263"):
        spec(**fields, monitoring={"ground_truth": {"task": "regression"}})
