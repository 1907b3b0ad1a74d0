#!/usr/bin/env bash
# Fetch the real CRDs of the other projects' APIs whose objects the operator creates (the Gateway
# API's HTTPRoute, the Inference Extension's InferencePool, KEDA's ScaledObject), from their Go
# modules at pinned versions, into the per-user cache. The tests install them on the local cluster; they are never
# committed.
#
#   hack/fetch-crds.sh          fetch what is missing
#   hack/fetch-crds.sh --print  print the directory of each module's CRDs and exit
#
# The cache root is $MLMODEL_CACHE_DIR, else ${XDG_CACHE_HOME:-~/.cache}/mlmodel-operator.
set -euo pipefail

cache="${MLMODEL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mlmodel-operator}"

GATEWAY_API_VERSION=v1.6.3
INFERENCE_EXTENSION_VERSION=v1.6.2
# The KEDA release hack/build-binaries.sh builds; all its CRDs, which its operator watches.
KEDA_VERSION=v2.21.0

# name|module|version|module zip hash (go.sum's h1:)|CRD files in the module
modules=(
  "gateway-api|sigs.k8s.io/gateway-api|$GATEWAY_API_VERSION|h1:lKpJa5bGlraC/QeACvCpsHLdmO6y0iKfzVl6gzaFEYc=|config/crd/standard/gateway.networking.k8s.io_httproutes.yaml"
  "gateway-api-inference-extension|sigs.k8s.io/gateway-api-inference-extension|$INFERENCE_EXTENSION_VERSION|h1:GfTwDiMta9z6vtsZZuYE2xlryUGw+PiCdTJzYePY23M=|config/crd/bases/inference.networking.k8s.io_inferencepools.yaml"
  "keda|github.com/kedacore/keda/v2|$KEDA_VERSION|h1:R6z2HZvstK4RLUMxroNACzBj74xGxt3kG59b5Xc+Xps=|config/crd/bases/keda.sh_scaledobjects.yaml config/crd/bases/keda.sh_scaledjobs.yaml config/crd/bases/keda.sh_triggerauthentications.yaml config/crd/bases/keda.sh_clustertriggerauthentications.yaml config/crd/bases/eventing.keda.sh_cloudeventsources.yaml config/crd/bases/eventing.keda.sh_clustercloudeventsources.yaml"
)

crd_dir() { echo "$cache/crds/$1-$2"; }

if [[ "${1:-}" == "--print" ]]; then
  for entry in "${modules[@]}"; do
    IFS='|' read -r name _ version _ _ <<<"$entry"
    crd_dir "$name" "$version"
  done
  exit 0
fi
[[ $# -eq 0 ]] || { echo "usage: $0 [--print]" >&2; exit 2; }

if ! command -v go >/dev/null 2>&1; then
  echo "error: Go is not installed; it downloads the modules the CRDs come from." >&2
  exit 1
fi

for entry in "${modules[@]}"; do
  IFS='|' read -r name module version sum files <<<"$entry"
  dir=$(crd_dir "$name" "$version")
  missing=""
  for file in $files; do [[ -f "$dir/$(basename "$file")" ]] || missing=1; done
  if [[ -z "$missing" ]]; then
    echo "cached: $name $version CRDs ($dir)"
    continue
  fi
  # Outside any module, and with the checksum database off: the hash pinned above is the check.
  info=$(cd / && GOFLAGS= GOSUMDB=off GONOSUMDB='*' go mod download -json "$module@$version")
  got=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["Sum"])' <<<"$info")
  if [[ "$got" != "$sum" ]]; then
    echo "error: $module@$version has hash $got, expected $sum" >&2
    exit 1
  fi
  src=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])' <<<"$info")
  tmp="$dir.tmp.$$"
  rm -rf "$tmp" && mkdir -p "$tmp"
  for file in $files; do install -m 0644 "$src/$file" "$tmp/"; done
  rm -rf "$dir" && mv "$tmp" "$dir"
  echo "fetched: $name $version CRDs -> $dir"
done
