"""Ground truth on the real node: two pods of one model, feedback reaching the pod that did not
answer is sent on to the one that did, through the pods' own network."""

from __future__ import annotations

import pytest
from kubernetes import client

from kube_helpers import TestCluster
from model_helpers import Models
from realnode_helpers import IRIS, InstalledOperator, client_pod_result, train_iris

pytestmark = pytest.mark.timeout(1800)
NAME = "iris-truth"


@pytest.fixture
def models(in_cluster_operator: InstalledOperator, cluster: TestCluster) -> Models:
    return Models(cluster, in_cluster_operator.models)


# Runs in a client pod: a prediction on each pod, its truth sent to the other pod; then
# predictions and truth through the Service, wherever they land.
SCRIPT = """
import json, urllib.request
pods, service, model, rows = {pods!r}, {service!r}, {model!r}, {rows!r}
def post(url, body, headers=None):
    req = urllib.request.Request(url, json.dumps(body).encode(),
                                 {{'Content-Type': 'application/json', **(headers or {{}})}})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return dict(resp.headers), json.loads(resp.read())
infer = '/v2/models/' + model + '/infer'
feedback = '/v2/models/' + model + '/feedback'
body = {{'inputs': [{{'name': 'x', 'shape': [3, 4], 'datatype': 'FP64', 'data': rows}}]}}
crossed = []
for here, there in ((pods[0], pods[1]), (pods[1], pods[0])):
    url = 'http://' + here + ':8480' + infer
    headers, answer = post(url, body, {{'x-request-id': 'on-' + here}})
    truth = [{{'id': headers['x-prediction-id'], 'truth': answer['outputs'][0]['data']}}]
    crossed.append(post('http://' + there + ':8480' + feedback, truth)[1])
ids, truths = [], []
for i in range(20):
    headers, answer = post(service + infer, body)
    ids.append(headers['x-prediction-id'])
    truths.append(answer['outputs'][0]['data'])
entries = [{{'id': p, 'truth': t}} for p, t in zip(ids, truths)]
through_service = post(service + feedback, entries)[1]
metrics = [urllib.request.urlopen('http://' + p + ':9090/metrics', timeout=30).read().decode()
           for p in pods]
print(json.dumps({{'crossed': crossed, 'service': through_service, 'metrics': metrics}}))
"""


def labelled(metrics: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("mlmodel_labelled_predictions_total{") and f'model="{NAME}"' in line
    )


def test_feedback_reaching_the_other_replica_is_sent_on_to_the_one_that_answered(
    cluster: TestCluster, models: Models, images: dict[str, str], model_claim: str
) -> None:
    train_iris(cluster, models.namespace, model_claim, images["mlserver"], NAME)
    models.create(
        {
            "apiVersion": "machine-learning.org/v1",
            "kind": "MLModelDeployment",
            "metadata": {"name": NAME},
            "spec": {
                "model_type": "sklearn",
                "model_uri": f"pvc://{model_claim}/{NAME}",
                "replicas": 2,
                "computational_resources": {"memory_requirements": "1Gi", "cpu": "100m"},
                "monitoring": {"ground_truth": {"task": "classification"}},
            },
        }
    )
    models.wait_ready(NAME, timeout=300)
    core = client.CoreV1Api(cluster.api)
    pods = [
        p.status.pod_ip
        for p in core.list_namespaced_pod(
            models.namespace, label_selector=f"app.kubernetes.io/instance={NAME}"
        ).items
        if p.status.phase == "Running" and not p.metadata.deletion_timestamp
    ]
    assert len(pods) == 2, pods
    service = f"http://{NAME}.{models.namespace}.svc.cluster.local"
    script = SCRIPT.format(pods=pods, service=service, model=NAME, rows=IRIS)
    result = client_pod_result(cluster, models.namespace, images["operator"], script)
    for summary in result["crossed"]:
        assert summary["matched"] == 1 and summary["unreachable"] == 0, summary
    assert result["service"]["matched"] == 20, result["service"]
    # Each pod labelled its own predictions (three rows each).
    counts = [labelled(text) for text in result["metrics"]]
    assert sum(counts) == 3 * 22 and all(c >= 3 for c in counts), counts
