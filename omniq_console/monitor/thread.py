"""``MonitorThread``: a snapshot source run on its own event loop, in its own thread.

Why: a poll is CPU work (decoding listing pages or Pub/Sub pulls, building the snapshot)
done on the loop it runs on. On the console's loop every key waits for it: on a loaded
2-core machine keys were lost and ``esc`` did nothing for 20 s. On a thread of its own the
interpreter switches to the console's thread every few milliseconds
(``sys.getswitchinterval()``) whatever the poll does, so keys never wait on a poll.

Each loop keeps its own HTTP sessions: an aiohttp session (gcsfs) belongs to the loop that
made it, so the source and the backend it reads are made on the thread's loop, by the
``open_source`` context manager given, and closed there when the thread stops. Whoever
calls this adapter (the console's loop) only exchanges snapshots and futures with it:

- snapshots are handed to each subscriber on the loop it subscribed from
  (``call_soon_threadsafe``), or on the thread when it subscribed outside any loop;
- ``request_poll``, ``pause``, ``resume`` and ``set_interval`` are forwarded to the thread's
  loop (remembered until the source exists, then applied before its first poll);
- ``task_detail``, ``task_bodies`` and ``result_bodies`` run on the thread's loop (they read
  the source's model and backend) and are awaited from the caller's loop.

The plain ``Monitor`` stays usable without threads (a notebook awaits it on its own loop);
this adapter is what the console runs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, TypeVar

from ..checks import check_seconds
from ..models import Task, TaskResult
from .snapshot import Snapshot, TaskDetail
from .source import SnapshotCallback, SnapshotSource

if TYPE_CHECKING:
    from .monitor import MonitoredBackend

log = logging.getLogger(__name__)

T = TypeVar("T")

STOP_WAIT_S = 10.0
"""How long stopping waits for the thread to end (a poll yields within milliseconds; only
one stuck in blocking code can take longer, and a daemon thread never keeps the process)."""

SourceOpener = Callable[[], AbstractAsyncContextManager[SnapshotSource]]
"""Makes the source (and opens what it reads) on the thread's loop; closes it on exit."""


class SourceStopped(RuntimeError):
    """The thread has stopped (or failed to open its source): nothing can be read from it."""


class MonitorThread:
    """A ``SnapshotSource`` that runs another one on its own event loop in its own thread.

    ``open_source()`` is entered on the thread's loop; the source it yields is run there until
    ``stop()`` / ``aclose()`` (or the cancellation of ``run()``), then the context manager
    exits there. With ``autostart=False`` the thread starts only when ``start()`` is called
    (the CLI first checks that the bucket answers); ``run()`` then waits for it.
    """

    def __init__(
        self,
        open_source: SourceOpener,
        *,
        name: str = "omniq-monitor",
        autostart: bool = True,
        stop_wait: float = STOP_WAIT_S,
    ) -> None:
        self._open_source = open_source
        self._name = name
        self._autostart = autostart
        self._stop_wait = check_seconds("stop_wait", stop_wait)
        # Guards everything both threads touch: the source, its loop, what to apply to it.
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._source: SnapshotSource | None = None
        self._stopping = False
        self._paused = False
        self._interval: float | None = None
        self._subscribers: list[tuple[SnapshotCallback, asyncio.AbstractEventLoop | None]] = []
        self._latest: Snapshot | None = None
        self._ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._done: concurrent.futures.Future[None] = concurrent.futures.Future()

    @property
    def latest(self) -> Snapshot | None:
        """The newest snapshot the source published, None before its first."""
        return self._latest

    @property
    def thread(self) -> threading.Thread | None:
        """The thread the source runs on, once started."""
        return self._thread

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the thread (once; not after ``stop()``). Returns at once."""
        with self._lock:
            if self._thread is not None or self._stopping:
                return
            self._thread = threading.Thread(target=self._main, name=self._name, daemon=True)
            thread = self._thread
        thread.start()

    async def run(self) -> None:
        """Run the source (starting the thread unless ``autostart=False``) until it ends,
        raising its error; cancelled, stop the thread and wait for it (``aclose``)."""
        if self._autostart:
            self.start()
        try:
            # Shielded: cancelling this wait must not cancel the thread's own future.
            await asyncio.shield(asyncio.wrap_future(self._done))
        except asyncio.CancelledError:
            await self.aclose()
            raise

    def stop(self) -> None:
        """Ask the thread to stop, from any thread: the source's ``run()`` is cancelled on its
        loop and ``open_source`` exits there. Returns at once; ``aclose`` waits."""
        with self._lock:
            self._stopping = True
            started = self._thread is not None
            loop, task = self._loop, self._task
            if loop is not None and task is not None:
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(task.cancel)
        if not started:
            self._finish(None)  # never started, and never will: nothing to wait for

    async def aclose(self) -> None:
        """Stop the thread and wait until it ended (at most ``stop_wait`` seconds; a thread
        stuck longer in blocking code is left to end with the process, and logged)."""
        self.stop()
        thread = self._thread
        if thread is None:
            return
        ended = asyncio.wrap_future(self._done)
        await asyncio.wait({ended}, timeout=self._stop_wait)
        if not ended.done():
            log.warning("the monitor thread did not stop within %g s", self._stop_wait)
            return
        if not ended.cancelled():
            ended.exception()  # run() reports it; here it only must not be logged as lost
        thread.join()  # it set the future as its last step: this returns at once

    def _main(self) -> None:
        error: BaseException | None = None
        try:
            with asyncio.Runner() as runner:
                runner.run(self._serve())
        except asyncio.CancelledError:
            pass  # stopped
        except BaseException as exc:  # handed to run(), in the caller's thread
            error = exc
        self._finish(error)

    def _finish(self, error: BaseException | None) -> None:
        if not self._ready.done():
            self._ready.set_exception(
                SourceStopped(f"the monitor stopped: {error}" if error else "the monitor stopped")
            )
        if self._done.done():
            return
        if error is None:
            self._done.set_result(None)
        else:
            self._done.set_exception(error)

    async def _serve(self) -> None:
        with self._lock:
            if self._stopping:
                return
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.current_task()
        try:
            async with self._open_source() as source:
                source.subscribe(self._forward)
                with self._lock:
                    # Asked for before the source existed: applied before its first poll.
                    if self._interval is not None:
                        source.set_interval(self._interval)
                    if self._paused:
                        source.pause()
                    self._source = source
                self._ready.set_result(None)
                await source.run()
        finally:
            with self._lock:
                self._source = None
                self._loop = None
                self._task = None

    # -- snapshots ----------------------------------------------------------------------------

    def subscribe(self, callback: SnapshotCallback) -> Callable[[], None]:
        """Call ``callback(snapshot)`` on each new snapshot, on the loop running now (the
        thread's own when called outside any loop); returns the unsubscribe function."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        entry = (callback, loop)
        with self._lock:
            self._subscribers.append(entry)

        def unsubscribe() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._subscribers.remove(entry)

        return unsubscribe

    def _forward(self, snapshot: Snapshot) -> None:
        """On the thread: hand ``snapshot`` to every subscriber, on its own loop."""
        self._latest = snapshot
        with self._lock:
            subscribers = list(self._subscribers)
        for callback, loop in subscribers:
            if loop is None:
                callback(snapshot)
                continue
            with contextlib.suppress(RuntimeError):  # that loop closed: nobody to tell
                loop.call_soon_threadsafe(callback, snapshot)

    # -- controls, forwarded ------------------------------------------------------------------

    def _send(self, call: Callable[[SnapshotSource], object]) -> None:
        """Run ``call(source)`` on the thread's loop; called with the lock held, so that a
        source being set up either gets the call or the state recorded before it."""
        source, loop = self._source, self._loop
        if source is None or loop is None:
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(call, source)

    def request_poll(self) -> None:
        """Poll as soon as possible (a source still opening polls at once anyway)."""
        with self._lock:
            self._send(lambda source: source.request_poll())

    def pause(self) -> None:
        """Stop timed polls until ``resume``."""
        with self._lock:
            self._paused = True
            self._send(lambda source: source.pause())

    def resume(self) -> None:
        """Restart timed polls."""
        with self._lock:
            self._paused = False
            self._send(lambda source: source.resume())

    def set_interval(self, seconds: float) -> None:
        """Poll every ``seconds``; a bad value raises here, in the caller's thread."""
        interval = check_seconds("interval", seconds)
        with self._lock:
            self._interval = interval
            self._send(lambda source: source.set_interval(interval))

    # -- reads, on the thread's loop ----------------------------------------------------------

    async def _call(self, work: Callable[[SnapshotSource], Coroutine[Any, Any, T]]) -> T:
        # Shielded: a caller giving up must not cancel the future every caller waits on.
        await asyncio.shield(asyncio.wrap_future(self._ready))
        with self._lock:
            source, loop = self._source, self._loop
        if source is None or loop is None:
            raise SourceStopped("the monitor stopped")
        coroutine = work(source)
        try:
            future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        except RuntimeError:  # its loop closed meanwhile
            coroutine.close()
            raise SourceStopped("the monitor stopped") from None
        try:
            # Cancelling this wait (the caller gave up) cancels the work on the thread.
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if future.cancelled() and current is not None and not current.cancelling():
                raise SourceStopped("the monitor stopped while reading") from None
            raise

    async def task_detail(self, task_id: str) -> TaskDetail:
        """The source's ``task_detail``, run on its loop."""
        return await self._call(lambda source: source.task_detail(task_id))

    async def task_bodies(self, task_ids: Sequence[str]) -> dict[str, Task | None]:
        """The source's ``task_bodies``, run on its loop."""
        ids = tuple(task_ids)
        return await self._call(lambda source: source.task_bodies(ids))

    async def result_bodies(self, task_ids: Sequence[str]) -> dict[str, TaskResult | None]:
        """The source's ``result_bodies``, run on its loop."""
        ids = tuple(task_ids)
        return await self._call(lambda source: source.result_bodies(ids))


def monitor_thread(
    new_backend: Callable[[], AbstractAsyncContextManager[MonitoredBackend]],
    *,
    autostart: bool = True,
    **monitor_options: Any,
) -> MonitorThread:
    """A ``Monitor`` on its own thread, reading a backend of its own: ``new_backend()`` (an
    unopened ``GCSBackend``, say) is opened and closed on the thread's loop.
    ``monitor_options`` are ``Monitor``'s keywords (``interval``, ``subscription``, ...)."""

    @contextlib.asynccontextmanager
    async def open_monitor() -> AsyncIterator[SnapshotSource]:
        # Imported here, on the thread, once it starts: the poller and its HTTP stack are
        # not on the way to the console's first frame.
        from .monitor import Monitor

        async with new_backend() as backend:
            yield Monitor(backend, **monitor_options)

    return MonitorThread(open_monitor, autostart=autostart)


__all__ = ["MonitorThread", "SourceOpener", "SourceStopped", "monitor_thread"]
