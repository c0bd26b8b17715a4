"""``OmniQ``: the application-facing runtime on a GCS backend.

::

    backend = GCSBackend(bucket_name="my-omniq-bucket", project="my-gcp-project")
    omniq = OmniQ(backend=backend)

    @omniq.task
    def my_task(x, y):
        return x + y

    result = omniq.enqueue(my_task, 1, 2)      # the task id
    omniq.get_result(result, timeout=30)       # once a worker ran it: TaskResult(...)
    omniq.run_worker_sync(["default"])          # a worker, until SIGINT/SIGTERM

Every call exists twice: a blocking one (``enqueue``) and an async one (``enqueue_async``).
The backend need not be opened first: the blocking API opens it for sync use (on the
backend's sync bridge) and the async API for async use on the running loop; ``close()`` /
``await aclose()`` (or ``with omniq:`` / ``async with omniq:``) closes what OmniQ opened. A
backend the caller opened is used as it is and left open.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import signal
import threading
from collections.abc import Callable, Coroutine, Sequence
from contextlib import AsyncExitStack, ExitStack
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Self, TypeVar, overload

from ..backend.bridge import SyncBridge
from ..backend.errors import ConflictError, ObjectNotFoundError
from ..backend.gcs import GCSBackend
from ..backend.layout import check_id
from ..backend.storeapi import RetryPolicy
from ..backend.sync import sync_twin
from ..models import (
    Schedule,
    ScheduleStatus,
    ScheduleType,
    TaskResult,
    as_utc,
    utcnow,
)
from ..stopping import StopSignal
from .registry import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_QUEUE,
    DEFAULT_RETRY_DELAY,
    TaskFunction,
    TaskOptions,
    TaskRegistry,
    as_timedelta,
    submit_task,
)
from .scheduler import Scheduler
from .worker import Worker

T = TypeVar("T")

logger = logging.getLogger(__name__)

# Said (as warnings, so they show without any logging set up) when a stop signal is acted on.
_FIRST_STOP = "stopping: the running work may finish (send the signal again to cancel it)"
_SECOND_STOP = "stopping now: cancelling the running work"
F = TypeVar("F", bound=TaskFunction)

# Pauses between two looks at a result: from 50 ms, doubling, up to a second.
_RESULT_POLL = RetryPolicy(base_delay=0.05, max_delay=1.0)


class OmniQ:
    """Tasks, workers and schedules of one application on one backend."""

    def __init__(self, backend: GCSBackend, *, default_queue: str = DEFAULT_QUEUE) -> None:
        self.backend = backend
        self.default_queue = check_id(default_queue, "queue name")
        self.registry = TaskRegistry()
        # What OmniQ opened itself, and so closes: the backend on its sync bridge (blocking
        # API), or on the caller's loop (async API). A backend opened by the caller is not here.
        self._sync_open = ExitStack()
        self._async_open = AsyncExitStack()
        self._lock = threading.Lock()

    # -- tasks -------------------------------------------------------------------------------

    @overload
    def task(self, func: F, /) -> F: ...

    @overload
    def task(
        self,
        func: None = None,
        /,
        *,
        name: str | None = None,
        queue: str | None = None,
        priority: int = 0,
        max_retries: int = DEFAULT_MAX_RETRIES,
        retry_delay: timedelta | float = DEFAULT_RETRY_DELAY,
        ttl: timedelta | float | None = None,
    ) -> Callable[[F], F]: ...

    def task(self, func: F | None = None, /, **options: Any) -> F | Callable[[F], F]:
        """Register a task function (sync or async), bare (``@omniq.task``) or with options.

        The function is returned unchanged (it can still be called directly). It is known to
        workers as ``module:qualname`` unless ``name`` is given. ``retry_delay`` and ``ttl``
        are seconds or timedeltas; a failed task is retried after ``retry_delay * 2**n``.
        """

        queue = options.pop("queue", None) or self.default_queue

        def register(f: F) -> F:
            self.registry.register(f, queue=queue, **options)
            return f

        return register(func) if func is not None else register

    def _options(
        self, func_or_name: TaskFunction | str, queue: str | None, priority: int | None
    ) -> tuple[str, TaskOptions]:
        name, spec = self.registry.resolve(func_or_name)
        base = TaskOptions.of(spec) if spec is not None else TaskOptions(queue=self.default_queue)
        return name, replace(
            base,
            queue=check_id(queue, "queue name") if queue is not None else base.queue,
            priority=int(priority) if priority is not None else base.priority,
        )

    async def enqueue_async(
        self,
        func_or_name: TaskFunction | str,
        /,
        *args: Any,
        queue: str | None = None,
        priority: int | None = None,
        run_at: datetime | None = None,
        delay: timedelta | float | None = None,
        **kwargs: Any,
    ) -> str:
        """Queue one call of a task; returns its id. ``run_at`` or ``delay`` postpone it.

        ``queue`` and ``priority`` override the task's registered options. A name that is not
        registered here is allowed: the worker that runs it must know it.
        """
        if run_at is not None and delay is not None:
            raise ValueError("give run_at or delay, not both")
        name, options = self._options(func_or_name, queue, priority)
        now = utcnow()
        wait = as_timedelta(delay, "delay")
        when = as_utc(run_at) if run_at is not None else (now + wait if wait else None)
        task = options.build_task(name, args, kwargs, run_at=when, now=now)
        return await self._in_backend(submit_task(self.backend, task))

    enqueue = sync_twin(enqueue_async, name="enqueue")

    async def get_result_async(self, task_id: str, timeout: float | None = None) -> TaskResult:
        """Wait for the final result of a task and return it.

        ``timeout=None`` waits as long as it takes; otherwise ``TimeoutError`` after
        ``timeout`` seconds. ``ObjectNotFoundError`` when neither the task nor a result exists.
        A task that ended before it ran (cancelled, expired) has a final result too, so a
        caller never waits forever on a task that will not run.
        """
        check_id(task_id, "task id")
        scope = asyncio.timeout(timeout)
        try:
            async with scope:
                return await self._in_backend(self._wait_result(task_id))
        except TimeoutError:
            if not scope.expired():
                raise
            raise TimeoutError(f"no result for task {task_id} after {timeout} s") from None

    get_result = sync_twin(get_result_async, name="get_result")

    async def _wait_result(self, task_id: str) -> TaskResult:
        # The result is the task's state record (docs/architecture.md, "Task status is derived
        # from which objects exist"): a task is final exactly when its record is.
        looks = 0
        while True:
            result = await self.backend.async_result_storage.get(task_id)
            if result is not None and result.is_final:
                return result
            if result is None and await self.backend.async_task_storage.get_task(task_id) is None:
                raise ObjectNotFoundError(self.backend.layout.task(task_id), "task")
            await asyncio.sleep(_RESULT_POLL.ceiling(looks))
            looks += 1

    # -- schedules ---------------------------------------------------------------------------

    async def schedule_async(
        self,
        func_or_name: TaskFunction | str,
        /,
        *args: Any,
        cron: str | None = None,
        interval: timedelta | float | None = None,
        at: datetime | None = None,
        queue: str | None = None,
        max_runs: int | None = None,
        ttl: timedelta | float | None = None,
        schedule_id: str | None = None,
        paused: bool = False,
        **kwargs: Any,
    ) -> str:
        """Create a cron, interval or one-time (``at``) schedule; returns its id.

        Exactly one of ``cron``, ``interval`` (seconds or timedelta) and ``at`` is given.
        ``ttl`` ends the schedule after that long; ``max_runs`` after that many runs.
        With ``schedule_id``, an app can declare its schedules at every start: a schedule of
        that id with the same definition is left as it is (its run count and pause state
        kept); one with a different definition raises ``ConflictError``.
        """
        given = [v is not None for v in (cron, interval, at)]
        if sum(given) != 1:
            raise ValueError("give exactly one of cron=, interval= or at=")
        name, options = self._options(func_or_name, queue, None)
        fields: dict[str, Any] = {
            "func": name,
            "args": tuple(args),
            "kwargs": dict(kwargs),
            "queue_name": options.queue,
            "max_runs": max_runs,
            "ttl": as_timedelta(ttl, "ttl"),
            "status": ScheduleStatus.PAUSED if paused else ScheduleStatus.ACTIVE,
            "metadata": options.to_metadata(),
        }
        if schedule_id is not None:
            fields["id"] = check_id(schedule_id, "schedule id")
        if cron is not None:
            fields.update(schedule_type=ScheduleType.CRON, cron_expression=cron)
        elif interval is not None:
            fields.update(
                schedule_type=ScheduleType.INTERVAL, interval=as_timedelta(interval, "interval")
            )
        else:
            assert at is not None
            fields.update(schedule_type=ScheduleType.TIMESTAMP, timestamp=as_utc(at))
        schedule = Schedule(**fields)
        return await self._in_backend(self._save_schedule(schedule, schedule_id is not None))

    schedule = sync_twin(schedule_async, name="schedule")

    async def _save_schedule(self, schedule: Schedule, declared: bool) -> str:
        store = self.backend.async_schedule_storage
        try:
            await store.save_schedule(schedule)
            return schedule.id
        except ConflictError:
            if not declared:
                raise
        existing = await store.get_schedule(schedule.id)
        if existing is not None and _same_definition(existing, schedule):
            return existing.id
        raise ConflictError(
            self.backend.layout.schedule(schedule.id),
            0,
            f"schedule {schedule.id} exists with another definition; delete it or use another id",
        )

    # -- workers and schedulers ----------------------------------------------------------------

    def worker(
        self, queues: Sequence[str] | str | None = None, *, concurrency: int = 1, **options: Any
    ) -> Worker:
        """A :class:`Worker` for this app's tasks (``queues`` default: the registered ones).

        ``options``: ``worker_id``, ``lease_seconds``, ``poll_interval``, ``poll_timeout``,
        ``heartbeat_interval``, ``reap_interval``, ``shutdown_grace``.
        """
        return Worker(
            self.backend, self.registry, self._queues(queues), concurrency=concurrency, **options
        )

    def scheduler(self, *, interval: float = 1.0, **options: Any) -> Scheduler:
        """A :class:`Scheduler` on this app's backend (``scheduler_id``, ``clock``)."""
        return Scheduler(self.backend, interval=interval, **options)

    def _queues(self, queues: Sequence[str] | str | None) -> list[str]:
        if queues is None:
            names = {spec.queue for n in self.registry.names() if (spec := self.registry.get(n))}
            return sorted(names) or [self.default_queue]
        return [queues] if isinstance(queues, str) else list(queues)

    async def run_worker(
        self, queues: Sequence[str] | str | None = None, *, concurrency: int = 1, **options: Any
    ) -> None:
        """Run a worker until it is stopped (``worker.stop()``) or cancelled."""
        worker = self.worker(queues, concurrency=concurrency, **options)
        await self._in_backend(worker.run())

    def run_worker_sync(
        self, queues: Sequence[str] | str | None = None, *, concurrency: int = 1, **options: Any
    ) -> None:
        """Run a worker until SIGINT or SIGTERM (first: clean stop; second: stop now)."""
        worker = self.worker(queues, concurrency=concurrency, **options)
        self._run_until_signalled(worker.run, worker.stop)

    async def run_scheduler(self, *, interval: float = 1.0, **options: Any) -> None:
        """Run a scheduler until it is stopped or cancelled."""
        scheduler = self.scheduler(interval=interval, **options)
        await self._in_backend(scheduler.run())

    def run_scheduler_sync(self, *, interval: float = 1.0, **options: Any) -> None:
        """Run a scheduler until SIGINT or SIGTERM."""
        scheduler = self.scheduler(interval=interval, **options)
        self._run_until_signalled(scheduler.run, scheduler.stop)

    def _run_until_signalled(
        self, main: Callable[[], Coroutine[Any, Any, None]], stop: Callable[[], None]
    ) -> None:
        """Run ``main()`` on the sync bridge until it returns.

        SIGINT/SIGTERM (when called from the main thread): the first calls ``stop`` (a clean
        stop), the second cancels ``main()``; either way this returns once it has finished,
        so a worker has released what it held.
        """
        stopping, aborting = StopSignal(), StopSignal()

        async def supervised() -> None:
            run = asyncio.create_task(main())

            async def relay(requested: StopSignal, action: Callable[[], object], note: str) -> None:
                await requested.wait()
                logger.warning(note)
                action()

            relays = [
                asyncio.create_task(relay(stopping, stop, _FIRST_STOP)),
                asyncio.create_task(relay(aborting, run.cancel, _SECOND_STOP)),
            ]
            try:
                await run
            except asyncio.CancelledError:
                if not aborting.is_set():
                    raise
            finally:
                for task in relays:
                    task.cancel()

        def on_signal(signum: int, frame: object) -> None:
            (aborting if stopping.is_set() else stopping).set()

        previous: dict[signal.Signals, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, on_signal)
        try:
            self.bridge.run(supervised())
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    # -- opening the backend -------------------------------------------------------------------

    @property
    def bridge(self) -> SyncBridge:
        """The backend's sync bridge, which the blocking API runs on (opened on first use)."""
        return self._open_sync()

    def _open_sync(self) -> SyncBridge:
        with self._lock:
            bridge = self.backend.bridge
            if bridge.running:
                return bridge
            if self.backend.is_open:
                raise RuntimeError(
                    "the backend is open for async use, so a blocking OmniQ method cannot run "
                    "on it: await its async twin (enqueue_async, get_result_async, ...)"
                )
            self._sync_open.enter_context(self.backend)
            atexit.register(self.close)
            return bridge

    async def _open_async(self) -> None:
        """Open the backend on the running loop, unless it is open already (anywhere)."""
        if not self.backend.bridge.running and not self.backend.is_open:
            await self._async_open.enter_async_context(self.backend)

    async def _in_backend(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` where the backend's HTTP session lives (this loop, or the bridge)."""
        try:
            await self._open_async()
        except BaseException:
            coro.close()
            raise
        if self.backend.bridge.running:
            return await self.backend.bridge.call(coro)
        return await coro

    def close(self) -> None:
        """Close the backend if OmniQ opened it for the blocking API."""
        atexit.unregister(self.close)
        self._sync_open.close()

    async def aclose(self) -> None:
        """Close what OmniQ opened (for async use, and for the blocking API)."""
        await self._async_open.aclose()
        await asyncio.to_thread(self.close)

    def __enter__(self) -> Self:
        self._open_sync()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        await self._open_async()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _same_definition(a: Schedule, b: Schedule) -> bool:
    fields = (
        "schedule_type",
        "func",
        "cron_expression",
        "interval",
        "timestamp",
        "args",
        "kwargs",
        "queue_name",
        "max_runs",
        "ttl",
    )
    return all(getattr(a, f) == getattr(b, f) for f in fields)
