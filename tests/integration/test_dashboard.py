"""The Grafana dashboard's queries, run for real: a real Prometheus scrapes real sidecars (in
front of the KServe model server, two versions of a model mid-canary, one fed a shifted
stream so that its drift detector alarms) and the operator's own metrics endpoint, while the
operator runs the canary on the local control plane. Every panel's PromQL, with Grafana's
variables set as a user would set them, must return series.

The GPU panel reads NVIDIA dcgm-exporter's DCGM_FI_DEV_GPU_UTIL, which exists only where GPUs
and the exporter do: it must be a query Prometheus accepts, and must return series whenever
Prometheus holds any DCGM series. There is no GPU here, so here it is checked for the former
only."""

from __future__ import annotations

import contextlib
import json
import re
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import start_http_server

from chart_helpers import CHART
from kube_helpers import TestCluster, wait_until
from model_helpers import Models, paused_canary
from monitor_procs import MODEL, flowers, model_server, post, v2_body
from procs import free_port
from prometheus_procs import Prometheus, model_version, prometheus

pytestmark = pytest.mark.integration

DASHBOARD = CHART / "dashboards" / "mlmodel-operator.json"
DCGM = "DCGM_"


def panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (f"{panel['title']} ({target['refId']})", target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def as_grafana_sends(expr: str, namespace: str) -> str:
    """The query with the dashboard's variables as Grafana fills them in: this namespace and
    model picked, and the time ranges of a short dashboard range."""
    return (
        expr.replace("$namespace", namespace)
        .replace("$model", MODEL)
        .replace("$__rate_interval", "30s")
        .replace("$__range", "10m")
    )


def accepted(prom: Prometheus, expr: str) -> list[dict[str, Any]]:
    """The query's result; a query Prometheus refuses fails with its error."""
    try:
        return prom.query(expr)
    except urllib.error.HTTPError as err:
        raise AssertionError(f"Prometheus refused {expr!r}: {err.read().decode()}") from err


@pytest.fixture
def prom(tmp_path: Path) -> Iterator[Prometheus]:
    with prometheus(tmp_path / "prometheus") as server:
        yield server


@pytest.fixture
def operator_metrics(prom: Prometheus) -> Iterator[None]:
    """The in-process operator's metrics endpoint (this process' registry), scraped."""
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1")
    prom.add_operator_target(port)
    yield
    server.shutdown()
    thread.join(timeout=10)


def test_every_panel_query_returns_series_from_real_processes(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    cluster: TestCluster,
    namespace: str,
    prom: Prometheus,
    operator_metrics: None,
    tmp_path: Path,
) -> None:
    # Without --prometheus-url the canary pauses at its first step on an Inconclusive verdict:
    # a rollout that holds still while the queries are run.
    monkeypatch.delenv("MLMODEL_PROMETHEUS_URL", raising=False)
    request.getfixturevalue("operator")
    paused_canary(Models(cluster, namespace), MODEL)

    rng = np.random.default_rng(3)
    reference = tmp_path / "reference.csv"
    rows = ["0,1,2,3"] + [",".join(map(str, row)) for row in flowers(rng, 2000)]
    reference.write_text("\n".join(rows) + "\n")
    sidecar = {
        "drift": {"window_size": 1000, "check_interval_seconds": 5, "reference_uri": str(reference)}
    }
    path = f"/v2/models/{MODEL}/infer"
    with contextlib.ExitStack() as stack:
        upstream = stack.enter_context(model_server(tmp_path))
        versions = {
            v: stack.enter_context(
                model_version(
                    prom,
                    tmp_path,
                    v,
                    namespace=namespace,
                    model=MODEL,
                    upstream_port=upstream,
                    sidecar={
                        **sidecar,
                        "ground_truth": {"task": "classification", "feedback_port_base": base},
                    },
                )
            )
            for v, base in (("v1", free_port()), ("v2", free_port()))
        }
        for served in versions.values():
            for _ in range(4):  # like the reference
                status, headers, body = post(served.proxy_port, path, v2_body(flowers(rng, 50)))
                assert status == 200
                # The truth of each prediction: right, but for v2's first row.
                truth = json.loads(body)["outputs"][0]["data"]
                if served.version == "v2":
                    truth[0] = (truth[0] + 1) % 3
                feedback = json.dumps({"id": headers["x-prediction-id"], "truth": truth})
                status, _, answer = post(
                    served.proxy_port, f"/v2/models/{MODEL}/feedback", feedback.encode()
                )
                assert status == 200 and json.loads(answer)["matched"] == 1, answer
        # A body over the sidecar's capture limit (4 MiB) passes through, left out of drift and
        # counted as dropped: the drop panel has a reason to show.
        status, _, _ = post(versions["v1"].proxy_port, path, v2_body(flowers(rng, 60_000)))
        assert status == 200
        for _ in range(4):  # v2's petal lengths one centimetre longer
            shifted = flowers(rng, 50) + np.array([0, 0, 1.0, 0])
            post(versions["v2"].proxy_port, path, v2_body(shifted))
        prom.wait_for(
            f'max(mlmodel_drift_detected{{namespace="{namespace}",version="v2"}})',
            what="v2's drift to be scraped",
        )

        queries = panel_queries()
        assert len(queries) >= 14
        has_dcgm = bool(accepted(prom, 'count({__name__=~"DCGM_.*"})'))
        for title, expr in queries:
            query = as_grafana_sends(expr, namespace)
            if DCGM in expr and not has_dcgm:
                assert accepted(prom, query) == [], title
                continue
            wait_until(
                lambda q=query: accepted(prom, q),
                what=f"the panel {title!r} to return series: {query}",
            )
        # The series are the model's: what the panels show of this namespace and model.
        weight = accepted(prom, as_grafana_sends(dict(queries)["Canary weight (A)"], namespace))
        assert [float(s["value"][1]) for s in weight] == [50.0]
        drifted = accepted(
            prom, as_grafana_sends(dict(queries)["Features held drifted (A)"], namespace)
        )
        assert any(s["metric"].get("feature") == "x[2]" and s["value"][1] == "1" for s in drifted)
        title = "Accuracy per version (labels of the last hour) (A)"
        accuracy = accepted(prom, as_grafana_sends(dict(queries)[title], namespace))
        by_version = {s["metric"]["version"]: float(s["value"][1]) for s in accuracy}
        assert by_version == {"v1": 1.0, "v2": pytest.approx(1 - 4 / 200)}


def test_the_query_parameters_grafana_sends_are_all_filled_in() -> None:
    # Every variable the queries use is one the dashboard defines or one of Grafana's own.
    dashboard = json.loads(DASHBOARD.read_text())
    defined = {v["name"] for v in dashboard["templating"]["list"]}
    for title, expr in panel_queries():
        used = set(re.findall(r"\$(\w+)", expr))
        assert used <= defined | {"__rate_interval", "__range"}, title
        assert "$" not in as_grafana_sends(expr, "ns"), title
