"""Fill a bucket the way a busy OmniQ fleet leaves it, and change a share of it afterwards.

For ``n`` tasks (docs/architecture.md, "Layout of a bucket"): the tasks themselves (15%
pending, 2% of them delayed; 5% running, a fifth of those with a lease nobody renews; 60%
completed, 15% failed, 3% cancelled, 2% expired), a queue entry per task that is not final, a
state record (``results/{id}.json``) per task that was claimed or ended, two events per task
spread over the last hour in batches of ``EVENTS_PER_BATCH`` (as workers flush them), 20
schedules and 4 worker heartbeats. Objects are written through the stores' public API
(``enqueue``, the result store's create-only ``set`` of records built by
``backend/lifecycle.py``, ``log_events``, ``save_schedule``); a final task's definition and a
heartbeat are written the way the queue and the worker write them (JSON with index metadata).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from omniq_console.backend import lifecycle
from omniq_console.backend.gcs import GCSBackend
from omniq_console.backend.index import WorkerIndex, task_metadata, worker_metadata
from omniq_console.models import (
    EventType,
    Schedule,
    ScheduleStatus,
    ScheduleType,
    Task,
    TaskEvent,
    TaskResult,
    TaskStatus,
    utcnow,
)

QUEUES = {"default": 0, "emails": 5, "reports": 0, "webhooks": 10}
FUNCS = (
    "app.mail:send_welcome",
    "app.mail:send_digest",
    "app.reports:build_monthly",
    "app.hooks:deliver",
    "app.media:resize_image",
    "app.billing:charge_card",
)
ERRORS = ("TimeoutError", "ValueError", "ConnectionError", "KeyError", "PermissionError")
# (status, share of tasks), in the order the shares are handed out.
STATUS_MIX = (
    (TaskStatus.PENDING, 0.15),
    (TaskStatus.RUNNING, 0.05),
    (TaskStatus.COMPLETED, 0.60),
    (TaskStatus.FAILED, 0.15),
    (TaskStatus.CANCELLED, 0.03),
    (TaskStatus.EXPIRED, 0.02),
)
SCHEDULES = 20
WORKERS = 4
HISTORY = timedelta(hours=1)
EVENTS_PER_BATCH = 20
LEASE_S = 30.0


@dataclass(frozen=True)
class Mix:
    """How many objects of each kind a bucket of ``tasks`` tasks holds."""

    tasks: int
    results: int
    events: int
    schedules: int
    workers: int

    @classmethod
    def for_tasks(cls, n: int, *, tasks_only: bool = False) -> Mix:
        """``tasks_only``: the tasks and their state records, no events, schedules, workers."""
        records = cls(n, 0, 0, 0, 0).status_counts()
        claimed = n - records[TaskStatus.PENDING]
        if tasks_only:
            return cls(tasks=n, results=claimed, events=0, schedules=0, workers=0)
        return cls(tasks=n, results=claimed, events=2 * n, schedules=SCHEDULES, workers=WORKERS)

    def status_counts(self) -> dict[TaskStatus, int]:
        counts: dict[TaskStatus, int] = {}
        left = self.tasks
        for status, share in STATUS_MIX[:-1]:
            counts[status] = min(left, round(self.tasks * share))
            left -= counts[status]
        counts[STATUS_MIX[-1][0]] = left
        return counts

    def objects_by_prefix(self) -> dict[str, int]:
        """Objects under each folder of the layout (queue entries: one per task not final;
        events: one object per batch)."""
        counts = self.status_counts()
        return {
            "tasks": self.tasks,
            "queues": counts[TaskStatus.PENDING] + counts[TaskStatus.RUNNING],
            "results": self.results,
            "events": math.ceil(self.events / EVENTS_PER_BATCH),
            "schedules": self.schedules,
            "workers": self.workers,
        }

    @property
    def total(self) -> int:
        return sum(self.objects_by_prefix().values())


@dataclass(frozen=True, slots=True)
class SeededTask:
    """What the benchmark remembers of a task it wrote (not the model: 100k of those is big)."""

    id: str
    queue: str
    status: TaskStatus
    func: str
    priority: int
    created_at: datetime
    record_generation: int | None = None  # its state record's, once it has one


@dataclass
class SeedReport:
    mix: Mix
    seconds: float
    writes: int
    tasks: list[SeededTask] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.writes / self.seconds if self.seconds else 0.0


Job = Callable[[], Awaitable[Any]]


async def run_jobs(
    jobs: Iterable[Job],
    *,
    concurrency: int,
    total: int | None = None,
    label: str = "",
    progress: Callable[[str], None] | None = None,
) -> int:
    """Run ``jobs`` with at most ``concurrency`` in flight; return how many ran."""
    it: Iterator[Job] = iter(jobs)
    done = 0
    started = time.perf_counter()
    step = max(1, (total or 0) // 10)

    async def worker() -> None:
        nonlocal done
        for job in it:
            await job()
            done += 1
            if progress is not None and total and done % step == 0:
                rate = done / (time.perf_counter() - started)
                progress(f"{label}: {done:,}/{total:,} objects ({rate:,.0f}/s)")

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


def _spread(rng: random.Random, now: datetime, span: timedelta) -> datetime:
    return now - span * rng.random()


def _task_for(rng: random.Random, status: TaskStatus, now: datetime) -> Task:
    """A task's definition (its status lives in its state record, ``_record_for``)."""
    queue = rng.choice(tuple(QUEUES))
    created = _spread(rng, now, HISTORY)
    task = Task(
        func=rng.choice(FUNCS),
        args=(rng.randrange(10**6),),
        kwargs={"user": f"u{rng.randrange(10**5)}", "attempt": 1},
        queue_name=queue,
        priority=QUEUES[queue],
        created_at=created,
    )
    if status == TaskStatus.PENDING and rng.random() < 2 / 15:
        task.run_at = now + timedelta(minutes=rng.randrange(1, 120))
    if status == TaskStatus.EXPIRED:
        task.expires_at = created + timedelta(seconds=1)
    return task


def _record_for(rng: random.Random, task: Task, status: TaskStatus, now: datetime) -> TaskResult:
    """The state record a fleet leaves for a task that was claimed or ended in ``status``."""
    worker = f"worker-{rng.randrange(WORKERS)}"
    if status == TaskStatus.CANCELLED:
        return lifecycle.cancel(task, None, actor="ops@example.com", now=now).record
    if status == TaskStatus.EXPIRED:
        return lifecycle.expire(task, None, now=now).record
    started = (
        now - timedelta(seconds=rng.randrange(1, 60))
        if status == TaskStatus.RUNNING
        else _spread(rng, now, timedelta(minutes=30))
    )
    record = lifecycle.claim(task, None, worker=worker, lease_s=LEASE_S, now=started).record
    record.retry_count = rng.choice((0, 0, 0, 1, 2))
    record.attempt = record.retry_count + 1
    if status == TaskStatus.RUNNING:
        # A fifth of the running tasks belong to a worker that died: nobody renews their lease.
        if rng.random() < 0.2:
            record.lease_expires_at = now - timedelta(seconds=rng.randrange(60, 600))
        return record
    done_at = started + timedelta(seconds=rng.random() * 3)
    seconds = (done_at - started).total_seconds()
    if status == TaskStatus.FAILED:
        kind = rng.choice(ERRORS)
        failure = lifecycle.Failure(
            kind,
            f"{kind}: simulated failure {rng.randrange(1000)}",
            f'Traceback (most recent call last):\n  File "app.py", line 1\n{kind}\n',
            retryable=False,
        )
        return lifecycle.fail_or_retry(
            task, record, failure, worker=worker, execution_time=seconds, now=done_at
        ).record
    value = {"ok": True, "n": rng.randrange(1000)}
    return lifecycle.complete(
        record, worker=worker, value=value, execution_time=seconds, now=done_at
    ).record


_EVENT_KINDS = (
    EventType.ENQUEUED,
    EventType.DEQUEUED,
    EventType.EXECUTING,
    EventType.COMPLETED,
    EventType.FAILED,
    EventType.RETRY,
)


def _event_for(rng: random.Random, task: SeededTask, at: datetime) -> TaskEvent:
    kind = rng.choice(_EVENT_KINDS)
    return TaskEvent(
        task_id=task.id,
        event_type=kind,
        timestamp=at,
        queue_name=task.queue,
        worker_id=f"worker-{rng.randrange(WORKERS)}",
        message=f"{kind.value} {task.func}",
    )


def _schedules(rng: random.Random, now: datetime) -> list[Schedule]:
    out = []
    for i in range(SCHEDULES):
        queue = rng.choice(tuple(QUEUES))
        if i % 2:
            s = Schedule(
                schedule_type=ScheduleType.CRON,
                cron_expression=rng.choice(("*/5 * * * *", "0 * * * *", "15 3 * * *")),
                func=rng.choice(FUNCS),
                queue_name=queue,
                created_at=now - timedelta(days=1),
            )
        else:
            s = Schedule(
                schedule_type=ScheduleType.INTERVAL,
                interval=timedelta(minutes=rng.choice((1, 10, 60))),
                func=rng.choice(FUNCS),
                queue_name=queue,
                created_at=now - timedelta(hours=2),
            )
        if i < 2:
            s.status = ScheduleStatus.PAUSED
        out.append(s)
    return out


def _worker(i: int, now: datetime) -> WorkerIndex:
    return WorkerIndex(
        id=f"worker-{i}",
        state="running",
        last_seen=now,
        started_at=now - timedelta(hours=1),
        host="bench",
        pid=1000 + i,
        queues=tuple(QUEUES),
        running=(),
        processed=1000 * i,
        failed=10 * i,
    )


async def seed(
    backend: GCSBackend,
    mix: Mix,
    *,
    concurrency: int = 64,
    seed_value: int = 7,
    progress: Callable[[str], None] | None = None,
) -> SeedReport:
    """Write ``mix`` into the (open, empty) backend's bucket; return what was written."""
    rng = random.Random(seed_value)
    now = utcnow()
    store, layout = backend.store, backend.layout
    queue = backend.async_task_storage
    results = backend.async_result_storage
    events = backend.async_event_storage
    schedules = backend.async_schedule_storage
    statuses = [s for s, count in mix.status_counts().items() for _ in range(count)]
    rng.shuffle(statuses)
    seeded: list[SeededTask] = []

    async def claimed(at: int, task: Task, status: TaskStatus) -> None:
        if status == TaskStatus.RUNNING:
            await queue.enqueue(task)  # its entry stays while it is not final
        else:
            await store.write(
                layout.task(task.id),
                task.to_json(),
                metadata=task_metadata(task),
                if_generation_match=0,
            )
        record = await results.set(_record_for(rng, task, status, now))
        seeded[at] = replace(seeded[at], record_generation=record.generation)

    def task_jobs() -> Iterator[Job]:
        for status in statuses:
            task = _task_for(rng, status, now)
            seeded.append(
                SeededTask(
                    task.id, task.queue_name, status, task.func, task.priority, task.created_at
                )
            )
            if status == TaskStatus.PENDING:
                yield partial(queue.enqueue, task)
            else:
                yield partial(claimed, len(seeded) - 1, task, status)

    def other_jobs() -> Iterator[Job]:
        # Events oldest first over the last hour, so the newest are a few seconds old; one
        # object per batch, as a worker flushes them.
        for k in range(0, mix.events, EVENTS_PER_BATCH):
            batch = [
                _event_for(rng, rng.choice(seeded), now - HISTORY * (1 - (e + 1) / mix.events))
                for e in range(k, min(k + EVENTS_PER_BATCH, mix.events))
            ]
            yield partial(events.log_events, batch)
        for s in _schedules(rng, now)[: mix.schedules]:
            yield partial(schedules.save_schedule, s)
        for w in range(mix.workers):
            index = _worker(w, now)
            body = json.dumps({"worker_id": index.id, "state": index.state}).encode()
            yield partial(
                store.write, layout.worker(index.id), body, metadata=worker_metadata(index)
            )

    before = store.stats.copy()
    started = time.perf_counter()
    n = mix.tasks
    await run_jobs(task_jobs(), concurrency=concurrency, total=n, label="tasks", progress=progress)
    m = mix.objects_by_prefix()["events"] + mix.schedules + mix.workers
    await run_jobs(
        other_jobs(), concurrency=concurrency, total=m, label="events", progress=progress
    )
    seconds = time.perf_counter() - started
    writes = store.stats.since(before).count["write"]
    return SeedReport(mix=mix, seconds=seconds, writes=writes, tasks=seeded)


@dataclass
class ChangeReport:
    changed: int
    writes: int
    deletes: int
    seconds: float


async def change(
    backend: GCSBackend,
    report: SeedReport,
    fraction: float,
    *,
    concurrency: int = 32,
    seed_value: int = 11,
) -> ChangeReport:
    """What workers do between two polls, to ``fraction`` of the tasks, from another client.

    Pending tasks are claimed (their state record created, a ``dequeued`` event); running ones
    finish (the record swapped to a success, the entry deleted, a ``completed`` event). The
    events go in batches, as workers flush them. Each changed task also changes its record in
    ``report`` so a second call continues from there.
    """
    rng = random.Random(seed_value)
    now = utcnow()
    store, layout = backend.store, backend.layout
    results = backend.async_result_storage
    movable = [
        i
        for i, t in enumerate(report.tasks)
        if t.status in (TaskStatus.PENDING, TaskStatus.RUNNING)
    ]
    k = min(len(movable), max(1, math.ceil(len(report.tasks) * fraction)))
    chosen = rng.sample(movable, k)
    logged: list[TaskEvent] = []

    async def move(i: int) -> None:
        old = report.tasks[i]
        task = Task(
            id=old.id,
            func=old.func,
            queue_name=old.queue,
            priority=old.priority,
            created_at=old.created_at,
        )
        claim = lifecycle.claim(task, None, worker="worker-0", lease_s=LEASE_S, now=now)
        if old.status == TaskStatus.PENDING:
            record, status, kind = claim.record, TaskStatus.RUNNING, EventType.DEQUEUED
        else:
            held = claim.record
            held._generation = old.record_generation
            done = lifecycle.complete(held, worker="worker-0", value=1, execution_time=0.1, now=now)
            record, status, kind = done.record, TaskStatus.COMPLETED, EventType.COMPLETED
        stored = await results.set(record)
        if status == TaskStatus.COMPLETED:
            await store.delete(layout.queue_entry(task.queue_name, task.id))
        report.tasks[i] = replace(old, status=status, record_generation=stored.generation)
        logged.append(TaskEvent(task_id=task.id, event_type=kind, queue_name=task.queue_name))

    def jobs() -> Iterator[Job]:
        for i in chosen:
            yield partial(move, i)

    before = store.stats.copy()
    started = time.perf_counter()
    await run_jobs(jobs(), concurrency=concurrency)
    for at in range(0, len(logged), EVENTS_PER_BATCH):
        await backend.async_event_storage.log_events(logged[at : at + EVENTS_PER_BATCH])
    delta = store.stats.since(before)
    return ChangeReport(
        changed=k,
        writes=delta.count["write"],
        deletes=delta.count["delete"],
        seconds=time.perf_counter() - started,
    )
