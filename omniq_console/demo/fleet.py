"""A simulated OmniQ fleet: a realistic, reproducible workload on a bucket, in one call.

::

    async with GCSBackend("demo", endpoint_url=emulator.url) as backend:
        fleet = Fleet(backend, seed=42)
        await fleet.seed_history(minutes=5)   # so the console is not empty at first frame
        await fleet.run()                     # until fleet.stop() or cancellation

What runs: four queues (``critical`` at priority 10, ``emails`` at 5, ``default``,
``reports``) fed at different rates by one producer; task functions that succeed, fail with
ValueError, KeyError, TimeoutError, ConnectionError or OSError, run slow, or succeed only after
retries; three in-process workers with different queue sets and concurrency; one scheduler
with cron and interval schedules, one of them paused; and a janitor that keeps the bucket
small (the emulator slows down as its bucket grows).

This module runs them; ``tasks`` holds the task functions, ``workload`` the seeded task
sequence, ``janitor`` the retention, ``history`` the past results written at start.

Reproducible: with ``seed=``, the sequence of tasks (queue, function, arguments, task id, the
gap before each) and so every planned outcome is fixed. A task's outcome is decided by its
arguments alone (a ``currency`` of ``"XXX"`` is refused, ``outage_attempts=2`` fails twice
then succeeds), so the same seed gives the same mix whichever worker runs what. ``clock=``
fixes "now" for ``seed_history`` and the schedules' creation, for screenshots.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Generator
from dataclasses import KW_ONLY, dataclass
from datetime import datetime, timedelta
from typing import Any

from ..backend.errors import ConflictError, StorageError
from ..models import utcnow
from ..runtime.omniq import OmniQ
from ..runtime.registry import TaskOptions, submit_task
from ..runtime.scheduler import Scheduler
from ..runtime.worker import Worker
from .history import write_history
from .janitor import Retention, cleanup
from .tasks import (
    backup_database,
    build_report,
    charge_card,
    cleanup_sessions,
    export_csv,
    fetch_exchange_rates,
    fraud_check,
    lookup_customer,
    resize_image,
    send_digest,
    send_email,
    sync_inventory,
)
from .workload import MAX_RETRIES, QUEUES, WORKERS, PlannedTask, workload

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Fleet:
    """Producers, workers, a scheduler and a janitor on one backend.

    The backend is used from the loop that runs the fleet (open it with ``async with``, or
    leave it closed: the fleet opens and closes it). ``speed`` multiplies arrival rates and
    divides work and retry times (``speed=5`` is five times busier). ``seed`` fixes the task
    sequence; ``clock`` fixes "now" for :meth:`seed_history`. Retention: completed tasks (and
    successful results) go after ``retention``, failed ones after ``failed_retention``, events
    after ``event_retention``, checked every ``cleanup_interval`` seconds. The producer skips a
    task while its queue holds ``max_queue_depth`` waiting tasks.
    """

    backend: Any
    _: KW_ONLY
    seed: int | None = None
    speed: float = 1.0
    clock: Callable[[], datetime] = utcnow
    lease_seconds: float = 15.0
    heartbeat_interval: float = 5.0
    retention: timedelta = timedelta(minutes=3)
    failed_retention: timedelta = timedelta(minutes=15)
    event_retention: timedelta = timedelta(minutes=5)
    cleanup_interval: float = 20.0
    max_queue_depth: int = 150
    shutdown_grace: float = 2.0

    def __post_init__(self) -> None:
        if self.speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = float(self.speed)
        self.omniq = OmniQ(self.backend)
        self.produced: list[str] = []
        self.skipped = 0
        self.workers: list[Worker] = []
        tag_rng = random.Random(f"{self.seed}-ids") if self.seed is not None else random.Random()
        self.tag = f"{tag_rng.getrandbits(16):04x}"
        self._register()
        self._stopping: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested = False
        self._finished: asyncio.Event | None = None

    def _register(self) -> None:
        slow = 1.0 / self.speed
        # (queue, priority, retries unless MAX_RETRIES says otherwise, functions)
        groups: list[tuple[str, int, int | None, tuple[Callable[..., Any], ...]]] = [
            ("critical", 10, 1, (charge_card, fraud_check)),
            (
                "default",
                0,
                0,
                (
                    resize_image,
                    lookup_customer,
                    fetch_exchange_rates,
                    cleanup_sessions,
                    sync_inventory,
                ),
            ),
            ("emails", 5, 0, (send_email, send_digest)),
            ("reports", 0, None, (build_report, export_csv, backup_database)),
        ]
        for queue, priority, retries, funcs in groups:
            for func in funcs:
                # Reports never retry; the others as MAX_RETRIES plans their failures.
                tries = 0 if retries is None else MAX_RETRIES.get(func.__name__, retries)
                self.omniq.task(
                    queue=queue, priority=priority, max_retries=tries, retry_delay=slow
                )(func)

    def plan(self, count: int) -> list[PlannedTask]:
        """The first ``count`` tasks this fleet's producer enqueues (in order)."""
        sequence = workload(self.seed, self.speed)
        return [next(sequence) for _ in range(count)]

    # -- setup -------------------------------------------------------------------------------

    async def setup(self) -> list[str]:
        """Create the demo schedules (idempotent: existing ones are kept); returns their ids."""
        interval = max(1.0, 20.0 / self.speed)
        declared: list[dict[str, Any]] = [
            dict(
                func=cleanup_sessions,
                cron="* * * * *",
                schedule_id="demo-cleanup-sessions",
                max_age_minutes=30,
            ),
            dict(
                func=sync_inventory,
                interval=interval,
                schedule_id="demo-sync-inventory",
                warehouse="ams-1",
            ),
            dict(
                func=send_digest,
                cron="0 * * * *",
                schedule_id="demo-hourly-digest",
                audience="ops@example.com",
            ),
            dict(
                func=backup_database,
                cron="0 2 * * *",
                schedule_id="demo-nightly-backup",
                paused=True,
                target="gs://backups/nightly",
            ),
        ]
        ids = []
        for spec in declared:
            func = spec.pop("func")
            try:
                ids.append(await self.omniq.schedule_async(func, **spec))
            except ConflictError as exc:
                # A bucket left by another version of the demo: keep what is there.
                logger.warning("demo schedule kept as it is: %s", exc)
                ids.append(str(spec["schedule_id"]))
        return ids

    # -- running -----------------------------------------------------------------------------

    def stop(self) -> Awaitable[None]:
        """Stop producing; workers finish or release their tasks; ``run()`` then returns.

        Callable from anywhere (a signal handler, another thread). The returned object may be
        awaited, from the loop running the fleet, to wait until ``run()`` has returned.
        """
        self._stop_requested = True
        if self._loop is not None and self._stopping is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stopping.set)
        return _Stopped(self)

    async def run(self) -> None:
        """Run the whole fleet until ``stop()`` (clean) or cancellation (immediate)."""
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._finished = asyncio.Event()
        if self._stop_requested:
            self._stopping.set()
        try:
            async with self.omniq:
                await self._run_parts()
        finally:
            self._finished.set()

    async def _run_parts(self) -> None:
        assert self._stopping is not None
        await self.setup()
        self.workers = [
            self.omniq.worker(
                list(queues),
                concurrency=concurrency,
                worker_id=self._worker_id(i),
                lease_seconds=self.lease_seconds,
                heartbeat_interval=self.heartbeat_interval,
                shutdown_grace=self.shutdown_grace,
            )
            for i, (queues, concurrency) in enumerate(WORKERS)
        ]
        scheduler = self.omniq.scheduler(interval=1.0, scheduler_id=f"demo-{self.tag}-scheduler")
        stoppable: list[Worker | Scheduler] = [*self.workers, scheduler]
        long_running = [asyncio.create_task(part.run()) for part in stoppable]
        chores = [asyncio.create_task(self._produce()), asyncio.create_task(self._janitor())]
        cancelled = False
        try:
            await self._stopping.wait()
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            for chore in chores:
                chore.cancel()
            for part, running in zip(stoppable, long_running, strict=True):
                if cancelled:
                    running.cancel()  # no grace period: workers release what they hold at once
                else:
                    part.stop()
            await asyncio.gather(*chores, return_exceptions=True)
            outcomes = await asyncio.gather(*long_running, return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, Exception):
                    logger.warning("a fleet component ended with an error: %r", outcome)

    async def _produce(self) -> None:
        depths: dict[str, int] = {}
        for n, item in enumerate(workload(self.seed, self.speed)):
            await asyncio.sleep(item.gap_s)
            if n % 20 == 0:
                depths = await self._depths()
            if depths.get(item.queue, 0) >= self.max_queue_depth:
                self.skipped += 1  # the workers are behind: do not grow the bucket without bound
                continue
            task = TaskOptions.of(self.omniq.registry.get(item.func)).build_task(
                item.func,
                (),
                item.kwargs,
                task_id=item.task_id,
                metadata={"demo": True, "planned_outcome": item.outcome},
            )
            try:
                self.produced.append(await submit_task(self.backend, task))
                depths[item.queue] = depths.get(item.queue, 0) + 1
            except ConflictError:
                self.skipped += 1  # this seed ran on this bucket before: the id is taken
            except StorageError as exc:
                logger.warning("demo producer: enqueue failed: %s", exc)

    async def _depths(self) -> dict[str, int]:
        queue = self.backend.async_task_storage
        try:
            sizes = await asyncio.gather(*(queue.get_queue_size(q.name) for q in QUEUES))
        except StorageError:
            return {}
        return {q.name: size for q, size in zip(QUEUES, sizes, strict=True)}

    async def _janitor(self) -> None:
        while True:
            await asyncio.sleep(self.cleanup_interval)
            try:
                await self.cleanup()
            except StorageError as exc:
                logger.warning("demo janitor: %s", exc)

    # -- keeping the bucket small, and its past ---------------------------------------------

    async def cleanup(self, now: datetime | None = None) -> int:
        """Delete finished tasks, results, events and stopped workers past their retention
        (see ``janitor.cleanup``); returns how many objects went."""
        retention = Retention(self.retention, self.failed_retention, self.event_retention)
        return await cleanup(self.backend, retention, now or utcnow())

    async def seed_history(self, minutes: int = 5, per_minute: int = 12) -> int:
        """Write ``minutes`` of past results and events (ending at ``clock()``) so charts start
        filled, as by this fleet's workers (see ``history.write_history``); returns how many
        results were written."""
        async with self.omniq:
            return await write_history(
                self.backend,
                seed=self.seed,
                now=self.clock(),
                worker_ids=[self._worker_id(i) for i in range(len(WORKERS))],
                minutes=minutes,
                per_minute=per_minute,
            )

    def _worker_id(self, index: int) -> str:
        return f"demo-{self.tag}-{index + 1}"


class _Stopped:
    """What ``Fleet.stop()`` returns: awaiting it waits until ``run()`` has returned."""

    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet

    def __await__(self) -> Generator[Any, None, None]:
        finished = self._fleet._finished
        if finished is not None:
            yield from finished.wait().__await__()
