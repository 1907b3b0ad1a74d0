"""The model fetcher's pure parts (URIs, which objects, the size check) and the init container
the operator builds for it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mlmodel_operator import api
from mlmodel_operator.builders import BuildSettings, Owner, build_children
from mlmodel_operator.fetch.__main__ import main
from mlmodel_operator.fetch.common import FetchError, check_size, display, select
from mlmodel_operator.fetch.https import file_name
from mlmodel_operator.fetch.uri import Location, is_fetched, parse, relative_path
from mlmodel_operator.runtimes import DEFAULT_RUNTIMES

OWNER = Owner(name="m", namespace="ns", uid="uid-1")
SETTINGS = BuildSettings(runtimes=dict(DEFAULT_RUNTIMES), monitor_image="ours:1")


@pytest.mark.parametrize(
    ("uri", "location"),
    [
        ("s3://models/iris/v1", ("s3", "models", "iris/v1")),
        ("s3://models/iris/", ("s3", "models", "iris/")),
        ("s3://models", ("s3", "models", "")),
        ("gs://bucket/a/model.joblib", ("gs", "bucket", "a/model.joblib")),
        ("https://host:8443/files/model.onnx?sig=x", ("https", "host", "files/model.onnx")),
        ("hf://org/name", ("hf", "org/name", "")),
        ("hf://gpt2@v1.0", ("hf", "gpt2", "v1.0")),
        ("hf://Org-1/llama_3.1@8f3e2a", ("hf", "Org-1/llama_3.1", "8f3e2a")),
    ],
)
def test_parse(uri: str, location: tuple[str, str, str]) -> None:
    parsed = parse(uri)
    assert (parsed.scheme, parsed.bucket, parsed.key) == location
    assert parsed.uri == uri


@pytest.mark.parametrize(
    "uri", ["s3://", "gs:///key", "hf://", "hf://a/b/c", "hf://org/m@", "pvc://claim/x", "x"]
)
def test_parse_refuses(uri: str) -> None:
    with pytest.raises(ValueError, match=uri.split("?")[0]):
        parse(uri)


@pytest.mark.parametrize(
    ("uri", "fetched"),
    [
        ("s3://b/k", True),
        ("gs://b/k", True),
        ("https://h/m", True),
        ("pvc://c/m", False),
        ("hf://org/m", True),
        (None, False),
    ],
)
def test_which_uris_are_fetched(uri: str | None, fetched: bool) -> None:
    assert is_fetched(uri) == fetched


@pytest.mark.parametrize(
    ("key", "prefix", "relative"),
    [
        ("iris/model.pkl", "iris", "model.pkl"),
        ("iris/model.pkl", "iris/", "model.pkl"),
        ("iris/sub/a.json", "iris", "sub/a.json"),
        ("iris/model.pkl", "iris/model.pkl", "model.pkl"),  # one object: its file name
        ("iris2/model.pkl", "iris", None),  # a sibling that shares the prefix's letters
        ("iris/", "iris", None),  # a directory marker
        ("iris/../../etc/passwd", "iris", None),  # would leave the destination
        ("iris//a", "iris", None),
        ("a/b", "", "a/b"),  # the whole bucket
    ],
)
def test_relative_path(key: str, prefix: str, relative: str | None) -> None:
    assert relative_path(key, prefix) == relative


def test_select_prefers_the_object_named_by_the_key() -> None:
    listed = [("m/model.pkl", 10), ("m/model.pkl.bak/x", 5)]
    items = select(Location("s3://b/m/model.pkl", "s3", "b", "m/model.pkl"), listed)
    assert [(i.key, i.relative, i.size) for i in items] == [("m/model.pkl", "model.pkl", 10)]
    items = select(Location("s3://b/m", "s3", "b", "m"), listed)
    assert [i.relative for i in items] == ["model.pkl", "model.pkl.bak/x"]


def test_select_nothing_is_no_such_key() -> None:
    with pytest.raises(FetchError, match=r"^s3://b/m: NoSuchKey: no object at this key or under"):
        select(Location("s3://b/m", "s3", "b", "m"), [("m2/x", 1), ("m/", 0)])


def test_size_check() -> None:
    check_size("s3://b/m", 2**30, 3, 2**30)  # exactly the limit fits
    with pytest.raises(FetchError) as err:
        check_size("s3://b/m", 2**30 + 1, 3, 2**30)
    assert str(err.value) == (
        "s3://b/m: 1.0 GiB in 3 file(s) is more than the volume's size limit of 1.0 GiB "
        "(raise spec.storage.size_limit)"
    )


def test_messages_never_show_a_query() -> None:
    assert display("https://h/m.onnx?X-Amz-Signature=abc") == "https://h/m.onnx?..."
    assert display("s3://b/k") == "s3://b/k"


@pytest.mark.parametrize(
    ("uri", "name"),
    [
        ("https://h/a/model.onnx", "model.onnx"),
        ("https://h/", "model"),
        ("https://h/a%20b", "a b"),
        ("https://h/x/..", "model"),
        ("https://h/a%2Fb", "model"),
    ],
)
def test_https_file_name(uri: str, name: str) -> None:
    assert file_name(parse(uri)) == name


def test_a_bad_argument_is_one_line_in_the_termination_log(tmp_path: Path) -> None:
    log = tmp_path / "termination-log"
    code = main(["ftp://x/y", str(tmp_path), f"--termination-log={log}"])
    assert code == 1
    assert log.read_text() == "ftp://x/y: not a URI the fetcher downloads (s3, gs, https, hf)\n"
    code = main(["s3://b/k", str(tmp_path / "absent"), f"--termination-log={log}"])
    assert code == 1
    assert log.read_text() == f"{tmp_path / 'absent'}: no such directory\n"


# --- the init container -----------------------------------------------------------------------


def pod_for(**fields: Any) -> dict[str, Any]:
    spec = api.MLModelDeploymentSpec.model_validate(fields)
    deployment = next(
        o for o in build_children(OWNER, spec, SETTINGS).apply if o["kind"] == "Deployment"
    )
    return deployment["spec"]["template"]


def test_the_fetcher_alone_gets_the_credentials() -> None:
    template = pod_for(
        model_type="sklearn",
        model_uri="s3://models/iris",
        storage={
            "secret_name": "s3-creds",
            "endpoint_url": "https://minio.storage:9000",
            "service_account_name": "model-reader",
            "size_limit": "500MB",
        },
    )
    pod = template["spec"]
    [fetcher] = pod["initContainers"]
    assert fetcher["name"] == "model-fetch"
    assert fetcher["image"] == "ours:1"
    assert fetcher["command"] == ["mlmodel-fetch"]
    assert fetcher["args"] == [
        "s3://models/iris",
        "/mnt/models",
        "--size-limit=500000000",
        "--endpoint-url=https://minio.storage:9000",
    ]
    assert fetcher["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    token_file = "/var/run/secrets/mlmodel/fetch-token/token"
    assert {"name": "AWS_WEB_IDENTITY_TOKEN_FILE", "value": token_file} in fetcher["env"]
    # The ServiceAccount's token: projected into the fetcher only, never automounted.
    assert pod["serviceAccountName"] == "model-reader"
    assert pod["automountServiceAccountToken"] is False
    token = next(v for v in pod["volumes"] if v["name"] == "fetch-token")
    assert token["projected"]["sources"] == [
        {
            "serviceAccountToken": {
                "audience": "sts.amazonaws.com",
                "expirationSeconds": 3600,
                "path": "token",
            }
        }
    ]
    for container in pod["containers"]:
        assert "envFrom" not in container
        names = {e["name"] for e in container.get("env", [])}
        assert not any(n.startswith(("AWS_", "GOOGLE_", "HTTP_AUTH")) for n in names)
        assert all(m["name"] != "fetch-token" for m in container["volumeMounts"])
    # EKS's webhook must not hand the role to the other containers either.
    skipped = template["metadata"]["annotations"]["eks.amazonaws.com/skip-containers"]
    assert skipped == "model-server,monitor"


def test_the_model_volume_is_written_by_the_fetcher_and_read_by_the_server() -> None:
    pod = pod_for(model_type="onnx", model_uri="gs://models/resnet")["spec"]
    [fetcher] = pod["initContainers"]
    server = pod["containers"][0]
    volume = next(v for v in pod["volumes"] if v["name"] == "model-store")
    assert volume == {"name": "model-store", "emptyDir": {"sizeLimit": "20Gi"}}  # the default
    assert {"name": "model-store", "mountPath": "/mnt/models"} in fetcher["volumeMounts"]
    assert {"name": "model-store", "mountPath": "/mnt/models", "readOnly": True} in server[
        "volumeMounts"
    ]
    assert "--model-repository=/mnt/models" in server["args"]
    # Nothing to authenticate with: no Secret, no ServiceAccount, no token.
    assert "envFrom" not in fetcher
    assert "serviceAccountName" not in pod
    assert all("projected" not in v for v in pod["volumes"])
    assert fetcher["args"][2] == f"--size-limit={20 * 2**30}"


def test_the_fetcher_container_is_restricted_small_and_reports_its_reason() -> None:
    pod = pod_for(model_type="sklearn", model_uri="https://h/model.joblib")["spec"]
    [fetcher] = pod["initContainers"]
    assert fetcher["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert fetcher["resources"] == {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"memory": "512Mi"},
    }
    assert fetcher["terminationMessagePath"] == "/dev/termination-log"
    assert fetcher["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert {"name": "tmp", "mountPath": "/tmp"} in fetcher["volumeMounts"]


@pytest.mark.parametrize(
    "fields",
    [
        {"model_type": "sklearn", "model_uri": "pvc://claim/iris"},
        {"model_type": "onnx"},
        {"model_type": "custom", "image": "acme/model:1"},
    ],
    ids=["pvc", "no-model", "custom-image"],
)
def test_no_fetcher_where_nothing_is_downloaded(fields: dict[str, Any]) -> None:
    template = pod_for(**fields)
    assert "initContainers" not in template["spec"]
    assert "eks.amazonaws.com/skip-containers" not in template["metadata"].get("annotations", {})


def test_hub_files_skip_weights_that_safetensors_make_redundant() -> None:
    from mlmodel_operator.fetch.hf import wanted

    files = {"config.json": 1, "model.safetensors": 9, "pytorch_model.bin": 9, "original/x": 9}
    assert wanted(files) == {"config.json": 1, "model.safetensors": 9}
    # Without safetensors the pickled weights are the model: all of it is fetched.
    legacy = {"config.json": 1, "pytorch_model.bin": 9}
    assert wanted(legacy) == legacy
