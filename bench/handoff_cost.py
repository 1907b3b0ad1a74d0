"""The proxy's cost of handing an exchange over to the analyst (monitor/handoff.py): CPU per
offer() by body size, with a reader draining in another process as the analyst does, on the
first pass round the ring and on later ones (the same since the ring's pages are touched when
each process takes its end). Prints measurements.

    python bench/handoff_cost.py
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "operator"))
from mlmodel_operator.monitor.handoff import Channel
from mlmodel_operator.monitor.payloads import Exchange

CAPACITY = 32 * 2**20
SHAPES = {"0.6KB": (1, 64), "17KB": (32, 64), "100KB": (1, 3, 64, 64)}


def body(shape: tuple[int, ...]) -> bytes:
    data = np.round(np.random.default_rng(0).random(shape), 4).tolist()
    return json.dumps({"inputs": [{"name": "x", "shape": list(shape), "datatype": "FP32",
                                   "data": data}]}).encode()  # fmt: skip


def drain(channel: Channel) -> None:
    reader = channel.reader()
    while True:
        if reader.take() is None:
            time.sleep(0.001)


def measure(exchange: Exchange, count: int) -> tuple[float, float, dict]:
    channel = Channel(CAPACITY, 100_000)
    pid = os.fork()
    if pid == 0:
        drain(channel)
    writer = channel.writer()
    per_lap = max(1, CAPACITY // exchange.size)
    reasons: dict = {}
    laps = []
    for _ in range(2):
        start = time.process_time()
        for _ in range(min(count, per_lap)):
            reason = writer.offer(exchange)
            reasons[reason] = reasons.get(reason, 0) + 1
            while writer.queued()[1] > 64:  # let the reader keep up: measure the copy alone
                time.sleep(0.0002)
        laps.append(1e6 * (time.process_time() - start) / min(count, per_lap))
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return laps[0], laps[1], reasons


def main() -> None:
    print("hand-off cost per exchange (us of the proxy's CPU), reader in another process")
    print(f"{'body':>6} {'first lap':>10} {'later lap':>10}  outcomes")
    for label, shape in SHAPES.items():
        exchange = Exchange("v2", 200, body(shape), b'{"outputs": []}')
        first, later, reasons = measure(exchange, 20_000)
        print(f"{label:>6} {first:>10.1f} {later:>10.1f}  {reasons}")


if __name__ == "__main__":
    main()
