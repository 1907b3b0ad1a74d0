"""Small helpers for tests that talk to a real API server."""

from __future__ import annotations

import contextlib
import copy
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent
# Every namespace the suite creates carries this label, so that a later run on the same cluster
# can remove what an interrupted one left behind.
SUITE_LABEL = "mlmodel-operator.test/suite"


def cached_bin_dirs() -> list[Path]:
    """The cache directories of the pinned binaries, as hack/build-binaries.sh lays them out."""
    out = subprocess.run(
        ["bash", str(REPO / "hack" / "build-binaries.sh"), "--print"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [Path(line) for line in out.split()]


def wait_until(
    check: Callable[[], T],
    *,
    what: str,
    timeout: float = 60.0,
    interval: float = 0.25,
    not_found_is_false: bool = True,
) -> T:
    """Poll until `check()` returns something truthy and return it; fail naming `what`.

    An API 404 inside `check` counts as "not yet" unless `not_found_is_false` is False.
    """
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except ApiException as err:
            if err.status != 404 or not not_found_is_false:
                raise
            last = None
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last value: {last!r}")


@dataclass
class TestCluster:
    kubeconfig: Path
    # Directories put first on PATH for kubectl and helm (empty: use $PATH as it is).
    bin_dirs: list[Path] = field(default_factory=list)

    __test__ = False  # not a test class, despite the name

    @cached_property
    def env(self) -> dict[str, str]:
        path = os.pathsep.join([*map(str, self.bin_dirs), os.environ.get("PATH", "")])
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PATH": path}

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        env = self.env if kubeconfig is None else {**self.env, "KUBECONFIG": str(kubeconfig)}
        result = subprocess.run(
            ["kubectl", *args], input=input, capture_output=True, text=True, env=env
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def mlmd(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`kubectl mlmd`, as a user runs it: kubectl finds the console script `kubectl-mlmd`,
        installed beside this interpreter, on PATH."""
        path = f"{Path(sys.executable).parent}{os.pathsep}{self.env['PATH']}"
        result = subprocess.run(
            ["kubectl", "mlmd", *args],
            capture_output=True,
            text=True,
            env={**self.env, "PATH": path},
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl mlmd {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def token_kubeconfig(self, token: str, path: Path) -> Path:
        """A kubeconfig at `path` for the same cluster that authenticates with `token` only."""
        config_doc = yaml.safe_load(self.kubeconfig.read_text())
        context = next(
            c["context"]
            for c in config_doc["contexts"]
            if c["name"] == config_doc["current-context"]
        )
        cluster = next(c for c in config_doc["clusters"] if c["name"] == context["cluster"])
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [cluster],
                    "users": [{"name": "token", "user": {"token": token}}],
                    "contexts": [
                        {"name": "token", "context": {"cluster": cluster["name"], "user": "token"}}
                    ],
                    "current-context": "token",
                }
            )
        )
        return path

    @cached_property
    def api(self) -> client.ApiClient:
        return config.new_client_from_config(config_file=str(self.kubeconfig))


def create_namespace(api: client.ApiClient, name: str, labels: dict[str, str] | None = None) -> str:
    """A namespace labelled as the suite's, ready for pods (its default ServiceAccount exists)."""
    core = client.CoreV1Api(api)
    meta = client.V1ObjectMeta(name=name, labels={SUITE_LABEL: "true", **(labels or {})})
    core.create_namespace(client.V1Namespace(metadata=meta))
    wait_until(
        lambda: any(
            sa.metadata.name == "default" for sa in core.list_namespaced_service_account(name).items
        ),
        what=f"the default ServiceAccount in {name}",
    )
    return name


def open_crd(
    group: str, version: str, kind: str, plural: str, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    """A stand-in for another project's CRD (Prometheus Operator, Gateway API, KEDA): same
    group, version and kind, schema left open (the real ones are large; the API server needs no
    more to store the objects the operator makes, and the operator's watches no more to see
    them)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}", "annotations": annotations or {}},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "versions": [
                {
                    "name": version,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }


@contextlib.contextmanager
def installed_crds(api: client.ApiClient, crds: list[dict[str, Any]]) -> Iterator[None]:
    """The CRDs, established, for the length of the block; deleted afterwards, and waited for
    (deletion finishes asynchronously, and the next test may create them again)."""
    ext = client.ApiextensionsV1Api(api)
    for crd in crds:
        ext.create_custom_resource_definition(copy.deepcopy(crd))
    for crd in crds:
        name = crd["metadata"]["name"]
        wait_until(
            lambda name=name: any(
                c.type == "Established" and c.status == "True"
                for c in ext.read_custom_resource_definition(name).status.conditions or []
            ),
            what=f"{name} to be established",
        )
    try:
        yield
    finally:
        names = {crd["metadata"]["name"] for crd in crds}
        for name in names:
            ext.delete_custom_resource_definition(name)
        wait_until(
            lambda: (
                not names & {c.metadata.name for c in ext.list_custom_resource_definition().items}
            ),
            what=f"{', '.join(sorted(names))} to be deleted",
        )
