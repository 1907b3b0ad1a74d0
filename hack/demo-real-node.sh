#!/usr/bin/env bash
# make demo REAL_NODE=1: the founding manifest's shape run for real on the local cluster's real
# node. The operator is installed from the chart with the image built from the Dockerfile; the
# model is an iris classifier served by MLServer (the runtime of model_type sklearn; Triton
# cannot be built here) from a host directory, with the monitoring sidecar and drift detection
# on, and no GPU (the real node has none). It is then called through its Service and sidecar.
# make demo-down REAL_NODE=1 (`hack/demo-real-node.sh down`) undoes it, and stops the cluster
# if the demo started it.
set -euo pipefail
cd "$(dirname "$0")/.."

NAMESPACE=${NAMESPACE:-mlmodel-demo-real}
RELEASE=mlmodel-demo
NAME=predictive-analytics-system
CLUSTER="python3 hack/localcluster.py"
STATE=.demo-real-node
mkdir -p "$STATE"

if [[ "${1:-}" == "down" ]]; then
  if $CLUSTER status >/dev/null 2>&1; then
    eval "$($CLUSTER env)"
    helm uninstall "$RELEASE" -n "$NAMESPACE" --wait >/dev/null 2>&1 || true
    kubectl delete namespace "$NAMESPACE" --ignore-not-found
    kubectl delete persistentvolume "$NAMESPACE-models" --ignore-not-found
    if [[ -f $STATE/started-cluster ]]; then
      $CLUSTER down
    else
      echo "the cluster was running before the demo; it keeps running (make cluster-down)"
    fi
  fi
  rm -rf "$STATE"
  exit 0
fi

if ! $CLUSTER status 2>/dev/null | grep -q "real node"; then
  $CLUSTER status >/dev/null 2>&1 || touch "$STATE/started-cluster"
  $CLUSTER up --real-node
fi
echo "== images (built once, cached by content)"
images=$(python3 hack/images.py load --dir "${MLMODEL_CLUSTER_DIR:-.cluster}")
image() { python3 -c "import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$images" "$1"; }
eval "$($CLUSTER env)"

echo "== namespace $NAMESPACE: restricted, every pod on the real node"
kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
kubectl label namespace "$NAMESPACE" --overwrite pod-security.kubernetes.io/enforce=restricted
kubectl annotate namespace "$NAMESPACE" --overwrite \
  scheduler.alpha.kubernetes.io/node-selector=type=real \
  'scheduler.alpha.kubernetes.io/defaultTolerations=[{"key":"type","operator":"Equal","value":"real","effect":"NoSchedule"}]'

echo "== the operator, from the chart, with $(image operator)"
operator=$(image operator)
helm upgrade --install "$RELEASE" charts/mlmodel-operator -n "$NAMESPACE" \
  --set image.repository="${operator%:*}" --set image.tag="${operator##*:}" \
  --set image.pullPolicy=Never \
  --set-json "runtimeCatalog={\"mlserver\":{\"image\":\"$(image mlserver)\"}}" \
  --set-json "watchNamespaces=[\"$NAMESPACE\"]" --wait --timeout 180s

echo "== the model: trained in the MLServer image onto a host directory"
mkdir -p "$STATE/models" && chmod 0777 "$STATE/models"
kubectl apply -f - <<EOF
apiVersion: v1
kind: PersistentVolume
metadata: {name: $NAMESPACE-models}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  storageClassName: ""
  hostPath: {path: $PWD/$STATE/models, type: Directory}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: models, namespace: $NAMESPACE}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: ""
  volumeName: $NAMESPACE-models
  resources: {requests: {storage: 1Gi}}
EOF
kubectl delete pod -n "$NAMESPACE" train --ignore-not-found
kubectl apply -n "$NAMESPACE" -f - <<EOF
apiVersion: v1
kind: Pod
metadata: {name: train}
spec:
  restartPolicy: Never
  securityContext: {runAsNonRoot: true, runAsUser: 1000, seccompProfile: {type: RuntimeDefault}}
  containers:
  - name: train
    image: $(image mlserver)
    imagePullPolicy: Never
    securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
    command: [python, -c, "import os, joblib; from sklearn.datasets import load_iris; from sklearn.linear_model import LogisticRegression; X, y = load_iris(return_X_y=True); os.makedirs('/mnt/models/iris', exist_ok=True); joblib.dump(LogisticRegression(max_iter=1000).fit(X, y), '/mnt/models/iris/model.joblib')"]
    volumeMounts: [{name: models, mountPath: /mnt/models}]
  volumes: [{name: models, persistentVolumeClaim: {claimName: models}}]
EOF
kubectl wait -n "$NAMESPACE" --for=jsonpath='{.status.phase}'=Succeeded --timeout=120s pod/train

echo "== $NAME: the founding manifest's monitoring, with model_type sklearn"
kubectl apply -n "$NAMESPACE" -f - <<EOF
apiVersion: machine-learning.org/v1
kind: MLModelDeployment
metadata:
  name: $NAME
spec:
  model_type: sklearn
  model_uri: pvc://models/iris
  computational_resources:
    memory_requirements: 2Gi
  monitoring:
    performance_tracking: enabled
    drift_detection: active
EOF
kubectl wait -n "$NAMESPACE" --for=condition=Ready --timeout=300s "mlmd/$NAME"
kubectl get mlmd -n "$NAMESPACE" -o wide
kubectl get pods -n "$NAMESPACE" -o wide -l "app.kubernetes.io/instance=$NAME"

echo "== a prediction through the Service and the sidecar (kubectl port-forward)"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
kubectl port-forward -n "$NAMESPACE" "svc/$NAME" "$port:80" >"$STATE/port-forward.log" 2>&1 &
forward=$!
trap 'kill $forward 2>/dev/null || true' EXIT
python3 - "$port" "$NAME" <<'EOF'
import json, sys, time, urllib.request
port, name = sys.argv[1], sys.argv[2]
body = {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP64",
                    "data": [[5.1, 3.5, 1.4, 0.2], [6.3, 3.3, 6.0, 2.5]]}]}
request = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/{name}/infer",
                                 json.dumps(body).encode(), {"Content-Type": "application/json"})
for _ in range(50):  # until the port-forward listens
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            print(json.dumps(json.loads(resp.read())["outputs"], indent=1))
            break
    except OSError:
        time.sleep(0.2)
else:
    sys.exit("no answer through the port-forward")
EOF
echo
echo "The sidecar counted it (its /metrics, from inside the pod):"
kubectl exec -n "$NAMESPACE" "deploy/$NAME" -c monitor -- python -c \
  "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9090/metrics').read().decode())" |
  grep '^mlmodel_requests_total'
echo
echo "\`make demo-down REAL_NODE=1\` removes the demo."
