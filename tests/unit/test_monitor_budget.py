"""The proxy's byte budget: what does not fit waits until bytes are given back."""

from __future__ import annotations

import asyncio

import pytest

from mlmodel_operator.monitor.budget import ByteBudget


def test_a_hold_waits_for_room_and_gives_everything_back() -> None:
    async def main() -> list[int]:
        budget = ByteBudget(100)
        first, second = budget.hold(), budget.hold()
        await first.take(60)
        seen = [budget.used]
        assert not second.try_take(50)
        waiting = asyncio.create_task(second.take(50))
        await asyncio.sleep(0)
        assert not waiting.done()
        first.release()
        await waiting
        seen.append(budget.used)
        second.release()
        return [*seen, budget.used]

    assert asyncio.run(main()) == [60, 50, 0]


def test_more_than_the_whole_budget_is_refused() -> None:
    with pytest.raises(ValueError, match="never fit"):
        asyncio.run(ByteBudget(10).take(11))
