"""kind clusters here (hack/kindcluster.py, hack/kindnode.py): what keeps them apart from the local
cluster's real node on the host, and what the node image asks of containerd, the kubelet and
systemd on this cgroup v1 host."""

from __future__ import annotations

import ipaddress
import json
import re
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

import kind_helpers

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "hack"))
import kindcluster  # noqa: E402  (hack/ is not a package)
import kindnode  # noqa: E402
import kindpodman  # noqa: E402
import localcluster  # noqa: E402
import realnode  # noqa: E402

NODE = REPO / "hack" / "kind" / "node"
CLUSTERS = [kindcluster.DEFAULT_NAME, "mlmodel-kind-test"]

SAVED = """\
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:CNI-HOSTPORT-DNAT - [0:0]
:NETAVARK-HOSTPORT-DNAT - [0:0]
:NETAVARK-HOSTPORT-MASQ - [0:0]
:NETAVARK-HOSTPORT-SETMARK - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j NETAVARK-HOSTPORT-DNAT
-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A POSTROUTING -j NETAVARK-HOSTPORT-MASQ
-A NETAVARK-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE
-A NETAVARK-HOSTPORT-SETMARK -j MARK --set-xmark 0x2000/0x2000
COMMIT
*filter
:FORWARD ACCEPT [0:0]
:NETAVARK_FORWARD - [0:0]
-A FORWARD -m comment --comment "netavark firewall plugin rules" -j NETAVARK_FORWARD
COMMIT
"""
IN_USE = SAVED.replace(
    "-A NETAVARK-HOSTPORT-SETMARK",
    "-A NETAVARK-HOSTPORT-DNAT -p tcp --dport 41011 -j NETAVARK-DN-1D8721804F16F\n"
    "-A NETAVARK-HOSTPORT-SETMARK",
)


def test_each_kind_network_has_its_own_bridge_and_subnet_apart_from_the_real_node() -> None:
    settings = [kindcluster.network_settings(name) for name in CLUSTERS]
    bridges = [bridge for bridge, _ in settings]
    subnets = [ipaddress.ip_network(subnet) for _, subnet in settings]
    assert len(set(bridges)) == len(bridges)
    assert all(len(b) <= 15 for b in bridges)  # the kernel's limit on interface names
    assert not {realnode.NODE_BRIDGE, realnode.POD_BRIDGE} & set(bridges)
    assert not subnets[0].overlaps(subnets[1])
    taken = [
        ipaddress.ip_network(realnode.POD_SUBNET),
        ipaddress.ip_network(f"{realnode.NODE_IP}/32"),
        ipaddress.ip_network(localcluster.POD_CIDR),
        ipaddress.ip_network(localcluster.SERVICE_CIDR),
        ipaddress.ip_network("10.88.0.0/16"),  # podman's default network
    ]
    for subnet in subnets:
        assert not any(subnet.overlaps(other) for other in taken), subnet


def test_the_real_nodes_teardown_and_kinds_leave_each_others_chains_alone() -> None:
    node_chains, node_jumps = realnode.node_chains(SAVED)
    kind_chains, kind_jumps, _ = kindcluster.netavark_chains(SAVED)
    assert node_chains == [("nat", "CNI-HOSTPORT-DNAT")]
    assert all("NETAVARK" not in rule for _, rule in node_jumps)
    assert {name for _, name in kind_chains} == {
        "NETAVARK-HOSTPORT-DNAT", "NETAVARK-HOSTPORT-MASQ", "NETAVARK-HOSTPORT-SETMARK",
        "NETAVARK_FORWARD",
    }  # fmt: skip
    assert all("CNI-" not in rule for _, rule in kind_jumps)
    assert len(kind_jumps) == 3


def test_netavark_chains_are_removed_only_once_no_network_uses_them() -> None:
    assert kindcluster.netavark_chains(SAVED)[2] is False
    assert kindcluster.netavark_chains(IN_USE)[2] is True


def test_containerd_runs_pods_with_cgroupfs_the_cni_plugins_and_the_imported_pause() -> None:
    text = (NODE / "etc" / "containerd" / "config.toml").read_text()
    config = tomllib.loads(text.replace("@PAUSE_IMAGE@", "registry.k8s.io/pause:3.10.2"))
    plugins = config["plugins"]
    images = plugins["io.containerd.cri.v1.images"]
    runtime = plugins["io.containerd.cri.v1.runtime"]
    # kind reads the snapshotter from the configuration when it loads images.
    assert images["snapshotter"] == "overlayfs"
    assert images["pinned_images"]["sandbox"] == "registry.k8s.io/pause:3.10.2"
    assert runtime["restrict_oom_score_adj"] is True
    runc = runtime["containerd"]["runtimes"]["runc"]
    assert runc["options"]["SystemdCgroup"] is False  # the kubelet takes cgroupfs from here
    assert runtime["cni"]["bin_dirs"] == ["/usr/lib/cni"]


def test_kubelet_runs_on_cgroup_v1_with_what_kubeadm_writes() -> None:
    unit = (NODE / "etc" / "systemd" / "system" / "kubelet.service").read_text()
    assert "--fail-cgroupv1=false" in unit
    assert "$KUBELET_KUBEADM_ARGS" in unit
    assert "--config=/var/lib/kubelet/config.yaml" in unit


def test_pods_get_a_bridge_inside_kinds_default_pod_subnet() -> None:
    conflist = json.loads((NODE / "etc" / "cni" / "net.d" / "10-mlmodel-kind.conflist").read_text())
    bridge = conflist["plugins"][0]
    assert bridge["type"] == "bridge"
    (subnet,) = (r["subnet"] for (r,) in bridge["ipam"]["ranges"])
    assert ipaddress.ip_network(subnet).subnet_of(ipaddress.ip_network("10.244.0.0/16"))


def test_the_node_never_changes_the_hosts_sysctls_modules_or_binfmt_through_systemd() -> None:
    masked = set(kindnode.MASKED_UNITS)
    assert {
        "systemd-sysctl.service", "systemd-modules-load.service", "systemd-binfmt.service",
        "proc-sys-fs-binfmt_misc.automount", "systemd-udevd.service",
    } <= masked  # fmt: skip
    assert not masked & set(kindnode.ENABLED_UNITS)


def test_every_image_kubeadm_expects_is_built_here() -> None:
    try:
        expected = kindnode.kubeadm_images()
    except kindnode.PodmanError as err:
        pytest.skip(f"no kubeadm built: {err}")
    assert set(expected) == set(kindnode.COMPONENT_IMAGES)
    assert all(image.endswith(f":{kindnode.kubernetes_version()}") for name, image in
               expected.items() if name.startswith("kube-"))  # fmt: skip


def test_without_root_or_podman_kind_says_why_it_cannot_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kindcluster.os, "geteuid", lambda: 1000)
    assert "needs root" in (kindcluster.unavailable_reason() or "")
    monkeypatch.setattr(kindcluster.os, "geteuid", lambda: 0)
    real_which = kindpodman.shutil.which
    monkeypatch.setattr(
        kindpodman.shutil, "which", lambda cmd: None if cmd == "podman" else real_which(cmd)
    )
    assert "podman (Debian: podman)" in (kindcluster.unavailable_reason() or "")


def test_the_workflow_pins_what_it_uses_and_runs_the_kind_tests_as_here() -> None:
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "kind.yaml").read_text())
    steps = workflow["jobs"]["kind"]["steps"]
    for step in steps:
        if "uses" in step:
            assert re.fullmatch(r"[\w-]+/[\w-]+@v\d+\.\d+\.\d+", step["uses"]), step["uses"]
    # kind's own node image there, of the Kubernetes minor release built here.
    minor = kindnode.kubernetes_version().rsplit(".", 1)[0]
    node_image = workflow["env"]["KIND_NODE_IMAGE"]
    assert re.fullmatch(rf"kindest/node:{re.escape(minor)}\.\d+@sha256:[0-9a-f]{{64}}", node_image)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", workflow["env"]["PYTHON_IMAGE"])
    assert any("hack/build-binaries.sh --kind" in step.get("run", "") for step in steps)
    test_step = steps[-1]
    assert test_step["run"].split()[:2] == [".venv/bin/pytest", "tests/kind"]
    assert test_step["env"]["MLMODEL_KIND_PROVIDER"] == "docker"
    assert set(json.loads(test_step["env"]["MLMODEL_KIND_IMAGES"])) == set(kind_helpers.IMAGES)
