"""The sidecar at model-server speed: throughput, p99 and the sidecar's CPU per request, for a
real model server called directly, through the sidecar, and through the sidecar with drift
detection on, side by side in one run, closed loop (bench/loadgen.py). At each point the three
paths are measured in turn, in interleaved slices, so that a model server whose speed wanders
weighs on all three alike.

Bodies: 1x64 floats (0.6 KB) and 32x64 floats (17 KB) to the `tabular` model, a 1x3x64x64
image (about 100 KB) to the `image` model (bench/model_server.py: torch on the GPU where there
is one, else the KServe server). Concurrency 1, 16, 64 and 256. Prints measurements and the
goals as ratios against the floors measured in the same run; asserts nothing.

    python bench/sidecar_load.py [--seconds 8] [--rounds 4] [--workers 1] [--server torch|kserve]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from loadgen import Load, request_bytes, run_load

from procs import Server, free_port

BENCH = Path(__file__).resolve().parent
CONCURRENCY = [1, 16, 64, 256]
TICKS = os.sysconf("SC_CLK_TCK")
# The goals for the sidecar, as ratios against floors measured in the same run (docs/monitoring.md,
# "The sidecar at model-server speed").
DRIFT_THROUGHPUT_FLOOR = 0.9  # with drift / without, every point
DRIFT_P99_CEILING = 1.25  # with drift / without, every point
SIDECAR_THROUGHPUT_FLOOR = 0.95  # sidecar / direct, concurrency >= 16, 0.6 KB and 17 KB
PROXY_CPU_CEILING_MS = 0.15  # per small request
WARM_UP = 0.5  # seconds of load before each slice is counted


def body(shape: tuple[int, ...], seed: int) -> bytes:
    values = np.round(np.random.default_rng(seed).random(shape), 4)
    tensor = {"name": "x", "shape": list(shape), "datatype": "FP32", "data": values.tolist()}
    return json.dumps({"inputs": [tensor]}).encode()


BODIES = {
    "0.6KB": ("tabular", (1, 64)),
    "17KB": ("tabular", (32, 64)),
    "100KB": ("image", (1, 3, 64, 64)),
}


def cpu_seconds(root: int) -> dict[str, float]:
    """CPU seconds used so far by a sidecar's processes, by role (proxy, analyst, supervisor)."""
    used = {"proxy": 0.0, "analyst": 0.0, "supervisor": 0.0}
    # Every process is scanned for its parent: /proc/PID/task/PID/children is not everywhere.
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            name, rest = stat.read_text().split(" (", 1)[1].rsplit(")", 1)
        except (OSError, IndexError, ValueError):
            continue
        fields = rest.split()
        if int(stat.parent.name) != root and int(fields[1]) != root:
            continue
        seconds = (int(fields[11]) + int(fields[12])) / TICKS
        role = "analyst" if "analyst" in name else "proxy" if "proxy" in name else "supervisor"
        used[role] += seconds
    return used


def dropped(metrics_port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("mlmodel_drift_dropped_payloads_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            counts[reason] = counts.get(reason, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


@dataclass
class Point:
    """One path's measurement at one point, summed over the rounds."""

    load: Load = field(default_factory=lambda: Load(0, 0, 0.0, []))
    proxy_cpu: float = 0.0  # seconds
    analyst_cpu: float = 0.0
    dropped: float = 0.0  # payloads not handed to the analyst

    @property
    def proxy_cpu_ms(self) -> float:
        return 1e3 * self.proxy_cpu / max(self.load.served, 1)

    @property
    def analyst_cpu_ms(self) -> float:
        return 1e3 * self.analyst_cpu / max(self.load.served, 1)

    @property
    def kept(self) -> float:
        return 1 - self.dropped / max(self.load.served, 1)


def start_sidecar(
    tmp: Path, name: str, upstream: int, workers: int, drift: bool, **extra: object
) -> tuple:
    port, metrics_port = free_port(), free_port()
    config = {
        "model_name": "bench",
        "upstream": f"http://127.0.0.1:{upstream}",
        "listen_host": "127.0.0.1",
        "listen_port": port,
        "metrics_port": metrics_port,
        "workers": workers,
        "drift": {"window_size": 1000, "check_interval_seconds": 10} if drift else None,
        **extra,
    }
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(config))
    monitor = str(Path(sys.executable).parent / "mlmodel-monitor")
    argv = [monitor, f"--config={path}", "--log-level=WARNING"]
    if not Path(monitor).exists():
        argv = [sys.executable, "-m", "mlmodel_operator.monitor", *argv[1:]]
    server = Server(argv, tmp / f"{name}.log").start()
    server.wait_for(f"http://127.0.0.1:{port}/readyz")
    return server, port, metrics_port


def measure_slice(
    point: Point, sidecar: tuple | None, port: int, request: bytes, concurrency: int, seconds: float
) -> None:
    """Add one slice of load on one path to its point; `sidecar` is (server, port, metrics port)
    for a path through a sidecar, whose CPU and drops are counted too."""
    if sidecar is None:
        point.load += run_load("127.0.0.1", port, request, concurrency, seconds, warm_up=WARM_UP)
        return
    server, _, metrics_port = sidecar
    assert server.proc is not None
    before, drops_before = cpu_seconds(server.proc.pid), dropped(metrics_port)
    point.load += run_load("127.0.0.1", port, request, concurrency, seconds, warm_up=WARM_UP)
    after, drops_after = cpu_seconds(server.proc.pid), dropped(metrics_port)
    point.proxy_cpu += after["proxy"] - before["proxy"]
    point.analyst_cpu += after["analyst"] - before["analyst"]
    point.dropped += sum(drops_after.get(r, 0) - drops_before.get(r, 0) for r in drops_after)


def measure_point(
    paths: dict[str, tuple[int, tuple | None]],
    request: bytes,
    concurrency: int,
    seconds: float,
    rounds: int,
) -> dict[str, Point]:
    """Each path for `seconds` in all, in `rounds` slices taken in turn (the order rotated each
    round), so that a model server that slows down or speeds up over the point weighs on every
    path alike rather than on whichever came last."""
    points = {name: Point() for name in paths}
    names = list(paths)
    for round_ in range(rounds):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            port, sidecar = paths[name]
            measure_slice(points[name], sidecar, port, request, concurrency, seconds / rounds)
    return points


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8.0, help="per path and point")
    parser.add_argument("--rounds", type=int, default=4, help="slices each path is measured in")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--server", choices=["torch", "kserve"], default=None)
    parser.add_argument("--concurrency", type=int, nargs="*", default=CONCURRENCY)
    parser.add_argument("--bodies", nargs="*", default=list(BODIES))
    args = parser.parse_args()
    backend = args.server or default_backend()
    tmp = Path(tempfile.mkdtemp(prefix="bench-load-"))
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
        drift = start_sidecar(tmp, "sidecar-drift", model_port, args.workers, drift=True)
        servers.append(drift[0])
        print(
            f"model server: {backend}; sidecar workers: {args.workers}; {os.cpu_count()} cores; "
            f"{args.seconds:.0f} s per path and point, in {args.rounds} interleaved slices "
            f"after {WARM_UP} s of warm-up each, closed loop"
        )
        header = (
            f"{'body':>6} {'conc':>4} | {'direct':>7} {'sidecar':>7} {'drift':>7} rps | "
            f"{'sc/dir':>6} {'dr/sc':>6} | p99 ms {'direct':>7} {'sidecar':>7} {'drift':>7} "
            f"{'dr/sc':>6} | cpu ms/req {'proxy':>6} {'+drift':>6} {'analyst':>7} | kept"
        )
        print(header)
        results = []
        for label in args.bodies:
            name, shape = BODIES[label]
            payload = body(shape, seed=1)
            request = request_bytes(f"/v2/models/{name}/infer", payload)
            for concurrency in args.concurrency:
                paths = {
                    "direct": (model_port, None),
                    "sidecar": (plain[1], plain),
                    "drift": (drift[1], drift),
                }
                points = measure_point(paths, request, concurrency, args.seconds, args.rounds)
                direct = points["direct"].load
                sidecar, drifted = points["sidecar"], points["drift"]
                results.append((label, concurrency, direct, sidecar, drifted))
                print(row(label, concurrency, direct, sidecar, drifted), flush=True)
        print_goals(results)
    finally:
        for server in reversed(servers):
            server.close()


def default_backend() -> str:
    try:
        import torch

        return "torch" if torch.cuda.is_available() else "kserve"
    except ImportError:
        return "kserve"


def row(label: str, concurrency: int, direct: Load, sidecar: Point, drifted: Point) -> str:
    s, d = sidecar.load, drifted.load
    errors = direct.errors + s.errors + d.errors
    return (
        f"{label:>6} {concurrency:>4} | {direct.rps:>7.0f} {s.rps:>7.0f} {d.rps:>7.0f}     | "
        f"{s.rps / direct.rps:>6.2f} {d.rps / s.rps:>6.2f} | "
        f"       {1e3 * direct.percentile(0.99):>7.1f} {1e3 * s.percentile(0.99):>7.1f} "
        f"{1e3 * d.percentile(0.99):>7.1f} {d.percentile(0.99) / s.percentile(0.99):>6.2f} | "
        f"           {sidecar.proxy_cpu_ms:>6.3f} {drifted.proxy_cpu_ms:>6.3f} "
        f"{drifted.analyst_cpu_ms:>7.3f} | {drifted.kept:.2f}"
        + (f"  errors {direct.errors}/{s.errors}/{d.errors}" if errors else "")
    )


def print_goals(results: list) -> None:
    worst_throughput = min(d.load.rps / s.load.rps for *_, s, d in results)
    worst_p99 = max(d.load.percentile(0.99) / s.load.percentile(0.99) for *_, s, d in results)
    against_direct = [
        s.load.rps / direct.rps
        for label, c, direct, s, _ in results
        if c >= 16 and label in ("0.6KB", "17KB")
    ]
    small_cpu = [s.proxy_cpu_ms for label, c, _, s, _ in results if label == "0.6KB" and c >= 16]

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    print("goals (ratios against floors measured above):")
    print(
        f"  drift on / off throughput, worst point: {worst_throughput:.2f} "
        f"(goal >= {DRIFT_THROUGHPUT_FLOOR}): {verdict(worst_throughput >= DRIFT_THROUGHPUT_FLOOR)}"
    )
    print(
        f"  drift on / off p99, worst point: {worst_p99:.2f} "
        f"(goal <= {DRIFT_P99_CEILING}): {verdict(worst_p99 <= DRIFT_P99_CEILING)}"
    )
    if against_direct:
        worst = min(against_direct)
        print(
            f"  sidecar / direct throughput, concurrency >= 16, 0.6 KB and 17 KB, worst: "
            f"{worst:.2f} (goal >= {SIDECAR_THROUGHPUT_FLOOR}): "
            f"{verdict(worst >= SIDECAR_THROUGHPUT_FLOOR)}"
        )
    if small_cpu:
        cpu = max(small_cpu)
        print(
            f"  proxy CPU per 0.6 KB request, concurrency >= 16, worst: {cpu:.3f} ms "
            f"(goal <= {PROXY_CPU_CEILING_MS}): {verdict(cpu <= PROXY_CPU_CEILING_MS)}"
        )


if __name__ == "__main__":
    main()
