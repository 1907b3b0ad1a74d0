"""A work queue of resource keys, processed by a pool of threads, as client-go's:

- a key added while it waits is not added twice (a burst of events makes one reconcile);
- a key is never processed by two threads at once; added while it is processed, it is
  processed once more afterwards;
- a failed key comes back after an exponential backoff (or the server's Retry-After, if
  longer), and is never dropped; a success resets its backoff;
- a key added "soon" waits a moment first, and further "soon" adds in that moment are folded
  into it: the several pod and Deployment events of one rollout step make one reconcile;
- the processing function may ask for its key again after some seconds (a canary step's
  window ends although nothing changes);
- a key added as urgent (a resource whose spec changed) goes before the others (a pod that
  became ready, the resync), as in controller-runtime's priority queue: under load, what a
  user asked for is not queued behind the echoes of earlier work.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable

from mlmodel_operator import metrics

log = logging.getLogger(__name__)

BASE_DELAY_SECONDS = 0.5
MAX_DELAY_SECONDS = 60.0


class Retry(Exception):
    """Raised by the processing function: try this key again later."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def backoff(
    failures: int, retry_after: float | None = None, base: float = BASE_DELAY_SECONDS
) -> float:
    """Seconds to wait after the `failures`-th failure in a row: 0.5, 1, 2 ... at most 60, and
    never less than what the API server asked for."""
    delay = min(base * 2 ** max(failures - 1, 0), MAX_DELAY_SECONDS)
    return max(delay, retry_after or 0.0)


class WorkQueue:
    def __init__(
        self,
        process: Callable[[Hashable], float | None],
        workers: int,
        base_delay: float = BASE_DELAY_SECONDS,
    ) -> None:
        self._process = process
        self._workers = workers
        self._base_delay = base_delay
        self._cond = threading.Condition()
        # Keys ready to be processed, urgent ones first. A key may sit in both, or stay behind
        # after it was taken; it is processed only if it is still dirty and not processing.
        self._urgent: deque[Hashable] = deque()
        self._ready: deque[Hashable] = deque()
        self._dirty: set[Hashable] = set()  # waiting to be processed
        self._processing: set[Hashable] = set()
        self._urgent_after: set[Hashable] = set()  # processing, and added again as urgent
        self._since: dict[Hashable, float] = {}  # when each dirty key was first added
        self._soon: set[Hashable] = set()  # keys waiting in `_delayed` after add_soon
        self._delayed: list[tuple[float, int, Hashable]] = []
        self._seq = itertools.count()
        self._failures: dict[Hashable, int] = {}
        self._stopping = False
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for index in range(self._workers):
            thread = threading.Thread(target=self._work, name=f"reconcile-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def add(self, key: Hashable, urgent: bool = False) -> None:
        with self._cond:
            self._add(key, urgent)

    def add_soon(self, key: Hashable, delay: float) -> None:
        """Add `key` in `delay` seconds, unless it is already waiting to be added so."""
        with self._cond:
            if key in self._soon:
                return
            self._soon.add(key)
            heapq.heappush(self._delayed, (time.monotonic() + delay, next(self._seq), key))
            self._cond.notify()

    def add_after(self, key: Hashable, delay: float) -> None:
        """Add `key` in `delay` seconds, whatever else is waiting for it."""
        with self._cond:
            heapq.heappush(self._delayed, (time.monotonic() + delay, next(self._seq), key))
            self._cond.notify()

    def pending(self) -> int:
        """Keys waiting or being processed (not those waiting out a backoff)."""
        with self._cond:
            return len(self._dirty | self._processing)

    def _add(self, key: Hashable, urgent: bool = False) -> None:
        if key in self._dirty and not urgent:
            return
        self._dirty.add(key)
        self._since.setdefault(key, time.monotonic())
        if key not in self._processing:
            (self._urgent if urgent else self._ready).append(key)
            self._cond.notify()
        elif urgent:
            self._urgent_after.add(key)

    def _pop(self) -> Hashable | None:
        for ready in (self._urgent, self._ready):
            while ready:
                key = ready.popleft()
                if key in self._dirty and key not in self._processing:
                    return key
        return None

    def _next(self) -> Hashable | None:
        """The next key to process (now marked processing), or None when stopping."""
        with self._cond:
            while not self._stopping:
                now = time.monotonic()
                while self._delayed and self._delayed[0][0] <= now:
                    key = heapq.heappop(self._delayed)[2]
                    self._soon.discard(key)
                    self._add(key)
                key = self._pop()
                if key is not None:
                    metrics.QUEUE_WAIT_SECONDS.observe(now - self._since.pop(key, now))
                    self._dirty.discard(key)
                    self._processing.add(key)
                    return key
                timeout = self._delayed[0][0] - now if self._delayed else None
                self._cond.wait(timeout)
            return None

    def _done(self, key: Hashable, retry_in: float | None) -> None:
        with self._cond:
            self._processing.discard(key)
            if retry_in is not None:
                heapq.heappush(self._delayed, (time.monotonic() + retry_in, next(self._seq), key))
                self._cond.notify()
            if key in self._dirty:
                urgent = key in self._urgent_after
                (self._urgent if urgent else self._ready).append(key)
                self._cond.notify()
            self._urgent_after.discard(key)

    def _work(self) -> None:
        while (key := self._next()) is not None:
            retry_in = None
            try:
                again = self._process(key)
                self._failures.pop(key, None)
                if again is not None:
                    self.add_after(key, again)
            except Retry as err:
                failures = self._failures[key] = self._failures.get(key, 0) + 1
                retry_in = backoff(failures, err.retry_after, self._base_delay)
                log.info("%s: %s; retrying in %.1fs", key, err, retry_in)
            except Exception:
                failures = self._failures[key] = self._failures.get(key, 0) + 1
                retry_in = backoff(failures, base=self._base_delay)
                log.exception("%s: unexpected error; retrying in %.1fs", key, retry_in)
            finally:
                self._done(key, retry_in)
