"""The local control plane's API server configuration (hack/localcluster.py): the aggregation
layer's flags and certificates, and when a running cluster must be replaced rather than reused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "hack"))
import localcluster  # noqa: E402  (hack/ is not a package)

PKI = Path("/c/pki")
STATE = {"ports": {"etcd-client": 2379, "kube-apiserver": 6443}, "real_node": False}


def argv(state: dict = STATE) -> list[str]:
    return localcluster.apiserver_argv(Path("/bin/kube-apiserver"), state, PKI)


def test_the_api_server_serves_aggregated_apis_with_a_front_proxy_client_of_its_own_ca() -> None:
    flags = argv()
    assert "--requestheader-client-ca-file=/c/pki/front-proxy-ca.crt" in flags
    assert "--requestheader-allowed-names=front-proxy-client" in flags
    assert "--proxy-client-cert-file=/c/pki/front-proxy-client.crt" in flags
    assert "--proxy-client-key-file=/c/pki/front-proxy-client.key" in flags
    for header in ("username-headers=X-Remote-User", "group-headers=X-Remote-Group"):
        assert f"--requestheader-{header}" in flags
    assert "--requestheader-extra-headers-prefix=X-Remote-Extra-" in flags
    # The endpoint's address, not the ClusterIP that nothing routes without kube-proxy.
    assert "--enable-aggregator-routing=true" in flags
    # The clients' CA is another one: a client certificate of the cluster's CA cannot pass
    # itself off as the front proxy.
    assert "--client-ca-file=/c/pki/ca.crt" in flags


def test_the_real_nodes_api_server_has_them_too() -> None:
    flags = argv({**STATE, "real_node": True})
    assert set(localcluster.aggregation_flags(PKI)) <= set(flags)
    assert "--authorization-mode=Node,RBAC" in flags


def test_a_cluster_is_reused_only_if_its_api_server_runs_with_the_flags_up_would_give_it() -> None:
    wanted = argv()
    assert localcluster.outdated({**STATE, "apiserver_argv": wanted}, wanted) is None

    # Started before the aggregation layer was configured: replaced, saying which flags.
    before = [f for f in wanted if f not in localcluster.aggregation_flags(PKI)]
    reason = localcluster.outdated({**STATE, "apiserver_argv": before}, wanted)
    assert reason is not None
    assert "+--requestheader-client-ca-file=/c/pki/front-proxy-ca.crt" in reason
    assert "+--enable-aggregator-routing=true" in reason

    # By a launcher that did not record the flags at all.
    assert "not recorded" in (localcluster.outdated(STATE, wanted) or "")

    # A flag this launcher no longer gives counts too.
    reason = localcluster.outdated({**STATE, "apiserver_argv": [*wanted, "--v=4"]}, wanted)
    assert reason is not None and "---v=4" in reason


def test_the_front_proxy_client_is_signed_by_the_front_proxy_ca_only(tmp_path: Path) -> None:
    localcluster.make_pki(tmp_path, real_node=False)

    def verify(ca: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["openssl", "verify", "-CAfile", ca, "front-proxy-client.crt"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )

    assert verify("front-proxy-ca.crt").returncode == 0
    assert verify("ca.crt").returncode != 0
    subject = subprocess.run(
        ["openssl", "x509", "-noout", "-subject", "-ext", "extendedKeyUsage"],
        input=(tmp_path / "front-proxy-client.crt").read_text(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "CN=front-proxy-client" in subject.replace(" = ", "=")
    assert "TLS Web Client Authentication" in subject
