"""``bounded_gather``: results in input order, never more than ``limit`` at once, started in
input order, and the first failure cancels the rest and is raised as itself."""

from __future__ import annotations

import asyncio

import pytest

from omniq_console.gathering import bounded_gather, gather


async def test_results_come_in_input_order_with_at_most_limit_running() -> None:
    running = peak = 0
    started: list[int] = []

    async def work(i: int) -> int:
        nonlocal running, peak
        started.append(i)
        running += 1
        peak = max(peak, running)
        for _ in range(i % 3):  # finish out of order: yield to the loop 0-2 times
            await asyncio.sleep(0)
        running -= 1
        return i * i

    assert await bounded_gather(range(50), work, limit=4) == [i * i for i in range(50)]
    assert peak == 4
    assert started == list(range(50))
    assert await bounded_gather([], work, limit=4) == []


async def test_a_million_items_cost_limit_tasks_not_a_million() -> None:
    tasks_seen: set[asyncio.Task[object]] = set()

    async def work(i: int) -> int:
        task = asyncio.current_task()
        assert task is not None
        tasks_seen.add(task)
        await asyncio.sleep(0)  # let the other runners take items
        return i

    assert sum(await bounded_gather(range(20_000), work, limit=8)) == sum(range(20_000))
    assert len(tasks_seen) == 8


async def test_the_first_failure_cancels_the_rest_and_is_raised_itself() -> None:
    started: list[int] = []
    cancelled: list[int] = []

    async def work(i: int) -> int:
        started.append(i)
        if i == 3:
            raise KeyError("three")
        try:
            await asyncio.Event().wait()  # runs until cancelled
        except asyncio.CancelledError:
            cancelled.append(i)
            raise
        return i

    with pytest.raises(KeyError, match="three"):
        await asyncio.wait_for(bounded_gather(range(10), work, limit=5), timeout=5)
    # Every other item started was cancelled (none is left running), and no runner took a
    # new item after the failure.
    assert {0, 1, 2, 3} <= set(started) <= set(range(5))
    assert sorted(cancelled) == sorted(set(started) - {3})
    with pytest.raises(ValueError, match="limit"):
        await bounded_gather([1], work, limit=0)


async def test_gather_raises_the_first_error_not_a_group() -> None:
    async def boom() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await gather(asyncio.sleep(0), boom())
