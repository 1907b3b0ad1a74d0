"""The only I/O of the analysis: instant queries to Prometheus' HTTP API (`/api/v1/query` with
`time=`), through prometheus-api-client.

Blocking (requests underneath): call it from a thread in async code. Nothing is retried here:
a step whose metrics cannot be read is judged Inconclusive and measured again later.
"""

from __future__ import annotations

import ast
import json
import math
import re
import time
from typing import Any

import requests
from prometheus_api_client import PrometheusApiClientException
from prometheus_api_client.prometheus_connect import PrometheusConnect
from urllib3.exceptions import NewConnectionError
from urllib3.exceptions import TimeoutError as Urllib3Timeout
from urllib3.util.retry import Retry

from mlmodel_operator.analysis import queries
from mlmodel_operator.analysis.verdict import WindowMetrics

_STATUS = re.compile(r"HTTP Status Code (\d+) \((.*)\)$", re.DOTALL)
_OS_ERROR = re.compile(r"\[Errno -?\d+\] [^'\")]+")
MAX_CAUSE = 300


class MetricsUnavailable(Exception):
    """Prometheus could not be asked or did not answer; the message names the URL and the
    cause, in one line."""


def measure(
    url: str,
    namespace: str,
    model: str,
    version: str,
    window_seconds: int,
    at: float,
    timeout: float = 10.0,
    llm: bool = False,
    accuracy: bool = False,
) -> WindowMetrics:
    """One version's figures over the `window_seconds` before `at` (Unix time), all the
    queries within `timeout` seconds in all; with `llm`, its streams' TTFT and inter-token
    latency too; with `accuracy`, its labelled and correct predictions."""
    deadline = time.monotonic() + timeout
    args = (namespace, model, version, window_seconds)
    with requests.Session() as session:
        client = PrometheusConnect(url=url, retry=Retry(total=0), session=session)

        def query(promql: str) -> float | None:
            return _query(client, url, promql, at, deadline, timeout)

        total = query(queries.requests(*args)) or 0.0
        errors = query(queries.errors(*args)) or 0.0
        p99 = query(queries.p99_latency(*args)) if total > 0 else None
        drift = query(queries.drift(*args))
        streams: dict[str, tuple[float, float | None]] = {}
        for name in (queries.TTFT_METRIC, queries.ITL_METRIC) if llm else ():
            count = query(queries.observations(name, *args)) or 0.0
            p99_of = query(queries.p99_of(name, *args)) if count > 0 else None
            streams[name] = (
                count,
                p99_of if p99_of is not None and math.isfinite(p99_of) else None,
            )
        labels = None
        if accuracy:
            labels = (query(queries.labelled(*args)) or 0.0, query(queries.correct(*args)) or 0.0)
    return WindowMetrics(
        requests=total,
        errors=errors,
        p99_latency_seconds=p99 if p99 is not None and math.isfinite(p99) else None,
        drift=None if drift is None else drift >= 1,
        version=version,
        time_to_first_token=streams.get(queries.TTFT_METRIC),
        inter_token_latency=streams.get(queries.ITL_METRIC),
        labels=labels,
    )


def instant(url: str, promqls: list[str], at: float, timeout: float = 10.0) -> list[float | None]:
    """The values of instant queries that each yield at most one series (None for none), all
    within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    with requests.Session() as session:
        client = PrometheusConnect(url=url, retry=Retry(total=0), session=session)
        return [_query(client, url, promql, at, deadline, timeout) for promql in promqls]


def _query(
    client: PrometheusConnect, url: str, promql: str, at: float, deadline: float, timeout: float
) -> float | None:
    """The value of a query that yields at most one series; None when it yields none."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise MetricsUnavailable(f"Prometheus at {url} did not answer within {timeout:g}s")
    try:
        result = client.custom_query(promql, params={"time": f"{at:.3f}"}, timeout=left)
    except requests.RequestException as err:
        if _timed_out(err):
            raise MetricsUnavailable(
                f"Prometheus at {url} did not answer within {timeout:g}s"
            ) from None
        raise MetricsUnavailable(f"cannot reach Prometheus at {url}: {_cause(err)}") from None
    except PrometheusApiClientException as err:
        raise MetricsUnavailable(f"Prometheus at {url} answered {_status(err)}") from None
    except ValueError as err:  # a 200 that is not JSON: not Prometheus
        raise MetricsUnavailable(f"Prometheus at {url} answered no JSON: {err}") from None
    try:
        return float(result[0]["value"][1]) if result else None
    except (LookupError, TypeError, ValueError) as err:
        raise MetricsUnavailable(
            f"Prometheus at {url} answered an unexpected result for {promql}: {err!r}"
        ) from None


def _timed_out(err: requests.RequestException) -> bool:
    """Whether the request timed out. Without retries, urllib3 reports a timeout as the reason
    of a MaxRetryError, which requests passes on as a ConnectionError."""
    if isinstance(err, requests.Timeout):
        return True
    reason = getattr(err.args[0], "reason", None) if err.args else None
    # A refused connection is a NewConnectionError, which urllib3 derives from its timeouts.
    return isinstance(reason, Urllib3Timeout) and not isinstance(reason, NewConnectionError)


def _cause(err: Exception) -> str:
    """The operating system's reason in requests' long message, e.g. "[Errno 111] Connection
    refused"."""
    text = str(err)
    found = _OS_ERROR.search(text)
    return _one_line(found.group(0) if found else text)


def _status(err: PrometheusApiClientException) -> str:
    """'HTTP 400: <Prometheus' error>' from the client's 'HTTP Status Code 400 (b'...')'."""
    found = _STATUS.match(str(err))
    if not found:
        return _one_line(str(err))
    code, body = found.groups()
    detail: Any = body
    try:
        content = ast.literal_eval(body)
        text = content.decode("utf-8", "replace") if isinstance(content, bytes) else str(content)
        detail = text
        answer = json.loads(text)
        detail = answer.get("error", text) if isinstance(answer, dict) else text
    except (ValueError, SyntaxError):
        pass
    detail = _one_line(str(detail))
    return f"HTTP {code}: {detail}" if detail else f"HTTP {code}"


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= MAX_CAUSE else line[: MAX_CAUSE - 3] + "..."
