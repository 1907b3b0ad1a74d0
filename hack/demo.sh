#!/usr/bin/env bash
# make demo: the local control plane, the CRD, the operator (in the background), and the
# founding manifest applied unchanged, shown Ready. `make demo-down` undoes all of it.
set -euo pipefail
cd "$(dirname "$0")/.."

MANIFEST=${MANIFEST:-../shared/examples/predictive-analytics-system.yaml}
NAMESPACE=${NAMESPACE:-mlmodel-demo}
STATE=.demo
mkdir -p "$STATE"
eval "$(python3 hack/localcluster.py env)"

stop_operator() {
  if [[ -f $STATE/operator.pid ]]; then
    kill "$(cat "$STATE/operator.pid")" 2>/dev/null || true
    rm -f "$STATE/operator.pid"
  fi
}

if [[ "${1:-}" == "down" ]]; then
  stop_operator
  exit 0
fi

echo "== CRD"
kubectl apply --server-side --force-conflicts -f crds/
kubectl wait --for=condition=Established --timeout=60s crd/mlmodeldeployments.machine-learning.org

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
echo "The operator keeps running in the background; \`make demo-down\` stops it and the cluster."
