"""Bad input from the bucket: every bad object is reported (key and reason) or kept out of the
counts as outside the layout; nothing else breaks. Hostile text round-trips byte for byte.

A bucket is shared by many writers (other OmniQ versions, other tools, people with gsutil), so
the stores and the monitor must take whatever is there.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from omniq_console.backend.errors import CorruptObjectError
from omniq_console.backend.gcs import GCSBackend
from omniq_console.backend.layout import Layout
from omniq_console.models import (
    EventType,
    ResultStatus,
    Schedule,
    ScheduleType,
    Task,
    TaskEvent,
    TaskResult,
    TaskStatus,
    new_event_id,
)
from omniq_console.monitor.monitor import Monitor

HUGE = 5 * 1024 * 1024
HOSTILE = [
    "\x1b[2J\x1b[H\x1b[31mred alert\x1b[0m",
    "\x1b]8;;https://example.invalid/phish\x07click\x1b]8;;\x07",
    "\x1b]0;owned title\x07",
    "[bold red]fake[/bold red] [link=https://x.invalid]l[/link] [/] [[escaped]]",
    "\r\n\t\x00\x07\x08\x7f",
    "\u202eevil\u202c \u200b zero-width, RTL override",
    "{}[]()\\\"'`$|;&<>*?",
]


@dataclass
class Planted:
    good_tasks: set[str] = field(default_factory=set)
    # Objects whose key is in the layout but whose body cannot be used: must be reported.
    bad_tasks: set[str] = field(default_factory=set)
    bad_other: set[str] = field(default_factory=set)
    # Objects whose key is not in the layout at all: reported or left out, never counted.
    outside: set[str] = field(default_factory=set)


@pytest.fixture
async def backend(bucket: str) -> AsyncIterator[GCSBackend]:
    async with GCSBackend(bucket, prefix="omniq/", cache_timeout=0) as b:
        yield b


async def _plant(backend: GCSBackend) -> Planted:
    store, lay = backend.store, backend.layout
    planted = Planted()
    queue = backend.async_task_storage
    for i in range(3):
        planted.good_tasks.add(await queue.enqueue(Task(func=f"mod:good{i}", id=f"good-{i}")))

    async def put(key: str, data: bytes, metadata: dict[str, str] | None = None) -> str:
        await store.write(key, data, metadata=metadata)
        return key

    # Valid body, index metadata that lies: the body decides.
    badmeta = Task(func="mod:badmeta", id="badmeta")
    await put(lay.task("badmeta"), badmeta.to_json(), {"omniq_index": "1", "status": "bogus"})
    planted.good_tasks.add("badmeta")

    future = json.loads(Task(func="mod:f", id="future").to_json())
    future["schema_version"] = 99
    mismatch = Task(func="mod:m", id="someone-else").to_json()
    for name, data in {
        "notjson": b"\x00\xff{not json",
        "array": b"[1, 2, 3]",
        "wrongshape": json.dumps({"id": "wrongshape", "func": 5, "status": "exploded"}).encode(),
        "future": json.dumps(future).encode(),
        "mismatch": mismatch,
        "huge": b"x" * HUGE,
        "empty": b"",
    }.items():
        planted.bad_tasks.add(await put(lay.task(name), data))

    # Keys outside the layout, with bodies that would otherwise parse as real tasks.
    planted.outside.add(
        await put(f"{lay.tasks}sub/nested.json", Task(func="m:n", id="nested").to_json())
    )
    planted.outside.add(await put(f"{lay.tasks}noext", Task(func="m:x", id="noext").to_json()))
    planted.outside.add(await put(f"{lay.queues}q.json", Task(func="m:q", id="q").to_json()))
    # A folder marker as consoles create them: not an object of the layout, not an error.
    await put(lay.tasks, b"")

    # Queue entries that cannot be claimed.
    planted.bad_other.add(await put(lay.queue_entry("default", "garbage"), b"not json"))
    await put(
        lay.queue_entry("default", "orphan"),
        json.dumps({"schema_version": 1, "task_id": "orphan", "queue": "default"}).encode(),
    )

    # Results, events and schedules.
    await backend.async_result_storage.set(
        TaskResult(task_id="good-0", status=ResultStatus.SUCCESS, result=1)
    )
    planted.bad_other.add(await put(lay.result("r-notjson"), b"<html>"))
    planted.bad_other.add(
        await put(lay.result("r-shape"), json.dumps({"task_id": "r-shape", "status": 7}).encode())
    )
    await backend.async_event_storage.log_event(
        TaskEvent(task_id="good-0", event_type=EventType.ENQUEUED)
    )
    planted.bad_other.add(await put(lay.event(new_event_id()), b"\xfe\xfe"))
    await backend.async_schedule_storage.save_schedule(
        Schedule(schedule_type=ScheduleType.INTERVAL, func="m:s", interval=timedelta(hours=1),
                 id="sched-good")
    )
    bad_cron = json.loads(
        Schedule(schedule_type=ScheduleType.CRON, func="m:s", cron_expression="* * * * *",
                 id="sched-cron").to_json()
    )
    bad_cron["cron_expression"] = "every day at noon"
    planted.bad_other.add(await put(lay.schedule("sched-cron"), json.dumps(bad_cron).encode()))
    planted.bad_other.add(await put(lay.schedule("sched-junk"), b"null"))
    return planted


def _check_reasons(rows: Iterable[Any], keys: set[str]) -> None:
    by_key = {row.key: row.reason for row in rows}
    missing = keys - set(by_key)
    assert not missing, f"bad objects not reported: {sorted(missing)}"
    for key in keys:
        reason = by_key[key]
        assert reason and "\n" not in reason and len(reason) < 500, (key, reason)


async def test_store_listings_report_bad_objects_and_keep_good_ones(backend: GCSBackend) -> None:
    planted = await _plant(backend)
    lay = backend.layout

    tasks = await backend.async_task_storage.list_tasks()
    assert {t.id for t in tasks} == planted.good_tasks
    _check_reasons(tasks.unreadable, planted.bad_tasks)
    reasons = {row.key: row.reason for row in tasks.unreadable}
    assert "upgrade" in reasons[lay.task("future")] or "schema" in reasons[lay.task("future")]
    assert "match" in reasons[lay.task("mismatch")]
    # A key outside tasks/<id>.json is not a task, however valid its body.
    assert not {"nested", "noext"} & {t.id for t in tasks}

    pending = await backend.async_task_storage.list_tasks(status=TaskStatus.PENDING)
    assert {t.id for t in pending} == planted.good_tasks

    results = await backend.async_result_storage.list_results()
    assert [r.task_id for r in results] == ["good-0"]
    _check_reasons(results.unreadable, {k for k in planted.bad_other if "/results/" in k})

    events = await backend.async_event_storage.get_events()
    assert [e.task_id for e in events] == ["good-0"]
    _check_reasons(events.unreadable, {k for k in planted.bad_other if "/events/" in k})

    schedules = await backend.async_schedule_storage.list_schedules()
    assert [s.id for s in schedules] == ["sched-good"]
    _check_reasons(schedules.unreadable, {k for k in planted.bad_other if "/schedules/" in k})
    await backend.async_schedule_storage.get_ready_schedules()


async def test_get_of_a_bad_object_names_the_key(backend: GCSBackend) -> None:
    await _plant(backend)
    for name in ("notjson", "future", "mismatch", "huge", "empty"):
        with pytest.raises(CorruptObjectError) as err:
            await backend.async_task_storage.get_task(name)
        assert backend.layout.task(name) in str(err.value)
        assert len(str(err.value)) < 600 and "\n" not in str(err.value)
    with pytest.raises(CorruptObjectError):
        await backend.async_result_storage.get("r-notjson")
    with pytest.raises(CorruptObjectError):
        await backend.async_schedule_storage.get_schedule("sched-cron")


async def test_claims_and_housekeeping_go_on_around_bad_objects(backend: GCSBackend) -> None:
    planted = await _plant(backend)
    queue = backend.async_task_storage
    claimed = []
    for _ in range(10):
        task = await queue.dequeue(["default"], worker_id="w-bad-input")
        if task is None:
            break
        claimed.append(task.id)
    assert sorted(claimed) == sorted(planted.good_tasks - {"badmeta"})
    await queue.requeue_expired()
    await queue.cleanup_expired_tasks()
    await backend.async_result_storage.cleanup_expired_results()
    await backend.async_event_storage.cleanup_old_events(timedelta(days=1))
    # Nothing bad was "repaired" into a task, and nothing good was lost.
    again = await queue.list_tasks()
    assert {t.id for t in again} == planted.good_tasks
    assert {t.id for t in again if t.status == TaskStatus.RUNNING} == set(claimed)


async def test_monitor_reports_bad_objects_and_counts_only_real_tasks(
    backend: GCSBackend,
) -> None:
    planted = await _plant(backend)
    monitor = Monitor(backend, poll_timeout=30)
    snap = await monitor.poll(raise_errors=True)

    assert sum(snap.tasks.values()) == len(planted.good_tasks)
    assert snap.tasks["pending"] == len(planted.good_tasks)
    _check_reasons(list(snap.unreadable), planted.bad_tasks | planted.bad_other)
    rows = {row.id for row in snap.task_rows}
    assert rows == planted.good_tasks
    assert sum(q.pending + q.delayed + q.running for q in snap.queues) <= 3 + 2
    assert [s.id for s in snap.schedules] == ["sched-good"]

    # Nothing changed: the next poll reads no body again (not even the 5 MB one).
    before = backend.store.stats.copy()
    again = await monitor.poll(raise_errors=True)
    assert backend.store.stats.since(before).count["get"] == 0
    assert again.unreadable == snap.unreadable and again.tasks == snap.tasks

    detail = await monitor.task_detail("notjson")
    assert detail.task is None
    assert [u.key for u in detail.unreadable] == [backend.layout.task("notjson")]
    snap.to_json_dict(include_tasks=True)  # serializable whatever the bucket held


async def test_out_of_layout_keys_are_never_counted(backend: GCSBackend) -> None:
    """Valid task bodies under keys the layout does not produce: neither the stores nor the
    monitor may count them (an action on such a 'task' would address another object)."""
    planted = await _plant(backend)
    lay = backend.layout
    tasks = await backend.async_task_storage.list_tasks()
    snap = await Monitor(backend, poll_timeout=30).poll(raise_errors=True)
    for key in planted.outside:
        name = Layout.name_of(key)
        assert name not in {t.id for t in tasks}, key
        assert name not in {row.id for row in snap.task_rows}, key
    assert lay.task("nested") != f"{lay.tasks}sub/nested.json"


@pytest.mark.parametrize("text", HOSTILE)
async def test_hostile_text_round_trips_byte_for_byte(backend: GCSBackend, text: str) -> None:
    task = Task(
        func=f"mod:{text}",
        args=(text, [text]),
        kwargs={text: text},
        metadata={"note": text},
    )
    queue = backend.async_task_storage
    await queue.enqueue(task)
    stored = await backend.store.read(backend.layout.task(task.id))
    assert stored.data == task.to_json()
    got = await queue.get_task(task.id)
    assert got is not None and got.to_json() == task.to_json()
    assert got.func == task.func and got.kwargs == {text: text} and got.args == (text, [text])
    listed = await queue.list_tasks()
    assert [t.to_json() for t in listed] == [task.to_json()]

    result = TaskResult(task_id=task.id, status=ResultStatus.ERROR, error=text,
                        error_type=text, traceback=f"Traceback:\n{text}\n")
    await backend.async_result_storage.set(result)
    got_result = await backend.async_result_storage.get(task.id)
    assert got_result is not None and got_result.to_json() == result.to_json()

    event = TaskEvent(task_id=task.id, event_type=EventType.FAILED, message=text,
                      error_message=text, queue_name="default")
    await backend.async_event_storage.log_event(event)
    events = await backend.async_event_storage.get_events(task_id=task.id)
    assert [e.to_json() for e in events] == [event.to_json()]

    snap = await Monitor(backend, poll_timeout=30).poll(raise_errors=True)
    assert [row.message for row in snap.events] == [text]
    assert [row.error_message for row in snap.events] == [text]
    assert [row.func for row in snap.task_rows] == [task.func]
    assert snap.failures_by_type.get(text, 0) in (0, 1)
    detail = await Monitor(backend).task_detail(task.id)
    assert detail.task is not None and detail.task.to_json() == task.to_json()
    assert detail.result is not None and detail.result.traceback == result.traceback


@pytest.mark.parametrize("bad", ["../etc", "a/b", "..", "", "x\n", "\x1b[2J", "q?x", "a\\b"])
async def test_unsafe_ids_are_refused_before_any_request(backend: GCSBackend, bad: str) -> None:
    from omniq_console.runtime.operator import Operator

    before = backend.store.stats.copy()
    queue = backend.async_task_storage
    with pytest.raises(ValueError):
        await queue.enqueue(Task(func="m:f", id=bad))
    with pytest.raises(ValueError):
        await queue.enqueue(Task(func="m:f", queue_name=bad))
    with pytest.raises(ValueError):
        await queue.get_task(bad)
    with pytest.raises(ValueError):
        await queue.dequeue([bad])
    with pytest.raises(ValueError):
        await backend.async_result_storage.get(bad)
    with pytest.raises(ValueError):
        await backend.async_schedule_storage.get_schedule(bad)
    with pytest.raises(ValueError):
        await backend.async_schedule_storage.pause_schedule(bad)
    op = Operator(backend, actor="tester")
    for action in (op.retry_task, op.cancel_task, op.delete_task, op.pause_schedule):
        with pytest.raises(ValueError):
            await action(bad)
    assert backend.store.stats.since(before).total == 0
