"""Running many awaitables at once: all of them (``gather``), or a bounded few at a time
(``bounded_gather``). Both fail as one call does: on the first failure the rest is cancelled
and that error itself is raised, never an ``ExceptionGroup`` nor a task left running."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


async def gather(*aws: Awaitable[Any]) -> list[Any]:
    """Run concurrently; on the first failure cancel the rest and raise that error itself
    (not an ExceptionGroup: callers and messages deal in one error)."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(_as_coro(aw)) for aw in aws]
    except BaseExceptionGroup as failed:
        raise _first_error(failed) from None
    return [task.result() for task in tasks]


async def bounded_gather(
    items: Iterable[T], action: Callable[[T], Awaitable[R]], *, limit: int
) -> list[R]:
    """``action(item)`` for every item, at most ``limit`` at once, started in input order;
    the results in input order.

    ``limit`` runners take the next item as they finish one, so a million items cost
    ``limit`` tasks, not a million waiting on a semaphore.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit!r}")
    todo = list(items)
    done: dict[int, R] = {}
    order = iter(range(len(todo)))  # shared: each index is taken by exactly one runner

    async def runner() -> None:
        for i in order:
            done[i] = await action(todo[i])

    await gather(*(runner() for _ in range(min(limit, len(todo)))))
    return [done[i] for i in range(len(todo))]


async def _as_coro(aw: Awaitable[T]) -> T:
    return await aw


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_error(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return group.exceptions[0]
