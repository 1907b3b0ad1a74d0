"""The kind tests' cluster: pytest-kind-ng's `kind_cluster`, on this host with podman and the node
image of hack/kindnode.py, in GitHub Actions with Docker and the stock kindest/node image.

MLMODEL_KIND_PROVIDER says which (default podman). With podman the host is prepared as
`make kind-up` prepares it (hack/kindcluster.py). The project's images are built and loaded as
`make kind-up` loads them, unless MLMODEL_KIND_IMAGES (JSON, NAME -> image) names images already
in the provider's own store: Docker's (loaded with `kind load docker-image`, as the workflow
does after `docker build`) or kind's podman storage (hack/kindpodman.py).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "hack"))
import kindcluster  # noqa: E402  (hack/ is not a package)
import kindpodman  # noqa: E402

CLUSTER_NAME = "mlmodel-kind-test"  # apart from `make kind-up`'s mlmodel-kind
IMAGES = ["operator", "mlserver"]


def provider() -> str:
    return os.environ.get("MLMODEL_KIND_PROVIDER", "podman")


def configure(config: pytest.Config) -> None:
    """pytest-kind-ng's options, unless given: the cached kind and kubectl, and a cluster name
    of ours (its default, pytest-kind, is anyone's)."""
    option = config.option
    if not hasattr(option, "kind_bin"):
        return
    dirs = kindcluster.kindnode.bin_dirs()
    option.kind_bin = option.kind_bin or str(dirs["kind"] / "kind")
    option.kind_kubectl_bin = option.kind_kubectl_bin or str(dirs["kubernetes"] / "kubectl")
    if option.cluster_name == "pytest-kind":
        option.cluster_name = CLUSTER_NAME


@contextmanager
def podman_host(config: pytest.Config) -> Iterator[None]:
    """This host made ready for kind as `make kind-up` makes it, and its node image built; kind
    runs with podman's environment for as long as the cluster lives, then the host is restored."""
    if reason := kindcluster.unavailable_reason():
        pytest.skip(f"no kind cluster here: {reason}")
    name = config.option.cluster_name
    config.option.kind_image = config.option.kind_image or kindcluster.kindnode.build()
    kindcluster.prepare_host(name)
    saved = dict(os.environ)
    os.environ.update(kindpodman.env())
    os.environ["KIND_EXPERIMENTAL_PODMAN_NETWORK"] = kindcluster.network_name(name)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        kindcluster.release_host(name)


def load_images(kind_cluster) -> dict[str, str]:
    """The project's images in the kind node; NAME -> image."""
    if "MLMODEL_KIND_IMAGES" not in os.environ:
        return kindcluster.load_images(kind_cluster.name, IMAGES)
    named = json.loads(os.environ["MLMODEL_KIND_IMAGES"])
    if missing := set(IMAGES) - set(named):
        pytest.fail(f"MLMODEL_KIND_IMAGES names no image for {sorted(missing)}")
    for image in named.values():
        if provider() == "podman":
            kindcluster.load_image(kind_cluster.name, image, kindpodman.podman)
        else:
            kind_cluster.load_docker_image(image)
    return {name: named[name] for name in IMAGES}
