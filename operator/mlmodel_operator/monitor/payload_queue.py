"""A proxy worker's events waiting for the payload sink: bounded in bytes, never waited for by
the request path, taken out in batches by the delivery tasks.

The bytes are counted in the payload log's ByteBudget from the moment an event is queued until
its delivery ends (sent or dropped), so that events in delivery count too: the worker's memory
for payload logging is max_queued_bytes whatever the sink does. Used from the event loop only.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from mlmodel_operator.monitor.budget import ByteBudget


@dataclass(frozen=True)
class Queued:
    """One encoded event: binary mode's headers and body, or (headers None) a structured event
    for a batch."""

    body: bytes
    headers: dict[str, str] | None
    size: int
    queued_at: float


def batch_wait(
    count: int, oldest_age: float, batch_size: int, interval: float, closing: bool
) -> float | None:
    """Seconds to wait before taking a batch: 0 to take one now, None to wait for an event. A
    batch goes when it is full, when its oldest event has waited `interval`, or at shutdown."""
    if count == 0:
        return None
    if count >= batch_size or closing or oldest_age >= interval:
        return 0.0
    return interval - oldest_age


class EventQueue:
    def __init__(
        self,
        budget: ByteBudget,
        batch_size: int,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.budget = budget
        self.batch_size = batch_size
        self.interval = interval
        self.clock = clock
        self.closing = False
        self._items: deque[Queued] = deque()
        self._arrived = asyncio.Event()
        self._taking = asyncio.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def offer(self, items: list[tuple[bytes, dict[str, str] | None]]) -> bool:
        """Queue all of `items` (an exchange's events) or, without room for all, none."""
        sizes = [
            len(body) + sum(len(k) + len(v) for k, v in (headers or {}).items())
            for body, headers in items
        ]
        if not self.budget.try_take(sum(sizes)):
            return False
        now = self.clock()
        for (body, headers), size in zip(items, sizes, strict=True):
            self._items.append(Queued(body, headers, size, now))
        self._arrived.set()
        return True

    async def take(self) -> list[Queued]:
        """The next batch, once it is due (see batch_wait). Its bytes stay taken until the caller
        gives them back with done()."""
        async with self._taking:
            while True:
                oldest = self.clock() - self._items[0].queued_at if self._items else 0.0
                wait = batch_wait(
                    len(self._items), oldest, self.batch_size, self.interval, self.closing
                )
                if wait == 0:
                    count = min(self.batch_size, len(self._items))
                    return [self._items.popleft() for _ in range(count)]
                self._arrived.clear()
                try:
                    async with asyncio.timeout(wait):
                        await self._arrived.wait()
                except TimeoutError:
                    pass

    def done(self, batch: list[Queued]) -> None:
        self.budget.give_back(sum(item.size for item in batch))

    def close(self) -> None:
        """From now on batches go out at once, full or not."""
        self.closing = True
        self._arrived.set()

    def clear(self) -> int:
        """Forget what is left; how many events that was."""
        count = len(self._items)
        self.done(list(self._items))
        self._items.clear()
        return count
