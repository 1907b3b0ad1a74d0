"""A budget of bytes the proxy may hold in memory at once, shared by all its connections, so
that the sidecar's memory is bounded in bytes whatever the number and size of requests.

Used from the event loop only. Each request takes a Hold, which gives back everything it took
when the request ends, whatever way it ends.
"""

from __future__ import annotations

import asyncio


class ByteBudget:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._waiters: list[asyncio.Future[None]] = []

    def try_take(self, size: int) -> bool:
        if self.used + size > self.capacity:
            return False
        self.used += size
        return True

    async def take(self, size: int) -> None:
        """Wait until `size` bytes are free and take them (the caller bounds the wait)."""
        if size > self.capacity:
            raise ValueError(f"{size} bytes can never fit in a budget of {self.capacity}")
        while not self.try_take(size):
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def give_back(self, size: int) -> None:
        if not size:
            return
        self.used -= size
        # Every waiter tries again; those that still do not fit wait for the next release.
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def hold(self) -> Hold:
        return Hold(self)


class Hold:
    """The bytes one request holds."""

    def __init__(self, budget: ByteBudget) -> None:
        self.budget = budget
        self.size = 0

    def try_take(self, size: int) -> bool:
        if self.budget.try_take(size):
            self.size += size
            return True
        return False

    async def take(self, size: int) -> None:
        await self.budget.take(size)
        self.size += size

    def release(self) -> None:
        size, self.size = self.size, 0
        self.budget.give_back(size)
