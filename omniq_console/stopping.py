"""One way to stop a long-running loop (worker, scheduler, monitor, fleet) from anywhere.

``StopSignal.set()`` is safe from a signal handler, another thread, or before the loop started;
``await signal.wait(timeout)`` sleeps until it is set or the timeout passes. It wakes its loop
with ``set_from_any_thread``, as the monitor wakes its run loop for a poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading


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

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait until set or ``timeout`` seconds passed; True when set.

        Not ``asyncio.wait_for``: on Python 3.11 it can swallow a cancellation that arrives as
        the event is set, turning "stop now" into a graceful stop.
        """
        if self._event is None:
            self.bind()
        assert self._event is not None
        waiter = asyncio.ensure_future(self._event.wait())
        try:
            await asyncio.wait({waiter}, timeout=timeout)
        finally:
            waiter.cancel()
        return self._set.is_set()
