"""The task queue on the emulator: ranking, delays, expiry, waiting, CAS updates, leases, and a
crash between each pair of claim writes (the writes done by hand with ObjectStore)."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from typing import Any

import pytest

from omniq_console.backend.errors import ConflictError, ObjectNotFoundError
from omniq_console.backend.gcs import GCSBackend
from omniq_console.backend.index import queue_entry_metadata, task_metadata
from omniq_console.models import Task, TaskResult, TaskStatus, utcnow


def _task(queue: str = "default", priority: int = 0, age_s: float = 0.0, **kw: Any) -> Task:
    return Task(
        func="m:f",
        queue_name=queue,
        priority=priority,
        created_at=utcnow() - timedelta(seconds=age_s),
        **kw,
    )


async def test_priority_then_age_across_queues(backend: GCSBackend) -> None:
    q = backend.async_task_storage
    a_old = await q.enqueue(_task("a", 1, age_s=30))
    a_new = await q.enqueue(_task("a", 1, age_s=10))
    b_high = await q.enqueue(_task("b", 5, age_s=1))
    b_low = await q.enqueue(_task("b", 0, age_s=60))
    other = await q.enqueue(_task("c", 9))
    got = []
    while (t := await q.dequeue(["a", "b"], worker_id="w1")) is not None:
        assert t.status == TaskStatus.RUNNING and t.worker_id == "w1"
        assert t.started_at is not None and t.lease_expires_at is not None
        assert t.lease_expires_at > utcnow() + timedelta(seconds=25)
        assert t.generation == (await q.get_task(t.id)).generation  # type: ignore[union-attr]
        got.append(t.id)
    assert got == [b_high, a_old, a_new, b_low]
    assert await q.get_queue_size("a") == 0 and await q.get_queue_size("b") == 0
    assert await q.get_queue_size("c") == 1
    stored = await q.get_task(other)
    assert stored is not None and stored.status == TaskStatus.PENDING


async def test_delayed_and_expired_are_never_handed_out(backend: GCSBackend) -> None:
    q = backend.async_task_storage
    delayed = await q.enqueue(_task(priority=9, run_at=utcnow() + timedelta(seconds=1.5)))
    expired = await q.enqueue(_task(priority=9, expires_at=utcnow() - timedelta(seconds=1)))
    ready = await q.enqueue(_task(priority=0))
    first = await q.dequeue(["default"])
    assert first is not None and first.id == ready
    assert await q.dequeue(["default"]) is None
    await asyncio.sleep(1.6)
    second = await q.dequeue(["default"])
    assert second is not None and second.id == delayed
    assert await q.dequeue(["default"]) is None
    assert await q.get_queue_size("default") == 1  # the expired one waits for cleanup
    assert await q.cleanup_expired_tasks() == 1
    gone = await q.get_task(expired)
    assert gone is not None and gone.status == TaskStatus.EXPIRED
    assert await q.get_queue_size("default") == 0


async def test_timeout_waits_for_work(backend: GCSBackend) -> None:
    q = backend.async_task_storage
    started = time.monotonic()
    assert await q.dequeue(["default"], timeout=0.6) is None
    assert time.monotonic() - started >= 0.6

    async def enqueue_later() -> str:
        await asyncio.sleep(0.7)
        return await q.enqueue(_task())

    waiting = asyncio.create_task(q.dequeue(["default"], timeout=10))
    task_id = await enqueue_later()
    started = time.monotonic()
    got = await waiting
    assert got is not None and got.id == task_id
    assert time.monotonic() - started < 2.0


async def test_queue_size_and_counts_read_no_bodies(bucket: str) -> None:
    async with GCSBackend(bucket, cache_timeout=0) as backend:
        q = backend.async_task_storage
        for i in range(6):
            await q.enqueue(_task("a" if i % 2 else "b", age_s=100 - i))
        before = backend.store.stats.copy()
        assert await q.get_queue_size("a") == 3
        used = backend.store.stats.since(before)
        assert used.count["list"] == 1 and used.total == 1
        before = backend.store.stats.copy()
        page = await q.list_tasks(queue_name="b", status="pending", limit=2, offset=1)
        used = backend.store.stats.since(before)
        assert [t.queue_name for t in page] == ["b", "b"]
        assert page[0].created_at < page[1].created_at
        assert used.count["list"] == 1 and used.count["get"] == 2  # only the page's bodies
        all_b = await q.list_tasks(queue_name="b")
        assert [t.id for t in page] == [t.id for t in all_b][1:3]
        assert await q.list_tasks(status=TaskStatus.RUNNING) == []


async def test_update_task_is_compare_and_swap_and_keeps_entry(backend: GCSBackend) -> None:
    q = backend.async_task_storage
    task_id = await q.enqueue(_task("a"))
    one, two = await q.get_task(task_id), await q.get_task(task_id)
    assert one is not None and two is not None
    one.priority = 7
    await q.update_task(one)
    two.metadata = {"lost": True}
    with pytest.raises(ConflictError, match=task_id):
        await q.update_task(two)
    stored = await q.get_task(task_id)
    assert stored is not None and stored.priority == 7 and stored.metadata == {}
    entry = (await backend.store.list(backend.layout.queue("a")))[0]
    assert entry.metadata["priority"] == "7"  # the entry's ranking follows the task

    stored.status = TaskStatus.CANCELLED
    await q.update_task(stored)
    assert await q.get_queue_size("a") == 0
    stored.status = TaskStatus.PENDING
    stored.queue_name = "b"
    await q.update_task(stored)  # the generation was set by the previous update
    assert (await q.get_queue_size("a"), await q.get_queue_size("b")) == (0, 1)
    stored.queue_name = "a"
    await q.update_task(stored)
    assert (await q.get_queue_size("a"), await q.get_queue_size("b")) == (1, 0)
    got = await q.dequeue(["a"])
    assert got is not None and got.id == task_id

    never_stored = _task()
    with pytest.raises(ValueError, match="get_task"):
        await q.update_task(never_stored)
    await q.delete_task(task_id)
    with pytest.raises(ObjectNotFoundError):
        await q.update_task(got)


async def test_renew_and_release(backend: GCSBackend) -> None:
    q = backend.async_task_storage
    task_id = await q.enqueue(_task())
    claimed = await q.dequeue("default", lease_seconds=5)
    assert claimed is not None and claimed.lease_expires_at is not None
    renewed = await q.renew_lease(claimed, lease_seconds=60)
    assert renewed.lease_expires_at is not None
    assert renewed.lease_expires_at > claimed.lease_expires_at + timedelta(seconds=50)
    with pytest.raises(ConflictError, match="lease"):
        await q.renew_lease(claimed)  # a stale copy: the lease moved on without it
    released = await q.release(renewed)
    assert released.status == TaskStatus.PENDING and released.worker_id is None
    assert released.lease_expires_at is None and released.retry_count == 0
    again = await q.dequeue("default")
    assert again is not None and again.id == task_id


async def test_dead_worker_task_is_handed_out_again(backend: GCSBackend) -> None:
    q = backend.async_task_storage
    task_id = await q.enqueue(_task())
    dead = await q.dequeue(["default"], worker_id="dies", lease_seconds=1)
    assert dead is not None
    assert await q.requeue_expired() == []  # lease still live
    await asyncio.sleep(1.1)
    assert await q.dequeue(["default"]) is None  # no entry until the reaper runs
    assert await q.requeue_expired() == [task_id]
    assert await q.requeue_expired() == []
    again = await q.dequeue(["default"], worker_id="lives")
    assert again is not None and again.id == task_id and again.worker_id == "lives"
    assert again.retry_count == 0
    with pytest.raises(ConflictError):
        await q.renew_lease(dead)


# -- a crash between each pair of writes --------------------------------------------------


async def _claim_entry_by_hand(backend: GCSBackend, task: Task, lease_s: float) -> None:
    """Claim step 1 as a worker called 'dead' would write it."""
    [entry] = await backend.store.list(backend.layout.queue(task.queue_name))
    until = utcnow() + timedelta(seconds=lease_s)
    metadata = queue_entry_metadata(task, "dead", until)
    await backend.store.write(
        entry.key,
        json.dumps({"task_id": task.id, "queue": task.queue_name, "lease_owner": "dead"}).encode(),
        metadata=metadata,
        if_generation_match=entry.generation,
    )


async def _mark_running_by_hand(backend: GCSBackend, task_id: str, lease_s: float) -> None:
    """Claim step 2 as a worker called 'dead' would write it."""
    current = await backend.async_task_storage.get_task(task_id)
    assert current is not None
    current.status = TaskStatus.RUNNING
    current.worker_id = "dead"
    current.started_at = utcnow()
    current.lease_expires_at = utcnow() + timedelta(seconds=lease_s)
    await backend.store.write(
        backend.layout.task(task_id),
        current.to_json(),
        metadata=task_metadata(current),
        if_generation_match=current.generation,
    )


async def test_crash_after_entry_claim(backend: GCSBackend) -> None:
    q = backend.async_task_storage
    task = _task()
    await q.enqueue(task)
    await _claim_entry_by_hand(backend, task, lease_s=1)
    assert await q.dequeue(["default"]) is None  # the claim is live
    await asyncio.sleep(1.1)
    got = await q.dequeue(["default"], worker_id="next")
    assert got is not None and got.id == task.id and got.worker_id == "next"
    assert await q.get_queue_size("default") == 0


async def test_crash_after_task_marked_running(backend: GCSBackend) -> None:
    q = backend.async_task_storage
    task = _task()
    await q.enqueue(task)
    await _claim_entry_by_hand(backend, task, lease_s=1)
    await _mark_running_by_hand(backend, task.id, lease_s=1)
    assert await q.dequeue(["default"]) is None
    await asyncio.sleep(1.1)
    got = await q.dequeue(["default"], worker_id="next")  # takes the task over
    assert got is not None and got.id == task.id and got.worker_id == "next"
    assert await q.get_queue_size("default") == 0


async def test_stale_entry_of_a_live_task_is_dropped(backend: GCSBackend) -> None:
    q = backend.async_task_storage
    task = _task()
    await q.enqueue(task)
    await _claim_entry_by_hand(backend, task, lease_s=0)  # its claim is already over
    await _mark_running_by_hand(backend, task.id, lease_s=1)  # but the task's lease is live
    assert await q.dequeue(["default"]) is None
    assert await q.get_queue_size("default") == 0  # stale entry deleted
    stored = await q.get_task(task.id)
    assert stored is not None and stored.worker_id == "dead"
    await asyncio.sleep(1.1)
    assert await q.requeue_expired() == [task.id]
    got = await q.dequeue(["default"])
    assert got is not None and got.id == task.id


async def test_crash_after_entry_deleted(backend: GCSBackend) -> None:
    q = backend.async_task_storage
    task = _task()
    await q.enqueue(task)
    await _claim_entry_by_hand(backend, task, lease_s=1)
    await _mark_running_by_hand(backend, task.id, lease_s=1)
    await backend.store.delete(backend.layout.queue_entry(task.queue_name, task.id))
    await asyncio.sleep(1.1)
    assert await q.requeue_expired() == [task.id]
    got = await q.dequeue(["default"])
    assert got is not None and got.id == task.id


async def test_crash_inside_enqueue_is_repaired(backend: GCSBackend) -> None:
    q = backend.async_task_storage
    task = _task()
    await backend.store.write(
        backend.layout.task(task.id),
        task.to_json(),
        metadata=task_metadata(task),
        if_generation_match=0,
    )
    assert await q.dequeue(["default"]) is None
    assert await q.requeue_expired() == []  # too young to repair: enqueue may still finish
    assert await q.get_queue_size("default") == 0
    assert await q.requeue_expired(grace_seconds=0) == []  # repaired, not a lease expiry
    assert await q.get_queue_size("default") == 1
    got = await q.dequeue(["default"])
    assert got is not None and got.id == task.id


async def test_crash_inside_requeue_is_finished_by_a_claimer(backend: GCSBackend) -> None:
    q = backend.async_task_storage
    task = _task()
    await q.enqueue(task)
    dead = await q.dequeue(["default"], worker_id="dead", lease_seconds=1)
    assert dead is not None
    # requeue step 1 (the entry) only; the reaper dies before marking the task PENDING.
    await backend.store.write(
        backend.layout.queue_entry("default", task.id),
        json.dumps({"task_id": task.id, "queue": "default"}).encode(),
        metadata=queue_entry_metadata(task),
        if_generation_match=0,
    )
    await asyncio.sleep(1.1)
    got = await q.dequeue(["default"], worker_id="next")
    assert got is not None and got.id == task.id and got.worker_id == "next"


async def test_crash_inside_update_leaving_pending(backend: GCSBackend) -> None:
    q = backend.async_task_storage
    task = _task()
    await q.enqueue(task)
    # update_task step 1 only: the task is CANCELLED, its entry not deleted yet.
    task.status = TaskStatus.CANCELLED
    await backend.store.write(
        backend.layout.task(task.id),
        task.to_json(),
        metadata=task_metadata(task),
        if_generation_match=task.generation,
    )
    assert await q.get_queue_size("default") == 1
    assert await q.dequeue(["default"]) is None  # never handed out; the stale entry goes
    assert await q.get_queue_size("default") == 0
    stored = await q.get_task(task.id)
    assert stored is not None and stored.status == TaskStatus.CANCELLED


async def test_delete_task_removes_entry_task_and_result(backend: GCSBackend) -> None:
    q = backend.async_task_storage
    task_id = await q.enqueue(_task())
    await backend.async_result_storage.set(TaskResult(task_id=task_id))
    assert await q.delete_task(task_id) is True
    assert await q.get_task(task_id) is None
    assert await backend.async_result_storage.get(task_id) is None
    assert await q.get_queue_size("default") == 0
    assert await q.delete_task(task_id) is False


async def test_enqueue_twice_is_a_conflict(backend: GCSBackend) -> None:
    q = backend.async_task_storage
    task = _task()
    await q.enqueue(task)
    other = Task(func="m:g", id=task.id)
    with pytest.raises(ConflictError, match="exists already"):
        await q.enqueue(other)
    with pytest.raises(ValueError, match="pending"):
        await q.enqueue(_task(status=TaskStatus.RUNNING))
