"""The task queue: ranking, delays, expiry, leases, fencing, the reaper, and a crash between
each pair of writes of every transition (docs/architecture.md, "Transitions").

Lifecycle tests run on the in-memory store with GCS's rules (per-name limit on: a second
mutation of a name within a second raises) and an injected clock, so nothing sleeps; the
emulator tests check the same paths end to end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from omniq_console.backend import lifecycle
from omniq_console.backend.errors import ConflictError
from omniq_console.backend.gcs import GCSBackend
from omniq_console.backend.lifecycle import Failure
from omniq_console.backend.memstore import MemoryObjectStore
from omniq_console.backend.queue import AsyncGCSQueue
from omniq_console.backend.reaper import LEASE_MARGIN_S, REPAIR_GRACE_SECONDS
from omniq_console.clock import FakeClock
from omniq_console.models import ResultStatus, Task, TaskStatus, utcnow


def _task(queue: str = "default", priority: int = 0, age_s: float = 0.0, **kw: Any) -> Task:
    kw.setdefault("created_at", utcnow() - timedelta(seconds=age_s))
    return Task(func="m:f", queue_name=queue, priority=priority, **kw)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def mem(clock: FakeClock) -> AsyncIterator[GCSBackend]:
    """A backend on the in-memory store, GCS's per-name limit on, time under the test's hand."""
    store = MemoryObjectStore(
        "mem-bucket", per_name_limit=True, clock=lambda: clock.now().timestamp()
    )
    async with GCSBackend("mem-bucket", object_store=store, lease_seconds=10) as opened:
        opened.async_task_storage.clock = clock
        yield opened


def _q(backend: GCSBackend) -> AsyncGCSQueue:
    return backend.async_task_storage


async def _claim(q: AsyncGCSQueue, worker: str = "w1") -> Task:
    task = await q.dequeue(["default"], worker_id=worker)
    assert task is not None, "nothing was handed out"
    return task


async def _maintain_until(q: AsyncGCSQueue, clock: FakeClock, seconds: float) -> Any:
    """Two reaper passes ``seconds`` apart on the injected clock: what the second one did."""
    await q.maintain()
    clock.advance(seconds)
    return await q.maintain()


# -- ranking and readiness -------------------------------------------------------------------


async def test_priority_then_age_across_queues(backend: GCSBackend) -> None:
    q = _q(backend)
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
        stored = await q.get_task(t.id)
        assert stored is not None and stored.status == TaskStatus.RUNNING
        assert stored.record is not None and t.record is not None
        assert stored.record.generation == t.record.generation
        got.append(t.id)
    assert got == [b_high, a_old, a_new, b_low]
    assert (await q.get_task(other)).status == TaskStatus.PENDING  # type: ignore[union-attr]


async def test_delayed_and_expired_are_never_handed_out(mem: GCSBackend, clock: FakeClock) -> None:
    q = _q(mem)
    now = clock.now()
    delayed = await q.enqueue(_task(run_at=now + timedelta(seconds=60)))
    await q.enqueue(_task(expires_at=now - timedelta(seconds=1), created_at=now))
    assert await q.dequeue(["default"]) is None
    clock.advance(61)
    got = await q.dequeue(["default"])
    assert got is not None and got.id == delayed


async def test_timeout_waits_for_work_on_the_injected_clock(
    mem: GCSBackend, clock: FakeClock
) -> None:
    q = _q(mem)
    start = clock.monotonic()
    assert await q.dequeue(["default"], timeout=5) is None
    assert clock.monotonic() - start >= 5  # it waited (on the clock), then gave up


async def test_queue_size_counts_waiting_tasks_from_listings_alone(mem: GCSBackend) -> None:
    q = _q(mem)
    for _ in range(3):
        await q.enqueue(_task())
    await _claim(q)
    before = mem.store.stats.copy()
    assert await q.get_queue_size("default") == 2  # the running one is not waiting
    spent = mem.store.stats.since(before)
    assert spent.count["get"] == 0 and spent.count["list"] == 2


async def test_paused_queue_is_skipped_until_resumed(mem: GCSBackend) -> None:
    q = _q(mem)
    await q.enqueue(_task())
    assert await q.pause_queue("default", actor="ops") is True
    assert await q.pause_queue("default", actor="ops") is False
    assert set(await q.paused_queues()) == {"default"}
    assert await q.dequeue(["default"]) is None
    assert await q.resume_queue("default") is True
    assert await q.dequeue(["default"]) is not None


# -- leases and fencing ----------------------------------------------------------------------


async def test_renewal_moves_the_fence_and_the_old_view_loses(mem: GCSBackend) -> None:
    q = _q(mem)
    await q.enqueue(_task())
    held = await _claim(q)
    renewed = await q.renew_lease(held)
    assert renewed.record is not None and held.record is not None
    assert renewed.record.generation != held.record.generation
    with pytest.raises(ConflictError):
        await q.renew_lease(held)  # an outdated view is no longer the holder
    done = lifecycle.complete(
        renewed.record, worker="w1", value=42, execution_time=0.1, now=utcnow()
    )
    final = await q.finish(renewed, done)
    assert final.status == TaskStatus.COMPLETED
    result = await mem.async_result_storage.get(held.id)
    assert result is not None and result.status == ResultStatus.SUCCESS and result.result == 42
    assert await q.get_queue_size("default") == 0
    assert await mem.store.list(mem.layout.queues) == []  # the entry went with the outcome


async def test_release_makes_the_task_claimable_within_one_pass(
    mem: GCSBackend, clock: FakeClock
) -> None:
    q = _q(mem)
    await q.enqueue(_task())
    held = await _claim(q, "w1")
    released = await q.release(held, "shutting down")
    assert released.status == TaskStatus.PENDING
    # The next claim rewrites the record: not within a second of the release.
    assert await q.dequeue(["default"], worker_id="w2") is None
    clock.advance(lifecycle.NAME_WRITE_GAP_S)
    again = await q.dequeue(["default"], worker_id="w2")
    assert again is not None and again.worker_id == "w2"
    assert again.record is not None and again.record.attempt == 2


async def test_dead_lease_is_requeued_by_an_unchanged_generation_not_by_wall_clocks(
    mem: GCSBackend, clock: FakeClock
) -> None:
    q = _q(mem)
    await q.enqueue(_task())
    held = await _claim(q, "dead-worker")
    # The holder's wall clock says its lease ended long ago (a skewed machine): irrelevant.
    assert (await q.maintain()).requeued == []
    clock.advance(10 + LEASE_MARGIN_S - 0.5)
    assert (await q.maintain()).requeued == []  # not a whole lease of silence yet
    clock.advance(1.0)
    report = await q.maintain()
    assert [task_id for task_id, _ in report.requeued] == [held.id]
    assert report.requeued[0][1].event.value == "lease_expired"
    with pytest.raises(ConflictError):
        await q.finish(
            held,
            lifecycle.complete(
                held.record, worker="dead-worker", value=1, execution_time=0, now=utcnow()
            ),  # type: ignore[arg-type]
        )
    clock.advance(lifecycle.NAME_WRITE_GAP_S)
    again = await q.dequeue(["default"], worker_id="w2")
    assert again is not None and again.id == held.id


async def test_a_renewing_holder_is_never_requeued(mem: GCSBackend, clock: FakeClock) -> None:
    q = _q(mem)
    await q.enqueue(_task())
    held = await _claim(q)
    await q.maintain()
    for _ in range(10):
        clock.advance(10 / 3)
        held = await q.renew_lease(held)
        assert (await q.maintain()).requeued == []


async def test_cancel_of_a_running_task_fences_out_its_worker(mem: GCSBackend) -> None:
    q = _q(mem)
    await q.enqueue(_task())
    held = await _claim(q)
    current = await q.get_task(held.id)
    assert current is not None
    cancelled = await q.apply(
        current, lifecycle.cancel(current, current.record, actor="ops", now=utcnow())
    )
    assert cancelled.status == TaskStatus.CANCELLED
    assert held.record is not None
    with pytest.raises(ConflictError):
        await q.finish(
            held,
            lifecycle.complete(
                held.record, worker="w1", value="late", execution_time=1, now=utcnow()
            ),
        )
    result = await mem.async_result_storage.get(held.id)
    assert result is not None and result.status == ResultStatus.CANCELLED  # agrees with the task
    assert (await q.get_task(held.id)).status == TaskStatus.CANCELLED  # type: ignore[union-attr]


async def test_a_retry_is_claimable_again_once_due(mem: GCSBackend, clock: FakeClock) -> None:
    q = _q(mem)
    await q.enqueue(_task(max_retries=2, retry_delay=timedelta(seconds=5)))
    held = await _claim(q)
    assert held.record is not None
    retry = lifecycle.fail_or_retry(
        held,
        held.record,
        Failure("ValueError", "boom"),
        worker="w1",
        execution_time=0.1,
        now=clock.now(),
    )
    pending = await q.finish(held, retry)
    assert pending.status == TaskStatus.PENDING and pending.retry_count == 1
    assert await q.dequeue(["default"], worker_id="w2") is None  # not due yet
    clock.advance(5)
    again = await q.dequeue(["default"], worker_id="w2")
    assert again is not None and again.retry_count == 1 and again.record is not None
    assert again.record.attempt == 2


# -- a crash between two writes --------------------------------------------------------------


async def test_crash_inside_enqueue_is_repaired(mem: GCSBackend, clock: FakeClock) -> None:
    q = _q(mem)
    task = _task()
    await mem.async_task_storage.reader.write(
        mem.layout.task(task.id),
        task,
        {"omniq_index": "1", "status": "pending"},
        if_generation_match=0,
    )  # step (1) only: no entry
    assert await q.dequeue(["default"]) is None
    report = await _maintain_until(q, clock, REPAIR_GRACE_SECONDS)
    assert report.repaired == [task.id]
    assert (await _claim(q)).id == task.id


async def test_crash_between_outcome_and_entry_delete(mem: GCSBackend, clock: FakeClock) -> None:
    q = _q(mem)
    await q.enqueue(_task())
    held = await _claim(q)
    assert held.record is not None
    done = lifecycle.complete(held.record, worker="w1", value=1, execution_time=0, now=utcnow())
    clock.advance(lifecycle.NAME_WRITE_GAP_S)
    await q._write_record(done.record, held.record.generation or 0)  # step (1) only
    assert await q.dequeue(["default"], worker_id="w2") is None  # never handed out again
    report = await _maintain_until(q, clock, 3)
    assert report.stale_entries == 1
    assert await mem.store.list(mem.layout.queues) == []
    assert (await q.get_task(held.id)).status == TaskStatus.COMPLETED  # type: ignore[union-attr]


async def test_crash_between_retry_record_and_entry_hint(mem: GCSBackend, clock: FakeClock) -> None:
    q = _q(mem)
    await q.enqueue(_task(retry_delay=timedelta(seconds=1)))
    held = await _claim(q)
    assert held.record is not None
    retry = lifecycle.fail_or_retry(
        held, held.record, Failure("E", "x"), worker="w1", execution_time=0, now=clock.now()
    )
    clock.advance(lifecycle.NAME_WRITE_GAP_S)
    await q._write_record(retry.record, held.record.generation or 0)  # step (1) only
    clock.advance(5)
    assert await q.dequeue(["default"], worker_id="w2") is None  # the entry still says "taken"
    report = await _maintain_until(q, clock, REPAIR_GRACE_SECONDS)
    assert report.repaired == [held.id]
    clock.advance(10)  # the claimer's memory of the old entry version lapses too
    again = await q.dequeue(["default"], worker_id="w2")
    assert again is not None and again.id == held.id and again.retry_count == 1


async def test_crash_between_operator_retry_record_and_entry(
    mem: GCSBackend, clock: FakeClock
) -> None:
    q = _q(mem)
    await q.enqueue(_task())
    current = await q.get_task((await _claim(q)).id)
    assert current is not None
    cancelled = await q.apply(
        current, lifecycle.cancel(current, current.record, actor="ops", now=utcnow())
    )
    again = lifecycle.operator_retry(cancelled, cancelled.record, actor="ops", now=clock.now())
    clock.advance(lifecycle.NAME_WRITE_GAP_S)
    assert cancelled.record is not None
    await q._write_record(again.record, cancelled.record.generation or 0)  # step (1) only
    assert await mem.store.list(mem.layout.queues) == []
    report = await _maintain_until(q, clock, REPAIR_GRACE_SECONDS)
    assert report.repaired == [current.id]
    assert (await _claim(q, "w2")).id == current.id


async def test_expired_pending_task_is_expired_by_the_reaper(
    mem: GCSBackend, clock: FakeClock
) -> None:
    q = _q(mem)
    task_id = await q.enqueue(_task(ttl=timedelta(seconds=30), created_at=clock.now()))
    clock.advance(31)
    report = await q.maintain()
    assert [i for i, _ in report.expired] == [task_id]
    assert (await q.get_task(task_id)).status == TaskStatus.EXPIRED  # type: ignore[union-attr]
    assert await mem.store.list(mem.layout.queues) == []


# -- updates, deletes, conflicts -------------------------------------------------------------


async def test_update_task_changes_the_definition_by_compare_and_swap_and_no_status(
    mem: GCSBackend, clock: FakeClock
) -> None:
    q = _q(mem)
    task_id = await q.enqueue(_task(priority=1))
    clock.advance(2)
    task = await q.get_task(task_id)
    assert task is not None
    task.priority = 7
    updated = await q.update_task(task)
    assert updated.priority == 7
    stale = await q.get_task(task_id)
    assert stale is not None
    stale_copy = stale.model_copy(deep=True)
    stale_copy._generation = task.generation  # as read before the update
    stale_copy.priority = 3
    with pytest.raises(ConflictError):
        await q.update_task(stale_copy)
    clock.advance(2)
    status_change = stale.model_copy(deep=True)
    status_change._generation = stale.generation
    status_change.status = TaskStatus.CANCELLED
    with pytest.raises(ValueError, match="is a transition"):
        await q.update_task(status_change)
    cancel = lifecycle.cancel(stale, stale.record, actor="ops", now=clock.now())
    assert (await q.apply(stale, cancel)).status == TaskStatus.CANCELLED


async def test_delete_task_removes_entry_task_and_record(mem: GCSBackend) -> None:
    q = _q(mem)
    task_id = await q.enqueue(_task())
    await _claim(q)
    assert await q.delete_task(task_id) is True
    assert await mem.store.list(mem.layout.prefix) == []
    assert await q.delete_task(task_id) is False
    assert await q.get_task(task_id) is None
    assert await mem.async_result_storage.get(task_id) is None


async def test_enqueue_twice_is_a_conflict(mem: GCSBackend) -> None:
    task = _task()
    await _q(mem).enqueue(task)
    with pytest.raises(ConflictError):
        await _q(mem).enqueue(Task(func="m:g", id=task.id))


async def test_lease_shorter_than_three_seconds_is_refused(mem: GCSBackend) -> None:
    with pytest.raises(ValueError, match="at least 3"):
        await _q(mem).dequeue(["default"], lease_seconds=1)


# -- the same paths under GCS's rules, end to end --------------------------------------------


async def test_a_fast_task_mutates_no_name_twice_a_second_under_the_rules(
    rules_backend: GCSBackend, gcs_rules: Any
) -> None:
    q = _q(rules_backend)
    ids = [await q.enqueue(_task()) for _ in range(5)]
    for _ in ids:
        held = await _claim(q)
        assert held.record is not None
        done = lifecycle.complete(
            held.record, worker="w1", value=None, execution_time=0, now=utcnow()
        )
        await q.finish(held, done)  # waits out the per-name gap itself
    for task_id in ids:
        assert (await q.get_task(task_id)).status == TaskStatus.COMPLETED  # type: ignore[union-attr]
    assert gcs_rules.rate_limited == 0
    assert gcs_rules.max_mutations_per_second() == 1
