"""The sidecar's processes: the supervisor forks one analyst (with drift detection on) and the
proxy workers, serves the one metrics endpoint that sums all of them, and watches them.

- A proxy worker that exits unexpectedly stops the sidecar (exit 1): the kubelet restarts it.
- The analyst exiting turns every worker's /healthz to 503 (its flag in each hand-off), so the
  kubelet restarts the container; requests go on being served until then.
- SIGTERM is passed on to every child. A proxy worker has STOP_SECONDS["proxy"] to finish the
  requests in flight (within a pod's default 30 s grace period), the analyst, which serves
  nobody, STOP_SECONDS["analyst"]; then what is left is killed, so stopping never blocks.
  Children die with the supervisor (PR_SET_PDEATHSIG) even if it is killed outright.

The children are forked, not spawned: they share the imported modules' pages with the
supervisor, and the hand-off's anonymous shared memory is mapped before the fork.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import time
from collections.abc import Callable

from prometheus_client import multiprocess

from mlmodel_operator.monitor.analyst import Analyst, lower_priority
from mlmodel_operator.monitor.exposition import serve_metrics
from mlmodel_operator.monitor.handoff import Channel, channel_sizes
from mlmodel_operator.monitor.serving import run_worker
from mlmodel_operator.monitor.settings import MonitorSettings

log = logging.getLogger("mlmodel_operator.monitor")
STOP_SECONDS = {"proxy": 25.0, "analyst": 2.0}
REAP_SECONDS = 0.2
_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15


def _prctl(option: int, value: int | bytes) -> None:
    # Not Linux: process names and parent-death signals are extras, not needs.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


class StopFlag:
    """Raised by SIGTERM or SIGINT, for a loop to see at its next turn."""

    def __init__(self) -> None:
        self.raised = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._raise)

    def _raise(self, signum: int, frame: object) -> None:
        self.raised = True

    def __call__(self) -> bool:
        return self.raised


def fork(role: str, target: Callable[[], int]) -> int:
    """Run `target` in a child process named `role` (as `ps` and `top` show it)."""
    parent = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the supervisor died before the line above
            os._exit(1)
        _prctl(_PR_SET_NAME, f"mlmodel-{role}".encode()[:15])
        code = target()
    except BaseException:
        log.exception("the %s process failed", role)
    finally:
        logging.shutdown()
        os._exit(code)


def _analyst(settings: MonitorSettings, channels: list[Channel]) -> Callable[[], int]:
    def run() -> int:
        assert settings.drift is not None
        lower_priority()
        stopping = StopFlag()
        readers = [channel.reader() for channel in channels]
        analyst = Analyst(
            settings.model_name, settings.drift, readers, version=settings.model_version
        )
        analyst.run(stopping)
        return 0

    return run


def _worker(settings: MonitorSettings, channels: list[Channel], index: int) -> Callable[[], int]:
    def run() -> int:
        for other, channel in enumerate(channels):
            if other != index:
                channel.close()
        if not channels:
            return run_worker(settings, None, lambda: True, index)
        mine = channels[index]
        return run_worker(settings, mine.writer(), mine.analyst_alive, index)

    return run


def supervise(settings: MonitorSettings) -> int:
    channels: list[Channel] = []
    if settings.drift is not None:
        sizes = channel_sizes(settings.queue_bytes, settings.queue_size, settings.workers)
        channels = [Channel(sizes.capacity, sizes.max_notices) for _ in range(settings.workers)]
    children: dict[int, str] = {}
    if channels:
        children[fork("analyst", _analyst(settings, channels))] = "analyst"
    for index in range(settings.workers):
        children[fork(f"proxy-{index}", _worker(settings, channels, index))] = "proxy"
    for channel in channels:
        channel.close()  # the supervisor keeps only the shared memory, for the liveness flag
    # Threads only after the forks: a fork copies one thread and whatever locks others held.
    serve_metrics(settings)
    log.info(
        "proxying :%d -> %s with %d worker(s)%s",
        settings.listen_port,
        settings.upstream,
        settings.workers,
        ", drift analysis in its own process" if channels else "",
    )

    stopping = StopFlag()
    code = 0
    while code == 0:
        time.sleep(REAP_SECONDS)
        if stopping():  # before reaping: a signal to the whole group stops the children too
            break
        for pid, status in _reap():
            role = children.pop(pid, "unknown")
            multiprocess.mark_process_dead(pid)
            if role == "analyst":
                log.error("the drift analyst exited (%s): /healthz now fails", _how(status))
                for channel in channels:
                    channel.set_analyst_alive(False)
            elif role == "proxy":
                log.error("a proxy worker exited (%s): stopping the sidecar", _how(status))
                code = 1
    _terminate(children)
    return code


def _reap() -> list[tuple[int, int]]:
    done = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return done
        if pid == 0:
            return done
        done.append((pid, status))


def _how(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


def _terminate(children: dict[int, str]) -> None:
    for pid in children:
        _signal(pid, signal.SIGTERM)
    started = time.monotonic()
    while children:
        for pid, _ in _reap():
            children.pop(pid, None)
        waited = time.monotonic() - started
        for pid, role in list(children.items()):
            if waited >= STOP_SECONDS.get(role, 2.0):
                log.warning("the %s process %d did not stop in %.0f s: killed", role, pid, waited)
                _signal(pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
                children.pop(pid)
        if children:
            time.sleep(0.05)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
