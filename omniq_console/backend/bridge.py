"""The sync API's one bridge: anyio's blocking portal (an event loop in a daemon thread).

Sync callers (``with backend:``, ``queue.enqueue_sync``) submit coroutines here and wait for
them (:meth:`SyncBridge.run`); async code on another loop awaits them here
(:meth:`SyncBridge.call`). The backend's HTTP session lives on the portal's loop, so it works
the same from a script, a thread, or a notebook whose own loop is already running. This is the
only place that moves a coroutine from one event loop to another.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from contextlib import ExitStack
from typing import Any, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal

T = TypeVar("T")

_NOT_OPEN = "the sync API is not open: use 'with backend:' first"


async def _awaited(coro: Coroutine[Any, Any, T]) -> T:
    return await coro


class SyncBridge:
    """Runs coroutines on a blocking portal's loop."""

    def __init__(self, name: str = "omniq-sync") -> None:
        self._name = name
        self._portal: BlockingPortal | None = None
        self._thread_id: int | None = None
        self._exit = ExitStack()
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._portal is not None

    def start(self) -> None:
        """Start the portal's thread (a second call does nothing)."""
        with self._lock:
            if self._portal is not None:
                return
            portal = self._exit.enter_context(start_blocking_portal("asyncio", name=self._name))
            self._thread_id = portal.call(threading.get_ident)
            self._portal = portal

    def _open(self, coro: Coroutine[Any, Any, Any]) -> BlockingPortal:
        portal = self._portal
        if portal is None:
            coro.close()
            raise RuntimeError(_NOT_OPEN)
        return portal

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the bridge's loop and return its result (or raise its error)."""
        portal = self._open(coro)
        if threading.get_ident() == self._thread_id:
            coro.close()
            raise RuntimeError("a sync method was called from async code; await its async twin")
        future: Future[T] = portal.start_task_soon(_awaited, coro)
        return future.result(timeout)

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on the bridge's loop from async code on any loop.

        Cancelling the caller cancels ``coro`` too.
        """
        portal = self._open(coro)
        if threading.get_ident() == self._thread_id:
            return await coro
        future: Future[T] = portal.start_task_soon(_awaited, coro)
        return await asyncio.wrap_future(future)

    def stop(self) -> None:
        """Cancel what still runs on the loop, stop it and join its thread (a second call does
        nothing)."""
        with self._lock:
            portal, self._portal, self._thread_id = self._portal, None, None
            if portal is None:
                return
            # Stopped with cancellation first: leaving the portal's context stops it without,
            # which waits for every task still on the loop.
            try:
                portal.call(portal.stop, True)
            finally:
                self._exit.close()
