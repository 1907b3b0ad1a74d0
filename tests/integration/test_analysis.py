"""Canary analysis against real parts: a real Prometheus (Debian package) scraping real
`mlmodel-monitor` sidecars of two versions of one model, v1 and v2, with the KServe model
server behind the healthy ones and servers/v2_faults.py behind the bad ones.

Each test has a namespace label of its own, so that no test's traffic is in another's window.
Nothing is asserted on a guess of time: each waits until Prometheus has scraped what was sent,
then judges the window ending at that very scrape (interval_seconds long enough to hold the
whole test). The request series start at 0 and nothing is extrapolated past the window's last
sample, so increase() gives the very counts sent.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlmodel_operator import api
from mlmodel_operator.analysis import MetricsUnavailable, Verdict, analyse, measure
from monitor_procs import model_server
from prometheus_procs import ModelVersion, Prometheus, model_version, prometheus

MODEL = "fraud"  # the MLModelDeployment's name: the sidecars' `model` label
# Windows that hold a whole test; thresholds that a healthy version meets with room to spare.
ANALYSIS = api.RolloutAnalysis(
    interval_seconds=60, min_requests=40, max_error_ratio=0.1, max_p99_latency_seconds=0.2
)
PASS, FAIL = api.AnalysisResult.Pass, api.AnalysisResult.Fail
INCONCLUSIVE = api.AnalysisResult.Inconclusive


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("analysis")


@pytest.fixture(scope="module")
def prom(tmp: Path) -> Iterator[Prometheus]:
    with prometheus(tmp / "prometheus") as server:
        yield server


@pytest.fixture(scope="module")
def kserve_port(tmp: Path) -> Iterator[int]:
    """The healthy model server: the KServe server with an iris classifier, behind every
    healthy version's sidecar."""
    with model_server(tmp) as port:
        yield port


@pytest.fixture
def namespace() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def v1(prom: Prometheus, tmp: Path, kserve_port: int, namespace: str) -> Iterator[ModelVersion]:
    with model_version(
        prom, tmp, "v1", namespace=namespace, model=MODEL, upstream_port=kserve_port
    ) as version:
        yield version


def judge(prom: Prometheus, canary: ModelVersion, at: float, stable: str | None = "v1") -> Verdict:
    return analyse(prom.url, canary.namespace, MODEL, canary.version, stable, ANALYSIS, at)


def test_healthy_canary_passes_on_its_own_requests(
    prom: Prometheus, tmp: Path, kserve_port: int, namespace: str, v1: ModelVersion
) -> None:
    with model_version(
        prom, tmp, "v2", namespace=namespace, model=MODEL, upstream_port=kserve_port
    ) as v2:
        assert v1.send(150) == {200: 150}
        assert v2.send(60, concurrency=2) == {200: 60}
        v1_counted = v1.wait_scraped()
        verdict = judge(prom, v2, at=v2.wait_scraped())
        stable = measure(prom.url, namespace, MODEL, "v1", 60, at=v1_counted)
    assert verdict.result == PASS, verdict.message
    assert verdict.canary is not None
    # v2's requests, not v1's 150.
    assert (verdict.canary.requests, verdict.canary.errors) == pytest.approx((60, 0))
    assert verdict.canary.drift is None  # drift detection off: no series
    assert " over 60 requests to v2 in the last 60s (stable v1: " in verdict.message
    # Each version counts its own: v1's at its own last scrape (the scrapes of the two sidecars
    # are apart, so the stable figures in the message are those up to v2's last scrape).
    assert (stable.requests, stable.errors) == pytest.approx((150, 0))
    record = verdict.record("2026-01-01T00:00:00Z")
    assert record.result == PASS and record.error_ratio == 0


def test_canary_answering_5xx_fails_naming_the_error_ratio(
    prom: Prometheus, tmp: Path, namespace: str, v1: ModelVersion
) -> None:
    with model_version(prom, tmp, "v2", namespace=namespace, model=MODEL, error_ratio=0.5) as v2:
        assert v2.send(60) == {200: 30, 500: 30}
        v1.send(50)
        v1.wait_scraped()
        verdict = judge(prom, v2, at=v2.wait_scraped())
    assert verdict.result == FAIL, verdict.message
    assert verdict.canary is not None
    assert (verdict.canary.requests, verdict.canary.errors) == pytest.approx((60, 30))
    assert verdict.message.startswith(
        "error ratio 0.5 > max_error_ratio 0.1 over 60 requests to v2 in the last 60s "
    )
    assert "p99" not in verdict.message.split("(")[0]  # only the broken threshold is named
    assert "(stable v1: " in verdict.message


def test_slow_canary_fails_naming_p99(prom: Prometheus, tmp: Path, namespace: str) -> None:
    with model_version(prom, tmp, "v2", namespace=namespace, model=MODEL, delay_seconds=0.3) as v2:
        assert v2.send(40, concurrency=8) == {200: 40}
        verdict = judge(prom, v2, at=v2.wait_scraped(), stable=None)
    assert verdict.result == FAIL, verdict.message
    # Every answer took over 0.3s, all in the 0.25-0.5s bucket: p99 interpolates within it.
    assert verdict.canary is not None
    assert verdict.canary.p99_latency_seconds == pytest.approx(0.25 + 0.25 * 0.99)
    assert verdict.message == (
        "p99 latency 0.497s > max_p99_latency_seconds 0.2 over 40 requests to v2 in the last 60s"
    )


def test_no_traffic_is_inconclusive(prom: Prometheus, tmp: Path, namespace: str) -> None:
    with model_version(prom, tmp, "v2", namespace=namespace, model=MODEL) as v2:
        verdict = judge(prom, v2, time.time(), stable="v1")  # v1 has no series here
    assert verdict.result == INCONCLUSIVE
    assert verdict.message == (
        "0 requests to v2 in the last 60s, fewer than min_requests 40 (stable v1: no requests)"
    )
    unknown = analyse(prom.url, namespace, MODEL, "v9", None, ANALYSIS, time.time())
    assert unknown.result == INCONCLUSIVE
    assert unknown.message.startswith("0 requests to v9")


def test_prometheus_down_is_inconclusive_and_up_again_works(
    prom: Prometheus, tmp: Path, kserve_port: int, namespace: str
) -> None:
    with model_version(
        prom, tmp, "v2", namespace=namespace, model=MODEL, upstream_port=kserve_port
    ) as v2:
        prom.stop()
        try:
            verdict = judge(prom, v2, time.time())
            assert verdict.result == INCONCLUSIVE
            assert verdict.message == (
                f"cannot reach Prometheus at {prom.url}: [Errno 111] Connection refused"
            )
        finally:
            prom.start()
        v2.send(50)
        verdict = judge(prom, v2, at=v2.wait_scraped(), stable=None)
    assert verdict.result == PASS, verdict.message
    assert verdict.canary is not None and verdict.canary.requests == pytest.approx(50)


def test_no_url_is_inconclusive() -> None:
    verdict = analyse(None, "ns", MODEL, "v2", "v1", ANALYSIS, time.time())
    assert verdict.result == INCONCLUSIVE
    assert verdict.message == "no Prometheus configured (--prometheus-url)"


def test_something_that_is_not_prometheus_is_inconclusive(kserve_port: int) -> None:
    url = f"http://127.0.0.1:{kserve_port}"
    verdict = analyse(url, "ns", MODEL, "v2", "v1", ANALYSIS, time.time())
    assert verdict.result == INCONCLUSIVE
    assert verdict.message.startswith(f"Prometheus at {url} answered HTTP 404")
    assert "\n" not in verdict.message


def test_a_prometheus_that_does_not_answer_times_out() -> None:
    with socket.socket() as silent:  # accepts connections (the backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(MetricsUnavailable) as raised:
            measure(url, "ns", MODEL, "v2", 60, time.time(), timeout=1.0)
    assert str(raised.value) == f"Prometheus at {url} did not answer within 1s"
