"""The Inference Extension's objects on the local control plane, with the real HTTPRoute and
InferencePool CRDs (hack/fetch-crds.sh): the API server accepts every object the operator makes
for an `llm` model behind a Gateway; they follow the spec and the APIs the cluster serves; and
nothing is left behind. The Inference Extension's own endpoint picker, run as a process with the
picker's ServiceAccount, reads the pool the operator made."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from kube_helpers import TestCluster, installed_crds, wait_until
from model_helpers import Models
from picker_procs import endpoint_picker, real_crds

pytestmark = pytest.mark.integration

NAME = "chat"
PICKER = NAME + "-epp"
ROUTE = ("gateway.networking.k8s.io", "v1", "httproutes")
POOL = ("inference.networking.k8s.io", "v1", "inferencepools")
ROUTE_CRD = "httproutes.gateway.networking.k8s.io"
POOL_CRD = "inferencepools.inference.networking.k8s.io"
GATEWAY = {"name": "inference", "namespace": "infra"}


def manifest() -> dict[str, Any]:
    return {
        "apiVersion": "machine-learning.org/v1",
        "kind": "MLModelDeployment",
        "metadata": {"name": NAME},
        "spec": {
            "model_type": "llm",
            "model_uri": "pvc://weights/llama",
            "model_version": "v1",
            "replicas": 2,
            "rollout": {"gateway": GATEWAY},
        },
    }


@pytest.fixture
def crds() -> dict[str, dict[str, Any]]:
    return real_crds()


@pytest.fixture
def gateway_api(cluster: TestCluster, crds: dict[str, dict[str, Any]]) -> Iterator[None]:
    with installed_crds(cluster.api, [crds[ROUTE_CRD]]):
        yield


@pytest.fixture
def later() -> Iterator[contextlib.ExitStack]:
    """CRDs installed mid-test, removed after the operator has stopped: a CRD deleted under a
    running kopf can fail its re-list with a 404, which stops it."""
    with contextlib.ExitStack() as stack:
        yield stack


@pytest.fixture
def pool_api(cluster: TestCluster, crds: dict[str, dict[str, Any]]) -> Iterator[None]:
    with installed_crds(cluster.api, [crds[POOL_CRD]]):
        yield


@pytest.fixture
def models(cluster: TestCluster, namespace: str, operator: Any) -> Models:
    return Models(cluster, namespace)


class Objects:
    """Reads of the model's objects of every kind the pool brings."""

    def __init__(self, models: Models) -> None:
        self.models = models
        self.rbac = client.RbacAuthorizationV1Api(models.core.api_client)
        ns = models.namespace
        self.readers = {
            "ServiceAccount": lambda: models.core.read_namespaced_service_account(PICKER, ns),
            "Role": lambda: self.rbac.read_namespaced_role(PICKER, ns),
            "RoleBinding": lambda: self.rbac.read_namespaced_role_binding(PICKER, ns),
            "ConfigMap": lambda: models.core.read_namespaced_config_map(PICKER, ns),
            "Deployment": lambda: models.apps.read_namespaced_deployment(PICKER, ns),
            "Service": lambda: models.core.read_namespaced_service(PICKER, ns),
            "InferencePool": lambda: self.custom(POOL),
        }

    def custom(self, plural: tuple[str, str, str], name: str = NAME) -> dict[str, Any]:
        return self.models.custom.get_namespaced_custom_object(
            *plural[:2], self.models.namespace, plural[2], name
        )

    def present(self) -> set[str]:
        """The kinds of which the pool's object exists."""
        found = set()
        for kind, read in self.readers.items():
            try:
                read()
            except client.ApiException as err:
                if err.status != 404:
                    raise
            else:
                found.add(kind)
        return found

    def route_backend(self) -> tuple[str, str] | None:
        try:
            route = self.custom(ROUTE)
        except client.ApiException as err:
            if err.status == 404:
                return None
            raise
        [backend] = route["spec"]["rules"][0]["backendRefs"]
        return backend["kind"], backend["name"]


ALL = {"ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Deployment", "Service"}


def wait_pool(objects: Objects) -> None:
    wait_until(lambda: objects.present() == ALL | {"InferencePool"}, what="the pool's objects")
    wait_until(
        lambda: objects.route_backend() == ("InferencePool", NAME), what="the route to the pool"
    )


@pytest.mark.timeout(300)
def test_pool_objects_are_accepted_follow_the_spec_and_the_served_apis_and_leave_nothing(
    cluster: TestCluster,
    crds: dict[str, dict[str, Any]],
    gateway_api: None,
    later: contextlib.ExitStack,
    models: Models,
) -> None:
    objects = Objects(models)
    models.create(manifest())
    # No InferencePools served yet: the route goes to the model's Service, and no picker.
    wait_until(
        lambda: objects.route_backend() == ("Service", NAME), what="the route to the Service"
    )
    assert not objects.present()

    later.enter_context(installed_crds(cluster.api, [crds[POOL_CRD]]))
    # Each one stored by the API server, the pool and the route against the real schemas.
    wait_pool(objects)
    pool = objects.custom(POOL)["spec"]
    assert pool["targetPorts"] == [{"number": 8480}]
    assert pool["endpointPickerRef"]["name"] == PICKER
    service = models.core.read_namespaced_service(PICKER, models.namespace)
    assert {p.port: p.app_protocol for p in service.spec.ports} == {
        9002: "kubernetes.io/h2c",
        9090: None,
    }
    route = objects.custom(ROUTE)
    assert route["spec"]["parentRefs"][0]["name"] == GATEWAY["name"]

    # No Gateway named: the route and every pool object go.
    models.patch_spec({"rollout": {"gateway": None}}, NAME)
    wait_until(lambda: not objects.present(), what="the pool's objects to be deleted")
    wait_until(lambda: objects.route_backend() is None, what="the route to be deleted")

    models.patch_spec({"rollout": {"gateway": GATEWAY}}, NAME)
    wait_pool(objects)

    models.custom.delete_namespaced_custom_object(
        "machine-learning.org", "v1", models.namespace, "mlmodeldeployments", NAME
    )
    wait_until(lambda: not labelled(models), what="the model's objects to be collected")
    # The garbage collector learns of a newly installed CRD's kind at its next discovery
    # refresh (every 30 s), so the pool may go after the rest.
    wait_until(lambda: not objects.present(), what="the pool to be collected", timeout=120)


def labelled(models: Models) -> list[str]:
    """Every object of the kinds the model had that carries its instance label."""
    ns, selector = models.namespace, f"app.kubernetes.io/instance={NAME}"
    rbac = client.RbacAuthorizationV1Api(models.core.api_client)
    lists = [
        models.apps.list_namespaced_deployment(ns, label_selector=selector).items,
        models.core.list_namespaced_service(ns, label_selector=selector).items,
        models.core.list_namespaced_config_map(ns, label_selector=selector).items,
        models.core.list_namespaced_service_account(ns, label_selector=selector).items,
        rbac.list_namespaced_role(ns, label_selector=selector).items,
        rbac.list_namespaced_role_binding(ns, label_selector=selector).items,
    ]
    found = [f"{o.kind or type(o).__name__}/{o.metadata.name}" for items in lists for o in items]
    routes = models.custom.list_namespaced_custom_object(
        *ROUTE[:2], ns, ROUTE[2], label_selector=selector
    )["items"]
    return found + [f"HTTPRoute/{r['metadata']['name']}" for r in routes]


def counter(text: str, name: str, **labels: str) -> float:
    """The value of one series of a Prometheus text exposition; 0 when absent."""
    for line in text.splitlines():
        match = re.match(rf"{name}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            return float(match.group(2))
    return 0.0


@pytest.mark.timeout(300)
def test_the_endpoint_picker_reads_the_pool_with_the_role_the_operator_made(
    cluster: TestCluster,
    crds: dict[str, dict[str, Any]],
    gateway_api: None,
    pool_api: None,
    models: Models,
    tmp_path: Path,
) -> None:
    objects = Objects(models)
    models.create(manifest())
    wait_pool(objects)
    with endpoint_picker(cluster, models.namespace, NAME, tmp_path) as picker:

        def reconciled(result: str) -> float:
            return counter(
                picker.metrics(),
                "controller_runtime_reconcile_total",
                controller="inferencepool",
                result=result,
            )

        wait_until(lambda: reconciled("success") >= 1, what="the picker to read the pool")
        assert "Reconciling InferencePool" in picker.log.read_text()
        # Read as the picker's ServiceAccount: nothing it was refused.
        assert reconciled("error") == 0
        assert "forbidden" not in picker.log.read_text()
        before = reconciled("success")
        # The pool deleted by hand: the picker sees it go, and the operator's new one come.
        models.custom.delete_namespaced_custom_object(*POOL[:2], models.namespace, POOL[2], NAME)
        wait_until(
            lambda: "InferencePool not found" in picker.log.read_text(),
            what="the picker to clear its pool",
        )
        wait_until(lambda: objects.custom(POOL), what="the operator to make the pool again")
        wait_until(lambda: reconciled("success") >= before + 2, what="the picker to read it")
        assert reconciled("error") == 0
