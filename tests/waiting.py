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

POLL_S = 0.05


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]],
    what: str,
    *,
    within: float = 30.0,
    every: float = POLL_S,
) -> None:
    """Return once ``condition()`` (sync or async) is true; fail naming ``what`` after
    ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        held = condition()
        if inspect.isawaitable(held):
            held = await held
        if held:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g} s waiting for {what}")
        await asyncio.sleep(every)


def wait_until_sync(
    condition: Callable[[], bool], what: str, *, within: float = 30.0, every: float = POLL_S
) -> None:
    """``wait_until`` for tests without an event loop (subprocesses, psutil)."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g} s waiting for {what}")
        time.sleep(every)
