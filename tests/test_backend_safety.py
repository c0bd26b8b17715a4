"""read_only sends nothing, unsafe ids send nothing, corrupt objects are named, never skipped."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

import pytest
from protocol_helpers import fail_once

from omniq_console.backend import lifecycle
from omniq_console.backend.errors import CorruptObjectError, ReadOnlyError, UnreadableObject
from omniq_console.backend.events import AsyncGCSEventStorage
from omniq_console.backend.gcs import GCSBackend
from omniq_console.backend.index import task_index, task_metadata
from omniq_console.backend.lifecycle import Failure
from omniq_console.models import (
    EventType,
    ResultStatus,
    Schedule,
    ScheduleType,
    Task,
    TaskEvent,
    TaskResult,
    utcnow,
)


def _stored_task() -> Task:
    task = Task(func="m:f")
    task._generation = 1
    return task


def _held_task() -> Task:
    """A task as ``dequeue`` returns it: running under a lease, with its state record."""
    task = _stored_task()
    claimed = lifecycle.claim(task, None, worker="w1", lease_s=30.0, now=utcnow())
    claimed.record._generation = 1
    return lifecycle.overlay(task, claimed.record)


async def _record(e: AsyncGCSEventStorage) -> None:
    e.record(TaskEvent(event_type=EventType.ENQUEUED))


def _stored_schedule() -> Schedule:
    schedule = Schedule(schedule_type=ScheduleType.INTERVAL, func="m:f", interval=timedelta(1))
    schedule._generation = 1
    return schedule


def _write_calls(b: GCSBackend) -> list[tuple[str, Callable[[], Awaitable[Any]]]]:
    q, r = b.async_task_storage, b.async_result_storage
    e, s = b.async_event_storage, b.async_schedule_storage
    return [
        ("enqueue", lambda: q.enqueue(Task(func="m:f"))),
        ("dequeue", lambda: q.dequeue(["default"])),
        ("update_task", lambda: q.update_task(_stored_task())),
        ("delete_task", lambda: q.delete_task("t1")),
        ("cleanup_expired_tasks", lambda: q.cleanup_expired_tasks()),
        ("renew_lease", lambda: q.renew_lease(_held_task())),
        ("release", lambda: q.release(_held_task())),
        ("requeue_expired", lambda: q.requeue_expired()),
        ("maintain", lambda: q.maintain()),
        (
            "finish",
            lambda: q.finish(
                held := _held_task(),
                lifecycle.complete(
                    held.record,  # type: ignore[arg-type]
                    worker="w1",
                    value=1,
                    execution_time=0.1,
                    now=utcnow(),
                ),
            ),
        ),
        (
            "apply",
            lambda: q.apply(
                task := _stored_task(), lifecycle.cancel(task, None, actor="ops", now=utcnow())
            ),
        ),
        ("pause_queue", lambda: q.pause_queue("default", actor="ops")),
        ("resume_queue", lambda: q.resume_queue("default")),
        ("set", lambda: r.set(TaskResult(task_id="t1"))),
        ("delete", lambda: r.delete("t1")),
        ("cleanup_expired_results", lambda: r.cleanup_expired_results()),
        ("log_event", lambda: e.log_event(TaskEvent(event_type=EventType.ENQUEUED))),
        ("log_events", lambda: e.log_events([TaskEvent(event_type=EventType.ENQUEUED)])),
        ("record", lambda: _record(e)),
        ("cleanup_old_events", lambda: e.cleanup_old_events(timedelta(days=1))),
        ("save_schedule", lambda: s.save_schedule(_stored_schedule())),
        ("update_schedule", lambda: s.update_schedule(_stored_schedule())),
        ("delete_schedule", lambda: s.delete_schedule("s1")),
        ("pause_schedule", lambda: s.pause_schedule("s1")),
        ("resume_schedule", lambda: s.resume_schedule("s1")),
    ]


async def test_read_only_refuses_every_write_before_any_request(bucket: str) -> None:
    async with GCSBackend(bucket, access="read_only") as backend:
        assert backend.read_only
        before = backend.store.stats.copy()
        for name, call in _write_calls(backend):
            with pytest.raises(ReadOnlyError) as err:
                await call()
            assert isinstance(err.value, PermissionError), name
            assert "read-only" in str(err.value)
        assert backend.store.stats.since(before).total == 0
        # Reads still work.
        assert await backend.async_task_storage.get_queue_size("default") == 0


def test_read_only_sync_twins_refuse_too(bucket: str) -> None:
    with GCSBackend(bucket, access="read_only") as backend:
        before = backend.store.stats.copy()
        with pytest.raises(PermissionError):
            backend.task_storage.enqueue_sync(Task(func="m:f"))
        with pytest.raises(PermissionError):
            backend.schedule_storage.pause_schedule_sync("s1")
        assert backend.store.stats.since(before).total == 0


UNSAFE = ["a/b", "..", "x..y", "tab\there", "nl\n", "", "nul\x00", "bell\x07", " lead"]


@pytest.mark.parametrize("bad", UNSAFE)
async def test_unsafe_names_are_refused_before_any_request(bucket: str, bad: str) -> None:
    async with GCSBackend(bucket) as backend:
        q, r = backend.async_task_storage, backend.async_result_storage
        e, s = backend.async_event_storage, backend.async_schedule_storage
        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: q.enqueue(Task(func="m:f", id=bad)),
            lambda: q.enqueue(Task(func="m:f", queue_name=bad)),
            lambda: q.get_task(bad),
            lambda: q.delete_task(bad),
            lambda: q.dequeue([bad]),
            lambda: q.dequeue(["ok", bad]),
            lambda: q.get_queue_size(bad),
            lambda: q.list_tasks(queue_name=bad),
            lambda: r.get(bad),
            lambda: r.set(TaskResult(task_id=bad)),
            lambda: r.delete(bad),
            # model_construct: an empty id would otherwise be replaced by a generated one.
            lambda: e.log_event(TaskEvent.model_construct(id=bad, event_type=EventType.ENQUEUED)),
            lambda: e.get_events(task_id=bad),
            lambda: s.get_schedule(bad),
            lambda: s.save_schedule(
                Schedule(
                    schedule_type=ScheduleType.INTERVAL, func="m:f", interval=timedelta(1), id=bad
                )
            ),
            lambda: s.delete_schedule(bad),
            lambda: s.pause_schedule(bad),
            lambda: s.resume_schedule(bad),
        ]
        before = backend.store.stats.copy()
        for call in calls:
            with pytest.raises(ValueError):
                await call()
        assert backend.store.stats.since(before).total == 0


# -- corrupt objects --------------------------------------------------------------------------

BAD_BODIES = {
    "not-json": (b"{not json", "not valid JSON"),
    "wrong-shape": (b'{"hello": "world"}', "not a valid"),
    "a-list": (b"[1, 2, 3]", "expected a JSON object"),
    "future": (None, "schema_version 99"),
}


async def _put_bad(backend: GCSBackend, folder: str, good: dict[str, Any]) -> dict[str, str]:
    """Write each bad body under ``folder``; return key -> expected reason fragment."""
    keys: dict[str, str] = {}
    for name, (body, reason) in BAD_BODIES.items():
        key = f"{folder}{name}.json"
        data = body if body is not None else json.dumps({**good, "schema_version": 99}).encode()
        await backend.store.write(key, data)
        keys[key] = reason
    return keys


def _assert_reported(unreadable: Sequence[UnreadableObject], expected: dict[str, str]) -> None:
    reasons = {u.key: u.reason for u in unreadable}
    assert set(reasons) == set(expected)
    for key, fragment in expected.items():
        assert fragment in reasons[key], (key, reasons[key])


async def test_corrupt_tasks_are_named(backend_rw: GCSBackend) -> None:
    b = backend_rw
    q = b.async_task_storage
    good = await q.enqueue(Task(func="m:f"))
    sample = json.loads((await b.store.read(b.layout.task(good))).data)
    bad = await _put_bad(b, b.layout.tasks, {**sample, "id": "future"})
    # A bad body behind good-looking index metadata is reported too, when it is read.
    masked = Task(func="m:f", id="masked")
    await b.store.write(b.layout.task("masked"), b"\xff\xfe", metadata=task_metadata(masked))
    bad[b.layout.task("masked")] = "not valid JSON"
    # A body copied under another task's key would make updates address the wrong object.
    await b.store.write(b.layout.task("copied"), json.dumps(sample).encode())
    bad[b.layout.task("copied")] = "does not match its key"
    for name in ["not-json", "future", "masked", "copied"]:
        with pytest.raises(CorruptObjectError) as err:
            await q.get_task(name)
        assert err.value.key == b.layout.task(name) and b.layout.task(name) in str(err.value)
    listed = await q.list_tasks()
    assert [t.id for t in listed] == [good]
    _assert_reported(listed.unreadable, bad)


async def test_corrupt_results_events_schedules_are_named(backend_rw: GCSBackend) -> None:
    b = backend_rw
    rs, es, ss = b.async_result_storage, b.async_event_storage, b.async_schedule_storage
    await rs.set(TaskResult(task_id="ok", status=ResultStatus.SUCCESS))
    event = await es.log_event(TaskEvent(event_type=EventType.ENQUEUED, task_id="ok"))
    schedule = await ss.save_schedule(
        Schedule(schedule_type=ScheduleType.INTERVAL, func="m:f", interval=timedelta(1))
    )
    bad_results = await _put_bad(b, b.layout.results, {"task_id": "future"})
    bad_events = await _put_bad(b, b.layout.events, {"id": "future", "event_type": "enqueued"})
    bad_schedules = await _put_bad(
        b,
        b.layout.schedules,
        {"id": "future", "schedule_type": "interval", "func": "m:f", "interval": 60},
    )
    with pytest.raises(CorruptObjectError, match=r"results/future\.json"):
        await rs.get("future")
    with pytest.raises(CorruptObjectError, match=r"schedules/not-json\.json"):
        await ss.get_schedule("not-json")
    with pytest.raises(CorruptObjectError, match=r"schedules/wrong-shape\.json"):
        await ss.pause_schedule("wrong-shape")

    results = await rs.list_results()
    assert [r.task_id for r in results] == ["ok"]
    _assert_reported(results.unreadable, bad_results)
    events = await es.get_events()
    assert [e.id for e in events] == [event.id]
    _assert_reported(events.unreadable, bad_events)
    schedules = await ss.list_schedules()
    assert [s.id for s in schedules] == [schedule.id]
    _assert_reported(schedules.unreadable, bad_schedules)
    ready = await ss.get_ready_schedules(now=utcnow() + timedelta(days=2))
    assert [s.id for s in ready] == [schedule.id]
    _assert_reported(ready.unreadable, bad_schedules)


async def test_a_corrupt_task_does_not_block_its_queue(backend_rw: GCSBackend) -> None:
    b = backend_rw
    q = b.async_task_storage
    broken = Task(func="m:f", priority=9)
    await q.enqueue(broken)
    # Spoiled on the generation enqueue wrote: a blind write of a name within its second gets
    # GCS's 429 and is rightly never retried.
    (written,) = await b.store.list(b.layout.task(broken.id))
    await b.store.write(
        written.key,
        b"garbage",
        metadata=task_metadata(broken),
        if_generation_match=written.generation,
    )
    fine = await q.enqueue(Task(func="m:f", priority=1))
    got = await q.dequeue(["default"])
    assert got is not None and got.id == fine
    listed = await q.list_tasks()
    assert [u.key for u in listed.unreadable] == [b.layout.task(broken.id)]


@pytest.fixture
async def backend_rw(bucket: str):  # type: ignore[no-untyped-def]
    async with GCSBackend(bucket) as b:
        yield b


async def test_hostile_text_in_index_metadata_round_trips(backend_rw: GCSBackend) -> None:
    # Control characters in metadata would come back as HTTP headers no client can parse.
    b = backend_rw
    q = b.async_task_storage
    text = "mod:\x00\r\n\t\x07\u202eevil é 100%41"
    task_id = await q.enqueue(Task(func=text, queue_name="é-queue"))
    got = await q.get_task(task_id)
    assert got is not None and got.func == text
    [info] = await b.store.list(b.layout.tasks)
    assert all(v.isascii() and v.isprintable() for v in info.metadata.values())
    index = task_index(info)
    assert index is not None and index.func == text and index.queue == "é-queue"
    claimed = await q.dequeue(["é-queue"], worker_id="wörker")
    assert claimed is not None and claimed.func == text
    await fail_once(b, claimed, Failure(text, "boom", retryable=False))
    [failed] = await b.async_result_storage.list_results(status="error")
    assert failed.error_type == text
    await b.async_event_storage.log_event(
        TaskEvent(task_id=task_id, event_type=EventType.FAILED, queue_name="q\x1b[2J")
    )
    await b.async_event_storage.flush()  # the claim's and the failure's batch, too
    events = await b.async_event_storage.get_events(task_id=task_id)
    assert [(e.event_type, e.queue_name) for e in events] == [
        (EventType.DEQUEUED, "é-queue"),
        (EventType.FAILED, "é-queue"),
        (EventType.FAILED, "q\x1b[2J"),
    ]
    assert events[0].worker_id == "wörker" and events[1].message.startswith(text)


async def test_keys_outside_the_layout_are_not_objects_of_the_stores(
    backend_rw: GCSBackend,
) -> None:
    b = backend_rw
    q = b.async_task_storage
    good = await q.enqueue(Task(func="m:f"))
    body = Task(func="m:f", id="nested").to_json()
    for key in [
        f"{b.layout.tasks}sub/nested.json",
        f"{b.layout.tasks}nested",
        b.layout.tasks,  # a folder marker
        f"{b.layout.queues}default/sub/nested.json",
        f"{b.layout.queues}default/bad[name].json",
        f"{b.layout.queues}nested.json",
        f"{b.layout.results}sub/x.json",
        f"{b.layout.schedules}x",
    ]:
        await b.store.write(key, body)
    listed = await q.list_tasks()
    assert [t.id for t in listed] == [good] and listed.unreadable == []
    assert await q.get_queue_size("default") == 1
    assert await b.async_result_storage.list_results() == []
    assert await b.async_schedule_storage.list_schedules() == []
    got = await q.dequeue(["default"])
    assert got is not None and got.id == good
    assert await q.dequeue(["default"]) is None
    assert await q.requeue_expired() == []
    assert await q.cleanup_expired_tasks() == 0
