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
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable, Generator, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ..backend.errors import ConflictError, StorageError
from ..backend.index import result_index, worker_index
from ..backend.layout import Layout
from ..models import (
    EventType,
    ResultStatus,
    TaskEvent,
    TaskResult,
    TaskStatus,
    utcnow,
)
from ..runtime.omniq import OmniQ
from ..runtime.registry import TaskOptions, submit_task, task_name
from ..runtime.scheduler import Scheduler
from ..runtime.worker import Worker, current_task

logger = logging.getLogger(__name__)

SUPPORTED_CURRENCIES = ("EUR", "USD", "GBP", "JPY", "CHF")
_SLOW_MX = "slow-mx.example"
_DELETE_CONCURRENCY = 16


# -- the fleet's task functions (module level: their names are stable across processes) --------


async def charge_card(
    order_id: str, amount_cents: int, currency: str, work_ms: int
) -> dict[str, Any]:
    """Charge an order; refuses unsupported currencies and non-positive amounts (ValueError)."""
    await asyncio.sleep(work_ms / 1000)
    if currency not in SUPPORTED_CURRENCIES:
        raise ValueError(f"order {order_id}: currency {currency!r} is not supported")
    if amount_cents <= 0:
        raise ValueError(f"order {order_id}: amount must be positive, got {amount_cents}")
    return {"order_id": order_id, "charged_cents": amount_cents, "currency": currency}


async def fraud_check(order_id: str, score: int, work_ms: int) -> dict[str, Any]:
    """Score an order (always succeeds)."""
    await asyncio.sleep(work_ms / 1000)
    return {"order_id": order_id, "score": score, "flagged": score > 80}


def resize_image(image_id: str, width: int, work_ms: int) -> dict[str, Any]:
    """A CPU-ish sync task (runs in a worker thread)."""
    time.sleep(work_ms / 1000)
    return {"image_id": image_id, "width": width, "bytes": width * 731}


async def lookup_customer(customer_id: str, work_ms: int) -> dict[str, Any]:
    """KeyError for customers that do not exist (ids starting ``cus_gone``)."""
    await asyncio.sleep(work_ms / 1000)
    if customer_id.startswith("cus_gone"):
        raise KeyError(customer_id)
    return {
        "customer_id": customer_id,
        "tier": ("free", "pro", "team")[zlib.crc32(customer_id.encode()) % 3],
    }


async def fetch_exchange_rates(provider: str, outage_attempts: int, work_ms: int) -> dict[str, Any]:
    """Fails with ConnectionError on its first ``outage_attempts`` attempts, then succeeds."""
    await asyncio.sleep(work_ms / 1000)
    task = current_task()
    attempt = task.retry_count if task is not None else outage_attempts
    if attempt < outage_attempts:
        raise ConnectionError(f"{provider}: connection reset by peer (attempt {attempt + 1})")
    return {"provider": provider, "rates": len(SUPPORTED_CURRENCIES), "attempts": attempt + 1}


def send_email(to: str, template: str, work_ms: int) -> dict[str, Any]:
    """A sync task; the mail server of ``slow-mx.example`` never answers (TimeoutError)."""
    time.sleep(work_ms / 1000)
    if to.endswith("@" + _SLOW_MX):
        raise TimeoutError(f"SMTP server for {_SLOW_MX} did not answer within 30 s")
    return {"to": to, "template": template, "message_id": f"<{zlib.crc32(to.encode()):08x}@mail>"}


def build_report(name: str, rows: int, work_ms: int) -> dict[str, Any]:
    """A slow sync task."""
    time.sleep(work_ms / 1000)
    return {"report": name, "rows": rows}


async def export_csv(dataset: str, rows: int, work_ms: int) -> dict[str, Any]:
    """A slow async task; the ``audit-log`` export runs out of disk (OSError)."""
    await asyncio.sleep(work_ms / 1000)
    if dataset == "audit-log":
        raise OSError(28, "No space left on device", f"/exports/{dataset}.csv")
    return {"dataset": dataset, "rows": rows}


async def cleanup_sessions(max_age_minutes: int) -> int:
    """A scheduled chore."""
    await asyncio.sleep(0.05)
    return max_age_minutes * 3


async def sync_inventory(warehouse: str) -> dict[str, Any]:
    """A scheduled chore."""
    await asyncio.sleep(0.1)
    return {"warehouse": warehouse, "skus": 1200}


def send_digest(audience: str) -> str:
    """A scheduled chore (sync)."""
    time.sleep(0.05)
    return f"digest sent to {audience}"


async def backup_database(target: str) -> str:
    """A scheduled chore, paused in the demo."""
    await asyncio.sleep(0.2)
    return f"backup written to {target}"


# -- the workload ------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueProfile:
    name: str
    priority: int
    rate: float  # tasks per second at speed 1


QUEUES: tuple[QueueProfile, ...] = (
    QueueProfile("critical", 10, 0.4),
    QueueProfile("default", 0, 1.0),
    QueueProfile("emails", 5, 0.7),
    QueueProfile("reports", 0, 0.1),
)

# (queues, concurrency) of each simulated worker.
WORKERS: tuple[tuple[tuple[str, ...], int], ...] = (
    (("critical", "default", "emails", "reports"), 4),
    (("critical", "default", "emails"), 3),
    (("reports", "default"), 2),
)

_MAX_RETRIES = {"fetch_exchange_rates": 3, "send_email": 2, "charge_card": 1}


@dataclass(frozen=True)
class PlannedTask:
    """One task of the workload, decided in advance by the seeded generator."""

    gap_s: float  # wait before enqueueing it (already divided by speed)
    task_id: str | None
    queue: str
    func: str
    kwargs: dict[str, Any] = field(hash=False)
    outcome: str  # "success", "retried", or the exception type it ends with
    work_ms: int


def _work(rng: random.Random, low_ms: int, high_ms: int, speed: float) -> int:
    return max(1, int(rng.uniform(low_ms, high_ms) / speed))


def _choose(
    rng: random.Random, profile: QueueProfile, speed: float
) -> tuple[Callable[..., Any], dict[str, Any], str]:
    """A function, its keyword arguments and the outcome they lead to."""
    roll = rng.random()
    n = rng.randrange(10_000, 99_999)
    if profile.name == "critical":
        if roll < 0.55:
            bad = rng.random() < 0.15
            currency = "XXX" if bad else rng.choice(SUPPORTED_CURRENCIES)
            args = {
                "order_id": f"ord_{n}",
                "amount_cents": rng.randrange(199, 49_999),
                "currency": currency,
                "work_ms": _work(rng, 30, 200, speed),
            }
            return charge_card, args, "ValueError" if bad else "success"
        args = {
            "order_id": f"ord_{n}",
            "score": rng.randrange(0, 100),
            "work_ms": _work(rng, 20, 120, speed),
        }
        return fraud_check, args, "success"
    if profile.name == "default":
        if roll < 0.4:
            args = {
                "image_id": f"img_{n}",
                "width": rng.choice((320, 640, 1280, 1920)),
                "work_ms": _work(rng, 50, 400, speed),
            }
            return resize_image, args, "success"
        if roll < 0.7:
            gone = rng.random() < 0.2
            args = {
                "customer_id": f"cus_{'gone_' if gone else ''}{n}",
                "work_ms": _work(rng, 20, 150, speed),
            }
            return lookup_customer, args, "KeyError" if gone else "success"
        outage = rng.choices((0, 1, 2, 9), weights=(55, 20, 15, 10))[0]
        args = {
            "provider": rng.choice(("ecb", "fed", "boe")),
            "outage_attempts": outage,
            "work_ms": _work(rng, 50, 300, speed),
        }
        outcome = (
            "success"
            if outage == 0
            else (
                "retried" if outage <= _MAX_RETRIES["fetch_exchange_rates"] else "ConnectionError"
            )
        )
        return fetch_exchange_rates, args, outcome
    if profile.name == "emails":
        slow = roll < 0.12
        domain = _SLOW_MX if slow else rng.choice(("example.com", "example.org", "mail.example"))
        args = {
            "to": f"user{n}@{domain}",
            "template": rng.choice(("welcome", "receipt", "password-reset", "weekly")),
            "work_ms": _work(rng, 40, 250, speed),
        }
        return send_email, args, "TimeoutError" if slow else "success"
    if roll < 0.6:
        args = {
            "name": rng.choice(("sales-daily", "churn", "inventory", "ledger")),
            "rows": rng.randrange(1_000, 500_000),
            "work_ms": _work(rng, 1_500, 4_000, speed),
        }
        return build_report, args, "success"
    dataset = rng.choice(("orders", "customers", "audit-log", "invoices"))
    args = {
        "dataset": dataset,
        "rows": rng.randrange(1_000, 200_000),
        "work_ms": _work(rng, 1_000, 3_000, speed),
    }
    return export_csv, args, "OSError" if dataset == "audit-log" else "success"


def workload(seed: int | None, speed: float = 1.0) -> Iterator[PlannedTask]:
    """The endless task sequence of a fleet; the same ``seed`` gives the same sequence."""
    rng = random.Random(seed)
    total = sum(q.rate for q in QUEUES) * speed
    weights = [q.rate for q in QUEUES]
    while True:
        gap = rng.expovariate(total)
        profile = rng.choices(QUEUES, weights=weights)[0]
        func, kwargs, outcome = _choose(rng, profile, speed)
        task_id = str(uuid.UUID(int=rng.getrandbits(128), version=4)) if seed is not None else None
        yield PlannedTask(
            gap, task_id, profile.name, task_name(func), kwargs, outcome, int(kwargs["work_ms"])
        )


# -- the fleet ---------------------------------------------------------------------------------


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

    def __init__(
        self,
        backend: Any,
        *,
        seed: int | None = None,
        speed: float = 1.0,
        clock: Callable[[], datetime] | None = None,
        lease_seconds: float = 15.0,
        heartbeat_interval: float = 5.0,
        retention: timedelta = timedelta(minutes=3),
        failed_retention: timedelta = timedelta(minutes=15),
        event_retention: timedelta = timedelta(minutes=5),
        cleanup_interval: float = 20.0,
        max_queue_depth: int = 150,
        shutdown_grace: float = 2.0,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.backend = backend
        self.seed = seed
        self.speed = float(speed)
        self.clock = clock or utcnow
        self.lease_seconds = lease_seconds
        self.heartbeat_interval = heartbeat_interval
        self.retention = retention
        self.failed_retention = failed_retention
        self.event_retention = event_retention
        self.cleanup_interval = cleanup_interval
        self.max_queue_depth = max_queue_depth
        self.shutdown_grace = shutdown_grace
        self.omniq = OmniQ(backend)
        self.produced: list[str] = []
        self.skipped = 0
        self.workers: list[Worker] = []
        tag_rng = random.Random(f"{seed}-ids") if seed is not None else random.Random()
        self.tag = f"{tag_rng.getrandbits(16):04x}"
        self._register()
        self._stopping: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested = False
        self._finished: asyncio.Event | None = None

    def _register(self) -> None:
        slow = 1.0 / self.speed
        # (queue, priority, retries unless _MAX_RETRIES says otherwise, functions)
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
                # Reports never retry; the others as _MAX_RETRIES plans their failures.
                tries = 0 if retries is None else _MAX_RETRIES.get(func.__name__, retries)
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
                worker_id=f"demo-{self.tag}-{i + 1}",
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

    # -- keeping the bucket small ----------------------------------------------------------------

    async def cleanup(self, now: datetime | None = None) -> int:
        """Delete finished tasks, results, events and stopped workers past their retention.

        Completed tasks go after ``retention``, failed/cancelled/expired ones after
        ``failed_retention`` (so an operator has time to retry them), events after
        ``event_retention``. Decided on listings alone; returns how many objects went.
        """
        now = now or utcnow()
        store, layout = self.backend.store, self.backend.layout
        queue = self.backend.async_task_storage
        results = self.backend.async_result_storage
        task_infos, result_infos, worker_infos = await asyncio.gather(
            store.list(layout.tasks), store.list(layout.results), store.list(layout.workers)
        )
        # A task's status is its state record's (docs/architecture.md, "Task status is derived
        # from which objects exist"): the record's index decides, the task's own does not.
        stored_tasks = {Layout.name_of(info.key) for info in task_infos}
        doomed_tasks: list[str] = []
        doomed_results: list[str] = []
        for info in result_infos:
            ridx = result_index(info)
            if ridx is None or not ridx.state.is_final:
                continue
            at = ridx.completed_at or info.updated
            keep = self.retention if ridx.state == TaskStatus.COMPLETED else self.failed_retention
            if at is None or now - at <= keep:
                continue
            # A task goes with its record; a result whose task is gone (history) goes alone.
            (doomed_tasks if ridx.task_id in stored_tasks else doomed_results).append(ridx.task_id)
        doomed_workers: list[str] = []
        for info in worker_infos:
            widx = worker_index(info)
            if (
                widx is not None
                and widx.state == "stopped"
                and widx.last_seen is not None
                and now - widx.last_seen > self.event_retention
            ):
                doomed_workers.append(info.key)
        gate = asyncio.Semaphore(_DELETE_CONCURRENCY)

        async def bounded(coro: Any) -> bool:
            async with gate:
                return bool(await coro)

        deleted = await asyncio.gather(
            *(bounded(queue.delete_task(t)) for t in doomed_tasks),
            *(bounded(results.delete(t)) for t in doomed_results),
            *(bounded(store.delete(k)) for k in doomed_workers),
        )
        events = await self.backend.async_event_storage.cleanup_old_events(
            now - self.event_retention
        )
        return sum(1 for d in deleted if d) + int(events)

    # -- history -------------------------------------------------------------------------------

    async def seed_history(self, minutes: int = 5, per_minute: int = 12) -> int:
        """Write ``minutes`` of past results and events (ending now) so charts start filled.

        Only results and events are written (the tasks of the past are gone, as the janitor
        would have deleted them). Returns how many results were written.
        """
        if minutes < 1 or per_minute < 1:
            raise ValueError("minutes and per_minute must be at least 1")
        rng = random.Random(f"{self.seed}-history") if self.seed is not None else random.Random()
        now = self.clock()
        start = now - timedelta(minutes=minutes)
        count = minutes * per_minute
        spacing = (minutes * 60.0) / count
        sequence = workload(rng.getrandbits(32), 1.0)
        gate = asyncio.Semaphore(_DELETE_CONCURRENCY)

        async def write(i: int, item: PlannedTask) -> None:
            task_id = str(uuid.UUID(int=rng_ids[i], version=4))
            created = start + timedelta(seconds=i * spacing)
            done = created + timedelta(milliseconds=50 + item.work_ms)
            failed = item.outcome not in ("success", "retried")
            worker = f"demo-{self.tag}-{1 + rng_workers[i] % len(WORKERS)}"
            result = TaskResult(
                task_id=task_id,
                status=ResultStatus.ERROR if failed else ResultStatus.SUCCESS,
                result=None if failed else {"demo": True},
                error=f"{item.outcome} raised by {item.func}" if failed else None,
                error_type=item.outcome if failed else None,
                created_at=created,
                started_at=created + timedelta(milliseconds=50),
                completed_at=done,
                worker_id=worker,
                execution_time=item.work_ms / 1000,
            )
            events = [
                TaskEvent(
                    task_id=task_id,
                    event_type=EventType.ENQUEUED,
                    timestamp=created,
                    queue_name=item.queue,
                ),
                TaskEvent(
                    task_id=task_id,
                    event_type=EventType.DEQUEUED,
                    worker_id=worker,
                    timestamp=created + timedelta(milliseconds=40),
                    queue_name=item.queue,
                ),
                TaskEvent(
                    task_id=task_id,
                    event_type=EventType.FAILED if failed else EventType.COMPLETED,
                    worker_id=worker,
                    timestamp=done,
                    queue_name=item.queue,
                    error_type=result.error_type,
                    error_message=result.error,
                    execution_time=result.execution_time,
                ),
            ]
            async with gate:
                try:
                    await self.backend.async_result_storage.set(result)
                except ConflictError:
                    return  # this seed's history is in the bucket already
                # One batch per task, as a worker's flush would hold them.
                await self.backend.async_event_storage.log_events(events)
            written.append(task_id)

        items = [next(sequence) for _ in range(count)]
        rng_ids = [rng.getrandbits(128) for _ in range(count)]
        rng_workers = [rng.randrange(1_000) for _ in range(count)]
        written: list[str] = []
        async with self.omniq:
            await asyncio.gather(*(write(i, item) for i, item in enumerate(items)))
        return len(written)


class _Stopped:
    """What ``Fleet.stop()`` returns: awaiting it waits until ``run()`` has returned."""

    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet

    def __await__(self) -> Generator[Any, None, None]:
        finished = self._fleet._finished
        if finished is not None:
            yield from finished.wait().__await__()
