"""The Reconciler's serialising, coalescing and retrying, with a reconcile function of the test's
own: the behaviour under test is the scheduling, not the API calls."""

from __future__ import annotations

import threading
from collections.abc import Callable

from mlmodel_operator.reconcile import Reconciler, TransientError

KEY = ("ns", "model")


class Script:
    """A reconcile that follows a script: one entry per run, each an outcome or an exception;
    `hold` makes the first run wait until released."""

    def __init__(self, *steps: str | Exception, hold: bool = False) -> None:
        self.steps = list(steps)
        self.runs = 0
        self.started = threading.Event()
        self.release = threading.Event()
        if not hold:
            self.release.set()
        self.done = threading.Event()

    def __call__(self, namespace: str, name: str) -> str:
        assert (namespace, name) == KEY
        self.runs += 1
        self.started.set()
        self.release.wait(10)
        step = self.steps.pop(0)
        if not self.steps:
            self.done.set()
        if isinstance(step, Exception):
            raise step
        return step


def in_thread(call: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread


def test_a_transient_failure_of_a_coalesced_rerun_is_retried() -> None:
    # The run a child event started is still going when the spec changes: the update's call
    # returns at once (coalesced), and the re-run it asked for fails. Nobody is left to retry it
    # but the Reconciler.
    script = Script("ready", TransientError("etcdserver: leader changed"), "ready", hold=True)
    reconciler = Reconciler(script, retry_delay=0.01)
    first = in_thread(lambda: reconciler(*KEY))
    assert script.started.wait(10)
    assert reconciler(*KEY) is None  # coalesced into the running one
    script.release.set()
    first.join(10)
    assert script.done.wait(10), f"the failed re-run was not retried ({script.runs} runs)"
    assert script.runs == 3
    reconciler.close()


def test_unexpected_errors_are_retried_with_growing_delays() -> None:
    script = Script(KeyError("status"), TransientError("429"), "ready")
    reconciler = Reconciler(script, retry_delay=0.01)
    assert reconciler(*KEY) == "retrying"
    assert script.done.wait(10)
    assert script.runs == 3
    reconciler.close()


def test_a_success_cancels_the_pending_retry() -> None:
    script = Script(TransientError("503"), "ready", "unexpected third run")
    reconciler = Reconciler(script, retry_delay=30)
    assert reconciler(*KEY) == "retrying"
    assert reconciler(*KEY) == "ready"  # e.g. a child event: it did the retry's work
    assert not reconciler._retries
    reconciler.close()


def test_close_cancels_retries_and_schedules_none() -> None:
    script = Script(TransientError("503"), TransientError("503"))
    reconciler = Reconciler(script, retry_delay=30)
    reconciler(*KEY)
    assert reconciler._retries
    reconciler.close()
    assert not reconciler._retries
    reconciler(*KEY)
    assert not reconciler._retries
