"""Results, events and schedules on the emulator; CAS conflicts; the body cache."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from omniq_console.backend.errors import ConflictError, ObjectNotFoundError
from omniq_console.backend.gcs import GCSBackend
from omniq_console.backend.index import event_batch_metadata
from omniq_console.backend.listing import BodyCache
from omniq_console.models import (
    EventType,
    ResultStatus,
    Schedule,
    ScheduleStatus,
    ScheduleType,
    Task,
    TaskEvent,
    TaskResult,
    utcnow,
)


def _interval(**kw: Any) -> Schedule:
    return Schedule(
        schedule_type=ScheduleType.INTERVAL, func="m:tick", interval=timedelta(minutes=5), **kw
    )


# -- results ----------------------------------------------------------------------------------


async def test_results_set_replaces_only_what_was_read_and_lists_newest_first(
    backend: GCSBackend,
) -> None:
    rs = backend.async_result_storage
    now = utcnow()
    for i, status in enumerate([ResultStatus.SUCCESS, ResultStatus.ERROR, ResultStatus.SUCCESS]):
        await rs.set(
            TaskResult(task_id=f"t{i}", status=status, completed_at=now + timedelta(seconds=i))
        )
    # The result is the task's state record: never overwritten blind, only replaced as read.
    blind = TaskResult(task_id="t1", status=ResultStatus.SUCCESS, result={"blind": True})
    with pytest.raises(ConflictError):
        await rs.set(blind)
    read = await rs.get("t1")
    assert read is not None and read.status == ResultStatus.ERROR
    stale = read.model_copy(deep=True)
    stale._generation = read.generation
    read.status, read.result = ResultStatus.SUCCESS, {"x": 1}
    read.completed_at = now - timedelta(seconds=1)
    await rs.set(read)
    with pytest.raises(ConflictError):  # swapped on a generation that is gone
        await rs.set(stale)
    got = await rs.get("t1")
    assert got is not None and got.result == {"x": 1} and got.status == ResultStatus.SUCCESS
    assert got.generation == read.generation
    assert [r.task_id for r in await rs.list_results()] == ["t2", "t0", "t1"]
    assert [r.task_id for r in await rs.list_results(status="success", limit=2)] == ["t2", "t0"]
    assert await rs.list_results(status=ResultStatus.ERROR) == []
    assert await rs.delete("t0") is True and await rs.delete("t0") is False
    assert await rs.get("t0") is None


async def test_cleanup_expired_results_decides_on_metadata(backend: GCSBackend) -> None:
    rs = backend.async_result_storage
    old = utcnow() - timedelta(hours=2)
    # Outcomes (a pending record is a waiting task's state, not a result to list).
    done = ResultStatus.SUCCESS
    await rs.set(TaskResult(task_id="old", status=done, completed_at=old, ttl=timedelta(hours=1)))
    await rs.set(
        TaskResult(task_id="fresh", status=done, completed_at=utcnow(), ttl=timedelta(hours=1))
    )
    await rs.set(TaskResult(task_id="forever", status=done))
    backend.cache.clear()
    before = backend.store.stats.copy()
    assert await rs.cleanup_expired_results() == 1
    used = backend.store.stats.since(before)
    # One delete sent: "old" was written within its second, so under GCS's per-name limit
    # that delete may meet 429s and be retried (it is conditioned, so retrying is safe).
    assert used.count["get"] == 0 and used.count["delete"] - used.rate_limited == 1
    assert {r.task_id for r in await rs.list_results()} == {"fresh", "forever"}


# -- events -----------------------------------------------------------------------------------


async def test_events_filter_on_metadata_and_read_only_what_is_returned(bucket: str) -> None:
    async with GCSBackend(bucket, cache_timeout=0) as backend:
        es = backend.async_event_storage
        base = utcnow() - timedelta(minutes=10)
        logged = []
        for i in range(8):
            event = TaskEvent(
                task_id="a" if i % 2 else "b",
                event_type=EventType.COMPLETED if i % 3 else EventType.FAILED,
                timestamp=base + timedelta(minutes=i),
            )
            logged.append(await es.log_event(event))
        await es.log_event(logged[0])  # the same event again (a retried call) is not a new one
        with pytest.raises(ConflictError, match="exists already"):
            await es.log_event(TaskEvent(id=logged[0].id, event_type=EventType.RETRY))
        everything = await es.get_events()
        assert [e.id for e in everything] == [e.id for e in logged]  # oldest first
        before = backend.store.stats.copy()
        for_a = await es.get_events(task_id="a", limit=2)
        used = backend.store.stats.since(before)
        assert [e.id for e in for_a] == [logged[1].id, logged[3].id]
        assert used.count["list"] == 1 and used.count["get"] == 2
        window = await es.get_events(
            event_type="completed",
            start_time=base + timedelta(minutes=2),
            end_time=base + timedelta(minutes=5),
        )
        assert [e.id for e in window] == [logged[2].id, logged[4].id, logged[5].id]
        assert await es.cleanup_old_events(base + timedelta(minutes=3)) == 3
        assert await es.cleanup_old_events(timedelta(minutes=6, seconds=30)) == 1
        assert [e.id for e in await es.get_events()] == [e.id for e in logged[4:]]


async def test_event_batches_are_read_only_when_their_index_may_match(bucket: str) -> None:
    async with GCSBackend(bucket, cache_timeout=0) as backend:
        es = backend.async_event_storage
        base = utcnow() - timedelta(minutes=10)
        first = [
            TaskEvent(task_id="a", event_type=EventType.ENQUEUED, timestamp=base),
            TaskEvent(
                task_id="b", event_type=EventType.COMPLETED, timestamp=base + timedelta(minutes=1)
            ),
        ]
        second = [
            TaskEvent(
                task_id="c", event_type=EventType.FAILED, timestamp=base + timedelta(minutes=5)
            )
        ]
        keys = [await es.log_events(first), await es.log_events(second)]
        assert await es.log_events([]) is None
        # One object per batch, listed in the order they were written.
        assert [i.key for i in await backend.store.list(backend.layout.events)] == keys
        for query, expected in (
            ({"task_id": "c"}, ["c"]),
            ({"event_type": "completed"}, ["b"]),
            ({"start_time": base + timedelta(minutes=4)}, ["c"]),
            ({"end_time": base + timedelta(seconds=30)}, ["a"]),
        ):
            before = backend.store.stats.copy()
            found = await es.get_events(**query)
            used = backend.store.stats.since(before)
            assert [e.task_id for e in found] == expected, query
            assert used.count["get"] == 1, query  # the other batch's index ruled it out
        # The runtime's way: buffered, one batch per flush.
        es.record(TaskEvent(task_id="d", event_type=EventType.RETRY))
        es.record(TaskEvent(task_id="d", event_type=EventType.DEQUEUED))
        assert es.batcher.pending == 2
        assert await es.flush() == 2 and es.batcher.pending == 0
        assert len(await backend.store.list(backend.layout.events)) == 3
        assert [e.event_type for e in await es.get_events(task_id="d")] == [
            EventType.RETRY,
            EventType.DEQUEUED,
        ]
        # A batch goes once its newest event is older than the cutoff.
        assert await es.cleanup_old_events(base + timedelta(minutes=2)) == 1
        assert [e.task_id for e in await es.get_events()] == ["c", "d", "d"]


async def test_a_batch_holding_other_than_its_index_says_is_reported(backend: GCSBackend) -> None:
    # Found by the fuzz of tests/test_reliability_badinput.py: a batch whose index names a
    # failed event of a task, whose body holds none, was neither listed nor reported.
    es = backend.async_event_storage
    # The index of a batch of one failed event, over a body holding none (written once: an
    # overwrite within a second is refused by GCS's per-name limit under --gcs-rules).
    indexed = event_batch_metadata("b-1", [TaskEvent(task_id="gone", event_type=EventType.FAILED)])
    key = backend.layout.event("b-1")
    await backend.store.write(key, b'{"schema_version": 1, "events": []}', metadata=indexed)
    found = await es.get_events(task_id="gone", event_type="failed")
    assert list(found) == []
    assert [(u.key, u.reason) for u in found.unreadable] == [
        (key, "events by its index: 1, in its body: 0")
    ]


# -- schedules --------------------------------------------------------------------------------


async def test_schedule_save_get_update_delete(backend: GCSBackend) -> None:
    ss = backend.async_schedule_storage
    schedule = _interval()
    await ss.save_schedule(schedule)
    assert schedule.generation is not None
    with pytest.raises(ConflictError, match="exists already"):
        await ss.save_schedule(_interval(id=schedule.id))
    got = await ss.get_schedule(schedule.id)
    assert got is not None and got.interval == timedelta(minutes=5)
    got.metadata = {"owner": "ops"}
    await ss.update_schedule(got)
    again = await ss.get_schedule(schedule.id)
    assert again is not None and again.metadata == {"owner": "ops"}
    with pytest.raises(ValueError, match="save_schedule"):
        await ss.update_schedule(_interval())
    assert await ss.delete_schedule(schedule.id) is True
    assert await ss.delete_schedule(schedule.id) is False
    assert await ss.get_schedule(schedule.id) is None
    with pytest.raises(ObjectNotFoundError):
        await ss.pause_schedule(schedule.id)


async def test_two_writers_one_schedule_no_lost_update(backend: GCSBackend) -> None:
    ss = backend.async_schedule_storage
    schedule = _interval()
    await ss.save_schedule(schedule)
    first = await ss.get_schedule(schedule.id)
    second = await ss.get_schedule(schedule.id)
    assert first is not None and second is not None
    first.metadata = {"writer": "first"}
    second.metadata = {"writer": "second"}
    outcomes = await asyncio.gather(
        ss.update_schedule(first), ss.update_schedule(second), return_exceptions=True
    )
    conflicts = [o for o in outcomes if isinstance(o, ConflictError)]
    winners = [o for o in outcomes if isinstance(o, Schedule)]
    assert len(conflicts) == 1 and len(winners) == 1
    assert schedule.id in str(conflicts[0])
    stored = await ss.get_schedule(schedule.id)
    assert stored is not None and stored.metadata == winners[0].metadata


async def test_pause_resume_and_ready(backend: GCSBackend) -> None:
    ss = backend.async_schedule_storage
    due = _interval(created_at=utcnow() - timedelta(minutes=6))
    later = _interval()
    await ss.save_schedule(due)
    await ss.save_schedule(later)
    assert [s.id for s in await ss.get_ready_schedules()] == [due.id]
    stale = await ss.get_schedule(due.id)
    paused = await ss.pause_schedule(due.id)
    assert paused.status == ScheduleStatus.PAUSED
    assert await ss.get_ready_schedules() == []
    assert [s.id for s in await ss.list_schedules(status="paused")] == [due.id]
    assert {s.id for s in await ss.list_schedules()} == {due.id, later.id}
    # A writer holding a copy from before the pause loses; the pause is not overwritten.
    assert stale is not None
    stale.metadata = {"late": True}
    with pytest.raises(ConflictError):
        await ss.update_schedule(stale)
    resumed = await ss.resume_schedule(due.id)
    assert resumed.status == ScheduleStatus.ACTIVE
    assert resumed.next_run is not None and resumed.next_run > utcnow()
    assert await ss.get_ready_schedules(now=utcnow() + timedelta(minutes=6)) != []
    assert [s.id for s in await ss.list_schedules(status=ScheduleStatus.ACTIVE)] != []


async def test_concurrent_pause_and_resume_both_apply(backend: GCSBackend) -> None:
    # The intent is absolute: racing pauses all succeed by re-reading, none reports a conflict.
    ss = backend.async_schedule_storage
    schedule = _interval()
    await ss.save_schedule(schedule)
    done = await asyncio.gather(*(ss.pause_schedule(schedule.id) for _ in range(3)))
    assert all(s.status == ScheduleStatus.PAUSED for s in done)
    stored = await ss.get_schedule(schedule.id)
    assert stored is not None and stored.status == ScheduleStatus.PAUSED


# -- the body cache ---------------------------------------------------------------------------


async def test_listing_bodies_are_cached_by_generation(bucket: str) -> None:
    async with GCSBackend(bucket, cache_timeout=300) as writer, GCSBackend(bucket) as reader:
        q = writer.async_task_storage
        ids = [
            await q.enqueue(Task(func="m:f", created_at=utcnow() - timedelta(seconds=9 - i)))
            for i in range(3)
        ]
        before = reader.store.stats.copy()
        assert [t.id for t in await reader.async_task_storage.list_tasks()] == ids
        assert reader.store.stats.since(before).count["get"] == 3
        before = reader.store.stats.copy()
        assert [t.id for t in await reader.async_task_storage.list_tasks()] == ids
        assert reader.store.stats.since(before).count["get"] == 0  # same generations: no GET
        changed = await q.get_task(ids[1])
        assert changed is not None
        changed.priority = 4
        await q.update_task(changed)
        before = reader.store.stats.copy()
        listed = await reader.async_task_storage.list_tasks()
        assert reader.store.stats.since(before).count["get"] == 1  # only the changed one
        assert listed[1].priority == 4
        listed[1].priority = 99  # callers get copies: the cache is not changed through them
        again = await reader.async_task_storage.list_tasks()
        assert again[1].priority == 4


def test_body_cache_drops_unused_entries_and_disables_at_zero() -> None:
    now = [0.0]
    cache = BodyCache(10, clock=lambda: now[0])
    task = Task(func="m:f")
    cache.put("k", 5, task, 100)
    assert cache.get("k", 5, Task) is not None
    assert cache.get("k", 6, Task) is None  # another generation is another body
    now[0] = 9.0
    assert cache.get("k", 5, Task) is not None  # used at 9: kept until 19
    now[0] = 18.0
    assert len(cache) == 1 and cache.get("k", 5, Task) is not None
    now[0] = 28.5
    assert cache.get("k", 5, Task) is None and len(cache) == 0
    off = BodyCache(0)
    off.put("k", 5, task, 100)
    assert off.get("k", 5, Task) is None and len(off) == 0
