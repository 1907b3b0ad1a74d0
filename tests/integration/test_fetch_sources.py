"""The model fetcher (`mlmodel-fetch`) as a real process against real servers: MinIO for s3://,
fake-gcs-server for gs:// (both built from their Go modules by `make test-tools`), a local TLS
server for https://; the model it fetches is then served by the KServe model server."""

from __future__ import annotations

import json
import pickle
import ssl
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from kube_helpers import cached_bin_dirs
from mlmodel_operator.fetch.common import human
from monitor_procs import SERVER_SCRIPT
from procs import Server, free_port, self_signed_certificate

FETCH = Path(sys.executable).parent / "mlmodel-fetch"
ROOT_USER, ROOT_PASSWORD = "fetch-test-admin", "fetch-test-secret"
BUCKET = "models"
GCS_DATA = {"iris/model.pkl": None, "iris/settings/model-settings.json": b'{"name": "iris"}'}


def tool(name: str) -> Path:
    """A test tool from the binary cache; a clear failure when it has not been built."""
    for directory in cached_bin_dirs():
        if directory.name.startswith(f"{name}-v") and (directory / name).exists():
            return directory / name
    pytest.fail(f"{name} is not built: run `make test-tools` (hack/build-binaries.sh --test-tools)")


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fetch")


@pytest.fixture(scope="module")
def model(tmp: Path) -> bytes:
    features, labels = load_iris(return_X_y=True)
    return pickle.dumps(LogisticRegression(max_iter=500).fit(features, labels))


@pytest.fixture(scope="module")
def minio(tmp: Path, model: bytes) -> Iterator[str]:
    """MinIO with the bucket `models`: iris/model.pkl and iris/settings/model-settings.json."""
    port, console = free_port(), free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp),
        "MINIO_ROOT_USER": ROOT_USER,
        "MINIO_ROOT_PASSWORD": ROOT_PASSWORD,
        "MINIO_BROWSER": "off",
    }
    argv = [str(tool("minio")), "server", str(tmp / "minio-data"), "--quiet"]
    argv += ["--address", f"127.0.0.1:{port}", "--console-address", f"127.0.0.1:{console}"]
    server = Server(argv, tmp / "minio.log", env=env).start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        server.wait_for(f"{endpoint}/minio/health/live")
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=ROOT_USER,
            aws_secret_access_key=ROOT_PASSWORD,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}),
        )
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="iris/model.pkl", Body=model)
        s3.put_object(Bucket=BUCKET, Key="iris/settings/model-settings.json", Body=b"{}")
        # Anyone may read (not list) the objects under public/: a least-privilege policy.
        s3.put_object(Bucket=BUCKET, Key="public/model.pkl", Body=model)
        statement = {
            "Effect": "Allow",
            "Principal": {"AWS": ["*"]},
            "Action": ["s3:GetObject"],
            "Resource": [f"arn:aws:s3:::{BUCKET}/public/*"],
        }
        policy = {"Version": "2012-10-17", "Statement": [statement]}
        s3.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(policy))
        yield endpoint
    finally:
        server.close()


@pytest.fixture(scope="module")
def gcs(tmp: Path, model: bytes) -> Iterator[str]:
    """fake-gcs-server with the bucket `models` holding GCS_DATA (iris/model.pkl = the model)."""
    port = free_port()
    argv = [str(tool("fake-gcs-server")), "-backend", "memory", "-scheme", "http"]
    argv += ["-host", "127.0.0.1", "-port", str(port), "-public-host", f"127.0.0.1:{port}"]
    server = Server(argv, tmp / "fake-gcs-server.log").start()
    host = f"http://127.0.0.1:{port}"
    try:
        server.wait_for(f"{host}/storage/v1/b")
        uploader = storage.Client(
            project="test",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": host},
        )
        bucket = uploader.create_bucket(BUCKET)
        for name, data in GCS_DATA.items():
            bucket.blob(name).upload_from_string(data if data is not None else model)
        yield host
    finally:
        server.close()


def fetch(uri: str, dest: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """mlmodel-fetch with only the environment given (no credentials of the machine's)."""
    dest.mkdir(parents=True, exist_ok=True)
    termination_log = dest.parent / f"{dest.name}.termination-log"
    return subprocess.run(
        [str(FETCH), uri, str(dest), f"--termination-log={termination_log}", *args],
        env={"PATH": "/usr/bin:/bin", "HOME": str(dest.parent), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def failure(result: subprocess.CompletedProcess[str], dest: Path) -> str:
    """The one line a failed fetch reported, checked to be in its termination message."""
    assert result.returncode == 1, result.stdout + result.stderr
    message = (dest.parent / f"{dest.name}.termination-log").read_text()
    assert message.endswith("\n") and message.count("\n") == 1, message
    assert message.strip() in result.stderr
    return message.strip()


def s3_env(secret: str = ROOT_PASSWORD, key_id: str = ROOT_USER) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret}


def predictions(model_path: Path, tmp: Path) -> list[int]:
    """What the KServe model server, serving the pickle at model_path, predicts for iris."""
    port = free_port()
    server = Server(
        [sys.executable, str(SERVER_SCRIPT), str(model_path), "iris", str(port)],
        tmp / f"model-server-{port}.log",
    ).start()
    try:
        server.wait_for(f"http://127.0.0.1:{port}/v2/models/iris/ready")
        features, _ = load_iris(return_X_y=True)
        body = json.dumps({"instances": features[::15].tolist()}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/models/iris:predict",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())["predictions"]
    finally:
        server.close()


def expected_predictions(model: bytes) -> list[int]:
    features, _ = load_iris(return_X_y=True)
    return pickle.loads(model).predict(features[::15]).tolist()


# --- s3:// ------------------------------------------------------------------------------------


def test_s3_model_is_fetched_then_served(minio: str, model: bytes, tmp: Path) -> None:
    dest = tmp / "s3-served"
    result = fetch(f"s3://{BUCKET}/iris", dest, f"--endpoint-url={minio}", **s3_env())
    assert result.returncode == 0, result.stderr
    assert "fetched s3://models/iris: 2 file(s)" in result.stdout
    assert (dest / "model.pkl").read_bytes() == model
    assert (dest / "settings" / "model-settings.json").read_bytes() == b"{}"
    assert predictions(dest / "model.pkl", tmp) == expected_predictions(model)


def test_s3_single_object_lands_under_its_name(minio: str, model: bytes, tmp: Path) -> None:
    dest = tmp / "s3-single"
    (dest / "stale").mkdir(parents=True)  # left by an earlier, failed attempt
    result = fetch(f"s3://{BUCKET}/iris/model.pkl", dest, f"--endpoint-url={minio}", **s3_env())
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in dest.iterdir()) == ["model.pkl"]
    assert (dest / "model.pkl").read_bytes() == model


def test_s3_object_readable_but_not_listable(minio: str, model: bytes, tmp: Path) -> None:
    dest = tmp / "s3-get-only"
    result = fetch(f"s3://{BUCKET}/public/model.pkl", dest, f"--endpoint-url={minio}")
    assert result.returncode == 0, result.stderr
    assert (dest / "model.pkl").read_bytes() == model
    # A prefix cannot be fetched without listing it: the refusal is the listing's.
    dest = tmp / "s3-get-only-prefix"
    message = failure(fetch(f"s3://{BUCKET}/public", dest, f"--endpoint-url={minio}"), dest)
    assert message == "s3://models/public: AccessDenied: Access Denied."


@pytest.mark.parametrize(
    ("uri", "env", "expected"),
    [
        (
            "s3://models/iris",
            s3_env(secret="not-the-secret"),
            "s3://models/iris: SignatureDoesNotMatch: The request signature we calculated does "
            "not match the signature you provided. Check your key and signing method.",
        ),
        (
            "s3://models/iris",
            s3_env(key_id="nobody"),
            "s3://models/iris: InvalidAccessKeyId: The Access Key Id you provided does not "
            "exist in our records.",
        ),
        # No credentials at all: unsigned requests, which a private bucket refuses.
        ("s3://models/iris", {}, "s3://models/iris: AccessDenied: Access Denied."),
        (
            "s3://models/iris/missing.pkl",
            s3_env(),
            "s3://models/iris/missing.pkl: NoSuchKey: no object at this key or under it",
        ),
        (
            "s3://no-such-bucket/iris",
            s3_env(),
            "s3://no-such-bucket/iris: NoSuchBucket: The specified bucket does not exist",
        ),
    ],
    ids=["wrong-secret", "unknown-key-id", "no-credentials", "missing-key", "missing-bucket"],
)
def test_s3_failures_are_one_clear_line(
    minio: str, tmp: Path, uri: str, env: dict[str, str], expected: str
) -> None:
    dest = tmp / f"s3-fail-{abs(hash((uri, tuple(env.items()))))}"
    result = fetch(uri, dest, f"--endpoint-url={minio}", **env)
    assert failure(result, dest) == expected
    assert not any(dest.iterdir())


def test_s3_oversize_model_is_refused_before_downloading(
    minio: str, model: bytes, tmp: Path
) -> None:
    dest = tmp / "s3-oversize"
    limit = len(model) // 2
    result = fetch(
        "s3://models/iris", dest, f"--endpoint-url={minio}", f"--size-limit={limit}", **s3_env()
    )
    message = failure(result, dest)
    assert message.startswith("s3://models/iris: ")
    assert "in 2 file(s) is more than the volume's size limit of" in message
    assert message.endswith("(raise spec.storage.size_limit)")
    assert not any(dest.iterdir())


# --- gs:// ------------------------------------------------------------------------------------


def test_gs_model_is_fetched_then_served(gcs: str, model: bytes, tmp: Path) -> None:
    dest = tmp / "gs-served"
    result = fetch("gs://models/iris", dest, STORAGE_EMULATOR_HOST=gcs)
    assert result.returncode == 0, result.stderr
    assert (dest / "model.pkl").read_bytes() == model
    assert (dest / "settings" / "model-settings.json").read_bytes() == b'{"name": "iris"}'
    assert predictions(dest / "model.pkl", tmp) == expected_predictions(model)


@pytest.mark.parametrize(
    ("uri", "args", "env", "expected"),
    [
        ("gs://models/nothing", (), {}, "gs://models/nothing: NoSuchKey: no object"),
        ("gs://no-such-bucket/iris", (), {}, "gs://no-such-bucket/iris: NotFound: GET"),
        ("gs://models/iris", ("--size-limit=100",), {}, "gs://models/iris: "),
        (
            "gs://models/iris",
            (),
            {"GOOGLE_CREDENTIALS_JSON": '{"type": "service_account"}'},
            # google-auth names the missing fields in no fixed order; both are checked below.
            "gs://models/iris: credentials: Failed to load service account credentials from "
            "dict object: Service account info was not in the expected format, missing fields ",
        ),
        (
            "gs://models/iris",
            (),
            {"GOOGLE_CREDENTIALS_JSON": "{not json"},
            "gs://models/iris: credentials: GOOGLE_CREDENTIALS_JSON is not JSON: ",
        ),
    ],
    ids=["missing-key", "missing-bucket", "oversize", "incomplete-credentials", "not-json"],
)
def test_gs_failures_are_one_clear_line(
    gcs: str, tmp: Path, uri: str, args: tuple[str, ...], env: dict[str, str], expected: str
) -> None:
    dest = tmp / f"gs-fail-{abs(hash((uri, args, tuple(env.items()))))}"
    result = fetch(uri, dest, *args, STORAGE_EMULATOR_HOST=gcs, **env)
    message = failure(result, dest)
    assert message.startswith(expected)
    if expected.endswith("missing fields "):
        assert sorted(message.removeprefix(expected).rstrip(".").split(", ")) == [
            "client_email",
            "token_uri",
        ]
    if "--size-limit=100" in args:
        assert message.endswith(
            "is more than the volume's size limit of 100 B (raise spec.storage.size_limit)"
        )
    assert not any(dest.iterdir())


# --- https:// ---------------------------------------------------------------------------------


class ModelFiles(BaseHTTPRequestHandler):
    """/model.pkl (with Content-Length), /chunked/model.pkl (without), /private/model.pkl (only
    with the right Authorization header); anything else 404."""

    body = b""
    token = "Bearer fetch-test-token"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/private/model.pkl" and self.headers.get("Authorization") != self.token:
            self.send_error(401)
        elif path in ("/model.pkl", "/private/model.pkl"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.body)))
            self.end_headers()
            self.wfile.write(self.body)
        elif path == "/chunked/model.pkl":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, len(self.body), 100):
                chunk = self.body[start : start + 100]
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_error(404)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def web(tmp: Path, model: bytes) -> Iterator[dict[str, str]]:
    """The TLS server; yields its base URL and the CA bundle the fetcher trusts it through."""
    cert, key = self_signed_certificate(tmp)
    handler = type("Handler", (ModelFiles,), {"body": model, "protocol_version": "HTTP/1.1"})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield {"url": f"https://127.0.0.1:{server.server_address[1]}", "ca": str(cert)}
    finally:
        server.shutdown()
        server.server_close()


def test_https_model_is_fetched_then_served(web: dict, model: bytes, tmp: Path) -> None:
    dest = tmp / "https-served"
    result = fetch(f"{web['url']}/model.pkl", dest, REQUESTS_CA_BUNDLE=web["ca"])
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in dest.iterdir()) == ["model.pkl"]
    assert predictions(dest / "model.pkl", tmp) == expected_predictions(model)


def test_https_with_an_authorization_header_from_the_secret(
    web: dict, model: bytes, tmp: Path
) -> None:
    uri = f"{web['url']}/private/model.pkl"
    dest = tmp / "https-private-refused"
    refused = fetch(uri, dest, REQUESTS_CA_BUNDLE=web["ca"])
    assert failure(refused, dest) == f"{uri}: HTTP 401 Unauthorized"
    dest = tmp / "https-private"
    result = fetch(uri, dest, REQUESTS_CA_BUNDLE=web["ca"], HTTP_AUTHORIZATION=ModelFiles.token)
    assert result.returncode == 0, result.stderr
    assert (dest / "model.pkl").read_bytes() == model


@pytest.mark.parametrize(
    ("path", "size_limit", "expected"),
    [
        ("/missing.pkl", None, "{url}/missing.pkl: HTTP 404 Not Found"),
        # A presigned URL's query holds a signature: it never reaches the message.
        (
            "/missing.pkl?X-Amz-Signature=s3cr3t",
            None,
            "{url}/missing.pkl?...: HTTP 404 Not Found",
        ),
        ("/model.pkl", "100", "{url}/model.pkl: {size} in 1 file(s) is more than the volume's"),
        ("/chunked/model.pkl", "100", "{url}/chunked/model.pkl: more than the volume's size"),
    ],
    ids=["missing", "presigned-missing", "oversize", "oversize-without-length"],
)
def test_https_failures_are_one_clear_line(
    web: dict, model: bytes, tmp: Path, path: str, size_limit: str | None, expected: str
) -> None:
    dest = tmp / f"https-fail-{abs(hash((path, size_limit)))}"
    args = [f"--size-limit={size_limit}"] if size_limit else []
    result = fetch(f"{web['url']}{path}", dest, *args, REQUESTS_CA_BUNDLE=web["ca"])
    size = human(len(model))
    message = failure(result, dest)
    assert message.startswith(expected.format(url=web["url"], size=size))
    assert "s3cr3t" not in result.stderr + result.stdout
    assert not any(dest.iterdir())


def test_an_untrusted_certificate_is_refused(web: dict, tmp: Path) -> None:
    dest = tmp / "https-untrusted"
    message = failure(fetch(f"{web['url']}/model.pkl", dest), dest)
    assert message.startswith(f"{web['url']}/model.pkl: SSLError: ")
    assert "certificate verify failed" in message


def test_an_unreachable_server_is_named(tmp: Path) -> None:
    dest = tmp / "https-unreachable"
    uri = f"https://127.0.0.1:{free_port()}/model.pkl?token=s3cr3t"
    message = failure(fetch(uri, dest), dest)
    assert message.startswith(f"{uri.split('?')[0]}?...: ConnectionError: ")
    assert "Connection refused" in message
    assert "s3cr3t" not in message
