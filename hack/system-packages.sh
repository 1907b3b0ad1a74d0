#!/usr/bin/env bash
# Debian packages the tests need: openssl (the local cluster's certificates) and prometheus
# (a real Prometheus and promtool in the monitoring tests). Installs what is missing when run
# as root; otherwise says what to install.
set -euo pipefail

missing=()
command -v openssl >/dev/null || missing+=(openssl)
{ command -v prometheus && command -v promtool; } >/dev/null || missing+=(prometheus)
((${#missing[@]})) || exit 0

if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
  echo "error: missing ${missing[*]}; install them (Debian/Ubuntu: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "installing: ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
