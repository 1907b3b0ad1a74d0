"""The resync's view of kopf peering agrees with kopf's: active while no live peer has a priority
as high as this replica's."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from mlmodel_operator import config, peering
from mlmodel_operator.peering import Peering, is_active

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def record(priority: int, seconds_ago: float = 1, lifetime: int = 60) -> dict[str, Any]:
    seen = (NOW - timedelta(seconds=seconds_ago)).isoformat()
    return {"priority": priority, "lifetime": lifetime, "lastseen": seen}


@pytest.mark.parametrize(
    ("others", "expected"),
    [
        ({}, True),
        ({"b": record(5)}, True),
        ({"b": record(20)}, False),
        ({"b": record(10)}, False),  # kopf pauses both on a tie
        ({"b": record(20, seconds_ago=61)}, True),  # its record expired: presumed dead
        ({"b": record(20, lifetime=0)}, True),  # it said goodbye
        ({"b": record(5), "c": record(11)}, False),
    ],
)
def test_active_unless_a_live_peer_outranks_or_ties(others: dict[str, Any], expected: bool) -> None:
    peers = {"me": record(10), **others}
    assert is_active(peers, "me", 10, NOW) is expected


def test_kopf_timestamps_with_offsets_are_understood() -> None:
    peers = {"b": {"priority": 20, "lifetime": 60, "lastseen": "2026-01-01T11:59:59.5+00:00"}}
    assert not is_active(peers, "me", 10, NOW)


class FakeKube:
    """Answers GET with `answer` (a body, or an error status) and POST with `post`."""

    def __init__(self, answer: dict[str, Any] | int, post: dict[str, Any] | int = 201) -> None:
        self.answers = {"GET": answer, "POST": post}
        self.paths: list[str] = []
        self.calls: list[tuple[str, str, Any]] = []

    def request(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        self.paths.append(path)
        self.calls.append((method, path, body))
        answer = self.answers[method]
        if isinstance(answer, int):
            if answer >= 300:
                raise ApiException(status=answer)
            return {}
        return answer


def test_standalone_is_always_active_and_asks_nothing() -> None:
    kube = FakeKube(403)
    assert Peering().active(kube, "ns")
    assert kube.paths == []


def test_cluster_and_namespaced_peering_objects() -> None:
    live = datetime.now(UTC).isoformat()
    kube = FakeKube({"status": {"other": {"priority": 99, "lifetime": 60, "lastseen": live}}})
    assert not Peering("op", "me", 1).active(kube, "models")
    assert Peering("op", "me", 100, namespaced=True).active(kube, "models")
    assert kube.paths == [
        "/apis/kopf.dev/v1/clusterkopfpeerings/op",
        "/apis/kopf.dev/v1/namespaces/models/kopfpeerings/op",
    ]


def test_missing_peering_objects_are_created() -> None:
    kube = FakeKube(404)
    created = Peering("op", "me", 1, namespaced=True).ensure_objects(kube, ["a", "b"])
    assert created == [
        "/apis/kopf.dev/v1/namespaces/a/kopfpeerings/op",
        "/apis/kopf.dev/v1/namespaces/b/kopfpeerings/op",
    ]
    posts = [(path, body) for method, path, body in kube.calls if method == "POST"]
    assert posts[0] == (
        "/apis/kopf.dev/v1/namespaces/a/kopfpeerings",
        {
            "apiVersion": "kopf.dev/v1",
            "kind": "KopfPeering",
            "metadata": {"name": "op", "namespace": "a"},
        },
    )
    kube = FakeKube(404, post=409)  # another replica created it first
    assert Peering("op", "me", 1).ensure_objects(kube, []) == [
        "/apis/kopf.dev/v1/clusterkopfpeerings/op"
    ]
    assert kube.calls[-1][1:] == (
        "/apis/kopf.dev/v1/clusterkopfpeerings",
        {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "op"}},
    )


def test_existing_peering_objects_are_left_alone_and_refusals_surface() -> None:
    kube = FakeKube({"status": {}})
    assert Peering("op", "me", 1).ensure_objects(kube, []) == []
    assert [method for method, _, _ in kube.calls] == ["GET"]
    with pytest.raises(ApiException):
        Peering("op", "me", 1).ensure_objects(FakeKube(404, post=403), [])


def test_missing_object_means_kopf_runs_unpaused_and_other_errors_surface() -> None:
    assert Peering("op", "me", 1).active(FakeKube(404), "ns")
    with pytest.raises(ApiException):
        Peering("op", "me", 1).active(FakeKube(403), "ns")


def test_peering_flags() -> None:
    cfg = config.parse_args(["--peering", "mlmodel-operator", "--peering-priority", "7"], {})
    assert (cfg.peering, cfg.peering_priority) == ("mlmodel-operator", 7)
    assert config.from_env({}).peering is None
    assert config.from_env({"MLMODEL_PEERING": "p"}).peering == "p"


def test_identity_is_the_pod_name_in_a_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_ID", "mlmodel-operator-7d9f-abcde")
    assert peering.own_identity() == "mlmodel-operator-7d9f-abcde"
    monkeypatch.delenv("POD_ID")
    assert peering.own_identity() != peering.own_identity()  # unique per replica on one host


def test_peering_objects_the_installer_creates_are_waited_for_not_created() -> None:
    kube = FakeKube(404)
    assert Peering("op", "me", 1).ensure_objects(kube, None) == []
    assert kube.calls == []
    assert config.from_env({}).peering_create is True
    assert config.parse_args(["--peering-create=false"], {}).peering_create is False
    assert config.from_env({"MLMODEL_PEERING_CREATE": "false"}).peering_create is False
