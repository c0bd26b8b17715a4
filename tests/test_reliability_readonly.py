"""read_only means read only: every write method of every store, and every operator action,
is refused before a single write request reaches the wire (counted at the proxy).

The list of write methods is not written by hand: every public coroutine method of each store
class that is not a known read is called, so a write method added later is covered too (and
this test fails until it refuses on a read-only backend, or is named a read here).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import pytest
from faultproxy import FaultProxy
from reliability_fixtures import (
    FAST_RETRY,
    fault_proxy_fixture,  # noqa: F401 - fixtures used by name
    proxy_bucket_fixture,  # noqa: F401
)

from omniq_console.backend import lifecycle
from omniq_console.backend.errors import ReadOnlyError
from omniq_console.backend.gcs import GCSBackend
from omniq_console.backend.queue import CancelRequest
from omniq_console.demo.emulator import Emulator
from omniq_console.models import (
    EventType,
    ResultStatus,
    Schedule,
    ScheduleType,
    Task,
    TaskEvent,
    TaskResult,
    TaskStatus,
    utcnow,
)

READS = {
    "get_task",
    "get_record",
    "statuses",
    "get_queue_size",
    "list_tasks",
    "paused_queues",
    "ready_to_write",  # waits out the per-name gap of this process's own writes; no request
    "get",
    "list_results",
    "get_events",
    "read_events",
    "get_schedule",
    "list_schedules",
    "get_ready_schedules",
}
UNBUFFERED = {"flush", "aclose"}
"""Write what ``record`` buffered: on a read-only backend ``record`` refuses, so there is never
anything to write (called too, and must send nothing)."""
NO_SYNC_TWIN: set[str] = set()
"""Write methods without a blocking ``*_sync`` twin (the sync test covers the others)."""
KEYWORDS: dict[str, dict[str, Any]] = {
    "pause_queue": {"actor": "auditor"},
    "request_cancel": {"actor": "auditor"},
}


class Seeded:
    """Objects stored through a read-write backend before the read-only one looks."""

    def __init__(self) -> None:
        self.pending = Task(func="mod:pending", queue_name="q")
        self.running: Task | None = None
        self.schedule = Schedule(
            schedule_type=ScheduleType.INTERVAL, func="mod:tick", interval=timedelta(seconds=5)
        )
        self.result = TaskResult(task_id="done-1", status=ResultStatus.SUCCESS, result=1)
        self.event = TaskEvent(task_id="done-1", event_type=EventType.COMPLETED)


@pytest.fixture
async def seeded(proxy_bucket: str, emulator: Emulator) -> Seeded:
    seed = Seeded()
    async with GCSBackend(proxy_bucket, endpoint_url=emulator.url) as rw:
        await rw.async_task_storage.enqueue(seed.pending)
        await rw.async_task_storage.enqueue(Task(func="mod:claimed", queue_name="r"))
        seed.running = await rw.async_task_storage.dequeue(["r"], worker_id="w1")
        assert seed.running is not None
        await rw.async_schedule_storage.save_schedule(seed.schedule)
        await rw.async_result_storage.set(seed.result)
        await rw.async_event_storage.log_event(seed.event)
    return seed


@pytest.fixture
async def read_only(
    proxy_bucket: str, fault_proxy: FaultProxy, seeded: Seeded
) -> AsyncIterator[GCSBackend]:
    backend = GCSBackend(
        proxy_bucket, access="read_only", endpoint_url=fault_proxy.url, retry=FAST_RETRY
    )
    async with backend:
        fault_proxy.reset_records()
        yield backend


def _arguments(seed: Seeded) -> dict[str, tuple[Any, ...]]:
    """Arguments for each write method: real objects, so only read-only can stop the call."""
    assert seed.running is not None
    fresh = Task(func="mod:new", queue_name="q")
    pending_copy = seed.pending.model_copy()
    pending_copy.priority = 9
    record = seed.running.record
    assert record is not None and record.lease_owner is not None
    done = lifecycle.complete(
        record, worker=record.lease_owner, value=1, execution_time=0.1, now=utcnow()
    )
    cancel = lifecycle.cancel(seed.pending, None, actor="auditor", now=utcnow())
    return {
        "enqueue": (fresh,),
        "dequeue": (["q"],),
        "claim_pass": (["q"], "w-ro", 30.0),
        "update_task": (seed.running,),
        "apply": (seed.pending, cancel),
        "finish": (seed.running, done),
        "delete_task": (seed.pending.id,),
        "cleanup_expired_tasks": (),
        "maintain": (),
        "renew_lease": (seed.running,),
        "release": (seed.running,),
        "requeue_expired": (),
        "request_cancel": (seed.running,),
        "withdraw_request": (
            CancelRequest(seed.running.id, record.attempt, record.lease_owner, "auditor", 1),
        ),
        "pause_queue": ("q",),
        "resume_queue": ("q",),
        "set": (TaskResult(task_id="x-1", status=ResultStatus.SUCCESS),),
        "delete": (seed.result.task_id,),
        "cleanup_expired_results": (),
        "log_event": (TaskEvent(task_id="x-1", event_type=EventType.ENQUEUED),),
        "log_events": ([TaskEvent(task_id="x-1", event_type=EventType.ENQUEUED)],),
        "cleanup_old_events": (timedelta(0),),
        "save_schedule": (
            Schedule(schedule_type=ScheduleType.INTERVAL, func="m:f", interval=timedelta(1)),
        ),
        "update_schedule": (seed.schedule,),
        "delete_schedule": (seed.schedule.id,),
        "pause_schedule": (seed.schedule.id,),
        "resume_schedule": (seed.schedule.id,),
    }


def _stores(backend: GCSBackend) -> Iterator[Any]:
    yield backend.async_task_storage
    yield backend.async_result_storage
    yield backend.async_event_storage
    yield backend.async_schedule_storage


def _write_methods(store: Any) -> list[str]:
    return sorted(
        name
        for name, member in inspect.getmembers(type(store))
        if not name.startswith("_") and inspect.iscoroutinefunction(member) and name not in READS
    )


async def test_every_async_write_method_is_refused_without_a_request(
    read_only: GCSBackend, fault_proxy: FaultProxy, seeded: Seeded
) -> None:
    args = _arguments(seeded)
    called = []
    for store in _stores(read_only):
        for name in _write_methods(store):
            method = getattr(store, name)
            if name in UNBUFFERED:
                assert not await method(), name
                continue
            assert name in args, f"{type(store).__name__}.{name}: a new write method; add it here"
            with pytest.raises(ReadOnlyError):
                await method(*args[name], **KEYWORDS.get(name, {}))
            called.append(name)
    with pytest.raises(ReadOnlyError):  # the runtime's buffered logging refuses at once
        read_only.async_event_storage.record(TaskEvent(event_type=EventType.ENQUEUED))
    assert len(called) >= 25
    assert fault_proxy.write_requests() == []
    # A read-only backend still reads, through the same proxy.
    tasks = await read_only.async_task_storage.list_tasks()
    assert {t.status for t in tasks} == {TaskStatus.PENDING, TaskStatus.RUNNING}
    assert fault_proxy.write_requests() == []
    assert fault_proxy.counts()[("GET", "list")] >= 1


def test_every_sync_write_method_is_refused_without_a_request(
    proxy_bucket: str, fault_proxy: FaultProxy, seeded: Seeded
) -> None:
    args = _arguments(seeded)
    backend = GCSBackend(
        proxy_bucket, access="read_only", endpoint_url=fault_proxy.url, retry=FAST_RETRY
    )
    with backend:
        fault_proxy.reset_records()
        stores = [
            backend.task_storage,
            backend.result_storage,
            backend.event_storage,
            backend.schedule_storage,
        ]
        called = 0
        for store in stores:
            for name in _write_methods(store):
                if name in UNBUFFERED:
                    continue  # nothing is ever buffered read-only: the async test covers it
                if name in NO_SYNC_TWIN:
                    assert not hasattr(store, f"{name}_sync"), f"{name}_sync: test it here"
                    continue
                with pytest.raises(ReadOnlyError):
                    getattr(store, f"{name}_sync")(*args[name], **KEYWORDS.get(name, {}))
                called += 1
        assert called >= 22
        assert backend.task_storage.get_queue_size_sync("q") == 1
    assert fault_proxy.write_requests() == []


async def test_operator_actions_on_a_read_only_backend_send_nothing(
    read_only: GCSBackend, fault_proxy: FaultProxy, seeded: Seeded
) -> None:
    from omniq_console.runtime.operator import Operator

    op = Operator(read_only, actor="auditor")
    assert seeded.running is not None
    actions = [
        ("pause_schedule", (seeded.schedule.id,)),
        ("resume_schedule", (seeded.schedule.id,)),
        ("trigger_schedule", (seeded.schedule.id,)),
        ("retry_task", (seeded.running.id,)),
        ("cancel_task", (seeded.pending.id,)),
        ("delete_task", (seeded.pending.id,)),
    ]
    for name, action_args in actions:
        with pytest.raises((ReadOnlyError, ValueError)) as err:
            await getattr(op, name)(*action_args)
        if not isinstance(err.value, ReadOnlyError):
            # Refused on the state seen (say, retrying a running task): still nothing written.
            assert "read-only" not in str(err.value)
    try:
        outcome = await op.retry_tasks([seeded.running.id, seeded.pending.id])
    except ReadOnlyError:
        pass  # refusing the whole bulk action is as good as refusing each id
    else:
        assert not outcome.done
    assert fault_proxy.write_requests() == []


async def test_monitoring_a_read_only_backend_sends_no_write(
    read_only: GCSBackend, fault_proxy: FaultProxy, seeded: Seeded
) -> None:
    from omniq_console.monitor.monitor import Monitor

    monitor = Monitor(read_only, interval=0.2)
    first = await monitor.poll()
    assert first.tasks["pending"] == 1 and first.tasks["running"] == 1
    await monitor.poll()
    assert seeded.running is not None
    await monitor.task_detail(seeded.running.id)
    assert fault_proxy.write_requests() == []
    assert fault_proxy.records, "the monitor must have read through the proxy"
