"""The real node's configuration (hack/realnode.py): what each fact found on this host asks of
containerd, the kubelet and kube-proxy, and how down finds the iptables chains to remove."""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "hack"))
import realnode  # noqa: E402  (hack/ is not a package)

SAVED = """\
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:CNI-HOSTPORT-DNAT - [0:0]
:DOCKER - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -j DOCKER
-A KUBE-SERVICES -d 10.96.0.1/32 -j KUBE-SVC-NPX46M4PTMTKRN6Y
COMMIT
*filter
:FORWARD ACCEPT [0:0]
:MLMODEL-REALNODE - [0:0]
-A FORWARD -j MLMODEL-REALNODE
COMMIT
"""


def test_down_finds_the_node_chains_and_the_jumps_to_them_and_nothing_else() -> None:
    chains, jumps = realnode.node_chains(SAVED)
    assert chains == [
        ("nat", "KUBE-SERVICES"),
        ("nat", "CNI-HOSTPORT-DNAT"),
        ("filter", "MLMODEL-REALNODE"),
    ]
    assert jumps == [
        ("nat", '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES'),
        ("filter", "-A FORWARD -j MLMODEL-REALNODE"),
    ]


def test_namespace_annotations_select_the_node_and_tolerate_its_taint() -> None:
    annotations = realnode.namespace_annotations()
    key, value = realnode.NODE_LABEL
    assert annotations["scheduler.alpha.kubernetes.io/node-selector"] == f"{key}={value}"
    (toleration,) = json.loads(annotations["scheduler.alpha.kubernetes.io/defaultTolerations"])
    taint_key, _, rest = realnode.NODE_TAINT.partition("=")
    taint_value, _, effect = rest.partition(":")
    assert (toleration["key"], toleration["value"], toleration["effect"]) == (
        taint_key,
        taint_value,
        effect,
    )


def test_containerd_never_asks_for_a_negative_oom_score_and_keeps_netns_to_itself() -> None:
    text = realnode.containerd_config(Path("/r"), Path("/s"), Path("/c"), "localhost/pause:1")
    runtime = tomllib.loads(text)["plugins"]["io.containerd.cri.v1.runtime"]
    assert runtime["restrict_oom_score_adj"] is True
    assert runtime["netns_mounts_under_state_dir"] is True
    assert runtime["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is False


def test_kubelet_runs_on_cgroup_v1_without_systemd_and_gives_pods_cluster_dns_only() -> None:
    config = yaml.safe_load(realnode.kubelet_config(Path("/n"), Path("/p"), 1, 2, Path("/s")))
    assert (config["failCgroupV1"], config["cgroupDriver"], config["failSwapOn"]) == (
        False,
        "cgroupfs",
        False,
    )
    assert config["resolvConf"] == ""
    assert config["clusterDNS"] == [realnode.DNS_SERVICE_IP]
    assert config["authentication"]["anonymous"]["enabled"] is False


def test_kube_proxy_leaves_conntrack_and_loopback_alone() -> None:
    config = yaml.safe_load(realnode.kube_proxy_config(Path("/k"), 1, 2))
    assert config["conntrack"]["maxPerCore"] == 0 and config["conntrack"]["min"] == 0
    assert config["nodePortAddresses"] == [f"{realnode.NODE_IP}/32"]
    assert config["iptables"]["localhostNodePorts"] is False


def test_pod_network_never_masquerades() -> None:
    (bridge, _) = json.loads(realnode.cni_config(Path("/ipam")))["plugins"]
    assert bridge["ipMasq"] is False
    assert bridge["ipam"]["ranges"] == [[{"subnet": realnode.POD_SUBNET}]]
