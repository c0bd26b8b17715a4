"""Fill a bucket the way a busy OmniQ fleet leaves it, and change a share of it afterwards.

For ``n`` tasks: the tasks themselves (15% pending, 2% of them delayed; 5% running, a fifth of
those with an expired lease; 60% completed, 15% failed, 3% cancelled, 2% expired), a queue
entry per pending task, results for half the tasks, two events per task spread over the last
hour, 20 schedules and 4 worker heartbeats. Objects are written through the stores' public API
where one exists (``enqueue``, ``set``, ``log_event``, ``save_schedule``); a task that is no
longer pending, and a heartbeat, are written the way the queue and the worker write them (the
task's JSON with its index metadata).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from omniq_console.backend.gcs import GCSBackend
from omniq_console.backend.index import WorkerIndex, task_metadata, worker_metadata
from omniq_console.models import (
    EventType,
    ResultStatus,
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
        if tasks_only:
            return cls(tasks=n, results=0, events=0, schedules=0, workers=0)
        return cls(tasks=n, results=n // 2, events=2 * n, schedules=SCHEDULES, workers=WORKERS)

    def status_counts(self) -> dict[TaskStatus, int]:
        counts: dict[TaskStatus, int] = {}
        left = self.tasks
        for status, share in STATUS_MIX[:-1]:
            counts[status] = min(left, round(self.tasks * share))
            left -= counts[status]
        counts[STATUS_MIX[-1][0]] = left
        return counts

    def objects_by_prefix(self) -> dict[str, int]:
        """Objects under each folder of the layout (queue entries: one per pending task)."""
        return {
            "tasks": self.tasks,
            "queues": self.status_counts()[TaskStatus.PENDING],
            "results": self.results,
            "events": self.events,
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
    queue = rng.choice(tuple(QUEUES))
    created = _spread(rng, now, HISTORY)
    task = Task(
        func=rng.choice(FUNCS),
        args=(rng.randrange(10**6),),
        kwargs={"user": f"u{rng.randrange(10**5)}", "attempt": 1},
        queue_name=queue,
        priority=QUEUES[queue],
        created_at=created,
        status=status,
    )
    if status == TaskStatus.PENDING and rng.random() < 2 / 15:
        task.run_at = now + timedelta(minutes=rng.randrange(1, 120))
    if status == TaskStatus.RUNNING:
        task.worker_id = f"worker-{rng.randrange(WORKERS)}"
        task.started_at = now - timedelta(seconds=rng.randrange(1, 60))
        # A fifth of the running tasks belong to a worker that died: their lease is over.
        lease = -rng.randrange(60, 600) if rng.random() < 0.2 else rng.randrange(10, 30)
        task.lease_expires_at = now + timedelta(seconds=lease)
    if status in (TaskStatus.FAILED, TaskStatus.COMPLETED):
        task.retry_count = rng.choice((0, 0, 0, 1, 2))
    return task


def _result_for(rng: random.Random, task: Task, now: datetime) -> TaskResult:
    done_at = _spread(rng, now, timedelta(minutes=30))
    if task.status == TaskStatus.FAILED:
        kind = rng.choice(ERRORS)
        return TaskResult(
            task_id=task.id,
            status=ResultStatus.ERROR,
            error=f"{kind}: simulated failure {rng.randrange(1000)}",
            error_type=kind,
            traceback=f'Traceback (most recent call last):\n  File "app.py", line 1\n{kind}\n',
            started_at=done_at - timedelta(seconds=1),
            completed_at=done_at,
            worker_id=f"worker-{rng.randrange(WORKERS)}",
            execution_time=rng.random() * 3,
        )
    return TaskResult(
        task_id=task.id,
        status=ResultStatus.SUCCESS,
        result={"ok": True, "n": rng.randrange(1000)},
        started_at=done_at - timedelta(seconds=1),
        completed_at=done_at,
        worker_id=f"worker-{rng.randrange(WORKERS)}",
        execution_time=rng.random() * 3,
    )


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
    results_left = mix.results
    failed_first = sorted(range(len(statuses)), key=lambda i: statuses[i] != TaskStatus.FAILED)
    with_result = set()
    for i in failed_first:
        if results_left <= 0:
            break
        if statuses[i] in (TaskStatus.FAILED, TaskStatus.COMPLETED):
            with_result.add(i)
            results_left -= 1

    def task_jobs() -> Iterator[Job]:
        for i, status in enumerate(statuses):
            task = _task_for(rng, status, now)
            seeded.append(
                SeededTask(
                    task.id, task.queue_name, status, task.func, task.priority, task.created_at
                )
            )
            if status == TaskStatus.PENDING:
                yield partial(queue.enqueue, task)
            else:
                yield partial(
                    store.write,
                    layout.task(task.id),
                    task.to_json(),
                    metadata=task_metadata(task),
                    if_generation_match=0,
                )
            if i in with_result:
                yield partial(results.set, _result_for(rng, task, now))

    def other_jobs() -> Iterator[Job]:
        # Events oldest first over the last hour, so the newest are a few seconds old.
        for k in range(mix.events):
            at = now - HISTORY * (1 - (k + 1) / mix.events)
            yield partial(events.log_event, _event_for(rng, rng.choice(seeded), at))
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
    n = mix.tasks + mix.results
    await run_jobs(task_jobs(), concurrency=concurrency, total=n, label="tasks", progress=progress)
    m = mix.events + mix.schedules + mix.workers
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

    Pending tasks are claimed (task RUNNING, entry deleted, a ``dequeued`` event); running
    ones finish (task COMPLETED, a result, a ``completed`` event). Each changed task also
    changes its record in ``report`` so a second call continues from there.
    """
    rng = random.Random(seed_value)
    now = utcnow()
    store, layout = backend.store, backend.layout
    movable = [
        i
        for i, t in enumerate(report.tasks)
        if t.status in (TaskStatus.PENDING, TaskStatus.RUNNING)
    ]
    k = min(len(movable), max(1, math.ceil(len(report.tasks) * fraction)))
    chosen = rng.sample(movable, k)

    def jobs() -> Iterator[Job]:
        for i in chosen:
            old = report.tasks[i]
            if old.status == TaskStatus.PENDING:
                new_status, kind = TaskStatus.RUNNING, EventType.DEQUEUED
            else:
                new_status, kind = TaskStatus.COMPLETED, EventType.COMPLETED
            task = Task(
                id=old.id,
                func=old.func,
                queue_name=old.queue,
                priority=old.priority,
                created_at=old.created_at,
                status=new_status,
                worker_id="worker-0",
                started_at=now,
                lease_expires_at=now + timedelta(seconds=30)
                if new_status == TaskStatus.RUNNING
                else None,
                updated_at=now,
            )
            report.tasks[i] = SeededTask(
                old.id, old.queue, new_status, old.func, old.priority, old.created_at
            )
            yield partial(
                store.write, layout.task(task.id), task.to_json(), metadata=task_metadata(task)
            )
            if old.status == TaskStatus.PENDING:
                yield partial(store.delete, layout.queue_entry(task.queue_name, task.id))
            else:
                result = TaskResult(
                    task_id=task.id, status=ResultStatus.SUCCESS, completed_at=now, result=1
                )
                yield partial(backend.async_result_storage.set, result)
            event = TaskEvent(task_id=task.id, event_type=kind, queue_name=task.queue_name)
            yield partial(backend.async_event_storage.log_event, event)

    before = store.stats.copy()
    started = time.perf_counter()
    await run_jobs(jobs(), concurrency=concurrency)
    delta = store.stats.since(before)
    return ChangeReport(
        changed=k,
        writes=delta.count["write"],
        deletes=delta.count["delete"],
        seconds=time.perf_counter() - started,
    )
