"""The scheduler on the emulator: several schedulers fire each due time exactly once; pause,
max_runs, one-time and ttl behave; a repeated enqueue of one run cannot create a second task."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest
from waiting import wait_until

from omniq_console import OmniQ
from omniq_console.backend.gcs import GCSBackend
from omniq_console.models import EventType, ScheduleStatus, Task, TaskStatus, utcnow
from omniq_console.runtime import Scheduler, run_task_id
from omniq_console.runtime.registry import TaskOptions


@pytest.fixture
async def other_backend(bucket: str) -> AsyncIterator[GCSBackend]:
    """A second client of the same bucket (its own session and body cache)."""
    async with GCSBackend(bucket) as b:
        yield b


async def _tasks(backend: GCSBackend) -> list[Task]:
    return list(await backend.async_task_storage.list_tasks())


async def test_two_schedulers_racing_fire_each_due_time_once(
    backend: GCSBackend, other_backend: GCSBackend
) -> None:
    omniq = OmniQ(backend)
    omniq.task(name="jobs.tick", queue="ticks", priority=4, max_retries=1)(lambda: None)
    schedule_id = await omniq.schedule_async("jobs.tick", interval=60, schedule_id="every-minute")
    schedule = await backend.async_schedule_storage.get_schedule(schedule_id)
    assert schedule is not None and schedule.next_run is not None
    first_due = schedule.next_run
    a, b = Scheduler(backend, scheduler_id="a"), Scheduler(other_backend, scheduler_id="b")
    fired: list[str] = []
    for k in range(4):
        now = first_due + timedelta(seconds=60 * k + 1)
        got_a, got_b = await asyncio.gather(a.tick(now), b.tick(now))
        assert len(got_a) + len(got_b) == 1, (k, got_a, got_b)
        fired += got_a + got_b
    assert a.fired + b.fired == 4
    dues = [first_due + timedelta(seconds=60 * k) for k in range(4)]
    assert fired == [run_task_id(schedule_id, due) for due in dues]
    tasks = await _tasks(backend)
    assert sorted(t.id for t in tasks) == sorted(fired)
    assert all(t.queue_name == "ticks" and t.priority == 4 and t.max_retries == 1 for t in tasks)
    assert all(t.metadata["schedule_id"] == schedule_id for t in tasks)
    stored = await backend.async_schedule_storage.get_schedule(schedule_id)
    assert stored is not None and stored.run_count == 4
    # Each scheduler's events go with its process's next batch (about a second).
    for each in (backend, other_backend):
        await each.async_event_storage.flush()
    events = await backend.async_event_storage.get_events(event_type=EventType.SCHEDULE_FIRED)
    assert sorted(str(e.task_id) for e in events) == sorted(fired)
    assert all(e.schedule_id == schedule_id for e in events)
    enqueued = await backend.async_event_storage.get_events(event_type=EventType.ENQUEUED)
    assert sorted(str(e.task_id) for e in enqueued) == sorted(fired)


async def test_concurrent_scheduler_loops_never_double_fire(
    backend: GCSBackend, other_backend: GCSBackend
) -> None:
    omniq = OmniQ(backend)
    schedule_id = await omniq.schedule_async("jobs.fast", interval=0.4)
    loops = [Scheduler(b, interval=0.05) for b in (backend, other_backend, backend)]
    running = [asyncio.create_task(s.run()) for s in loops]
    # Several due times raced for by three loops (one every 0.4 s).
    await wait_until(lambda: sum(s.fired for s in loops) >= 6, "six runs fired")
    for s in loops:
        s.stop()
    await asyncio.gather(*running)
    tasks = await _tasks(backend)
    dues = Counter(t.metadata["due"] for t in tasks)
    assert len(tasks) >= 4
    assert all(n == 1 for n in dues.values())
    stored = await backend.async_schedule_storage.get_schedule(schedule_id)
    assert stored is not None and stored.run_count == len(tasks)
    assert sum(s.fired for s in loops) == len(tasks)


async def test_paused_schedule_does_not_fire(backend: GCSBackend) -> None:
    omniq = OmniQ(backend)
    paused_id = await omniq.schedule_async("jobs.p", interval=1, paused=True)
    scheduler = Scheduler(backend)
    assert await scheduler.tick(utcnow() + timedelta(hours=1)) == []
    assert await _tasks(backend) == []
    stored = await backend.async_schedule_storage.get_schedule(paused_id)
    assert stored is not None and stored.status == ScheduleStatus.PAUSED and stored.run_count == 0


async def test_max_runs_completes_the_schedule(backend: GCSBackend) -> None:
    omniq = OmniQ(backend)
    schedule_id = await omniq.schedule_async("jobs.m", interval=10, max_runs=2)
    scheduler = Scheduler(backend)
    start = utcnow()
    fired = []
    for k in range(1, 5):
        fired += await scheduler.tick(start + timedelta(seconds=10 * k + 1))
    assert len(fired) == 2
    stored = await backend.async_schedule_storage.get_schedule(schedule_id)
    assert stored is not None and stored.status == ScheduleStatus.COMPLETED
    assert stored.run_count == 2 and stored.next_run is None


async def test_one_time_schedule_fires_once(backend: GCSBackend) -> None:
    omniq = OmniQ(backend)
    at = utcnow() + timedelta(seconds=5)
    schedule_id = await omniq.schedule_async("jobs.once", at=at)
    scheduler = Scheduler(backend)
    assert await scheduler.tick(at - timedelta(seconds=1)) == []
    fired = await scheduler.tick(at + timedelta(seconds=1))
    assert fired == [run_task_id(schedule_id, at)]
    assert await scheduler.tick(at + timedelta(seconds=60)) == []
    stored = await backend.async_schedule_storage.get_schedule(schedule_id)
    assert stored is not None and stored.status == ScheduleStatus.COMPLETED


async def test_expired_schedule_is_completed_not_fired(backend: GCSBackend) -> None:
    omniq = OmniQ(backend)
    schedule_id = await omniq.schedule_async("jobs.ttl", interval=30, ttl=60)
    scheduler = Scheduler(backend)
    assert await scheduler.tick(utcnow() + timedelta(minutes=5)) == []
    stored = await backend.async_schedule_storage.get_schedule(schedule_id)
    assert stored is not None and stored.status == ScheduleStatus.COMPLETED
    assert stored.run_count == 0 and stored.next_run is None
    await backend.async_event_storage.flush()  # the expiry goes with the next event batch
    events = await backend.async_event_storage.get_events(event_type=EventType.EXPIRED)
    assert [e.schedule_id for e in events] == [schedule_id]
    assert await _tasks(backend) == []


async def test_a_run_already_enqueued_is_not_enqueued_twice(backend: GCSBackend) -> None:
    omniq = OmniQ(backend)
    schedule_id = await omniq.schedule_async("jobs.dup", interval=60)
    schedule = await backend.async_schedule_storage.get_schedule(schedule_id)
    assert schedule is not None and schedule.next_run is not None
    due: datetime = schedule.next_run
    # As if an earlier attempt enqueued this run and its answer was lost.
    earlier = TaskOptions().build_task("jobs.dup", task_id=run_task_id(schedule_id, due))
    await backend.async_task_storage.enqueue(earlier)
    assert await Scheduler(backend).tick(due + timedelta(seconds=1)) == []
    tasks = await _tasks(backend)
    assert [t.id for t in tasks] == [earlier.id] and tasks[0].status == TaskStatus.PENDING
    stored = await backend.async_schedule_storage.get_schedule(schedule_id)
    assert stored is not None and stored.run_count == 1 and stored.next_run > due  # type: ignore[operator]


def test_run_ids_are_stable_and_distinct() -> None:
    due = datetime(2026, 1, 1, 12, 0)
    assert run_task_id("s", due) == run_task_id("s", due)
    assert run_task_id("s", due) != run_task_id("s", due + timedelta(minutes=1))
    assert run_task_id("s", due) != run_task_id("t", due)
