"""What the sidecar costs a streamed LLM answer: time to first token (TTFT) and inter-token
latency (ITL) as the client sees them, calling vLLM's OpenAI server directly and through the
sidecar (which reads every chunk: TTFT, ITL, tokens), interleaved request by request so both
share the machine's state; and the proxy's CPU per streamed chunk.

vLLM's CPU build serves the tests' tiny generated model (tests/llm_helpers.py), so a token takes
a few milliseconds: the sidecar's share is as large here as it can be. Prints measurements and
the ratios sidecar / direct (the floor, measured in the same run); asserts nothing.

    python bench/llm_stream.py [--requests 40] [--tokens 64] [--concurrency 1 4]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "integration"))
from llm_helpers import tiny_llm, vllm_server
from monitor_procs import start_sidecar

MODEL = "tiny"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def stream_once(port: int, tokens: int) -> tuple[float, list[float], int]:
    """(TTFT, the gaps between chunks of text, chunks of text) of one streamed chat."""
    body = json.dumps({
        "model": MODEL, "stream": True, "max_tokens": tokens, "ignore_eos": True,
        "messages": [{"role": "user", "content": "Tell me about rivers."}],
    }).encode()  # fmt: skip
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    start = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    first, last, gaps, chunks = None, None, [], 0
    while line := response.readline():
        if not line.startswith(b"data: {"):
            continue
        event = json.loads(line[6:])
        if any((c.get("delta") or {}).get("content") for c in event.get("choices", [])):
            now = time.perf_counter()
            if first is None:
                first = now - start
            else:
                gaps.append(now - last)
            last, chunks = now, chunks + 1
    conn.close()
    assert first is not None, "no text streamed"
    return first, gaps, chunks


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def tree(pid: int) -> list[int]:
    """pid and its descendants (the sidecar's supervisor, workers and analyst)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        children = Path(f"/proc/{current}/task/{current}/children")
        if children.exists():
            todo += [int(c) for c in children.read_text().split()]
    return found


def run(direct: int, sidecar: int, pids: list[int], args: argparse.Namespace, clients: int) -> None:
    results: dict[str, tuple[list[float], list[float], int]] = {
        "direct": ([], [], 0), "sidecar": ([], [], 0),
    }  # fmt: skip
    lock = threading.Lock()
    cpu = {"sidecar": 0.0}

    def client(port: int, name: str, count: int) -> None:
        for _ in range(count):
            ttft, gaps, chunks = stream_once(port, args.tokens)
            with lock:
                ttfts, all_gaps, total = results[name]
                ttfts.append(ttft)
                all_gaps.extend(gaps)
                results[name] = (ttfts, all_gaps, total + chunks)

    per_round = max(1, args.requests // (clients * args.rounds))
    for _ in range(args.rounds):
        for name, port in (("direct", direct), ("sidecar", sidecar)):
            before = cpu_seconds(pids)
            threads = [
                threading.Thread(target=client, args=(port, name, per_round))
                for _ in range(clients)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            if name == "sidecar":
                cpu["sidecar"] += cpu_seconds(pids) - before
    print(f"\nconcurrency {clients}, {args.tokens} tokens per answer")
    print(f"  {'':8} {'TTFT p50':>10} {'TTFT p99':>10} {'ITL p50':>10} {'ITL p99':>10} streams")
    for name, (ttfts, gaps, _) in results.items():
        figures = [percentile(ttfts, 0.5), percentile(ttfts, 0.99)]
        figures += [percentile(gaps, 0.5), percentile(gaps, 0.99)]
        print(f"  {name:8}" + "".join(f" {f * 1e3:8.2f}ms" for f in figures) + f" {len(ttfts)}")
    d, s = results["direct"], results["sidecar"]
    print(
        "  sidecar / direct: TTFT p50 "
        f"{percentile(s[0], 0.5) / percentile(d[0], 0.5):.2f}, ITL p50 "
        f"{percentile(s[1], 0.5) / percentile(d[1], 0.5):.2f}, ITL p99 "
        f"{percentile(s[1], 0.99) / percentile(d[1], 0.99):.2f}"
    )
    print(f"  sidecar CPU per streamed chunk: {cpu['sidecar'] / max(s[2], 1) * 1e6:.0f} us "
          f"({s[2]} chunks; the whole sidecar: workers, analyst, metrics)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=40, help="per path and concurrency")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with vllm_server(tiny_llm(tmp), MODEL, tmp) as server:
            port = int(server.url.rsplit(":", 1)[1])
            sidecar, config = start_sidecar(
                tmp, port, "bench-sidecar", model_name=MODEL, protocol="openai",
                upstream_ready_path="/v1/models", upstream_metrics_path="/metrics", drift=None,
            )  # fmt: skip
            try:
                assert sidecar.proc is not None
                pids = tree(sidecar.proc.pid)
                for clients in args.concurrency:
                    run(port, config["listen_port"], pids, args, clients)
            finally:
                sidecar.close()


if __name__ == "__main__":
    main()
