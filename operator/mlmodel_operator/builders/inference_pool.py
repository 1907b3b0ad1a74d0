"""The Gateway API Inference Extension's objects for an `llm` model behind a Gateway: an
InferencePool over the model's pods, the endpoint picker that chooses a pod for each request
(its Deployment, Service, plugins ConfigMap, ServiceAccount, Role and RoleBinding), and the
HTTPRoute whose backend is the pool.

During a canary there is one pool over both versions' pods (they share the selector labels):
the picker balances by each pod's queue and KV-cache, so the canary's share of traffic follows
its share of replicas, as without a Gateway. A weighted split would need a pool, a picker and a
backend per version; the rollout therefore treats a pool as a split by replicas.
"""

from __future__ import annotations

from typing import Any

import yaml

from mlmodel_operator import api
from mlmodel_operator.builders.meta import (
    COMPONENT_LABEL,
    INSTANCE_LABEL,
    NAME_LABEL,
    RESTRICTED_CONTAINER_SECURITY,
    Owner,
    object_meta,
    restricted_pod_security,
    selector_labels,
)
from mlmodel_operator.builders.route import ROUTE_API, parent_ref
from mlmodel_operator.hashing import content_hash
from mlmodel_operator.runtimes import Runtime

POOL_GROUP = "inference.networking.k8s.io"
POOL_API = f"{POOL_GROUP}/v1"
POOL_KIND = "InferencePool"
RBAC_API = "rbac.authorization.k8s.io/v1"
PICKER = "endpoint-picker"
PICKER_SUFFIX = "-epp"
# Fixed by the Inference Extension's conventions: gateways find ext-proc on 9002.
EXT_PROC_PORT = 9002
PICKER_METRICS_PORT = 9090
# The picker answers gRPC health checks here, under this service name.
HEALTH_PORT = 9003
HEALTH_SERVICE = "inference-extension"
CONFIG_DIR = "/config"
CONFIG_FILE = "plugins.yaml"
CONFIG_HASH_ANNOTATION = f"{api.GROUP}/picker-config-hash"
# The ext-proc stream is cleartext HTTP/2 (the picker runs with --secure-serving=false).
H2C = "kubernetes.io/h2c"

# llm-d's default scheduling: the pod with the shortest queue, the most free KV-cache and the
# longest cached prefix wins. Its metrics are read from each pod's /metrics on the pool's target
# port, which is the sidecar's when there is one: the sidecar forwards /metrics to vLLM.
PLUGINS_CONFIG: dict[str, Any] = {
    "apiVersion": "llm-d.ai/v1alpha1",
    "kind": "EndpointPickerConfig",
    "plugins": [
        {"type": "queue-scorer"},
        {"type": "kv-cache-utilization-scorer"},
        {"type": "prefix-cache-scorer"},
        {
            "type": "metrics-data-source",
            "parameters": {"scheme": "http", "path": "/metrics", "insecureSkipVerify": True},
        },
        {"type": "core-metrics-extractor"},
    ],
    "schedulingProfiles": [
        {
            "name": "default",
            "plugins": [
                {"pluginRef": "queue-scorer", "weight": 2},
                {"pluginRef": "kv-cache-utilization-scorer", "weight": 2},
                {"pluginRef": "prefix-cache-scorer", "weight": 3},
            ],
        }
    ],
}

# What the picker reads, in the model's namespace, and nothing else: the pool it serves, the
# pool's pods, and llm-d's optional per-model objectives and rewrites (watched when served).
# Its metrics endpoint is unauthenticated (--metrics-endpoint-auth=false), so it needs no
# TokenReview or SubjectAccessReview, which a namespaced Role could not grant anyway.
PICKER_RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [POOL_GROUP], "resources": ["inferencepools"], "verbs": ["get", "list", "watch"]},
    {
        "apiGroups": ["llm-d.ai"],
        "resources": ["inferenceobjectives", "inferencemodelrewrites"],
        "verbs": ["get", "list", "watch"],
    },
]

PICKER_RESOURCES = {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "2Gi"}}


def pool_wanted(spec: api.MLModelDeploymentSpec, *, gateway_api: bool, pool_api: bool) -> bool:
    """Whether the model is served through an InferencePool: an `llm` naming a Gateway, on a
    cluster serving both HTTPRoutes and InferencePools."""
    return (
        spec.model_type == api.ModelType.llm
        and spec.rollout.gateway is not None
        and gateway_api
        and pool_api
    )


def picker_name(owner: Owner) -> str:
    return owner.name + PICKER_SUFFIX


def picker_selector(owner: Owner) -> dict[str, str]:
    """The picker's pods: never the model's selector (its Service and pool would take them)."""
    return {NAME_LABEL: PICKER, INSTANCE_LABEL: owner.name}


def _meta(owner: Owner, spec: api.MLModelDeploymentSpec, name: str) -> dict[str, Any]:
    meta = object_meta(owner, spec, name)
    meta["labels"][COMPONENT_LABEL] = PICKER
    return meta


def build_inference_pool(
    owner: Owner, spec: api.MLModelDeploymentSpec, target_port: int
) -> dict[str, Any]:
    return {
        "apiVersion": POOL_API,
        "kind": POOL_KIND,
        "metadata": object_meta(owner, spec, owner.name),
        "spec": {
            "selector": {"matchLabels": selector_labels(owner)},
            "targetPorts": [{"number": target_port}],
            "endpointPickerRef": {
                "kind": "Service",
                "name": picker_name(owner),
                "port": {"number": EXT_PROC_PORT},
                # A picker that is down leaves the gateway to pick a pod itself rather than
                # fail every request: the pods still serve, only less evenly.
                "failureMode": "FailOpen",
            },
        },
    }


def build_pool_route(
    owner: Owner, spec: api.MLModelDeploymentSpec, gateway: api.GatewayParent
) -> dict[str, Any]:
    """The model's HTTPRoute (same name as the Service-backed one, so switching is an update)
    with the pool as its one backend."""
    backend = {"group": POOL_GROUP, "kind": POOL_KIND, "name": owner.name}
    return {
        "apiVersion": ROUTE_API,
        "kind": "HTTPRoute",
        "metadata": object_meta(owner, spec, owner.name),
        "spec": {"parentRefs": [parent_ref(gateway)], "rules": [{"backendRefs": [backend]}]},
    }


def build_picker_configmap(owner: Owner, spec: api.MLModelDeploymentSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(owner, spec, picker_name(owner)),
        "data": {CONFIG_FILE: yaml.safe_dump(PLUGINS_CONFIG, sort_keys=False)},
    }


def build_picker_service_account(owner: Owner, spec: api.MLModelDeploymentSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(owner, spec, picker_name(owner)),
    }


def build_picker_role(owner: Owner, spec: api.MLModelDeploymentSpec) -> dict[str, Any]:
    return {
        "apiVersion": RBAC_API,
        "kind": "Role",
        "metadata": _meta(owner, spec, picker_name(owner)),
        "rules": PICKER_RULES,
    }


def build_picker_role_binding(owner: Owner, spec: api.MLModelDeploymentSpec) -> dict[str, Any]:
    name = picker_name(owner)
    return {
        "apiVersion": RBAC_API,
        "kind": "RoleBinding",
        "metadata": _meta(owner, spec, name),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": owner.namespace}],
    }


def build_picker_service(owner: Owner, spec: api.MLModelDeploymentSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(owner, spec, picker_name(owner)),
        "spec": {
            "type": "ClusterIP",
            "selector": picker_selector(owner),
            "ports": [
                {
                    "name": "grpc-ext-proc",
                    "port": EXT_PROC_PORT,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": H2C,
                },
                {
                    "name": "http-metrics",
                    "port": PICKER_METRICS_PORT,
                    "targetPort": "metrics",
                    "protocol": "TCP",
                },
            ],
        },
    }


def picker_args(owner: Owner, runtime: Runtime) -> list[str]:
    """The pool the picker serves and its health port; the catalog entry's args (the config
    file, cleartext serving, logging) follow, so an installation can change them."""
    return [
        f"--pool-name={owner.name}",
        f"--pool-namespace={owner.namespace}",
        f"--pool-group={POOL_GROUP}",
        f"--grpc-health-port={HEALTH_PORT}",
        *runtime.args,
    ]


def build_picker_deployment(
    owner: Owner,
    spec: api.MLModelDeploymentSpec,
    runtime: Runtime,
    config_hash: str,
    client_labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One replica: the picker keeps per-pod state (the prefixes it sent where), which two
    active replicas would split. Recreate, so that the old one is gone before the new starts.
    `client_labels`: the NetworkPolicy's client labels, which let it reach the model's pods."""
    health = {"grpc": {"port": HEALTH_PORT, "service": HEALTH_SERVICE}}
    container = {
        "name": PICKER,
        "image": runtime.image,
        "imagePullPolicy": "IfNotPresent",
        "args": picker_args(owner, runtime),
        "env": [
            {"name": "NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
        "ports": [
            {"name": "grpc", "containerPort": runtime.port, "protocol": "TCP"},
            {"name": "grpc-health", "containerPort": HEALTH_PORT, "protocol": "TCP"},
            {
                "name": "metrics",
                "containerPort": runtime.metrics_port or PICKER_METRICS_PORT,
                "protocol": "TCP",
            },
        ],
        "livenessProbe": {**health, "initialDelaySeconds": 5, "periodSeconds": 10},
        "readinessProbe": {**health, "periodSeconds": 2},
        "resources": PICKER_RESOURCES,
        "securityContext": RESTRICTED_CONTAINER_SECURITY,
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    pod_labels = {**(client_labels or {}), **picker_selector(owner)}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(owner, spec, picker_name(owner)),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": picker_selector(owner)},
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    # The picker reads its config once, at start: a new config is a new pod.
                    "annotations": {CONFIG_HASH_ANNOTATION: config_hash},
                },
                "spec": {
                    "serviceAccountName": picker_name(owner),
                    "securityContext": restricted_pod_security(runtime.user_id),
                    "containers": [container],
                    "volumes": [
                        {"name": "config", "configMap": {"name": picker_name(owner)}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                    ],
                },
            },
        },
    }


def build_pool_children(
    owner: Owner,
    spec: api.MLModelDeploymentSpec,
    runtime: Runtime,
    target_port: int,
    gateway: api.GatewayParent,
    client_labels: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Everything, in the order it is applied: the picker's identity and rights before the pod
    that uses them, the pool before the route that names it."""
    configmap = build_picker_configmap(owner, spec)
    return [
        build_picker_service_account(owner, spec),
        build_picker_role(owner, spec),
        build_picker_role_binding(owner, spec),
        configmap,
        build_picker_deployment(
            owner, spec, runtime, content_hash(configmap["data"]), client_labels
        ),
        build_picker_service(owner, spec),
        build_inference_pool(owner, spec, target_port),
        build_pool_route(owner, spec, gateway),
    ]


def pool_object_keys(owner: Owner) -> list[tuple[str, str, str]]:
    """(apiVersion, kind, name) of every object above but the route, which the Service-backed
    route replaces under the same name. In the order they are deleted: the pool first, the
    picker's identity last, so that the picker can see its pool go."""
    name = picker_name(owner)
    return [
        (POOL_API, POOL_KIND, owner.name),
        ("v1", "Service", name),
        ("apps/v1", "Deployment", name),
        ("v1", "ConfigMap", name),
        (RBAC_API, "RoleBinding", name),
        (RBAC_API, "Role", name),
        ("v1", "ServiceAccount", name),
    ]
