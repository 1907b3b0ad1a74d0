#!/usr/bin/env bash
# Debian packages the tests need: openssl (the local cluster's certificates), prometheus
# (a real Prometheus and promtool in the monitoring tests), chromium-headless-shell (the drift
# page's browser test), and for the real node runc, the CNI
# plugins, iptables, podman and mmdebstrap (its images), and for kind clusters netavark (podman's
# networks of kind's nodes; hack/kindpodman.py). Installs what is missing when run as
# root; otherwise says what to install (without root there is no real node, and its tests skip).
set -euo pipefail

missing=()
command -v openssl >/dev/null || missing+=(openssl)
{ command -v prometheus && command -v promtool; } >/dev/null || missing+=(prometheus)
command -v chromium-headless-shell >/dev/null || missing+=(chromium-headless-shell)
real_node=()
command -v runc >/dev/null || real_node+=(runc)
[[ -x /usr/lib/cni/bridge ]] || real_node+=(containernetworking-plugins)
command -v iptables >/dev/null || real_node+=(iptables)
command -v nft >/dev/null || real_node+=(nftables)
command -v ip >/dev/null || real_node+=(iproute2)
command -v podman >/dev/null || real_node+=(podman)
command -v mmdebstrap >/dev/null || real_node+=(mmdebstrap)
[[ -x /usr/lib/podman/netavark ]] || real_node+=(netavark)
if [[ $(id -u) -eq 0 ]]; then
  missing+=("${real_node[@]}")
elif ((${#real_node[@]})); then
  echo "note: the real node and kind need root and ${real_node[*]}; their tests will skip" >&2
fi
((${#missing[@]})) || exit 0

if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
  echo "error: missing ${missing[*]}; install them (Debian/Ubuntu: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "installing: ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
