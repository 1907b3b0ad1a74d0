"""The sidecar's metrics endpoint: the sum of its processes' metrics (prometheus_client's
multiprocess mode), followed, for a model server that exports its own on its HTTP port (vLLM's
/metrics), by the server's. One scrape target per pod then gives both, with the same pod labels,
so vLLM's queue and KV-cache gauges can drive an autoscaler without a second scrape config.

Both are in the classic text format (0.0.4), which can be concatenated: their metric names do
not overlap (mlmodel_* against the server's own), and the multiprocess collector exports no
process or Python metrics of its own that the server's could repeat.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, ThreadingWSGIServer

from mlmodel_operator.monitor import drift_page
from mlmodel_operator.monitor.settings import MonitorSettings

UPSTREAM_TIMEOUT_SECONDS = 2.0
ACCEPT_CLASSIC = "text/plain;version=0.0.4"

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per scrape would drown the sidecar's log


def upstream_metrics(url: str) -> bytes:
    """The model server's metrics text, or one comment line saying why there is none (a valid
    line of the format: the scrape still succeeds with the sidecar's own)."""
    request = urllib.request.Request(url, headers={"Accept": ACCEPT_CLASSIC})
    try:
        with urllib.request.urlopen(request, timeout=UPSTREAM_TIMEOUT_SECONDS) as answer:
            text: bytes = answer.read()
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = " ".join(str(getattr(err, "reason", err)).split())[:200]
        return f"# model server metrics unavailable: {reason}\n".encode()
    return text if text.endswith(b"\n") or not text else text + b"\n"


def metrics_app(
    registry: CollectorRegistry, upstream_url: str | None, drift_title: tuple[str, str] = ("", "")
) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/drift":
            data = drift_page.load(drift_page.snapshot_path())
            page = drift_page.render(data, *drift_title).encode()
            headers = [("Content-Type", "text/html; charset=utf-8")]
            start_response("200 OK", [*headers, ("Content-Length", str(len(page)))])
            return [page]
        body = generate_latest(registry)
        if upstream_url is not None:
            body += upstream_metrics(upstream_url)
        start_response(
            "200 OK",
            [("Content-Type", CONTENT_TYPE_PLAIN_0_0_4), ("Content-Length", str(len(body)))],
        )
        return [body]

    return app


def serve_metrics(settings: MonitorSettings) -> None:
    """Serve the metrics on settings.metrics_port from a daemon thread."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    upstream = None
    if settings.upstream_metrics_path is not None:
        upstream = settings.upstream.rstrip("/") + settings.upstream_metrics_path
    server = make_server(
        settings.listen_host,
        settings.metrics_port,
        metrics_app(registry, upstream, (settings.model_name, settings.model_version)),
        ThreadingWSGIServer,
        handler_class=_Quiet,
    )
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
