"""The work queue: bursts coalesce, one key never runs twice at once, failures come back."""

from __future__ import annotations

import threading
import time

from mlmodel_operator.workqueue import MAX_DELAY_SECONDS, Retry, WorkQueue, backoff


def wait_for(check, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_backoff_doubles_up_to_a_minute_and_honours_retry_after() -> None:
    assert [backoff(n) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert backoff(30) == MAX_DELAY_SECONDS
    assert backoff(1, retry_after=5) == 5


def test_a_key_added_while_it_runs_runs_once_more_and_never_concurrently() -> None:
    release = threading.Event()
    runs: list[str] = []
    running = set()
    overlapped = []

    def process(key: str) -> None:
        if key in running:
            overlapped.append(key)
        running.add(key)
        runs.append(key)
        release.wait()
        running.discard(key)

    queue = WorkQueue(process, workers=4)
    queue.start()
    queue.add("a")
    wait_for(lambda: runs == ["a"], "the first run")
    for _ in range(10):  # a burst during the run
        queue.add("a")
    release.set()
    wait_for(lambda: len(runs) == 2 and queue.pending() == 0, "one more run")
    time.sleep(0.1)
    assert runs == ["a", "a"] and not overlapped
    queue.stop()


def test_a_failing_key_is_retried_until_it_succeeds() -> None:
    attempts = []

    def process(key: str) -> None:
        attempts.append(key)
        if len(attempts) < 3:
            raise Retry("conflict", retry_after=0.05)

    queue = WorkQueue(process, workers=1)
    queue.start()
    queue.add("k")
    wait_for(lambda: len(attempts) == 3, "three attempts")
    queue.stop()


def test_a_failure_of_a_run_added_during_another_is_retried() -> None:
    # A child's event arrives while the spec change's run is going; the extra run it causes
    # fails. Nobody is left to retry it but the queue.
    outcomes = ["ok", Retry("etcdserver: leader changed"), "ok"]
    runs: list[str] = []
    started, release = threading.Event(), threading.Event()

    def process(key: str) -> None:
        runs.append(key)
        started.set()
        release.wait(10)
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome

    queue = WorkQueue(process, workers=2, base_delay=0.01)
    queue.start()
    queue.add("k")
    assert started.wait(10)
    queue.add("k")  # folded into one more run after this one
    release.set()
    wait_for(lambda: not outcomes, "the failed run to be retried")
    assert runs == ["k", "k", "k"]
    queue.stop()


def test_unexpected_errors_are_retried_too() -> None:
    outcomes: list[Exception | None] = [KeyError("status"), Retry("429", retry_after=0.02), None]

    def process(key: str) -> None:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome

    queue = WorkQueue(process, workers=1, base_delay=0.01)
    queue.start()
    queue.add("k")
    wait_for(lambda: not outcomes, "three runs")


def test_urgent_keys_go_first() -> None:
    order: list[str] = []
    gate, blocking = threading.Event(), threading.Event()

    def process(key: str) -> None:
        if key == "blocker":
            blocking.set()
            gate.wait()
        order.append(key)

    queue = WorkQueue(process, workers=1)
    queue.start()
    queue.add("blocker")
    wait_for(blocking.is_set, "the blocker to run")
    queue.add("echo-1")
    queue.add("echo-2")
    queue.add("spec-change", urgent=True)
    queue.add("echo-1", urgent=True)  # already waiting: moves ahead
    gate.set()
    wait_for(lambda: len(order) == 4, "every key")
    assert order == ["blocker", "spec-change", "echo-1", "echo-2"]
    queue.stop()


def test_adds_soon_in_a_moment_make_one_run() -> None:
    runs: list[str] = []
    queue = WorkQueue(runs.append, workers=2)
    queue.start()
    for _ in range(5):
        queue.add_soon("pod-events", 0.2)
    wait_for(lambda: runs == ["pod-events"], "one run")
    time.sleep(0.3)
    assert runs == ["pod-events"]
    queue.stop()
