"""What payload logging costs the client when the sink fails: p50 and p99 of requests through
three sidecars in front of the same minimal V2 model server, measured in the same run,
interleaved request by request at a fixed rate:

- floor: the sidecar without payload logging;
- down: logging every request and answer (binary mode) to a sink whose port refuses
  connections, so that every delivery is retried and then dropped;
- slow: logging to a sink that answers each POST after 2 s.

Both logging sidecars have a queue of 256 KiB, which fills within the run, so that what is
measured includes the regime where events are dropped.

Prints the latencies, their ratios to the floor, and the events each sidecar sent and dropped.
Asserts nothing.

    python bench/payload_logging.py [rate] [seconds]
"""

from __future__ import annotations

import http.client
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from sidecar_latency import BODY, UPSTREAM, percentile

from payload_sink import Sink
from procs import Server, free_port

RATE, SECONDS = 200, 10
SLOW_SINK_SECONDS = 2.0
# Small enough for the queue to fill within the run: the regime where events are dropped.
QUEUE = 256 * 1024
MONITOR = Path(sys.executable).parent / "mlmodel-monitor"


def sidecar(tmp: Path, name: str, upstream: int, logging: dict | None) -> tuple[Server, int, int]:
    proxy, metrics = free_port(), free_port()
    config = tmp / f"{name}.json"
    settings = {
        "model_name": "m",
        "upstream": f"http://127.0.0.1:{upstream}",
        "listen_host": "127.0.0.1",
        "listen_port": proxy,
        "metrics_port": metrics,
        "performance_tracking": True,
        "namespace": "bench",
        "payload_logging": logging,
    }
    config.write_text(json.dumps(settings))
    server = Server([str(MONITOR), f"--config={config}", "--log-level=ERROR"], tmp / f"{name}.log")
    server.start().wait_for(f"http://127.0.0.1:{proxy}/readyz")
    return server, proxy, metrics


def counted(metrics_port: int, name: str) -> dict[str, float]:
    """A counter's values by reason (or "" without one)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0] if "reason=" in line else ""
            values[reason] = values.get(reason, 0.0) + float(line.rsplit(" ", 1)[1])
    return values


def measure(conns: dict[str, http.client.HTTPConnection], count: int, rate: int) -> dict:
    times: dict[str, list[float]] = {name: [] for name in conns}
    names = list(conns)
    start = time.perf_counter()
    for i in range(count):
        # A different one goes first each round, so that none always meets a warmer cache.
        order = names[i % len(names) :] + names[: i % len(names)]
        for name in order:
            t0 = time.perf_counter()
            conns[name].request("POST", "/v2/models/m/infer", body=BODY,
                                headers={"Content-Type": "application/json"})  # fmt: skip
            response = conns[name].getresponse()
            response.read()
            times[name].append((time.perf_counter() - t0) * 1e3)
            assert response.status == 200, (name, response.status)
        pause = start + (i + 1) / rate - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
    return times


def main() -> None:
    rate = int(sys.argv[1]) if len(sys.argv) > 1 else RATE
    seconds = int(sys.argv[2]) if len(sys.argv) > 2 else SECONDS
    tmp = Path(tempfile.mkdtemp(prefix="bench-payload-logging-"))
    upstream_port = free_port()
    script = tmp / "upstream.py"
    script.write_text(UPSTREAM)
    upstream = Server([sys.executable, str(script), str(upstream_port)], tmp / "upstream.log")
    down = Sink()  # never started: connections refused
    slow = Sink(delay=SLOW_SINK_SECONDS).start()
    servers: list[Server] = []
    try:
        upstream.start().wait_for(f"http://127.0.0.1:{upstream_port}/v2/health/ready")
        ports = {}
        for name, url in (("floor", None), ("down", down.url), ("slow", slow.url)):
            logging = {"url": url, "batch_size": 1, "max_queued_bytes": QUEUE} if url else None
            server, proxy, metrics = sidecar(tmp, name, upstream_port, logging)
            servers.append(server)
            ports[name] = (proxy, metrics)
        conns = {n: http.client.HTTPConnection("127.0.0.1", p) for n, (p, _) in ports.items()}
        measure(conns, 200, rate)  # warm-up
        times = measure(conns, rate * seconds, rate)
        floor50 = statistics.median(times["floor"])
        floor99 = percentile(times["floor"], 0.99)
        print(f"client latency (ms) through the sidecar, {rate} requests/s each for {seconds} s, "
              "interleaved, keep-alive, loopback")  # fmt: skip
        print(f"{'sidecar':>8} {'p50':>7} {'p99':>7} {'p50/floor':>10} {'p99/floor':>10}  events")
        for name in conns:
            p50, p99 = statistics.median(times[name]), percentile(times[name], 0.99)
            metrics = ports[name][1]
            sent = counted(metrics, "mlmodel_payload_events_sent_total").get("", 0.0)
            dropped = {
                r: int(v)
                for r, v in counted(metrics, "mlmodel_payload_events_dropped_total").items()
                if v
            }
            events = f"sent {int(sent)}, dropped {dropped}" if name != "floor" else "-"
            print(f"{name:>8} {p50:>7.3f} {p99:>7.3f} {p50 / floor50:>10.2f} "
                  f"{p99 / floor99:>10.2f}  {events}")  # fmt: skip
    finally:
        for server in servers:
            server.close()
        upstream.close()
        slow.stop()


if __name__ == "__main__":
    main()
