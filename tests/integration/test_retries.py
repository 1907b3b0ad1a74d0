"""A transient API error is retried by the operator itself, whatever asked for the reconcile: here
a child's event, which nobody retries, with no resync to catch up. The error is real: a
validating admission webhook, served by the test, makes the API server refuse the operator's
next write with 503 Service Unavailable."""

from __future__ import annotations

import base64
import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from cases import founding_manifest
from kube_helpers import TestCluster, wait_until
from model_helpers import NAME, Models
from procs import self_signed_certificate

FIELD_MANAGER = "mlmodel-operator"
EDITED_LABEL = "app.kubernetes.io/part-of"


class FailingWebhook:
    """Refuses the next `failures` writes of the operator (by field manager) with 503."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.failures = 0
        self.refused: list[str] = []
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                request = review["request"]
                allowed = True
                manager = (request.get("options") or {}).get("fieldManager")
                if manager == FIELD_MANAGER and webhook.failures > 0:
                    webhook.failures -= 1
                    webhook.refused.append(request["operation"])
                    allowed = False
                response: dict[str, Any] = {"uid": request["uid"], "allowed": allowed}
                if not allowed:
                    response["status"] = {"code": 503, "message": "injected transient failure"}
                body = json.dumps(
                    {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                     "response": response}
                ).encode()  # fmt: skip
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook(cluster: TestCluster, namespace: str, tmp_path: Path) -> Iterator[FailingWebhook]:
    cert, key = self_signed_certificate(tmp_path)
    server = FailingWebhook(cert, key)
    admission = client.AdmissionregistrationV1Api(cluster.api)
    name = f"fail-operator-writes-{namespace}"
    config = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": "fail-operator-writes.test.machine-learning.org",
                "clientConfig": {
                    "url": f"https://127.0.0.1:{server.port}/validate",
                    "caBundle": base64.b64encode(cert.read_bytes()).decode(),
                },
                "rules": [
                    {
                        "apiGroups": ["apps"],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["deployments"],
                    }
                ],
                # Only this test's namespace: nothing else on the cluster depends on this server.
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 5,
            }
        ],
    }
    admission.create_validating_webhook_configuration(config)
    yield server
    admission.delete_validating_webhook_configuration(name)
    server.close()


@pytest.mark.operator_env(MLMODEL_RESYNC_SECONDS="3600")
def test_a_transient_error_on_a_child_event_is_retried(
    cluster: TestCluster, namespace: str, operator: Any, webhook: FailingWebhook
) -> None:
    models = Models(cluster, namespace)
    models.create(founding_manifest())
    models.wait_ready()

    webhook.failures = 1
    # A hand edit that starts no rollout, so that the Deployment's event is the only one: the
    # reconcile it triggers is refused, and only the operator's own retry can undo the edit.
    models.apps.patch_namespaced_deployment(
        NAME, namespace, {"metadata": {"labels": {EDITED_LABEL: "edited-by-hand"}}}
    )
    wait_until(lambda: webhook.refused, what="the webhook to refuse the operator's write")
    wait_until(
        lambda: models.deployment().metadata.labels[EDITED_LABEL] == "mlmodel-operator",
        what="the hand edit to be undone by a retry",
    )
    assert webhook.refused == ["UPDATE"]
