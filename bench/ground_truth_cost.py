"""What ground truth costs the request path: throughput and p99 through the sidecar with
monitoring.ground_truth on (every answer read for its prediction, an id given, the prediction
kept) against the same sidecar without it, in front of the same real model server, measured in
interleaved slices in one run (bench/sidecar_load.py's method). Then the feedback endpoint's own
rate: entries labelled per second, in batches of 100, half of them sent on to the other worker.

    python bench/ground_truth_cost.py [--seconds 8] [--rounds 4] [--workers 2]

Prints measurements and the goals as ratios against the floor measured in the same run (the
sidecar without ground truth); asserts nothing.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from loadgen import request_bytes
from sidecar_load import (
    BENCH,
    BODIES,
    DRIFT_P99_CEILING,
    DRIFT_THROUGHPUT_FLOOR,
    body,
    default_backend,
    measure_point,
    start_sidecar,
)

from procs import Server, free_port

CONCURRENCY = [1, 16, 64]
FEEDBACK_BATCH = 100


def predictions(port: int, count: int) -> list[str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    payload = body(BODIES["0.6KB"][1], seed=2)
    ids = []
    for i in range(count):
        conn.request(
            "POST",
            "/v2/models/tabular/infer",
            payload,
            {"x-request-id": f"fb-{i}", "Content-Type": "application/json"},
        )
        response = conn.getresponse()
        response.read()
        ids.append(response.getheader("x-prediction-id"))
        if i % 50 == 49:  # new connections: spread over the workers
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.close()
    return ids


def feedback_rate(port: int, ids: list[str]) -> tuple[float, dict[str, int]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    totals: dict[str, int] = {}
    start = time.perf_counter()
    for i in range(0, len(ids), FEEDBACK_BATCH):
        entries = [{"id": p, "truth": 3} for p in ids[i : i + FEEDBACK_BATCH]]
        conn.request("POST", "/v2/models/bench/feedback", json.dumps(entries),
                     {"Content-Type": "application/json"})  # fmt: skip
        summary = json.loads(conn.getresponse().read())
        for outcome, n in summary.items():
            totals[outcome] = totals.get(outcome, 0) + n
    elapsed = time.perf_counter() - start
    conn.close()
    return len(ids) / elapsed, totals


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8.0, help="per path and point")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--feedback", type=int, default=5000, help="predictions then labelled")
    args = parser.parse_args()
    backend = default_backend()
    tmp = Path(tempfile.mkdtemp(prefix="bench-truth-"))
    model_port = free_port()
    model = Server(
        [sys.executable, str(BENCH / "model_server.py"), backend, str(model_port)],
        tmp / "model.log",
    ).start()
    servers = [model]
    try:
        model.wait_for(f"http://127.0.0.1:{model_port}/v2/health/ready", timeout=180)
        plain = start_sidecar(tmp, "sidecar", model_port, args.workers, drift=False)
        servers.append(plain[0])
        truth = start_sidecar(
            tmp,
            "sidecar-truth",
            model_port,
            args.workers,
            drift=False,
            ground_truth={"task": "classification", "feedback_port_base": free_port()},
        )
        servers.append(truth[0])
        print(
            f"model server: {backend}; sidecar workers: {args.workers}; {os.cpu_count()} cores; "
            f"{args.seconds:.0f} s per path and point in {args.rounds} interleaved slices"
        )
        print(f"{'body':>6} {'conc':>4} | {'sidecar':>7} {'+truth':>7} rps {'ratio':>6} | "
              f"p99 ms {'sidecar':>7} {'+truth':>7} {'ratio':>6} | cpu ms/req {'sidecar':>7} "
              f"{'+truth':>7}")  # fmt: skip
        worst_rps, worst_p99 = float("inf"), 0.0
        for label in ("0.6KB", "17KB"):
            name, shape = BODIES[label]
            request = request_bytes(f"/v2/models/{name}/infer", body(shape, seed=1))
            for concurrency in CONCURRENCY:
                paths = {"sidecar": (plain[1], plain), "truth": (truth[1], truth)}
                points = measure_point(paths, request, concurrency, args.seconds, args.rounds)
                s, t = points["sidecar"], points["truth"]
                rps = t.load.rps / s.load.rps
                p99 = t.load.percentile(0.99) / s.load.percentile(0.99)
                worst_rps, worst_p99 = min(worst_rps, rps), max(worst_p99, p99)
                print(
                    f"{label:>6} {concurrency:>4} | {s.load.rps:>7.0f} {t.load.rps:>7.0f}     "
                    f"{rps:>6.2f} |        {1e3 * s.load.percentile(0.99):>7.1f} "
                    f"{1e3 * t.load.percentile(0.99):>7.1f} {p99:>6.2f} |            "
                    f"{s.proxy_cpu_ms:>7.3f} {t.proxy_cpu_ms:>7.3f}",
                    flush=True,
                )
        ids = predictions(truth[1], args.feedback)
        rate, totals = feedback_rate(truth[1], ids)
        print(f"feedback: {rate:.0f} entries/s in batches of {FEEDBACK_BATCH}; outcomes {totals}")
        print("goals (ratios against the sidecar without ground truth, measured above):")
        met = "met" if worst_rps >= DRIFT_THROUGHPUT_FLOOR else "NOT met"
        print(
            f"  throughput with ground truth >= {DRIFT_THROUGHPUT_FLOOR} x: "
            f"worst {worst_rps:.2f} ({met})"
        )
        met = "met" if worst_p99 <= DRIFT_P99_CEILING else "NOT met"
        print(f"  p99 with ground truth <= {DRIFT_P99_CEILING} x: worst {worst_p99:.2f} ({met})")
    finally:
        for server in reversed(servers):
            server.close()


if __name__ == "__main__":
    main()
