"""Latency the sidecar adds: p50 and p99 of calling a model server directly and through the
sidecar, interleaved request by request at fixed request rates, all on loopback.

The model server is a minimal Open Inference Protocol v2 endpoint that answers at once, so the
difference is the proxy's own cost (performance tracking and drift detection both on). Targets:
p50 <= 0.5 ms and p99 <= 2 ms added. Prints measurements; asserts nothing.

    python bench/sidecar_latency.py [rate ...]
"""

from __future__ import annotations

import http.client
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from procs import Server, free_port

RATES = [50, 200, 500]
SECONDS_PER_RATE = 4
TARGET_P50_MS, TARGET_P99_MS = 0.5, 2.0

UPSTREAM = """
import sys
from aiohttp import web
ANSWER = (
    b'{"model_name":"m","outputs":[{"name":"p","shape":[4],"datatype":"FP32",'
    b'"data":[0.1,0.2,0.3,0.4]}]}'
)
async def infer(request):
    await request.read()
    return web.Response(body=ANSWER, content_type="application/json")
async def ready(request):
    return web.Response(text="ok")
app = web.Application()
app.router.add_post("/v2/models/m/infer", infer)
app.router.add_get("/v2/health/ready", ready)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""

BODY = json.dumps(
    {"inputs": [{"name": "x", "shape": [4, 4], "datatype": "FP32", "data": list(range(16))}]}
).encode()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(rate: int, direct: http.client.HTTPConnection, proxied: http.client.HTTPConnection):  # type: ignore[no-untyped-def]
    times: dict[str, list[float]] = {"direct": [], "sidecar": []}
    interval = 1.0 / rate
    start = time.perf_counter()
    for i in range(rate * SECONDS_PER_RATE):
        # Alternate which goes first so neither always meets a warmer cache.
        order = [("direct", direct), ("sidecar", proxied)]
        for name, conn in order if i % 2 else order[::-1]:
            t0 = time.perf_counter()
            conn.request(
                "POST",
                "/v2/models/m/infer",
                body=BODY,
                headers={"Content-Type": "application/json"},
            )
            response = conn.getresponse()
            response.read()
            times[name].append((time.perf_counter() - t0) * 1e3)
            assert response.status == 200
        pause = start + (i + 1) * interval - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
    return times


def main() -> None:
    rates = [int(r) for r in sys.argv[1:]] or RATES
    tmp = Path(tempfile.mkdtemp(prefix="bench-sidecar-"))
    upstream_port, proxy_port, metrics_port = free_port(), free_port(), free_port()
    script = tmp / "upstream.py"
    script.write_text(UPSTREAM)
    upstream = Server([sys.executable, str(script), str(upstream_port)], tmp / "upstream.log")
    config = tmp / "monitor.json"
    config.write_text(
        json.dumps(
            {
                "model_name": "m",
                "upstream": f"http://127.0.0.1:{upstream_port}",
                "listen_host": "127.0.0.1",
                "listen_port": proxy_port,
                "metrics_port": metrics_port,
                "performance_tracking": True,
                "drift": {"window_size": 1000, "check_interval_seconds": 60},
            }
        )
    )
    monitor = Server(
        [
            str(Path(sys.executable).parent / "mlmodel-monitor"),
            f"--config={config}",
            "--log-level=WARNING",
        ],
        tmp / "monitor.log",
    )
    try:
        upstream.start().wait_for(f"http://127.0.0.1:{upstream_port}/v2/health/ready")
        monitor.start().wait_for(f"http://127.0.0.1:{proxy_port}/readyz")
        direct = http.client.HTTPConnection("127.0.0.1", upstream_port)
        proxied = http.client.HTTPConnection("127.0.0.1", proxy_port)
        measure(100, direct, proxied)  # warm-up: connections, caches, first drift windows
        print("sidecar added latency (ms), keep-alive connections on loopback")
        print(
            f"{'rate/s':>7} {'direct p50':>11} {'sidecar p50':>12} {'added p50':>10} "
            f"{'direct p99':>11} {'sidecar p99':>12} {'added p99':>10}"
        )
        for rate in rates:
            times = measure(rate, direct, proxied)
            d50, s50 = statistics.median(times["direct"]), statistics.median(times["sidecar"])
            d99, s99 = percentile(times["direct"], 0.99), percentile(times["sidecar"], 0.99)
            print(
                f"{rate:>7} {d50:>11.3f} {s50:>12.3f} {s50 - d50:>10.3f} "
                f"{d99:>11.3f} {s99:>12.3f} {s99 - d99:>10.3f}"
            )
            print(
                f"{'':>7} added/target: p50 {(s50 - d50) / TARGET_P50_MS:.2f}, "
                f"p99 {(s99 - d99) / TARGET_P99_MS:.2f} (<= 1 meets the target)"
            )
    finally:
        monitor.close()
        upstream.close()


if __name__ == "__main__":
    main()
