#!/usr/bin/env bash
# Build the pinned control-plane binaries (and helm) from Go modules into a per-user cache.
# Only what is missing is built; a cold build takes several minutes per component on 2 cores.
#
#   hack/build-binaries.sh               build the control plane's binaries that are missing
#   hack/build-binaries.sh --real-node   also those of the real node (hack/realnode.py)
#   hack/build-binaries.sh --test-tools  also the servers only tests use (below)
#   hack/build-binaries.sh --kind        also kind and kubeadm, for kind clusters (hack/kindnode.py)
#   hack/build-binaries.sh --keda        also KEDA's operator and metrics server, and its CRDs
#   hack/build-binaries.sh --print       print the cache directory of each component and exit
#
# The cache root is $MLMODEL_CACHE_DIR, else ${XDG_CACHE_HOME:-~/.cache}/mlmodel-operator.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${MLMODEL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mlmodel-operator}"

# Pinned versions. Each tools module under hack/tools/<name> pins the same version in go.mod/go.sum.
KUBERNETES_VERSION=v1.36.3
ETCD_VERSION=v3.6.8
KWOK_VERSION=v0.8.0
HELM_VERSION=v3.22.0
# The real node's (opt-in).
CONTAINERD_VERSION=v2.4.2
COREDNS_VERSION=v1.14.7
# Our own node tools (pause, cri-teardown) are versioned by the hash of their sources.
NODETOOLS_VERSION=$(cd "$here/tools/nodetools" && cat go.mod go.sum ./*/*.go | sha256sum | cut -c1-12)
# Servers the tests run the model fetcher against; test tools, never shipped in an image or a
# chart (MinIO is AGPLv3).
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
FAKE_GCS_SERVER_VERSION=v1.56.1
# The Gateway API Inference Extension's lightweight endpoint picker, run by the tests against the
# InferencePools the operator makes (llm-d's picker, the default image, is not on the Go proxy).
LWEPP_VERSION=v1.6.2
# kind clusters (opt-in): kind itself; kubeadm, like the node image's other binaries, is the
# Kubernetes release above.
KIND_VERSION=v0.33.0
# KEDA (opt-in; the real node's autoscaling tests run it on the host). v2.21.0, not v2.21.1: the
# latter's go.mod asks for Go 1.27.4, and every other module here builds with Go 1.26. Its CRDs
# come from the same module (hack/fetch-crds.sh pins the same version).
KEDA_VERSION=v2.21.0

# component|version|tools module|binaries (space separated)|packages|build tags
components=(
  "kubernetes|$KUBERNETES_VERSION|kubernetes|kube-apiserver kube-controller-manager kube-scheduler kubectl|k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl|"
  "etcd|$ETCD_VERSION|etcd|etcd|go.etcd.io/etcd/server/v3|"
  "kwok|$KWOK_VERSION|kwok|kwok|sigs.k8s.io/kwok/cmd/kwok|"
  "helm|$HELM_VERSION|helm|helm|helm.sh/helm/v3/cmd/helm|"
)
real_node_components=(
  "kubernetes-node|$KUBERNETES_VERSION|kubernetes|kubelet kube-proxy|k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy|"
  # Static builds without the snapshotters that need C libraries; the shim without gRPC, as
  # upstream's release builds it.
  "containerd|$CONTAINERD_VERSION|containerd|containerd ctr|github.com/containerd/containerd/v2/cmd/containerd github.com/containerd/containerd/v2/cmd/ctr|no_btrfs no_devmapper no_zfs"
  "containerd-shim|$CONTAINERD_VERSION|containerd|containerd-shim-runc-v2|github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2|no_grpc"
  "coredns|$COREDNS_VERSION|coredns|coredns|github.com/coredns/coredns|"
  "nodetools|$NODETOOLS_VERSION|nodetools|pause cri-teardown|./pause ./cri-teardown|"
)
kind_components=(
  "kind|$KIND_VERSION|kind|kind|sigs.k8s.io/kind|"
  "kubeadm|$KUBERNETES_VERSION|kubernetes|kubeadm|k8s.io/kubernetes/cmd/kubeadm|"
)
# One package per component, so that each binary gets its own name (Go would call both after
# their directories, operator and adapter); the second build reuses the first's build cache.
keda_components=(
  "keda|$KEDA_VERSION|keda|keda|github.com/kedacore/keda/v2/cmd/operator|"
  "keda-adapter|$KEDA_VERSION|keda|keda-adapter|github.com/kedacore/keda/v2/cmd/adapter|"
)
test_tools=(
  "minio|$MINIO_VERSION|minio|minio|github.com/minio/minio"
  "fake-gcs-server|$FAKE_GCS_SERVER_VERSION|fake-gcs-server|fake-gcs-server|github.com/fsouza/fake-gcs-server"
  "lwepp|$LWEPP_VERSION|lwepp|lwepp|sigs.k8s.io/gateway-api-inference-extension/cmd/lwepp"
)

bin_dir() { echo "$cache/bin/$1-$2"; }

if [[ "${1:-}" == "--print" ]]; then
  for entry in "${components[@]}" "${real_node_components[@]}" "${kind_components[@]}" \
    "${keda_components[@]}" "${test_tools[@]}"; do
    IFS='|' read -r name version _ _ _ <<<"$entry"
    bin_dir "$name" "$version"
  done
  exit 0
fi

ldflags_for() {
  local name=$1 version=$2
  case "$name" in
    kubernetes|kubernetes-node|kubeadm)
      local minor build_date flags=""
      minor=$(echo "$version" | cut -d. -f2)
      build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
      # The same version variables upstream's hack/lib/version.sh sets, so /version reports the release.
      for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        flags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
        flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
      done
      echo "-s -w$flags"
      ;;
    etcd) echo "-s -w" ;;
    kwok | coredns | nodetools | minio | fake-gcs-server | lwepp | kind) echo "-s -w" ;;
    keda | keda-adapter)
      # As KEDA's Makefile sets them, so the operator logs its release.
      echo "-s -w -X github.com/kedacore/keda/v2/version.Version=$version" ;;
    containerd | containerd-shim)
      echo "-s -w -X github.com/containerd/containerd/v2/version.Version=$version" ;;
    helm) echo "-s -w -X helm.sh/helm/v3/internal/version.version=$version" ;;
  esac
}

missing() {
  local dir=$1; shift
  for b in "$@"; do [[ -x "$dir/$b" ]] || return 0; done
  return 1
}

if ! command -v go >/dev/null 2>&1; then
  echo "error: Go is not installed. Install Go >= 1.26 (https://go.dev/doc/install or your" >&2
  echo "       distribution's golang package) and re-run; it builds the local control plane." >&2
  exit 1
fi

fetch_crds=""
for arg in "$@"; do
  case "$arg" in
    --real-node) components+=("${real_node_components[@]}") ;;
    --test-tools) components+=("${test_tools[@]}"); fetch_crds=1 ;;
    --kind) components+=("${kind_components[@]}") ;;
    --keda) components+=("${keda_components[@]}"); fetch_crds=1 ;;
    *) echo "usage: $0 [--real-node] [--test-tools] [--kind] [--keda] | --print" >&2; exit 2 ;;
  esac
done

for entry in "${components[@]}"; do
  IFS='|' read -r name version module binaries packages tags <<<"$entry"
  dir=$(bin_dir "$name" "$version")
  # shellcheck disable=SC2086
  if ! missing "$dir" $binaries; then
    echo "cached: $name $version ($dir)"
    continue
  fi
  echo "building: $name $version -> $dir (binaries: $binaries)"
  start=$(date +%s)
  tmp="$dir.tmp.$$"
  rm -rf "$tmp" && mkdir -p "$tmp"
  # go.sum is committed, so downloads are verified against it; the checksum database is not needed.
  # One package: name the output explicitly (etcd's main package is the module root, which Go
  # would name "server"). Several: Go names each after its directory.
  out="$tmp/"
  [[ "$binaries" == *" "* ]] || out="$tmp/$binaries"
  # shellcheck disable=SC2086
  if ! (cd "$here/tools/$module" &&
        CGO_ENABLED=0 GOFLAGS=-mod=readonly GONOSUMDB='*' GOSUMDB=off \
        go build -trimpath -tags "$tags" -ldflags "$(ldflags_for "$name" "$version")" -o "$out" $packages); then
    rm -rf "$tmp"
    echo "error: building $name $version failed (see the Go output above). A failed module" >&2
    echo "       download means the Go module proxy ($(go env GOPROXY)) is unreachable." >&2
    exit 1
  fi
  rm -rf "$dir" && mv "$tmp" "$dir"
  echo "built: $name $version in $(($(date +%s) - start))s"
done

# The other projects' CRDs the tests install (HTTPRoute, InferencePool, KEDA's).
if [[ -n "$fetch_crds" ]]; then
  bash "$here/fetch-crds.sh"
fi
