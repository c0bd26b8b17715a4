"""The oracle: a randomized, seeded fleet workload on the emulator, and after each step the
Monitor's snapshot compared with a ground truth built from a fresh listing and the backend's
own read paths (``statuses``, ``get_task``, ``paused_queues``, ``list_schedules``, the
backend's index readers).

Every step goes through the real APIs: ``submit_task`` (enqueue), ``dequeue`` (claim),
``ready_to_write`` + ``lifecycle`` + ``finish`` (the holder's outcome, as the worker writes
it), ``renew_lease``, ``Operator`` (cancel, retry, delete, purge, queue and schedule pause and
resume), ``OmniQ.schedule_async``, ``maintain`` (the reaper: dead leases, expiries), the demo
fleet's retention (``delete_task`` of old final tasks) and heartbeats written with
``worker_metadata`` as the worker writes them. A worker dies by no longer renewing or beating.

Time is a ``FakeClock`` shared by the queue and the Monitor: per-name gaps and leases pass
without real sleeps, and the clock-dependent figures (delayed, stuck, overdue, dead) are
judged at the same instant on both sides.

A mismatch names the step, the action, the field, the expected and the shown value.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from waiting import poll_until

from omniq_console import OmniQ
from omniq_console.backend import lifecycle
from omniq_console.backend.errors import ConflictError, ObjectNotFoundError
from omniq_console.backend.gcs import GCSBackend
from omniq_console.backend.index import (
    WorkerIndex,
    queue_entry_index,
    result_index,
    task_index,
    worker_index,
    worker_metadata,
)
from omniq_console.backend.reaper import LEASE_MARGIN_S
from omniq_console.clock import FakeClock
from omniq_console.models import (
    EventType,
    ResultStatus,
    ScheduleStatus,
    Task,
    TaskEvent,
    TaskStatus,
)
from omniq_console.monitor import Monitor
from omniq_console.monitor.snapshot import Snapshot
from omniq_console.runtime import Operator
from omniq_console.runtime.registry import submit_task

QUEUES = ("default", "mail", "batch")
ERRORS = ("ValueError", "TimeoutError", "KeyError")
ACTOR = "oracle@ops"
LEASE_S = 10.0
WORKER_TIMEOUT_S = 30.0
OVERDUE_GRACE_S = 60.0
RETENTION_S = 20.0
STEP_S = 0.6
"""Fake seconds every step lets pass (a fleet's time does not stand still)."""

FINAL = frozenset(s for s in TaskStatus if s.is_final)


@dataclass(frozen=True)
class Mismatch:
    step: int
    action: str
    field: str
    expected: Any
    shown: Any

    def __str__(self) -> str:
        return (
            f"step {self.step} ({self.action}): {self.field}: expected {self.expected!r}, "
            f"shown {self.shown!r}"
        )


@dataclass
class SimWorker:
    """A worker as the bucket sees it: its claims, renewals, outcomes and heartbeats."""

    id: str
    concurrency: int
    started_at: datetime
    alive: bool = True
    held: dict[str, Task] = field(default_factory=dict)
    processed: int = 0
    failed: int = 0
    beat_generation: int = 0
    beat_at: float | None = None


@dataclass
class Truth:
    """What the bucket holds at ``now``, from listings and the backend's read paths."""

    now: datetime
    statuses: dict[str, TaskStatus]
    tasks: dict[str, int]
    results: dict[str, int]
    orphans: dict[str, int]
    failures: dict[str, int]
    outcomes: dict[str, tuple[str, datetime] | None]
    queues: dict[str, dict[str, Any]]
    stuck: set[str]
    rows: dict[str, dict[str, Any]]
    schedules: dict[str, dict[str, Any]]
    workers: dict[str, dict[str, Any]]
    final_at: dict[str, datetime]
    problems: list[tuple[str, Any, Any]]


async def ground_truth(backend: GCSBackend, now: datetime, touched: set[str]) -> Truth:
    """The truth at ``now``: a fresh listing of every prefix, decoded by the backend's own index
    readers, the backend's derived statuses, and ``get_task`` for the tasks ``touched``."""
    store, layout, queue = backend.store, backend.layout, backend.async_task_storage
    task_infos, entry_infos, result_infos, worker_infos = await asyncio.gather(
        store.list(layout.tasks),
        store.list(layout.queues),
        store.list(layout.results),
        store.list(layout.workers),
    )
    statuses, paused, schedules = await asyncio.gather(
        queue.statuses(),
        queue.paused_queues(),
        backend.async_schedule_storage.list_schedules(),
    )
    defs = {i.id: i for i in (task_index(info) for info in task_infos) if i is not None}
    records = {r.task_id: r for r in (result_index(i) for i in result_infos) if r is not None}
    problems: list[tuple[str, Any, Any]] = []

    tasks = Counter({s.value: 0 for s in TaskStatus})
    for tid in defs:
        tasks[statuses[tid].value] += 1
    # Results and failure groups: the state records of the tasks in the bucket (the same
    # population as ``tasks``); records whose task is gone apart.
    results = Counter({s.value: 0 for s in ResultStatus})
    failures: Counter[str] = Counter()
    orphans: Counter[str] = Counter()
    for tid, r in records.items():
        if tid not in defs:
            orphans[r.status.value] += 1
            continue
        results[r.status.value] += 1
        if r.status == ResultStatus.ERROR:
            failures[r.error_type or "unknown"] += 1

    names: set[str] = set(paused)
    for tid in set(defs) | set(records):
        d, r = defs.get(tid), records.get(tid)
        names.add((d.queue if d else None) or (r.queue if r else None) or "")
    empty = {"pending": 0, "delayed": 0, "running": 0, "expired": 0, "claimed": 0}
    queues: dict[str, dict[str, Any]] = {}
    oldest: dict[str, float] = {}
    entry_ids: set[str] = set()
    for info in entry_infos:
        e = queue_entry_index(info, layout)
        assert e is not None, f"the backend wrote an entry without index: {info.key}"
        entry_ids.add(e.task_id)
        names.add(e.queue)
        stats = queues.setdefault(e.queue, dict(empty))
        r = records.get(e.task_id)
        state = r.state if r is not None else TaskStatus.PENDING
        if e.task_id not in defs and r is None:
            state = TaskStatus.PENDING
        if state == TaskStatus.RUNNING:
            stats["claimed"] += 1
            continue
        if state in FINAL:
            continue  # an entry the reaper has yet to delete: not waiting
        run_at = r.run_at if r is not None and r.run_at is not None else e.run_at
        if e.expires_at is not None and e.expires_at <= now:
            stats["expired"] += 1
        elif run_at is not None and run_at > now:
            stats["delayed"] += 1
        else:
            stats["pending"] += 1
            d = defs.get(e.task_id)
            created = e.created_at or (d.created_at if d else None)
            since = max((t for t in (created, run_at) if t is not None), default=None)
            if since is not None:
                oldest[e.queue] = min(oldest.get(e.queue, since.timestamp()), since.timestamp())
    stuck: set[str] = set()
    for tid, r in records.items():
        if r.state != TaskStatus.RUNNING or (tid not in defs and tid not in entry_ids):
            continue
        d = defs.get(tid)
        q = (d.queue if d else None) or r.queue or ""
        queues.setdefault(q, dict(empty))["running"] += 1
        if r.lease_expires_at is not None and r.lease_expires_at < now:
            stuck.add(tid)
    for q in names:
        stats = queues.setdefault(q, dict(empty))
        pause = paused.get(q)
        stats["paused"] = pause is not None
        stats["paused_by"] = pause.actor if pause is not None else None
        stats["oldest"] = round(max(0.0, now.timestamp() - oldest[q]), 3) if q in oldest else None

    rows: dict[str, dict[str, Any]] = {}
    final_at: dict[str, datetime] = {}
    outcomes: dict[str, tuple[str, datetime] | None] = {}
    for tid, r in records.items():
        # Every outcome seen: final ones, and None for a task running or waiting again.
        if r.state in FINAL and r.completed_at is not None:
            outcomes[tid] = (r.status.value, r.completed_at)
        else:
            outcomes[tid] = None
    for tid, d in defs.items():
        r = records.get(tid)
        rows[tid] = {
            "status": statuses[tid].value,
            "queue": d.queue,
            # Who runs it, or ran it once final; nobody while it waits.
            "worker_id": r.worker_id if r is not None and r.state != TaskStatus.PENDING else None,
            "retry_count": r.retry_count if r is not None else 0,
            "attempt": r.attempt if r is not None else 0,
            "error_type": r.error_type if r is not None else None,
        }
        if r is not None and r.state in FINAL and r.completed_at is not None:
            final_at[tid] = r.completed_at
    # The backend's own read path for the tasks this step touched: the listing-built rows
    # above must say what get_task says.
    for tid in sorted(touched & set(defs)):
        got = await queue.get_task(tid)
        view = (
            {"status": got.status.value, "worker_id": got.worker_id, "retry_count": got.retry_count}
            if got is not None
            else None
        )
        want = {k: rows[tid][k] for k in ("status", "worker_id", "retry_count")}
        if view != want:
            problems.append((f"backend.get_task[{tid}] vs its listing", want, view))

    grace = timedelta(seconds=OVERDUE_GRACE_S)
    sched: dict[str, dict[str, Any]] = {}
    for s in schedules:
        stamp = s.metadata.get("last_operator_action") or {}
        paused_now = s.status == ScheduleStatus.PAUSED
        sched[s.id] = {
            "status": s.status.value,
            "next_run": s.next_run,
            "overdue": s.status == ScheduleStatus.ACTIVE
            and s.next_run is not None
            and s.next_run < now - grace,
            "paused_by": stamp.get("actor") if paused_now else None,
        }

    workers: dict[str, dict[str, Any]] = {}
    for info in worker_infos:
        w = worker_index(info)
        assert w is not None, f"a heartbeat without index: {info.key}"
        age = (now - w.last_seen).total_seconds() if w.last_seen is not None else None
        alive = w.state == "running" and age is not None and age <= WORKER_TIMEOUT_S
        workers[w.id] = {
            "alive": alive,
            "dead": w.state == "running" and not alive,
            "running": sorted(
                tid
                for tid, r in records.items()
                if r.state == TaskStatus.RUNNING and r.worker_id == w.id
            ),
        }
    return Truth(
        now=now,
        statuses=statuses,
        tasks=dict(tasks),
        results=dict(results),
        orphans=dict(orphans),
        failures=dict(failures),
        outcomes=outcomes,
        queues=queues,
        stuck=stuck,
        rows=rows,
        schedules=sched,
        workers=workers,
        final_at=final_at,
        problems=problems,
    )


def compare(
    truth: Truth, snap: Snapshot, ledger: dict[str, tuple[str, datetime]]
) -> list[tuple[str, Any, Any]]:
    """Every figure of ``snap`` that differs from ``truth``: (field, expected, shown).

    ``ledger``: every outcome observed so far (also of tasks deleted since), by task."""
    out: list[tuple[str, Any, Any]] = list(truth.problems)

    def check(name: str, expected: Any, shown: Any) -> None:
        if expected != shown:
            out.append((name, expected, shown))

    check("tasks", truth.tasks, dict(snap.tasks))
    check("results", truth.results, dict(snap.results))
    check("results_without_task", truth.orphans, dict(snap.results_without_task))
    check("failures_by_type", truth.failures, dict(snap.failures_by_type))
    check(
        "failures_by_type (sum) vs results[error]",
        snap.results["error"],
        sum(snap.failures_by_type.values()),
    )
    failed_rows = sum(1 for r in snap.task_rows if r.status == TaskStatus.FAILED.value)
    check(
        "failures_by_type (sum) vs failed task rows",
        failed_rows,
        sum(snap.failures_by_type.values()),
    )
    out.extend(_outcome_mismatches(truth.now, snap, ledger))
    shown_queues = {q.name: q for q in snap.queues}
    check("queues (names)", sorted(truth.queues), sorted(shown_queues))
    for name, want in truth.queues.items():
        q = shown_queues.get(name)
        if q is None:
            continue
        for key in ("pending", "delayed", "running", "expired", "claimed", "paused", "paused_by"):
            check(f"queues[{name}].{key}", want[key], getattr(q, key))
        age = q.oldest_pending_age_s
        check(f"queues[{name}].oldest_pending_age_s", want["oldest"], _round(age))
    check("stuck", sorted(truth.stuck), sorted(s.id for s in snap.stuck))
    shown_rows = {r.id: r for r in snap.task_rows}
    check("task_rows (ids)", sorted(truth.rows), sorted(shown_rows))
    for tid, want in truth.rows.items():
        row = shown_rows.get(tid)
        if row is None:
            continue
        got = {
            "status": row.status,
            "queue": row.queue_name,
            "worker_id": row.worker_id,
            "retry_count": row.retry_count,
            "attempt": row.attempt,
            "error_type": row.error_type,
        }
        for key, value in want.items():
            check(f"task_rows[{tid}].{key}", value, got[key])
    shown_sched = {s.id: s for s in snap.schedules}
    check("schedules (ids)", sorted(truth.schedules), sorted(shown_sched))
    for sid, want in truth.schedules.items():
        s = shown_sched.get(sid)
        if s is None:
            continue
        for key, value in want.items():
            check(f"schedules[{sid}].{key}", value, getattr(s, key))
    shown_workers = {w.id: w for w in snap.workers}
    check("workers (ids)", sorted(truth.workers), sorted(shown_workers))
    for wid, want in truth.workers.items():
        w = shown_workers.get(wid)
        if w is None:
            continue
        check(f"workers[{wid}].alive", want["alive"], w.alive)
        check(f"workers[{wid}].dead", want["dead"], w.dead)
        check(f"workers[{wid}].running", want["running"], sorted(w.running))
    running_rows = sum(1 for r in snap.task_rows if r.status == "running")
    check(
        "running (queues vs task rows)",
        sum(q.running for q in snap.queues),
        running_rows,
    )
    return out


def _outcome_mismatches(
    now: datetime, snap: Snapshot, ledger: dict[str, tuple[str, datetime]]
) -> list[tuple[str, Any, Any]]:
    """The chart, the window counts and the failure rate against every outcome observed."""
    out: list[tuple[str, Any, Any]] = []
    known = snap.outcomes_known_since
    minute = 60.0
    per_minute: Counter[tuple[int, str]] = Counter()
    for status, at in ledger.values():
        if known is None or at.timestamp() // minute >= known.timestamp() // minute:
            per_minute[(int(at.timestamp() // minute), status)] += 1
    for bar in snap.results_per_minute:
        m = int(bar.minute.timestamp() // minute)
        for kind in ("success", "error", "cancelled", "expired"):
            want = per_minute.get((m, kind), 0) if bar.known else 0
            if getattr(bar, kind) != want:
                out.append(
                    (f"results_per_minute[{bar.minute:%H:%M}].{kind}", want, getattr(bar, kind))
                )
    last = int(now.timestamp() // minute)
    # The window starts on a whole minute (outcome_window_s is rounded to 0.1 s).
    start = round((now.timestamp() - snap.outcome_window_s) / minute)
    window = {
        kind: sum(per_minute.get((m, kind), 0) for m in range(start, last + 1))
        for kind in ("success", "error", "cancelled", "expired")
    }
    if window != snap.window_outcomes:
        out.append(("window_outcomes", window, dict(snap.window_outcomes)))
    ok, err = window["success"], window["error"]
    rate = err / (ok + err) if ok + err else 0.0
    if abs(rate - snap.failure_rate) > 1e-9:
        out.append(("failure_rate", rate, snap.failure_rate))
    return out


def _round(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None


class Fleet:
    """A seeded random fleet on one backend: each ``step()`` is one action through the real
    APIs, chosen among those the bucket's state allows."""

    def __init__(
        self, backend: GCSBackend, seed: int, clock: FakeClock, *, max_tasks: int | None = None
    ) -> None:
        self.backend = backend
        self.max_tasks = max_tasks
        self.rng = random.Random(seed)
        self.clock = clock
        backend.async_task_storage.clock = clock
        self.operator = Operator(backend, ACTOR)
        self.omniq = OmniQ(backend)
        self.workers: dict[str, SimWorker] = {}
        self.truth: Truth | None = None
        self.touched: set[str] = set()
        self._next_worker = 0
        self.actions: dict[str, tuple[int, Callable[[], Awaitable[str | None]]]] = {
            "enqueue": (20, self.enqueue),
            "claim": (20, self.claim),
            "complete": (12, self.complete),
            "fail": (12, self.fail),
            "cancel": (4, self.cancel),
            "retry": (4, self.retry),
            "delete": (3, self.delete),
            "purge": (2, self.purge),
            "pause_queue": (2, self.pause_queue),
            "resume_queue": (5, self.resume_queue),
            "add_schedule": (2, self.add_schedule),
            "pause_schedule": (2, self.pause_schedule),
            "resume_schedule": (2, self.resume_schedule),
            "retention": (3, self.retention),
            "worker_death": (1, self.worker_death),
            "worker_start": (1, self.worker_start),
            "reap": (3, self.reap),
            "advance": (6, self.advance),
            "heartbeat": (5, self.heartbeat),
        }

    # -- the walk -----------------------------------------------------------------------------

    async def start(self, workers: int = 2) -> None:
        for _ in range(workers):
            await self.worker_start()

    async def step(self) -> str:
        """One action (another when the state does not allow the one drawn); its label."""
        self.touched = set()
        self.clock.advance(STEP_S)
        names = list(self.actions)
        weights = [self.actions[n][0] for n in names]
        for _ in range(20):
            name = self.rng.choices(names, weights)[0]
            label = await self.actions[name][1]()
            if label is not None:
                await self.backend.async_event_storage.flush()
                return label
        return await self.advance()

    # -- helpers ------------------------------------------------------------------------------

    def _ids(self, *statuses: TaskStatus, queue: str | None = None) -> list[str]:
        truth = self.truth
        if truth is None:
            return []
        return sorted(
            tid
            for tid, s in truth.statuses.items()
            if s in statuses and (queue is None or truth.rows.get(tid, {}).get("queue") == queue)
        )

    def _alive(self) -> list[SimWorker]:
        return [w for w in self.workers.values() if w.alive]

    def _held(self) -> list[tuple[SimWorker, Task]]:
        return [(w, t) for w in self._alive() for t in w.held.values()]

    def _event(self, task: Task, kind: EventType, worker: str | None, **fields: Any) -> None:
        self.backend.async_event_storage.record(
            TaskEvent(
                task_id=task.id,
                event_type=kind,
                worker_id=worker,
                queue_name=task.queue_name,
                **fields,
            )
        )

    async def _beat(self, w: SimWorker, state: str = "running") -> None:
        """A heartbeat as ``Worker._beat`` writes it (metadata from ``worker_metadata``)."""
        if w.beat_at is not None:
            await self.clock.sleep(w.beat_at + 1.0 - self.clock.monotonic())
        index = WorkerIndex(
            id=w.id,
            state=state,
            last_seen=self.clock.now(),
            started_at=w.started_at,
            host=socket.gethostname(),
            pid=os.getpid(),
            queues=QUEUES,
            running=tuple(w.held),
            processed=w.processed,
            failed=w.failed,
            concurrency=w.concurrency,
            running_funcs=tuple(t.func for t in w.held.values()),
        )
        store, layout = self.backend.store, self.backend.layout
        info = await store.write(
            layout.worker(w.id),
            b'{"id": "' + w.id.encode() + b'"}',
            metadata=worker_metadata(index),
            if_generation_match=w.beat_generation,
        )
        w.beat_generation = info.generation
        w.beat_at = self.clock.monotonic()

    async def _renew_all(self) -> None:
        queue = self.backend.async_task_storage
        for w in self._alive():
            for tid, task in list(w.held.items()):
                try:
                    w.held[tid] = await queue.renew_lease(task, LEASE_S)
                except (ConflictError, ObjectNotFoundError, ValueError):
                    del w.held[tid]  # cancelled, deleted or requeued: the worker lets go

    # -- actions ------------------------------------------------------------------------------

    async def enqueue(self) -> str | None:
        if (
            self.max_tasks is not None
            and len(self.truth.rows if self.truth else ()) >= self.max_tasks
        ):
            return None  # a steady bucket: retention has to catch up first
        now = self.clock.now()
        labels = []
        for _ in range(self.rng.randint(1, 3)):
            kind = self.rng.random()
            fields: dict[str, Any] = {}
            if kind < 0.15:
                fields["run_at"] = now + timedelta(seconds=self.rng.uniform(5, 60))
            elif kind < 0.25:
                fields["expires_at"] = now + timedelta(seconds=self.rng.uniform(2, 30))
            task = Task(
                func=self.rng.choice(("jobs:send", "jobs:resize", "jobs:report")),
                args=(self.rng.randint(0, 99),),
                queue_name=self.rng.choice(QUEUES),
                priority=self.rng.choice((0, 0, 0, 5)),
                max_retries=self.rng.randint(0, 2),
                created_at=now,
                **fields,
            )
            await submit_task(self.backend, task)
            self.touched.add(task.id)
            labels.append(task.id[:8])
        return f"enqueue {' '.join(labels)}"

    async def claim(self) -> str | None:
        free = [w for w in self._alive() if len(w.held) < w.concurrency]
        if not free:
            return None
        w = self.rng.choice(free)
        queue = self.backend.async_task_storage
        task = await queue.dequeue(list(QUEUES), worker_id=w.id, lease_seconds=LEASE_S)
        if task is None:
            return None
        w.held[task.id] = task
        self.touched.add(task.id)
        self._event(task, EventType.DEQUEUED, w.id)
        return f"claim {task.id[:8]} by {w.id}"

    async def _finish(self, failure: lifecycle.Failure | None) -> str | None:
        held = self._held()
        if not held:
            return None
        w, task = self.rng.choice(held)
        queue = self.backend.async_task_storage
        del w.held[task.id]
        self.touched.add(task.id)
        record = task.record
        assert record is not None and record.lease_owner == w.id
        await queue.ready_to_write(task)
        now = self.clock.now()
        run_s = round(self.rng.uniform(0.01, 0.3), 3)
        if failure is None:
            transition = lifecycle.complete(
                record, worker=w.id, value=1, execution_time=run_s, now=now
            )
        else:
            transition = lifecycle.fail_or_retry(
                task, record, failure, worker=w.id, execution_time=run_s, now=now
            )
        try:
            done = await queue.finish(task, transition)
        except (ConflictError, ObjectNotFoundError):
            return f"{transition.event.value} of {task.id[:8]} fenced out"
        w.processed += 1
        w.failed += failure is not None
        self._event(done, transition.event, w.id, message=transition.message)
        return f"{transition.event.value} {task.id[:8]} by {w.id}"

    async def complete(self) -> str | None:
        return await self._finish(None)

    async def fail(self) -> str | None:
        return await self._finish(lifecycle.Failure(self.rng.choice(ERRORS), "boom"))

    async def _operator(self, label: str, ids: list[str], act: Any) -> str | None:
        if not ids:
            return None
        tid = self.rng.choice(ids)
        self.touched.add(tid)
        try:
            await act(tid)
        except (ConflictError, ValueError, ObjectNotFoundError) as exc:
            return f"{label} {tid[:8]} refused: {type(exc).__name__}"
        return f"{label} {tid[:8]}"

    async def cancel(self) -> str | None:
        ids = self._ids(TaskStatus.PENDING, TaskStatus.RUNNING)
        return await self._operator("cancel", ids, self.operator.cancel_task)

    async def retry(self) -> str | None:
        return await self._operator("retry", self._ids(*FINAL), self.operator.retry_task)

    async def delete(self) -> str | None:
        return await self._operator("delete", self._ids(*TaskStatus), self.operator.delete_task)

    async def purge(self) -> str | None:
        queue = self.rng.choice(QUEUES)
        ids = self._ids(TaskStatus.PENDING, queue=queue)
        if not ids:
            return None
        outcome = await self.operator.purge_queue(queue, ids)
        self.touched.update(ids)
        return f"purge {queue}: {len(outcome.done)} deleted, {len(outcome.skipped)} skipped"

    def _queues(self, paused: bool) -> list[str]:
        truth = self.truth
        shown = truth.queues if truth is not None else {}
        return [q for q in QUEUES if bool(shown.get(q, {}).get("paused")) == paused]

    async def pause_queue(self) -> str | None:
        queues = self._queues(paused=False)
        if not queues:
            return None
        queue = self.rng.choice(queues)
        try:
            await self.operator.pause_queue(queue)
        except ValueError:  # paused since the truth was taken
            return f"pause queue {queue} refused"
        return f"pause queue {queue}"

    async def resume_queue(self) -> str | None:
        queues = self._queues(paused=True)
        if not queues:
            return None
        queue = self.rng.choice(queues)
        try:
            await self.operator.resume_queue(queue)
        except ValueError:  # resumed since the truth was taken
            return f"resume queue {queue} refused"
        return f"resume queue {queue}"

    async def add_schedule(self) -> str | None:
        if self.truth is not None and len(self.truth.schedules) >= 4:
            return None
        sid = await self.omniq.schedule_async(
            "jobs:report", 1, interval=self.rng.choice((30, 60, 300)), queue=self.rng.choice(QUEUES)
        )
        return f"schedule {sid[:8]}"

    async def _schedule_action(self, status: str, label: str, act: Any) -> str | None:
        if self.truth is None:
            return None
        ids = sorted(s for s, v in self.truth.schedules.items() if v["status"] == status)
        if not ids:
            return None
        sid = self.rng.choice(ids)
        try:
            await act(sid)
        except (ConflictError, ValueError) as exc:  # it changed since the truth was taken
            return f"{label} {sid[:8]} refused: {type(exc).__name__}"
        return f"{label} {sid[:8]}"

    async def pause_schedule(self) -> str | None:
        return await self._schedule_action("active", "pause schedule", self.operator.pause_schedule)

    async def resume_schedule(self) -> str | None:
        return await self._schedule_action(
            "paused", "resume schedule", self.operator.resume_schedule
        )

    async def retention(self) -> str | None:
        """The demo fleet's retention: final tasks older than ``RETENTION_S`` go with their
        state record (``delete_task``)."""
        truth = self.truth
        if truth is None:
            return None
        floor = self.clock.now() - timedelta(seconds=RETENTION_S)
        doomed = sorted(tid for tid, at in truth.final_at.items() if at < floor)
        if not doomed:
            return None
        doomed = doomed[: self.rng.randint(1, 4)]
        for tid in doomed:
            await self.backend.async_task_storage.delete_task(tid)
            self.touched.add(tid)
        return f"retention: {len(doomed)} final tasks deleted"

    async def worker_death(self) -> str | None:
        alive = self._alive()
        if len(alive) < 2:
            return None
        w = self.rng.choice(alive)
        w.alive = False  # no more renewals, heartbeats or outcomes: its leases die
        return f"worker {w.id} dies holding {len(w.held)}"

    async def worker_start(self) -> str | None:
        if len(self._alive()) >= 4:
            return None
        self._next_worker += 1
        w = SimWorker(f"w-{self._next_worker}", self.rng.randint(1, 3), self.clock.now())
        self.workers[w.id] = w
        await self._beat(w)
        return f"worker {w.id} starts ({w.concurrency} slots)"

    async def reap(self) -> str:
        """Two reaper passes a lease apart; live workers renew in between."""
        queue = self.backend.async_task_storage
        await queue.maintain()
        self.clock.advance(LEASE_S + LEASE_MARGIN_S + 0.1)
        await self._renew_all()
        report = await queue.maintain()
        for tid, _ in report.requeued:
            self.touched.add(tid)
        for tid, _ in report.expired:
            self.touched.add(tid)
        for w in self.workers.values():
            if not w.alive:
                w.held.clear()
        return f"reap: {len(report.requeued)} requeued, {len(report.expired)} expired"

    async def advance(self) -> str:
        seconds = round(self.rng.uniform(1, 25), 1)
        self.clock.advance(seconds)
        return f"time +{seconds} s"

    async def heartbeat(self) -> str | None:
        alive = self._alive()
        if not alive:
            return None
        await self._renew_all()
        for w in alive:
            await self._beat(w)
        return f"heartbeats of {len(alive)} workers, leases renewed"


def monitor_for(backend: GCSBackend, clock: FakeClock, **kw: Any) -> Monitor:
    """A Monitor on the fleet's clock, with the oracle's thresholds."""
    return Monitor(
        backend,
        clock=clock.now,
        overdue_grace=OVERDUE_GRACE_S,
        worker_timeout=WORKER_TIMEOUT_S,
        poll_timeout=60.0,
        **kw,
    )


async def run_oracle(
    backend: GCSBackend,
    *,
    seed: int,
    steps: int,
    monitor: Monitor,
    clock: FakeClock,
    fleet: Fleet | None = None,
    settle_s: float = 0.0,
    reconcile: bool = True,
    on_step: Callable[[int, str, Snapshot, Truth], Awaitable[None]] | None = None,
) -> list[Mismatch]:
    """Walk ``steps`` random steps; after each, the snapshot must equal the truth.

    ``settle_s``: how long (real seconds) the monitor may take to show a step (a change feed
    delivers asynchronously): it polls until the snapshot matches or the time is up.
    ``reconcile=False``: polls skip the rolling reconcile, so in feed mode every change must
    come through the feed (the reconcile would otherwise mend what the feed lost). Returns
    the mismatches of the first step that had any (later steps would only repeat them).
    """
    fleet = fleet or Fleet(backend, seed, clock)
    await fleet.start()
    ledger: dict[str, tuple[str, datetime]] = {}
    for n in range(1, steps + 1):
        label = await fleet.step()
        written = time.time()  # the feed pulls on while the truth is listed
        truth = await ground_truth(backend, clock.now(), fleet.touched)
        fleet.truth = truth
        for tid, outcome in truth.outcomes.items():
            if outcome is None:
                ledger.pop(tid, None)  # running or waiting again (an operator retry)
            else:
                ledger[tid] = outcome
        snap, found = await _settle(monitor, truth, ledger, reconcile, settle_s, written)
        if on_step is not None:
            await on_step(n, label, snap, truth)
        if found:
            return [Mismatch(n, label, *f) for f in found]
    return []


async def _settle(
    monitor: Monitor,
    truth: Truth,
    ledger: dict[str, tuple[str, datetime]],
    reconcile: bool,
    within: float,
    written: float,
) -> tuple[Snapshot, list[tuple[str, Any, Any]]]:
    """The monitor's snapshot and its mismatches with ``truth``, taken again until none is
    left or ``within`` seconds passed: the emulators settle (a listing, a notification) on
    their own time.

    With a change feed, each snapshot waits first for a pull that emptied the subscription,
    sent after the step's writes (``written``, POSIX seconds: ``PubSubFeed.caught_up_at``'s
    clock) for the first look, after the previous look for the next: everything published
    by then has arrived, so one snapshot usually settles the step, and a notification the
    emulator publishes later gets the next such pull, not a fixed pace."""
    seen: list[tuple[Snapshot, list[tuple[str, Any, Any]]]] = []
    deadline = time.monotonic() + within

    async def settled() -> bool:
        feed = monitor.feed
        if feed is not None:
            asked = time.time() if seen else written
            # A dead or stalled feed is not waited out here: the snapshot says so (its
            # ``changes`` and ``feed_error``), and the caller checks it.
            with contextlib.suppress(TimeoutError, RuntimeError):
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await feed.wait_until(lambda f: (f.caught_up_at or 0.0) >= asked)
        snap = await monitor.poll(raise_errors=True, reconcile=reconcile)
        seen.append((snap, compare(truth, snap, ledger)))
        return not seen[-1][1]

    await poll_until(settled, within=within)
    return seen[-1]


def oracle_seed() -> int:
    """The seed of this run: ``OMNIQ_ORACLE_SEED`` when set (to replay a failure), else a
    fixed one so CI is reproducible."""
    return int(os.environ.get("OMNIQ_ORACLE_SEED", "20"))
