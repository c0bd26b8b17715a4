"""One way to stop a long-running loop (worker, scheduler, monitor, fleet) from anywhere.

``StopSignal.set()`` is safe from a signal handler, another thread, or before the loop started;
``await signal.wait(timeout)`` sleeps until it is set or the timeout passes, on an injected
clock when given one (``event_or_timeout``, which the monitor's run loop waits with too). It
wakes its loop with ``set_from_any_thread``, as the monitor wakes its run loop for a poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from .clock import SYSTEM_CLOCK, Clock


def set_from_any_thread(loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
    """Set ``event``, which belongs to ``loop``, from whatever thread runs this: at once on the
    loop's own thread, else through ``loop.call_soon_threadsafe``; nothing once it is closed."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        event.set()
    else:
        with contextlib.suppress(RuntimeError):  # the loop is closed, or closed meanwhile
            loop.call_soon_threadsafe(event.set)


async def event_or_timeout(
    event: asyncio.Event, timeout: float | None, clock: Clock | None = None
) -> None:
    """Wait until ``event`` is set or ``timeout`` seconds of ``clock`` passed (the machine's
    clock by default; no time limit when ``timeout`` is None).

    Not ``asyncio.wait_for``: on Python 3.11 it can swallow a cancellation that arrives as the
    event is set, turning "stop now" into a graceful stop. Sleeping on ``clock`` lets a test on
    a ``FakeClock`` pass the timeout without a real wait.
    """
    waiters: set[asyncio.Future[object]] = {asyncio.ensure_future(event.wait())}
    if timeout is not None:
        waiters.add(asyncio.ensure_future((clock or SYSTEM_CLOCK).sleep(timeout)))
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


class StopSignal:
    """A stop request that any thread may raise and one event loop waits on."""

    def __init__(self) -> None:
        self._set = threading.Event()
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self) -> None:
        """Attach to the running loop (call at the start of the loop that waits)."""
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        if self._set.is_set():
            self._event.set()

    def is_set(self) -> bool:
        """True once ``set()`` was called."""
        return self._set.is_set()

    def set(self) -> None:
        """Request the stop; wakes the bound loop's waiters from any thread."""
        self._set.set()
        if self._loop is not None and self._event is not None:
            set_from_any_thread(self._loop, self._event)

    async def wait(self, timeout: float | None = None, *, clock: Clock | None = None) -> bool:
        """Wait until set or ``timeout`` seconds of ``clock`` passed (the machine's by default);
        True when set."""
        if self._event is None:
            self.bind()
        assert self._event is not None
        await event_or_timeout(self._event, timeout, clock)
        return self._set.is_set()
