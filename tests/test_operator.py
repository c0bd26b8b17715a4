"""Operator actions on the emulator: each changes the stored state, is audited with its actor,
refuses bad ids, loses cleanly to a concurrent change, and the bulk retry touches exactly the
tasks the operator saw, in the state they saw them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from protocol_helpers import task_in, tasks_in

from omniq_console import OmniQ
from omniq_console.backend import lifecycle
from omniq_console.backend.errors import (
    BackendUnavailableError,
    ConflictError,
    ObjectNotFoundError,
)
from omniq_console.backend.gcs import GCSBackend
from omniq_console.models import (
    EventType,
    ResultStatus,
    ScheduleStatus,
    Task,
    TaskStatus,
    utcnow,
)
from omniq_console.runtime import BulkOutcome, Operator


@pytest.fixture
def op(backend: GCSBackend) -> Operator:
    return Operator(backend, "alice@ops")


async def _audits(backend: GCSBackend) -> list[Any]:
    return list(await backend.async_event_storage.get_events(event_type=EventType.OPERATOR_ACTION))


async def _task_in(
    backend: GCSBackend, status: TaskStatus, queue: str = "default", *, retries: int = 0
) -> Task:
    """A task brought to ``status`` through the protocol (a failed one with an error result)."""
    return await task_in(
        backend, status, queue=queue, retries=retries, args=(1,), max_retries=max(retries, 2)
    )


async def _schedule(backend: GCSBackend, **kw: Any) -> str:
    return await OmniQ(backend).schedule_async("jobs:report", 5, interval=60, queue="reports", **kw)


async def test_pause_and_resume_schedule(backend: GCSBackend, op: Operator) -> None:
    schedule_id = await _schedule(backend)
    paused = await op.pause_schedule(schedule_id)
    stored = await backend.async_schedule_storage.get_schedule(schedule_id)
    assert stored is not None and stored.status == ScheduleStatus.PAUSED
    assert stored.generation == paused.generation
    resumed = await op.resume_schedule(schedule_id)
    stored = await backend.async_schedule_storage.get_schedule(schedule_id)
    assert stored is not None and stored.status == ScheduleStatus.ACTIVE
    assert stored.next_run == resumed.next_run and stored.next_run is not None
    audits = await _audits(backend)
    assert [a.details["action"] for a in audits] == ["pause_schedule", "resume_schedule"]
    assert all(a.actor == "alice@ops" and a.details["target"] == schedule_id for a in audits)
    assert all(a.schedule_id == schedule_id and a.queue_name == "reports" for a in audits)
    with pytest.raises(ValueError, match="already active"):
        await op.resume_schedule(schedule_id)
    stored.cancel()
    await backend.async_schedule_storage.update_schedule(stored)
    with pytest.raises(ValueError, match="cancelled"):
        await op.pause_schedule(schedule_id)
    assert len(await _audits(backend)) == 2  # refused actions are not audited as done


async def test_schedule_actions_bound_to_what_was_seen(backend: GCSBackend, op: Operator) -> None:
    schedule_id = await _schedule(backend)
    seen = await backend.async_schedule_storage.get_schedule(schedule_id)
    assert seen is not None
    # Someone else changes it after the operator looked.
    await Operator(backend, "bob").pause_schedule(schedule_id)
    await Operator(backend, "bob").resume_schedule(schedule_id)
    with pytest.raises(ConflictError, match="changed since it was shown"):
        await op.pause_schedule(schedule_id, generation=seen.generation)
    stored = await backend.async_schedule_storage.get_schedule(schedule_id)
    assert stored is not None and stored.status == ScheduleStatus.ACTIVE
    assert [a.actor for a in await _audits(backend)] == ["bob", "bob"]


async def test_concurrent_change_between_read_and_write_is_a_conflict(
    backend: GCSBackend, op: Operator, monkeypatch: pytest.MonkeyPatch
) -> None:
    schedule_id = await _schedule(backend)
    task, touched = await tasks_in(backend, [TaskStatus.FAILED, TaskStatus.FAILED], args=(1,))
    store = backend.async_schedule_storage
    queue = backend.async_task_storage
    real_get_schedule, real_get_task = store.get_schedule, queue.get_task

    async def get_schedule_then_someone_writes(sid: str):  # type: ignore[no-untyped-def]
        read = await real_get_schedule(sid)
        other = await real_get_schedule(sid)
        assert other is not None
        other.metadata = {"touched": "by a concurrent console"}
        await store.update_schedule(other)
        return read

    interfered: set[str] = set()

    async def get_task_then_someone_writes(tid: str):  # type: ignore[no-untyped-def]
        read = await real_get_task(tid)
        if tid not in interfered:  # once: the writes re-read the task through get_task
            interfered.add(tid)
            if tid == task.id:  # another console retries it: it moved on
                await Operator(backend, "bob").retry_task(tid)
            else:  # another console only edits its metadata: its status is what was seen
                other = await real_get_task(tid)
                assert other is not None
                other.metadata = {"touched": "by a concurrent console"}
                await queue.update_task(other)
        return read

    monkeypatch.setattr(store, "get_schedule", get_schedule_then_someone_writes)
    monkeypatch.setattr(queue, "get_task", get_task_then_someone_writes)
    with pytest.raises(ConflictError):
        await op.pause_schedule(schedule_id)
    with pytest.raises(ConflictError, match="pending"):
        await op.retry_task(task.id)
    # A change that left the status as seen is no reason to refuse: the retry is made on
    # the task as it is now, and the other console's change is kept.
    retried = await op.retry_task(touched.id)
    monkeypatch.undo()
    stored = await store.get_schedule(schedule_id)
    assert stored is not None and stored.status == ScheduleStatus.ACTIVE
    assert stored.metadata["touched"] == "by a concurrent console"
    again = await queue.get_task(task.id)
    assert again is not None and again.status == TaskStatus.PENDING  # bob's retry, once
    kept = await queue.get_task(touched.id)
    assert kept is not None and kept.status == TaskStatus.PENDING
    assert kept.metadata == {"touched": "by a concurrent console"}
    # The retry is a transition of the state record (a compare-and-swap on it alone): what it
    # wrote is the record now, and the definition the other console changed is kept.
    assert retried.record is not None and kept.record is not None
    assert retried.record.generation == kept.record.generation
    audits = await _audits(backend)
    assert [(a.actor, a.task_id) for a in audits] == [("bob", task.id), ("alice@ops", touched.id)]


async def test_trigger_schedule_enqueues_one_run_now(backend: GCSBackend, op: Operator) -> None:
    schedule_id = await _schedule(backend, paused=True)
    planned = await backend.async_schedule_storage.get_schedule(schedule_id)
    assert planned is not None
    task_id = await op.trigger_schedule(schedule_id)
    await backend.async_event_storage.flush()  # its enqueued event goes with the next batch
    task = await backend.async_task_storage.get_task(task_id)
    assert task is not None and task.status == TaskStatus.PENDING
    assert (task.func, task.args, task.queue_name) == ("jobs:report", (5,), "reports")
    assert task.metadata["triggered_by"] == "alice@ops"
    assert await backend.async_task_storage.get_queue_size("reports") == 1
    stored = await backend.async_schedule_storage.get_schedule(schedule_id)
    # The triggered run is counted; the schedule's own plan is left as it was.
    assert stored is not None and stored.status == ScheduleStatus.PAUSED and stored.run_count == 1
    assert stored.last_run is not None and stored.next_run == planned.next_run
    events = await backend.async_event_storage.get_events(task_id=task_id)
    kinds = [(e.event_type, e.actor) for e in events]
    assert (EventType.ENQUEUED, "alice@ops") in kinds and (
        EventType.OPERATOR_ACTION,
        "alice@ops",
    ) in kinds


async def test_retry_task(backend: GCSBackend, op: Operator) -> None:
    failed = await _task_in(backend, TaskStatus.FAILED, queue="billing", retries=1)
    assert failed.retry_count == 1
    retried = await op.retry_task(failed.id, expected_status="failed")
    stored = await backend.async_task_storage.get_task(failed.id)
    assert stored is not None and stored.status == TaskStatus.PENDING
    assert stored.retry_count == 0 and stored.worker_id is None
    # Due again within one claim cycle: a second after the write, GCS's per-name limit.
    assert stored.run_at is not None
    assert stored.run_at <= utcnow() + timedelta(seconds=lifecycle.NAME_WRITE_GAP_S)
    assert stored.generation == retried.generation
    assert await backend.async_task_storage.get_queue_size("billing") == 1
    # The old outcome is replaced by a pending record: get_result waits for the new run.
    record = await backend.async_result_storage.get(failed.id)
    assert record is not None and record.status == ResultStatus.PENDING
    assert record.error is None and record.lease_owner is None
    with pytest.raises(TimeoutError):
        await OmniQ(backend).get_result_async(failed.id, timeout=0.3)
    (audit,) = await _audits(backend)
    assert audit.details == {
        "action": "retry_task",
        "target": failed.id,
        "previous_status": "failed",
    }
    assert audit.task_id == failed.id and audit.queue_name == "billing"
    with pytest.raises(ValueError, match="pending"):
        await op.retry_task(failed.id)
    with pytest.raises(ConflictError, match="not failed as shown"):
        await op.retry_task(failed.id, expected_status=TaskStatus.FAILED)
    with pytest.raises(ValueError, match="not a task status"):
        await op.retry_task(failed.id, expected_status="broken")
    again = await backend.async_task_storage.dequeue(["billing"], timeout=5)
    assert again is not None and again.id == failed.id  # handed out again


async def test_retry_of_an_expired_task_gives_it_a_new_life(
    backend: GCSBackend, op: Operator
) -> None:
    q = backend.async_task_storage
    # Its expires_at is long gone (the helper expires it the way the reaper does).
    task = await task_in(backend, TaskStatus.EXPIRED, func="jobs:late", ttl=timedelta(seconds=30))
    assert task.is_expired()
    retried = await op.retry_task(task.id)
    assert retried.status == TaskStatus.PENDING and retried.expires_at is not None
    assert not retried.is_expired()
    again = await q.dequeue(["default"], timeout=5)  # due a second after the retry's write
    assert again is not None and again.id == task.id  # handed out again


async def test_cancel_task(backend: GCSBackend, op: Operator) -> None:
    running = await _task_in(backend, TaskStatus.RUNNING, queue="mail")
    pending = await _task_in(backend, TaskStatus.PENDING, queue="mail")
    assert await backend.async_task_storage.get_queue_size("mail") == 1
    for task in (pending, running):
        cancelled = await op.cancel_task(task.id)
        assert cancelled.status == TaskStatus.CANCELLED
        stored = await backend.async_task_storage.get_task(task.id)
        assert stored is not None and stored.status == TaskStatus.CANCELLED
        result = await backend.async_result_storage.get(task.id)
        assert result is not None and result.status == ResultStatus.CANCELLED
        assert "alice@ops" in (result.error or "")
    assert await backend.async_task_storage.get_queue_size("mail") == 0
    # The worker holding the running one lost its lease: its renewal is refused.
    with pytest.raises(ConflictError):
        await backend.async_task_storage.renew_lease(running)
    assert [a.details["previous_status"] for a in await _audits(backend)] == ["pending", "running"]
    with pytest.raises(ValueError, match="cancelled"):
        await op.cancel_task(pending.id)
    with pytest.raises(ObjectNotFoundError):
        await op.cancel_task("no-such-task")


async def test_delete_task(backend: GCSBackend, op: Operator) -> None:
    failed = await _task_in(backend, TaskStatus.FAILED)
    pending = await _task_in(backend, TaskStatus.PENDING)
    assert await op.delete_task(failed.id) is True
    assert await backend.async_task_storage.get_task(failed.id) is None
    assert await backend.async_result_storage.get(failed.id) is None
    with pytest.raises(ConflictError):
        await op.delete_task(pending.id, expected_status="failed")
    assert await backend.async_task_storage.get_task(pending.id) is not None
    assert await op.delete_task(pending.id, expected_status="pending") is True
    assert await backend.async_task_storage.get_queue_size("default") == 0
    assert await op.delete_task(pending.id) is False
    audits = await _audits(backend)
    assert [(a.details["action"], a.task_id) for a in audits] == [
        ("delete_task", failed.id),
        ("delete_task", pending.id),
    ]
    # The task's own events stay (the audit trail).
    assert await backend.async_event_storage.get_events(task_id=failed.id)


async def _spoil(backend: GCSBackend, key: str, data: bytes) -> None:
    """Replace ``key`` with unreadable ``data`` on the generation listed now (create it if
    absent). Conditioned, as a protocol write: GCS answers 429 to a second mutation of a name
    within its second, and only a write with a precondition may be retried after it."""
    listed = [info for info in await backend.store.list(key, limit=1) if info.key == key]
    await backend.store.write(key, data, if_generation_match=listed[0].generation if listed else 0)


async def test_an_unreadable_task_can_be_deleted(backend: GCSBackend, op: Operator) -> None:
    pending = await _task_in(backend, TaskStatus.PENDING, queue="junk")
    await _spoil(backend, backend.layout.task(pending.id), b"{not json")
    await _spoil(backend, backend.layout.result(pending.id), b"[]")
    assert await op.delete_task(pending.id) is True
    assert await backend.store.list(backend.layout.tasks) == []
    assert await backend.store.list(backend.layout.results) == []
    assert await backend.async_task_storage.get_queue_size("junk") == 0
    (audit,) = await _audits(backend)
    assert len(audit.details["unreadable"]) == 2


async def test_bad_ids_are_refused_before_anything_is_sent(
    backend: GCSBackend, op: Operator
) -> None:
    before = backend.store.stats.copy()
    for bad in ("../x", "a/b", "", "x\x1b[31m"):
        for action in (
            op.pause_schedule,
            op.resume_schedule,
            op.trigger_schedule,
            op.retry_task,
            op.cancel_task,
            op.delete_task,
        ):
            with pytest.raises(ValueError):
                await action(bad)
    failed = await _task_in(backend, TaskStatus.FAILED)
    sent = backend.store.stats.since(before).total
    with pytest.raises(ValueError):
        await op.retry_tasks([failed.id, "../etc/passwd"])
    with pytest.raises(ValueError):
        await op.retry_tasks(failed.id)  # one string, not a list of ids
    stored = await backend.async_task_storage.get_task(failed.id)
    assert stored is not None and stored.status == TaskStatus.FAILED  # nothing half-done
    # Only the read just above: two GETs, the definition and the state record.
    assert backend.store.stats.since(before).total == sent + 2
    with pytest.raises(ValueError):
        Operator(backend, " ")


async def test_bulk_retry_touches_exactly_what_was_seen(backend: GCSBackend, op: Operator) -> None:
    a = await _task_in(backend, TaskStatus.FAILED)
    b = await _task_in(backend, TaskStatus.FAILED)
    changed = await _task_in(backend, TaskStatus.FAILED)
    done = await _task_in(backend, TaskStatus.COMPLETED)
    not_shown = await _task_in(backend, TaskStatus.FAILED)
    # After the operator's screen showed `changed` as failed, someone retried it.
    await Operator(backend, "bob").retry_task(changed.id)
    outcome = await op.retry_tasks([a.id, b.id, changed.id, "vanished", done.id, a.id], "failed")
    assert isinstance(outcome, BulkOutcome)
    assert outcome.done == [a.id, b.id]
    skipped = dict(outcome.skipped)
    assert set(skipped) == {changed.id, "vanished", done.id}
    assert "from failed to pending" in skipped[changed.id]
    assert "no longer exists" in skipped["vanished"]
    assert "completed" in skipped[done.id]
    assert outcome.failed == [] and outcome.total == 5
    for task_id, status in (
        (a.id, "pending"),
        (b.id, "pending"),
        (changed.id, "pending"),
        (done.id, "completed"),
        (not_shown.id, "failed"),
    ):
        stored = await backend.async_task_storage.get_task(task_id)
        assert stored is not None and stored.status == status, task_id
    # Bob's retry, alice's two single retries (with the bulk's summary), nothing for the rest.
    audits = await _audits(backend)
    mine = [x for x in audits if x.actor == "alice@ops"]
    assert sorted(
        x.details["target"] for x in mine if x.details["action"] == "retry_task"
    ) == sorted([a.id, b.id])
    (summary,) = [x for x in mine if x.details["action"] == "retry_tasks"]
    assert (summary.details["done"], summary.details["skipped"]) == (2, 3)


async def test_bulk_retry_with_a_status_per_id(backend: GCSBackend, op: Operator) -> None:
    failed = await _task_in(backend, TaskStatus.FAILED)
    cancelled = await _task_in(backend, TaskStatus.CANCELLED)
    outcome = await op.retry_tasks(
        [failed.id, cancelled.id], {failed.id: "failed", cancelled.id: TaskStatus.FAILED}
    )
    assert outcome.done == [failed.id]
    assert [i for i, _ in outcome.skipped] == [cancelled.id]
    # Without expected statuses every retryable task is retried.
    outcome = await op.retry_tasks([cancelled.id])
    assert outcome.done == [cancelled.id]


async def test_the_audit_is_written_before_the_change(
    backend: GCSBackend, op: Operator, monkeypatch: pytest.MonkeyPatch
) -> None:
    schedule_id = await _schedule(backend)
    store = backend.async_schedule_storage
    audits_at_write: list[int] = []
    real_update = store.update_schedule

    async def update_then_storage_dies(schedule):  # type: ignore[no-untyped-def]
        audits_at_write.append(len(await _audits(backend)))
        raise BackendUnavailableError("GCS did not answer")

    monkeypatch.setattr(store, "update_schedule", update_then_storage_dies)
    with pytest.raises(BackendUnavailableError):
        await op.pause_schedule(schedule_id)
    assert audits_at_write == [1]  # the audit was in the bucket before the change was sent
    # Storage could not say whether the change landed: the attempt stays on record.
    (attempt,) = await _audits(backend)
    assert attempt.details["action"] == "pause_schedule"
    monkeypatch.setattr(store, "update_schedule", real_update)
    await op.pause_schedule(schedule_id)
    assert [a.details["action"] for a in await _audits(backend)] == ["pause_schedule"] * 2
