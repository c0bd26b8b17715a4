"""Task statuses have one home (``models.py``): each is live or final, exactly once; the
operator actions a status allows are what the Operator does; a bulk outcome is told one way."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from protocol_helpers import tasks_in

from omniq_console.backend.gcs import GCSBackend
from omniq_console.backend.memstore import MemoryObjectStore
from omniq_console.models import ResultStatus, TaskResult, TaskStatus, allowed_task_actions
from omniq_console.runtime import BulkOutcome, Operator
from omniq_console.runtime.operator import StateChanged

# What docs/architecture.md ("Task status") says, written out once more on purpose: the test
# pins the classification the code derives everything else from.
LIVE = {TaskStatus.PENDING, TaskStatus.RUNNING}
FINAL = {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.EXPIRED}


# One task of every status, those that ``tasks_in`` claims first (it claims from the queue).
EVERY_STATUS = sorted(
    TaskStatus, key=lambda s: s in (TaskStatus.PENDING, TaskStatus.CANCELLED, TaskStatus.EXPIRED)
)


@pytest.fixture
async def backend() -> AsyncIterator[GCSBackend]:
    async with GCSBackend("statuses", object_store=MemoryObjectStore("statuses")) as opened:
        yield opened


def test_every_task_status_is_live_or_final_exactly_once() -> None:
    assert set(TaskStatus) == LIVE | FINAL and not LIVE & FINAL
    for status in TaskStatus:
        assert status.is_final == (status in FINAL), status
        # A status given as the plain string a row or an index holds reads the same.
        assert allowed_task_actions(status.value) == allowed_task_actions(status)
        if status.is_final:
            assert allowed_task_actions(status) == ("retry", "delete"), status
        else:
            assert allowed_task_actions(status) == ("cancel", "delete"), status
    # A status this version does not know (a newer writer's): it can only be deleted.
    assert allowed_task_actions("paused-by-v2") == ("delete",)


@pytest.mark.parametrize("owner", [None, "w-1"])
def test_a_record_is_final_exactly_when_the_status_it_gives_its_task_is(owner: str | None) -> None:
    for status in ResultStatus:
        record = TaskResult(task_id="t", status=status, lease_owner=owner)
        assert record.is_final == status.is_final == record.task_status.is_final, status
    assert [s for s in ResultStatus if not s.is_final] == [ResultStatus.PENDING]


async def test_the_operator_does_exactly_what_each_status_allows(backend: GCSBackend) -> None:
    op = Operator(backend, "alice@ops")
    # A bulk retry and a bulk cancel over one task of every status: done exactly where the
    # status allows the action, skipped (with the reason) everywhere else.
    for verb, bulk in (("retry", op.retry_tasks), ("cancel", op.cancel_tasks)):
        tasks = await tasks_in(backend, EVERY_STATUS, queue=f"bulk-{verb}")
        outcome = await bulk([t.id for t in tasks])
        allowed = {t.id for t in tasks if verb in allowed_task_actions(t.status)}
        assert set(outcome.done) == allowed, verb
        assert {i for i, _ in outcome.skipped} == {t.id for t in tasks} - allowed, verb
        assert not outcome.failed
    # One at a time: a refused action raises ``StateChanged`` offering what the status allows,
    # and leaves the task as it was.
    tasks = await tasks_in(backend, EVERY_STATUS, queue="single")
    for task in tasks:
        refused = "cancel" if task.status.is_final else "retry"
        action = op.cancel_task if refused == "cancel" else op.retry_task
        with pytest.raises(StateChanged) as caught:
            await action(task.id, expected_status=task.status)
        assert caught.value.allowed == allowed_task_actions(task.status)
        stored = await backend.async_task_storage.get_task(task.id)
        assert stored is not None and stored.status == task.status


def test_a_bulk_outcome_tells_what_was_done_skipped_and_failed() -> None:
    outcome = BulkOutcome(
        done=["a", "b"],
        skipped=[("c", "its status changed from failed to pending")],
        failed=[("d", "503 Service Unavailable")],
    )
    assert not outcome.complete
    assert outcome.summary("Retry 4 failed tasks", separator="; ") == (
        "Retry 4 failed tasks: 2 of 4 done; "
        "1 skipped (changed since you saw them), e.g. c: its status changed from failed to "
        "pending; 1 failed, e.g. d: 503 Service Unavailable"
    )
    many = BulkOutcome(done=[str(i) for i in range(1500)])
    assert many.complete and many.summary("Cancel") == "Cancel: 1,500 of 1,500 done"
