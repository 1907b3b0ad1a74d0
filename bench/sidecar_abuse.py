"""The sidecar under abuse, on loopback: a real `mlmodel-monitor` in front of the real KServe
model server (tests/integration/servers), drift detection on. Bounded in count and time.

1. Concurrent clients send valid V2 requests with distinct ids on keep-alive connections, each
   followed by one odd or hostile request (tests/integration/abuse_requests.py): answers mixed
   up, and the sidecar's mlmodel_requests_total against what the clients got, by status class.
2. Each hostile payload, then valid traffic: does the analyst still check after it?
3. A flood of large bodies (24 MiB and 3 MiB, many at once): the sidecar's peak RSS against its
   container's memory limit (256Mi), and the metrics against what was sent.

Prints figures; asserts nothing.

    python bench/sidecar_abuse.py [clients] [rounds]
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "integration"))
from abuse_requests import (
    BAD_PAYLOADS,
    FEATURES,
    INFER,
    PeakMemory,
    mixed_client,
    padded,
    tree_pss_bytes,
)
from monitor_procs import metric, model_server, post, start_sidecar, v2_body

MEMORY_LIMIT = 256 * 2**20
CHECK_WAIT_SECONDS = 30
DRIFT = {"window_size": 60, "check_interval_seconds": 5}


def by_class(port: int) -> Counter[str]:
    return Counter(
        {c: metric(port, "mlmodel_requests_total", status_class=c) for c in ("2xx", "4xx", "5xx")}
    )


def settled(port: int, before: Counter[str], sent: Counter[str]) -> Counter[str]:
    """The sidecar's count since `before`, once it stops changing or matches (some aborts are
    noticed a moment after the client has gone)."""
    deadline = time.monotonic() + CHECK_WAIT_SECONDS
    counted = by_class(port) - before
    while counted != sent and time.monotonic() < deadline:
        time.sleep(0.25)
        counted = by_class(port) - before
    return counted


def mixed(port: int, metrics_port: int, clients: int, rounds: int) -> None:
    before = by_class(metrics_port)
    start = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        parts = pool.map(lambda c: mixed_client(port, c, rounds), range(clients))
        answers = [answer for part in parts for answer in part]
    seconds = time.monotonic() - start
    sent = Counter(f"{status // 100}xx" for status, _ in answers)
    counted = settled(metrics_port, before, sent)
    valid = clients * rounds
    print(
        f"1. {len(answers)} requests in {seconds:.1f} s: {valid} valid, {len(answers) - valid} odd"
    )
    print(f"   answers mixed up: {sum(not own for _, own in answers)}")
    print(f"   clients got by class:   {dict(sorted(sent.items()))}")
    print(f"   sidecar counted:        {dict(sorted(counted.items()))}")
    print(f"   counts match: {counted == sent}")
    aborts = metric(metrics_port, "mlmodel_client_aborts_total")
    refused = {
        reason: metric(metrics_port, "mlmodel_refused_requests_total", reason=reason)
        for reason in ("bad_request", "body_too_large", "body_timeout")
    }
    print(f"   client aborts (499): {aborts:.0f}; refused by the sidecar: {refused}")


def drift_after_each(port: int, metrics_port: int, repeats: int) -> None:
    checked_after, tried = 0, 0
    for name, payload in BAD_PAYLOADS.items():
        for _ in range(repeats):
            tried += 1
            post(port, INFER, payload)
            last = metric(metrics_port, "mlmodel_drift_last_check_timestamp_seconds")
            post(port, INFER, v2_body(FEATURES[::2][:60]))  # more samples than the window
            deadline = time.monotonic() + CHECK_WAIT_SECONDS
            while time.monotonic() < deadline:
                if metric(metrics_port, "mlmodel_drift_last_check_timestamp_seconds") > last:
                    checked_after += 1
                    break
                time.sleep(0.1)
            else:
                print(f"   no check after {name!r}")
    errors = metric(metrics_port, "mlmodel_drift_worker_errors_total")
    unreadable = metric(metrics_port, "mlmodel_unreadable_payloads_total")
    beat_age = time.time() - metric(
        metrics_port, "mlmodel_drift_worker_heartbeat_timestamp_seconds"
    )
    print(f"2. drift checked again after {checked_after} of {tried} hostile payloads")
    print(
        f"   analyst errors: {errors:.0f}; unreadable payloads counted: {unreadable:.0f}; "
        f"heartbeat age {beat_age:.1f} s"
    )


def flood(tmp: Path, model_port: int, concurrency: int, large: int) -> None:
    server, config = start_sidecar(tmp, model_port, "flood", drift=DRIFT, max_body_bytes=64 * 2**20)
    pid = server.proc.pid if server.proc is not None else 0
    port, metrics_port = config["listen_port"], config["metrics_port"]
    bodies = [padded(24 * 2**20), padded(3 * 2**20), padded(3 * 2**20)] * large
    try:
        idle = tree_pss_bytes(pid)
        start = time.monotonic()
        with PeakMemory(pid) as memory, ThreadPoolExecutor(concurrency) as pool:
            statuses = list(pool.map(lambda body: post(port, INFER, body)[0], bodies))
        seconds = time.monotonic() - start
        peak = memory.peak
        sent = Counter(f"{status // 100}xx" for status in statuses)
        counted = settled(metrics_port, Counter(), sent)
        megabytes = sum(map(len, bodies)) / 2**20
        dropped = {
            reason: metric(metrics_port, "mlmodel_drift_dropped_payloads_total", reason=reason)
            for reason in ("too_large", "sampled", "queue_full")
        }
        print(
            f"3. {len(bodies)} bodies, {megabytes:.0f} MiB, {concurrency} at a time, "
            f"in {seconds:.1f} s: statuses {dict(sorted(sent.items()))}"
        )
        print(
            f"   sidecar processes' peak memory (PSS) {peak / 2**20:.0f} MiB (idle "
            f"{idle / 2**20:.0f} MiB) against "
            f"the {MEMORY_LIMIT / 2**20:.0f} MiB limit: {peak / MEMORY_LIMIT:.2f} of it"
        )
        print(f"   counts match: {counted == sent}; dropped for drift: {dropped}")
    finally:
        server.close()


def main() -> None:
    clients = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 150
    tmp = Path(tempfile.mkdtemp(prefix="bench-abuse-"))
    with model_server(tmp) as model_port:
        server, config = start_sidecar(
            tmp, model_port, "abuse", drift=DRIFT, body_timeout_seconds=2
        )
        try:
            mixed(config["listen_port"], config["metrics_port"], clients, rounds)
            drift_after_each(config["listen_port"], config["metrics_port"], repeats=5)
            log = (tmp / "abuse.log").read_text()
            errors = log.count('"level": "ERROR"')
            print(f"   sidecar log: {log.count('Traceback')} tracebacks, {errors} ERROR lines")
        finally:
            server.close()
        flood(tmp, model_port, concurrency=16, large=32)
    print(f"logs in {tmp}")


if __name__ == "__main__":
    main()
