"""The simulated fleet on the emulator: a few seconds of it yield results of several outcomes,
events, heartbeats and schedules (one paused); a seed fixes the task mix; history and cleanup
keep the console filled and the bucket small."""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from protocol_helpers import tasks_in
from waiting import wait_until

from omniq_console.backend.gcs import GCSBackend
from omniq_console.backend.index import worker_index
from omniq_console.demo.fleet import Fleet, workload
from omniq_console.models import (
    EventType,
    ResultStatus,
    ScheduleStatus,
    TaskResult,
    TaskStatus,
    utcnow,
)


def test_the_same_seed_gives_the_same_mix() -> None:
    first = [next(x) for x in [workload(7, 2.0)] for _ in range(200)]
    again = [next(x) for x in [workload(7, 2.0)] for _ in range(200)]
    other = [next(x) for x in [workload(8, 2.0)] for _ in range(200)]
    assert first == again
    assert first != other
    # A realistic mix: every queue, several functions, outcomes of several kinds.
    assert set(p.queue for p in first) == {"critical", "default", "emails", "reports"}
    assert len(set(p.func for p in first)) >= 7
    outcomes = Counter(p.outcome for p in first)
    assert {
        "success",
        "retried",
        "ValueError",
        "KeyError",
        "TimeoutError",
        "ConnectionError",
    } <= set(outcomes)
    assert 0.05 < 1 - outcomes["success"] / len(first) < 0.4
    assert all(p.task_id for p in first)
    assert all(p.task_id is None for p in [next(workload(None))])


async def test_fleet_runs_a_realistic_reproducible_workload(backend: GCSBackend) -> None:
    fleet = Fleet(backend, seed=11, speed=5.0, heartbeat_interval=1.0, lease_seconds=5.0)
    running = asyncio.create_task(fleet.run())
    results = backend.async_result_storage
    outcomes: Counter[str] = Counter()
    fired: list[object] = []

    async def mixed() -> bool:
        """Several successes, failures of two kinds, by two workers, and a schedule fired."""
        nonlocal outcomes, fired
        listed = await results.list_results()
        outcomes = Counter(r.error_type or r.status.value for r in listed)
        fired = list(
            await backend.async_event_storage.get_events(event_type=EventType.SCHEDULE_FIRED)
        )
        errors = [k for k in outcomes if k != "success"]
        workers = {r.worker_id for r in listed if r.worker_id}
        return outcomes["success"] >= 5 and len(errors) >= 2 and len(workers) >= 2 and bool(fired)

    await wait_until(mixed, "a mix of outcomes and a fired schedule", within=60, every=1.0)
    await asyncio.wait_for(fleet.stop(), 15)  # awaiting stop() waits for run() to return
    assert running.done()

    # Schedules: cron and interval, one paused.
    schedules = {s.id: s for s in await backend.async_schedule_storage.list_schedules()}
    assert {
        "demo-cleanup-sessions",
        "demo-sync-inventory",
        "demo-hourly-digest",
        "demo-nightly-backup",
    } <= set(schedules)
    assert schedules["demo-nightly-backup"].status == ScheduleStatus.PAUSED
    assert {s.schedule_type.value for s in schedules.values()} == {"cron", "interval"}
    assert [s.status for s in schedules.values()].count(ScheduleStatus.PAUSED) == 1

    # Events of every stage, by the fleet's workers.
    events = await backend.async_event_storage.get_events()
    kinds = Counter(e.event_type for e in events)
    for kind in (
        EventType.ENQUEUED,
        EventType.DEQUEUED,
        EventType.EXECUTING,
        EventType.COMPLETED,
        EventType.FAILED,
    ):
        assert kinds[kind] > 0, kind
    worker_ids = {e.worker_id for e in events if e.worker_id}
    assert worker_ids <= {f"demo-{fleet.tag}-{i}" for i in (1, 2, 3)} and len(worker_ids) >= 2

    # Heartbeats of three workers, stopped.
    beats = [worker_index(i) for i in await backend.store.list(backend.layout.workers)]
    assert sorted(b.id for b in beats if b) == [f"demo-{fleet.tag}-{i}" for i in (1, 2, 3)]
    assert all(b is not None and b.state == "stopped" for b in beats)

    # The tasks enqueued are exactly the seed's plan, in order.
    assert fleet.produced and fleet.skipped == 0
    plan = fleet.plan(len(fleet.produced))
    assert fleet.produced == [p.task_id for p in plan]
    for planned in plan[:10]:
        task = await backend.async_task_storage.get_task(planned.task_id)  # type: ignore[arg-type]
        assert task is not None
        assert (task.func, task.kwargs, task.queue_name) == (
            planned.func,
            planned.kwargs,
            planned.queue,
        )
    # A task that failed did so as planned.
    for planned in plan:
        result = await results.get(planned.task_id)  # type: ignore[arg-type]
        if result is None or result.status != ResultStatus.ERROR:
            continue
        assert result.error_type == planned.outcome

    # Nothing is left running or claimed after a clean stop.
    tasks = await backend.async_task_storage.list_tasks(status=TaskStatus.RUNNING)
    assert list(tasks) == []


async def test_history_is_reproducible_and_cleanup_keeps_the_bucket_small(
    backend: GCSBackend, bucket: str
) -> None:
    fixed = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
    fleet = Fleet(backend, seed=5, clock=lambda: fixed)
    assert await fleet.seed_history(minutes=3, per_minute=6) == 18
    listed = await backend.async_result_storage.list_results()
    assert len(listed) == 18
    assert all(
        fixed - timedelta(minutes=3) <= r.completed_at <= fixed + timedelta(seconds=5)  # type: ignore[operator]
        for r in listed
    )
    minutes = Counter(r.completed_at.replace(second=0, microsecond=0) for r in listed)  # type: ignore[union-attr]
    assert len(minutes) >= 3
    statuses = Counter(r.status for r in listed)
    assert statuses[ResultStatus.SUCCESS] > 0
    events = await backend.async_event_storage.get_events()
    assert len(events) == 18 * 3
    # The same seed and clock give the same history (in another prefix of the bucket).
    async with GCSBackend(bucket, prefix="again/") as other:
        await Fleet(other, seed=5, clock=lambda: fixed).seed_history(minutes=3, per_minute=6)
        again = await other.async_result_storage.list_results()
        assert [(r.task_id, r.status, r.completed_at) for r in again] == [
            (r.task_id, r.status, r.completed_at) for r in listed
        ]

    # Cleanup: finished tasks, results and events past their retention go; the rest stays.
    queue = backend.async_task_storage
    done, failed, waiting = await tasks_in(
        backend, [TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.PENDING], func="x:work"
    )
    later = utcnow() + fleet.retention + timedelta(seconds=1)
    removed = await fleet.cleanup(now=later)
    assert await queue.get_task(done.id) is None
    assert await backend.async_result_storage.get(done.id) is None  # gone with its task
    assert await queue.get_task(failed.id) is not None  # kept for the operator to retry
    assert await queue.get_task(waiting.id) is not None
    # The history (weeks before `later`) is past every retention: results and events go.
    # What stays: the failed task's outcome, and the fresh tasks' events (their audit trail).
    assert [r.task_id for r in await backend.async_result_storage.list_results()] == [failed.id]
    left = {e.task_id for e in await backend.async_event_storage.get_events()}
    assert left == {done.id, failed.id, waiting.id}
    assert removed == 1 + 18 + 18  # the task (with its record), the results, one batch each
    # Recent things stay: a fresh error result is kept for the failed retention.
    await backend.async_result_storage.set(
        TaskResult(task_id="recent", status=ResultStatus.ERROR, completed_at=utcnow())
    )
    assert await fleet.cleanup(now=later) == 0


def _is_async(func: str) -> bool:
    module, _, name = func.partition(":")
    return inspect.iscoroutinefunction(getattr(importlib.import_module(module), name))


async def test_cancelling_the_fleet_releases_what_its_workers_hold(backend: GCSBackend) -> None:
    fleet = Fleet(backend, seed=3, speed=0.5)
    running = asyncio.create_task(fleet.run())
    funcs: dict[str, str] = {}  # task id -> its function, read once
    held: dict[str, str] = {}

    async def holds_an_async_task() -> bool:
        nonlocal held
        look = [t for w in fleet.workers for t in w.running_task_ids]
        for task_id in [t for t in look if t not in funcs]:
            task = await backend.async_task_storage.get_task(task_id)
            assert task is not None
            funcs[task_id] = task.func
        # Read again after the awaits: what the workers hold right now.
        look = [t for w in fleet.workers for t in w.running_task_ids]
        if all(t in funcs for t in look) and any(_is_async(funcs[t]) for t in look):
            held = {t: funcs[t] for t in look}
            return True
        return False

    await wait_until(holds_an_async_task, "the fleet to run an async task", every=0.01)
    running.cancel()  # no await since the look: these tasks are still being run
    with pytest.raises(asyncio.CancelledError):
        await running
    released = {
        e.task_id
        for e in await backend.async_event_storage.get_events(event_type=EventType.ENQUEUED)
        if e.details.get("reason") == "released"
    }
    for task_id, func in held.items():
        task = await backend.async_task_storage.get_task(task_id)
        assert task is not None
        if _is_async(func):
            # Cancelled and given back at once, with an event saying so.
            assert task.status == TaskStatus.PENDING and task.worker_id is None
            assert task_id in released
        else:
            # A sync function cannot be interrupted: never handed back while its thread runs
            # (it finished meanwhile, or it is still running under the worker's lease).
            assert task_id not in released
            assert task.status != TaskStatus.PENDING
    await fleet.stop()  # after the end: returns at once
