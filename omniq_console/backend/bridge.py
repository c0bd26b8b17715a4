"""The sync API's one bridge: a background thread with an event loop that runs coroutines.

Sync callers (``with backend:``, ``queue.enqueue_sync``) submit coroutines here and wait for
them (:meth:`SyncBridge.run`); async code on another loop awaits them here
(:meth:`SyncBridge.call`). The backend's HTTP session lives on this loop, so it works the same
from a script, a thread, or a notebook whose own loop is already running. This is the only
place that moves a coroutine from one event loop to another.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class SyncBridge:
    """Runs coroutines on a private event loop in a daemon thread."""

    def __init__(self, name: str = "omniq-sync") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The bridge's loop while it runs, else ``None``."""
        return self._loop

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._loop is not None

    def start(self) -> None:
        """Start the loop's thread (a second call does nothing)."""
        with self._lock:
            if self._loop is not None:
                return
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def serve() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            self._thread = threading.Thread(target=serve, name=self._name, daemon=True)
            self._thread.start()
            ready.wait()
            self._loop = loop

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the bridge's loop and return its result (or raise its error)."""
        if self._loop is None:
            coro.close()
            raise RuntimeError("the sync API is not open: use 'with backend:' first")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a sync method was called from async code; await its async twin")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on the bridge's loop from async code on any loop.

        Cancelling the caller cancels ``coro`` too.
        """
        loop = self._loop
        if loop is None:
            coro.close()
            raise RuntimeError("the sync API is not open: use 'with backend:' first")
        if asyncio.get_running_loop() is loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

    def stop(self) -> None:
        """Stop the loop and join its thread (a second call does nothing)."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=5)
        loop.close()
