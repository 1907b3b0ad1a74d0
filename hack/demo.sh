#!/usr/bin/env bash
# make demo: the local control plane, the CRD, the operator (in the background), and the
# founding manifest applied unchanged, shown Ready.
# make demo-down (`hack/demo.sh down`) undoes what the demo did and nothing more: it stops the
# operator, deletes the demo namespace, and deletes the CRD and stops the control plane only if
# the demo created them (a cluster started with `make cluster-up` keeps running).
set -euo pipefail
cd "$(dirname "$0")/.."

MANIFEST=${MANIFEST:-manifests/examples/predictive-analytics-system.yaml}
NAMESPACE=${NAMESPACE:-mlmodel-demo}
CRD=crd/mlmodeldeployments.machine-learning.org
CLUSTER="python3 hack/localcluster.py"
STATE=.demo
mkdir -p "$STATE"

stop_operator() {
  if [[ -f $STATE/operator.pid ]]; then
    kill "$(cat "$STATE/operator.pid")" 2>/dev/null || true
    rm -f "$STATE/operator.pid"
  fi
}

if [[ "${1:-}" == "down" ]]; then
  stop_operator
  if $CLUSTER status >/dev/null 2>&1; then
    eval "$($CLUSTER env)"
    kubectl delete namespace "$NAMESPACE" --ignore-not-found --wait=false
    if [[ -f $STATE/created-crd ]]; then
      kubectl delete "$CRD" --ignore-not-found
    fi
    if [[ -f $STATE/started-cluster ]]; then
      $CLUSTER down
    else
      echo "the control plane was running before the demo; it keeps running (make cluster-down)"
    fi
  fi
  rm -f "$STATE/started-cluster" "$STATE/created-crd"
  exit 0
fi

if ! $CLUSTER status >/dev/null 2>&1; then
  $CLUSTER up
  touch "$STATE/started-cluster"
fi
eval "$($CLUSTER env)"

echo "== CRD"
if ! kubectl get "$CRD" >/dev/null 2>&1; then
  touch "$STATE/created-crd"
fi
kubectl apply --server-side --force-conflicts -f crds/
kubectl wait --for=condition=Established --timeout=60s "$CRD"

echo "== namespace $NAMESPACE (Pod Security: restricted)"
kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
kubectl label namespace "$NAMESPACE" --overwrite pod-security.kubernetes.io/enforce=restricted

echo "== operator (log: $STATE/operator.log)"
stop_operator
.venv/bin/mlmodel-operator --namespaces "$NAMESPACE" --metrics-port 0 --health-port 0 \
  >"$STATE/operator.log" 2>&1 &
echo $! >"$STATE/operator.pid"

echo "== $MANIFEST"
kubectl apply -n "$NAMESPACE" -f "$MANIFEST"
name=$(kubectl create --dry-run=client -o jsonpath='{.metadata.name}' -f "$MANIFEST")
if ! kubectl wait -n "$NAMESPACE" --for=condition=Ready --timeout=120s "mlmd/$name"; then
  echo "not Ready; operator log:" >&2
  tail -20 "$STATE/operator.log" >&2
  exit 1
fi

echo
kubectl get mlmd -n "$NAMESPACE" -o wide
echo
kubectl get deployment,service,configmap,pods -n "$NAMESPACE" -o wide \
  -l "app.kubernetes.io/instance=$name"
echo
kubectl get events -n "$NAMESPACE" --field-selector "involvedObject.name=$name" \
  --sort-by=.metadata.creationTimestamp
echo
echo "The operator keeps running in the background; \`make demo-down\` stops what the demo started."
