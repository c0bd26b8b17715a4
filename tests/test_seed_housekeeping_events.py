"""The seed API's housekeeping writes the events of the transitions it applies, as a worker's
reaper pass does: ``requeue_expired()`` a dead lease's ``lease_expired``, and
``cleanup_expired_tasks()`` an ``expired`` (whoever applies a transition writes its event).

Runs on the in-memory store (GCS's rules, per-name limit on) with a clock the test moves
forward, so a lease dies and a TTL runs out without waiting.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from test_runtime_lease_end import JumpClock

from omniq_console.backend.gcs import GCSBackend
from omniq_console.backend.memstore import MemoryObjectStore
from omniq_console.backend.reaper import LEASE_MARGIN_S
from omniq_console.models import EventType, Task, TaskEvent, TaskStatus

LEASE = 3.0
QUEUE = "seed"


@pytest.fixture
def clock() -> JumpClock:
    return JumpClock()


@pytest.fixture
async def backend(clock: JumpClock) -> AsyncIterator[GCSBackend]:
    # The store judges GCS's per-name second on the same clock the queue waits on.
    store = MemoryObjectStore("seed-events", per_name_limit=True, clock=clock.monotonic)
    async with GCSBackend("seed-events", object_store=store) as b:
        b.async_task_storage.clock = clock
        yield b


async def _timeline(backend: GCSBackend, task_id: str) -> list[TaskEvent]:
    await backend.async_event_storage.flush()
    return list(await backend.async_event_storage.get_events(task_id=task_id))


async def test_requeue_expired_and_cleanup_expired_tasks_write_their_transitions_events(
    backend: GCSBackend, clock: JumpClock
) -> None:
    queue = backend.async_task_storage
    reaper_id = queue.worker_id
    task = Task(func="jobs:work", queue_name=QUEUE, ttl=timedelta(hours=1))
    await queue.enqueue(task)
    held = await queue.dequeue(QUEUE, timeout=10, worker_id="w-doomed", lease_seconds=LEASE)
    assert held is not None and held.id == task.id

    # The worker dies: its lease is judged dead across two calls, as in a reaper pass.
    assert await queue.requeue_expired() == []
    clock.jump(LEASE + LEASE_MARGIN_S + 1)
    assert await queue.requeue_expired() == [task.id]

    # It waits past its TTL: expired.
    clock.jump(2 * 3_600)
    assert await queue.cleanup_expired_tasks() == 1
    stored = await queue.get_task(task.id)
    assert stored is not None and stored.status == TaskStatus.EXPIRED

    timeline = await _timeline(backend, task.id)
    # (The seed's ``enqueue`` logs nothing; ``OmniQ.enqueue`` logs ``enqueued``.)
    assert [(e.event_type, e.worker_id) for e in timeline] == [
        (EventType.DEQUEUED, "w-doomed"),
        (EventType.LEASE_EXPIRED, reaper_id),
        (EventType.EXPIRED, reaper_id),
    ]
    assert all(e.queue_name == QUEUE for e in timeline)
    # Each is the transition's own event (lifecycle.event_of), naming who applied it.
    requeue, expiry = timeline[1], timeline[2]
    assert requeue.message == f"lease of w-doomed expired; returned to its queue by {reaper_id}"
    assert requeue.details == {"reaper": reaper_id, "previous_owner": "w-doomed", "attempt": 1}
    assert expiry.message == "expired before it ran"

    # Nothing more to do: no transition, no event.
    assert await queue.requeue_expired() == []
    assert await queue.cleanup_expired_tasks() == 0
    assert len(await _timeline(backend, task.id)) == len(timeline)
