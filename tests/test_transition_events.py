"""A task's timeline holds every transition's event exactly once, in order, written by whoever
applied the transition: the worker's claims and outcomes, the seed API's ``dequeue``, the
operator's retry and cancel, and the reaper's requeue of a dead lease and expiry.

Runs on the in-memory store (GCS's rules, per-name limit on) with a clock the test moves
forward, so a lease dies and a TTL runs out without waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from test_runtime_lease_end import JumpClock
from waiting import wait_until

from omniq_console import OmniQ
from omniq_console.backend.gcs import GCSBackend
from omniq_console.backend.memstore import MemoryObjectStore
from omniq_console.backend.reaper import LEASE_MARGIN_S
from omniq_console.models import EventType, TaskEvent, TaskStatus
from omniq_console.runtime import Operator, Worker

LEASE = 3.0
TTL_S = 3_600.0
QUEUE = "timeline"
# Events that record no transition: the audit of an operator's action, a run's start.
_NOT_TRANSITIONS = {EventType.OPERATOR_ACTION, EventType.EXECUTING}


@pytest.fixture
def clock() -> JumpClock:
    return JumpClock()


@pytest.fixture
async def backend(clock: JumpClock) -> AsyncIterator[GCSBackend]:
    # The store judges GCS's per-name second on the same clock the queue waits on.
    store = MemoryObjectStore("timeline", per_name_limit=True, clock=clock.monotonic)
    async with GCSBackend("timeline", object_store=store) as b:
        b.async_task_storage.clock = clock
        yield b


async def _status(backend: GCSBackend, task_id: str) -> TaskStatus:
    task = await backend.async_task_storage.get_task(task_id)
    assert task is not None
    return task.status


async def _timeline(backend: GCSBackend, task_id: str) -> list[TaskEvent]:
    await backend.async_event_storage.flush()
    return [
        e
        for e in await backend.async_event_storage.get_events(task_id=task_id)
        if e.event_type not in _NOT_TRANSITIONS
    ]


async def test_every_transition_of_a_task_is_in_its_timeline_once_in_order(
    backend: GCSBackend, clock: JumpClock
) -> None:
    omniq = OmniQ(backend)

    @omniq.task(name="always_fails", queue=QUEUE, max_retries=1, retry_delay=0.05, ttl=TTL_S)
    async def always_fails() -> None:
        raise ValueError("no luck")

    task_id = await omniq.enqueue_async("always_fails")

    # claim -> retry -> claim -> fail, by a running worker.
    worker = omniq.worker(
        QUEUE, worker_id="w-runner", lease_seconds=LEASE, reap_interval=3_600, clock=clock
    )
    running = asyncio.create_task(worker.run())

    async def failed() -> bool:
        return await _status(backend, task_id) == TaskStatus.FAILED

    await wait_until(failed, "the task failed twice")
    worker.stop()
    await asyncio.wait_for(running, 30)

    # An operator's retry, cancel and retry again.
    operator = Operator(backend, actor="alice")
    await operator.retry_task(task_id, expected_status=TaskStatus.FAILED)
    await operator.cancel_task(task_id, expected_status=TaskStatus.PENDING)
    await operator.retry_task(task_id, expected_status=TaskStatus.CANCELLED)

    # The seed API's claim, by a worker that then dies (its lease is never renewed).
    queue = backend.async_task_storage
    held = await queue.dequeue(QUEUE, timeout=10, worker_id="w-doomed", lease_seconds=LEASE)
    assert held is not None and held.id == task_id

    # The reaper (a worker's pass) sees the lease unchanged for a whole lease: requeued.
    reaper = Worker(backend, omniq.registry, QUEUE, worker_id="w-reaper", clock=clock)
    assert await reaper.reap() == []  # the first pass only observes
    clock.jump(LEASE + LEASE_MARGIN_S + 1)
    assert await reaper.reap() == [task_id]
    assert await _status(backend, task_id) == TaskStatus.PENDING

    # Its TTL runs out while it waits: expired.
    clock.jump(2 * TTL_S)
    await reaper.reap()
    assert await _status(backend, task_id) == TaskStatus.EXPIRED

    timeline = await _timeline(backend, task_id)
    assert [(e.event_type, e.worker_id, e.actor) for e in timeline] == [
        (EventType.ENQUEUED, None, None),
        (EventType.DEQUEUED, "w-runner", None),
        (EventType.RETRY, "w-runner", None),
        (EventType.DEQUEUED, "w-runner", None),
        (EventType.FAILED, "w-runner", None),
        (EventType.ENQUEUED, None, "alice"),
        (EventType.CANCELLED, None, "alice"),
        (EventType.ENQUEUED, None, "alice"),
        (EventType.DEQUEUED, "w-doomed", None),
        (EventType.LEASE_EXPIRED, "w-reaper", None),
        (EventType.EXPIRED, "w-reaper", None),
    ]
    assert all(e.queue_name == QUEUE for e in timeline)
    # Each is the transition's own event (lifecycle.event_of): its message and details.
    claims = [e.message for e in timeline if e.event_type == EventType.DEQUEUED]
    assert claims == [
        "claimed by w-runner (attempt 1)",
        "claimed by w-runner (attempt 2)",
        "claimed by w-doomed (attempt 3)",
    ]
    retry, failure = timeline[2], timeline[4]
    assert retry.details["retry_count"] == 1 and retry.error_type == "ValueError"
    assert failure.details == {"retry_count": 1, "retryable": True}
    assert failure.error_message == "no luck" and failure.execution_time is not None
    requeue = timeline[9]
    assert requeue.details["previous_owner"] == "w-doomed" and requeue.details["attempt"] == 3


def test_a_blocking_dequeue_logs_its_claim_in_the_sync_event_log() -> None:
    backend = GCSBackend("timeline-sync", object_store=MemoryObjectStore("timeline-sync"))
    omniq = OmniQ(backend)
    with backend:
        task_id = omniq.enqueue("jobs:work", queue=QUEUE)
        held = backend.task_storage.dequeue_sync(QUEUE, worker_id="w-sync")
        assert held is not None and held.id == task_id
    # Closing the backend wrote the batch the claim's event went into.
    with backend:
        events = backend.event_storage.get_events_sync(task_id=task_id)
    assert [(e.event_type, e.worker_id, e.message) for e in events] == [
        (EventType.ENQUEUED, None, events[0].message),
        (EventType.DEQUEUED, "w-sync", "claimed by w-sync (attempt 1)"),
    ]
