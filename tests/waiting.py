"""Waiting in tests for a condition, never for a fixed time: a loaded machine makes anything
slower, so a test polls what it waits for, with a generous limit and a message naming it.

The poll interval is the only sleep: what is awaited (a subprocess, an emulator, another
process's write) offers no event to await.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

POLL_S = 0.05

T = TypeVar("T")


async def wait_until(
    condition: Callable[[], T | Awaitable[T]],
    what: str,
    *,
    within: float = 30.0,
    every: float = POLL_S,
    detail: Callable[[], str] | None = None,
) -> T:
    """Return the first true value of ``condition()`` (sync or async); fail naming ``what``
    after ``within`` seconds, with ``detail()`` (say, child processes' logs) when given."""
    held = await poll_until(condition, within=within, every=every)
    if not held:
        more = f"\n{detail()}" if detail is not None else ""
        raise AssertionError(f"timed out after {within:g} s waiting for {what}{more}")
    return held


async def poll_until(
    condition: Callable[[], T | Awaitable[T]], *, within: float, every: float = POLL_S
) -> T | None:
    """The first true value of ``condition()`` (sync or async), or its last value once
    ``within`` seconds passed (for a wait whose caller reports what it saw last)."""
    deadline = time.monotonic() + within
    while True:
        held = condition()
        if inspect.isawaitable(held):
            held = await held
        if held or time.monotonic() > deadline:
            return held  # type: ignore[return-value]
        # Wall clock on purpose: the poll interval of something that offers no event.
        await asyncio.sleep(every)


def wait_until_sync(
    condition: Callable[[], T],
    what: str,
    *,
    within: float = 30.0,
    every: float = POLL_S,
    detail: Callable[[], str] | None = None,
) -> T:
    """``wait_until`` for tests without an event loop (subprocesses, psutil)."""
    held = poll_sync(condition, within=within, every=every)
    if not held:
        more = f"\n{detail()}" if detail is not None else ""
        raise AssertionError(f"timed out after {within:g} s waiting for {what}{more}")
    return held


def poll_sync(condition: Callable[[], T], *, within: float, every: float = POLL_S) -> T | None:
    """The first true value of ``condition()``, or None once ``within`` seconds passed (for
    a wait that has a next step when it runs out, such as SIGKILL after SIGTERM)."""
    deadline = time.monotonic() + within
    while not (held := condition()):
        if time.monotonic() > deadline:
            return None
        # Wall clock on purpose: the poll interval of something that offers no event.
        time.sleep(every)
    return held
