"""Put tasks in a given status through the real write protocol (docs/architecture.md,
"Transitions"): enqueue, a claim by ``dequeue``, the lease holder's outcome by ``finish`` with
``lifecycle.complete`` / ``lifecycle.fail_or_retry``, a cancel by ``Operator.cancel_task``, an
expiry by ``lifecycle.expire``. Events are logged as a worker logs them (one batch).

Never write a status by hand: a test that needs a FAILED task gets one the way a worker leaves
it, so what it asserts holds for the bucket a real fleet writes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from omniq_console.backend import lifecycle
from omniq_console.backend.gcs import GCSBackend
from omniq_console.backend.reaper import LEASE_MARGIN_S
from omniq_console.clock import FakeClock
from omniq_console.models import Task, TaskStatus, utcnow
from omniq_console.runtime import Operator
from omniq_console.runtime.registry import submit_task

TEST_WORKER = "w-test"
SETUP_ACTOR = "test-setup"
CLAIM_TIMEOUT_S = 10.0
"""How long a claim waits for a retried task's ``run_at`` (about a second after the retry)."""


async def claim(
    backend: GCSBackend, task_id: str, queue: str, *, worker: str = TEST_WORKER
) -> Task:
    """Claim ``task_id`` from ``queue`` with ``dequeue``: it must be the queue's best ready task.

    Waits up to ``CLAIM_TIMEOUT_S`` for it to come due (a retry's ``run_at``).
    """
    claimed = await backend.async_task_storage.dequeue(
        [queue], timeout=CLAIM_TIMEOUT_S, worker_id=worker
    )
    assert claimed is not None, f"task {task_id} was not handed out by queue {queue}"
    assert claimed.id == task_id, (
        f"queue {queue} handed out {claimed.id}, not {task_id}: drive a task before other "
        "ready tasks are enqueued in its queue"
    )
    return claimed  # dequeue logged the claim's event


async def fail_once(backend: GCSBackend, held: Task, failure: lifecycle.Failure) -> Task:
    """The holder's failure of ``held`` (a retry while retries are left, else FAILED)."""
    return await _finish(backend, held, failure=failure)


async def complete(backend: GCSBackend, held: Task, value: Any = None) -> Task:
    """The holder's success of ``held``."""
    return await _finish(backend, held, value=value)


async def _finish(
    backend: GCSBackend,
    held: Task,
    *,
    value: Any = None,
    failure: lifecycle.Failure | None = None,
) -> Task:
    queue = backend.async_task_storage
    record = held.record
    assert record is not None and record.lease_owner, f"task {held.id} is not held"
    # As the worker does: times in the outcome count from the write itself.
    await queue.ready_to_write(held)
    now = queue.clock.now()
    if failure is None:
        transition = lifecycle.complete(
            record, worker=record.lease_owner, value=value, execution_time=0.01, now=now
        )
    else:
        transition = lifecycle.fail_or_retry(
            held, record, failure, worker=record.lease_owner, execution_time=0.01, now=now
        )
    done = await queue.finish(held, transition)
    backend.async_event_storage.record(
        lifecycle.event_of(transition, at=now, worker_id=record.lease_owner)
    )
    return done


async def task_in(
    backend: GCSBackend,
    status: TaskStatus,
    *,
    queue: str = "default",
    retries: int = 0,
    error_type: str = "ValueError",
    error: str = "boom",
    value: Any = None,
    worker: str = TEST_WORKER,
    **fields: Any,
) -> Task:
    """One task in ``status``, as ``get_task`` returns it (see ``tasks_in``)."""
    (task,) = await tasks_in(
        backend,
        [status],
        queue=queue,
        retries=retries,
        error_type=error_type,
        error=error,
        value=value,
        worker=worker,
        **fields,
    )
    return task


async def tasks_in(
    backend: GCSBackend,
    statuses: Sequence[TaskStatus | str],
    *,
    queue: str = "default",
    retries: int = 0,
    error_type: str = "ValueError",
    error: str = "boom",
    value: Any = None,
    worker: str = TEST_WORKER,
    **fields: Any,
) -> list[Task]:
    """New tasks of ``queue``, one per status, each brought there through the protocol.

    - PENDING: enqueued; RUNNING: claimed by ``worker`` (the task returned holds the lease);
    - COMPLETED / FAILED: claimed, then ``retries`` failed attempts that were retried, then the
      outcome (``value``, or a non-retryable ``error_type: error``);
    - CANCELLED: cancelled while pending by ``Operator(backend, SETUP_ACTOR)`` (audited);
    - EXPIRED: enqueued with an ``expires_at`` already past, then expired as the reaper does.

    ``fields`` go to every ``Task`` (``func`` defaults to ``jobs:work``). Claims are made with
    ``dequeue``, so ``queue`` must hold no other ready task older or of higher priority. The
    holders' outcomes are written concurrently: each waits out the per-name gap (about a
    second after its claim, less with a ``FakeClock`` on the queue).
    """
    q = backend.async_task_storage
    fields.setdefault("func", "jobs:work")
    fields.setdefault("max_retries", max(retries, fields.get("max_retries", 3)))
    wanted = [TaskStatus(s) for s in statuses]
    made: list[Task] = []
    for status in wanted:
        if status == TaskStatus.EXPIRED:
            # Past due already: the claimers skip it, the reaper's expiry applies at once.
            fields_now = {"expires_at": utcnow() - timedelta(seconds=1), **fields}
            task = Task(queue_name=queue, **fields_now)
        else:
            task = Task(queue_name=queue, **fields)
        await submit_task(backend, task)
        if status in (TaskStatus.PENDING, TaskStatus.CANCELLED, TaskStatus.EXPIRED):
            made.append(task)
            continue
        held = await claim(backend, task.id, queue, worker=worker)
        for _ in range(retries if status != TaskStatus.RUNNING else 0):
            retried = await fail_once(backend, held, lifecycle.Failure(error_type, error))
            assert retried.status == TaskStatus.PENDING, f"task {task.id} was not retried"
            held = await claim(backend, task.id, queue, worker=worker)
        made.append(held)
    failure = lifecycle.Failure(error_type, error, retryable=False)

    async def settle(status: TaskStatus, task: Task) -> Task:
        if status == TaskStatus.COMPLETED:
            return await complete(backend, task, value)
        if status == TaskStatus.FAILED:
            return await fail_once(backend, task, failure)
        if status == TaskStatus.CANCELLED:
            return await Operator(backend, SETUP_ACTOR).cancel_task(task.id)
        if status == TaskStatus.EXPIRED:
            stored = await q.get_task(task.id)
            assert stored is not None
            return await q.apply(stored, lifecycle.expire(stored, stored.record, now=q.clock.now()))
        return task

    settled = await asyncio.gather(*(settle(s, t) for s, t in zip(wanted, made, strict=True)))
    await backend.async_event_storage.flush()
    out: list[Task] = []
    for status, task in zip(wanted, settled, strict=True):
        if status == TaskStatus.RUNNING:
            out.append(task)  # the holder's view: its record is what a renewal swaps on
            continue
        stored = await q.get_task(task.id)
        assert stored is not None and stored.status == status, (
            f"task {task.id} is {stored.status if stored else 'gone'}, not {status}"
        )
        out.append(stored)
    return out


async def pass_lease(backend: GCSBackend, clock: FakeClock, *, extra_s: float = 0.1) -> list[str]:
    """Two reaper passes ``lease + margin`` apart on ``clock`` (the queue's ``FakeClock``):
    the leases nobody renewed meanwhile are judged dead and requeued; return those task ids.
    """
    queue = backend.async_task_storage
    assert queue.clock is clock, "set backend.async_task_storage.clock = clock first"
    await queue.maintain()
    longest = max(queue.lease_seconds, 3.0)
    records = await backend.async_result_storage.list_results(status="pending")
    for record in records:
        if record.lease_seconds is not None:
            longest = max(longest, record.lease_seconds)
    clock.advance(longest + LEASE_MARGIN_S + extra_s)
    report = await queue.maintain()
    return [task_id for task_id, _ in report.requeued]
