"""Bad input from the bucket: every bad object is reported (key and reason) or kept out of the
counts as outside the layout; nothing else breaks. Hostile text round-trips byte for byte.

A bucket is shared by many writers (other OmniQ versions, other tools, people with gsutil), so
the stores and the monitor must take whatever is there.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from protocol_helpers import complete, task_in
from waiting import wait_until

from omniq_console import OmniQ
from omniq_console.backend import lifecycle
from omniq_console.backend.errors import CorruptObjectError
from omniq_console.backend.gcs import GCSBackend
from omniq_console.backend.index import (
    WorkerIndex,
    event_batch_metadata,
    event_metadata,
    paused_metadata,
    queue_entry_metadata,
    result_metadata,
    schedule_metadata,
    task_metadata,
    worker_index,
    worker_metadata,
)
from omniq_console.backend.layout import Layout
from omniq_console.backend.listing import ItemList
from omniq_console.backend.memstore import MemoryObjectStore
from omniq_console.backend.reaper import LEASE_MARGIN_S
from omniq_console.clock import FakeClock
from omniq_console.models import (
    EventBatch,
    EventType,
    ResultStatus,
    Schedule,
    ScheduleType,
    Task,
    TaskEvent,
    TaskResult,
    TaskStatus,
    new_event_id,
    utcnow,
)
from omniq_console.monitor.monitor import Monitor
from omniq_console.runtime import Scheduler

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
    good_tasks: set[str] = field(default_factory=set)  # pending
    done_tasks: set[str] = field(default_factory=set)  # completed through the protocol
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

    # Results (a task completed by a worker, in its own queue), events and schedules.
    done = await task_in(backend, TaskStatus.COMPLETED, queue="done", value=1, id="done-0")
    planted.done_tasks.add(done.id)
    planted.bad_other.add(await put(lay.result("r-notjson"), b"<html>"))
    planted.bad_other.add(
        await put(lay.result("r-shape"), json.dumps({"task_id": "r-shape", "status": 7}).encode())
    )
    await backend.async_event_storage.log_event(
        TaskEvent(task_id="good-0", event_type=EventType.ENQUEUED)
    )
    planted.bad_other.add(await put(lay.event(new_event_id()), b"\xfe\xfe"))
    await backend.async_schedule_storage.save_schedule(
        Schedule(
            schedule_type=ScheduleType.INTERVAL,
            func="m:s",
            interval=timedelta(hours=1),
            id="sched-good",
        )
    )
    bad_cron = json.loads(
        Schedule(
            schedule_type=ScheduleType.CRON,
            func="m:s",
            cron_expression="* * * * *",
            id="sched-cron",
        ).to_json()
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
    assert {t.id for t in tasks} == planted.good_tasks | planted.done_tasks
    _check_reasons(tasks.unreadable, planted.bad_tasks)
    reasons = {row.key: row.reason for row in tasks.unreadable}
    assert "upgrade" in reasons[lay.task("future")] or "schema" in reasons[lay.task("future")]
    assert "match" in reasons[lay.task("mismatch")]
    # A key outside tasks/<id>.json is not a task, however valid its body.
    assert not {"nested", "noext"} & {t.id for t in tasks}

    pending = await backend.async_task_storage.list_tasks(status=TaskStatus.PENDING)
    assert {t.id for t in pending} == planted.good_tasks

    results = await backend.async_result_storage.list_results()
    assert [r.task_id for r in results] == ["done-0"]
    _check_reasons(results.unreadable, {k for k in planted.bad_other if "/results/" in k})

    events = await backend.async_event_storage.get_events()
    # The single event, and the batch the completed task's worker wrote.
    assert {e.task_id for e in events} == {"good-0", "done-0"}
    assert EventType.COMPLETED in {e.event_type for e in events if e.task_id == "done-0"}
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
    assert {t.id for t in again} == planted.good_tasks | planted.done_tasks
    assert {t.id for t in again if t.status == TaskStatus.RUNNING} == set(claimed)


async def test_monitor_reports_bad_objects_and_counts_only_real_tasks(
    backend: GCSBackend,
) -> None:
    planted = await _plant(backend)
    monitor = Monitor(backend, poll_timeout=30)
    snap = await monitor.poll(raise_errors=True)

    assert sum(snap.tasks.values()) == len(planted.good_tasks) + len(planted.done_tasks)
    assert snap.tasks["pending"] == len(planted.good_tasks)
    assert snap.tasks["completed"] == len(planted.done_tasks)
    _check_reasons(list(snap.unreadable), planted.bad_tasks | planted.bad_other)
    rows = {row.id for row in snap.task_rows}
    assert rows == planted.good_tasks | planted.done_tasks
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

    result = TaskResult(
        task_id=task.id,
        status=ResultStatus.ERROR,
        error=text,
        error_type=text,
        traceback=f"Traceback:\n{text}\n",
    )
    await backend.async_result_storage.set(result)
    got_result = await backend.async_result_storage.get(task.id)
    assert got_result is not None and got_result.to_json() == result.to_json()

    event = TaskEvent(
        task_id=task.id,
        event_type=EventType.FAILED,
        message=text,
        error_message=text,
        queue_name="default",
    )
    await backend.async_event_storage.log_event(event)
    events = await backend.async_event_storage.get_events(task_id=task.id)
    assert [e.to_json() for e in events] == [event.to_json()]

    snap = await Monitor(backend, poll_timeout=30).poll(raise_errors=True)
    assert [row.message for row in snap.events] == [text]
    assert [row.error_message for row in snap.events] == [text]
    assert [row.func for row in snap.task_rows] == [task.func]
    assert snap.failures_by_type.get(text, 0) in (0, 1)
    detail = await Monitor(backend).task_detail(task.id)
    # The detail's task is the task as get_task derives it (status from its state record).
    stored = await backend.async_task_storage.get_task(task.id)
    assert stored is not None and detail.task is not None
    assert detail.task.to_json() == stored.to_json()
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


# -- fuzzed objects under every prefix (hypothesis) -----------------------------------------
#
# One object of one prefix gets one field, of its metadata or of its body, replaced by a
# fuzzed value: dates that overflow when converted to UTC, numbers out of any range, strings,
# and shapes of every kind. Around it the stores list, a worker claims, finishes and reaps, and
# the scheduler fires: the bad object is reported as unreadable (or read, when the value
# happens to be valid), and everything else is processed.

OVERFLOWING_DATES = [
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
    "9999-12-31T23:59:59.999999+00:00",
    "0001-01-01T00:00:00",
    "2026-02-30T00:00:00+00:00",
    "+10000-01-01T00:00:00",
    "",
]
_offsets = st.builds(
    timezone, st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))
)
DATES = st.sampled_from(OVERFLOWING_DATES) | st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31), timezones=_offsets
).map(datetime.isoformat)
NUMBERS = (
    st.integers()
    | st.sampled_from([10**30, -(10**30), -1, 0, 2**63])
    | st.floats(allow_nan=True, allow_infinity=True)
)
STRINGS = st.text(max_size=40)
SHAPES = st.recursive(
    st.none() | st.booleans() | NUMBERS | STRINGS | DATES,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
BODY_VALUES = DATES | NUMBERS | STRINGS | SHAPES
METADATA_VALUES = (
    DATES
    | NUMBERS.map(str)
    | st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
)
LISTED: dict[str, Callable[[Any], set[str]]] = {
    "tasks": lambda items: {t.id for t in items},
    "results": lambda items: {r.task_id for r in items},
    "events": lambda items: {e.id for e in items},
    "batches": lambda items: {e.task_id for e in items},
    "schedules": lambda items: {s.id for s in items},
}
PREFIXES = ["tasks", "queues", "results", "events", "batches", "schedules", "workers", "paused"]
CAUGHT_UP = timedelta(seconds=1)


@dataclass
class Base:
    """A valid object of one prefix, before its fuzzing."""

    key: str
    body: dict[str, Any]
    metadata: dict[str, str]
    name: str  # the id its store lists it by
    raw: bytes | None = None  # the body as stored, when not json.dumps(body)


def _base_object(backend: GCSBackend, prefix: str) -> Base:
    lay, now = backend.layout, utcnow()
    if prefix in ("tasks", "queues"):
        task = Task(func="fz:bad", id=f"bad-{prefix}", ttl=timedelta(hours=1))
        if prefix == "tasks":
            return Base(lay.task(task.id), json.loads(task.to_json()), task_metadata(task), task.id)
        body = {"schema_version": 1, "task_id": task.id, "queue": "default", "nonce": "n"}
        return Base(lay.queue_entry("default", task.id), body, queue_entry_metadata(task), task.id)
    if prefix == "results":  # a running task's state record, whose holder is gone
        task = Task(func="fz:bad", id="bad-results")
        record = lifecycle.claim(task, None, worker="w-gone", lease_s=3.0, now=now).record
        record.ttl = timedelta(hours=1)
        return Base(
            lay.result(task.id), json.loads(record.to_json()), result_metadata(record), task.id
        )
    if prefix in ("events", "batches"):
        event = TaskEvent(task_id="bad-events", event_type=EventType.FAILED, timestamp=now)
        if prefix == "events":
            return Base(
                lay.event(event.id), json.loads(event.to_json()), event_metadata(event), event.id
            )
        batch_id = new_event_id()
        body = json.loads(EventBatch(events=[event]).to_json())
        # Listed by the events it holds.
        metadata = event_batch_metadata(batch_id, [event])
        return Base(lay.event(batch_id), body, metadata, "bad-events")
    if prefix == "schedules":
        schedule = Schedule(
            schedule_type=ScheduleType.INTERVAL,
            func="fz:bad",
            interval=timedelta(seconds=60),
            id="bad-schedule",
            next_run=now - timedelta(seconds=5),
        )
        return Base(
            lay.schedule(schedule.id),
            json.loads(schedule.to_json()),
            schedule_metadata(schedule),
            schedule.id,
        )
    if prefix == "workers":
        beat = WorkerIndex(
            id="w-bad",
            state="running",
            last_seen=now,
            started_at=now,
            host="h",
            pid=1,
            queues=("default",),
            running=("bad-results",),
            processed=1,
            failed=0,
            concurrency=1,
        )
        body = {
            "id": beat.id,
            "state": "running",
            "last_seen": now.isoformat(),
            "queues": ["default"],
        }
        return Base(lay.worker(beat.id), body, worker_metadata(beat), beat.id)
    body = {"queue": "elsewhere", "actor": "ops"}
    return Base(lay.paused_queue("elsewhere"), body, paused_metadata("ops", now), "elsewhere")


async def _the_rest_goes_on(backend: GCSBackend, bad: Base, prefix: str, where: str) -> None:
    """Everything around ``bad`` is processed; ``bad`` itself is read or reported."""
    clock = FakeClock()
    queue = backend.async_task_storage
    queue.clock = clock
    omniq = OmniQ(backend)
    schedule_id = await omniq.schedule_async("fz:tick", interval=60, schedule_id="good-schedule")
    good = await task_in(backend, TaskStatus.PENDING, queue="work", id="good")
    body = bad.raw if bad.raw is not None else json.dumps(bad.body).encode()
    await backend.store.write(bad.key, body, metadata=bad.metadata)

    # The stores: every listing answers, and reports what it could not read.
    tasks = await queue.list_tasks()
    assert good.id in {t.id for t in tasks}
    await queue.list_tasks(status=TaskStatus.PENDING, queue_name="default")
    assert await queue.get_queue_size("work") == 1
    await queue.get_queue_size("default")
    await queue.paused_queues()
    results = await backend.async_result_storage.list_results()
    pending = await backend.async_result_storage.list_results(status="pending")
    events = await backend.async_event_storage.get_events()
    await backend.async_event_storage.get_events(task_id="bad-events", event_type="failed")
    schedules = await backend.async_schedule_storage.list_schedules()
    assert schedule_id in {s.id for s in schedules}
    ready = await backend.async_schedule_storage.get_ready_schedules(now=utcnow() + CAUGHT_UP)
    for info in await backend.store.list(backend.layout.workers):
        worker_index(info)
    if where == "body" and prefix in LISTED:
        # Its index is intact and says it is there: the body is read, or reported.
        listings: dict[str, ItemList[Any]] = {
            "tasks": tasks,
            "results": ItemList([*results, *pending], [*results.unreadable, *pending.unreadable]),
            "events": events,
            "batches": events,
            "schedules": schedules,
        }
        listing = listings[prefix]
        assert bad.name in LISTED[prefix](listing) or bad.key in {
            u.key for u in listing.unreadable
        }, (bad.key, listing.unreadable)

    # A worker: claims the good task (past whatever the bad entry ranks as), finishes it,
    # and its reaper passes run over the bad object.
    held = None
    for _ in range(4):
        got = await queue.dequeue(["default", "work"], worker_id="w-fz")
        if got is not None and got.id == good.id:
            held = got
            break
    assert held is not None, "the good task was never claimed"
    await complete(backend, held, "ok")
    await queue.maintain(grace_seconds=0)
    clock.advance(queue.lease_seconds + LEASE_MARGIN_S + 1)
    await queue.maintain(grace_seconds=0)
    done = await queue.get_task(good.id)
    assert done is not None and done.status == TaskStatus.COMPLETED
    result = await backend.async_result_storage.get(good.id)
    assert result is not None and result.result == "ok"

    # The scheduler fires the good schedule.
    assert schedule_id not in {s.id for s in ready}  # due in a minute
    await Scheduler(backend, scheduler_id="s-fz").tick(utcnow() + timedelta(seconds=61))
    stored = await backend.async_schedule_storage.get_schedule(schedule_id)
    assert stored is not None and stored.run_count == 1
    await backend.async_event_storage.flush()


_examples = iter(range(10**6))


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_fuzzed_objects_under_every_prefix_stop_nothing(bucket: str, data: st.DataObject) -> None:
    prefix = data.draw(st.sampled_from(PREFIXES), label="prefix")
    where = data.draw(st.sampled_from(["body", "metadata"]), label="where")

    async def run() -> None:
        async with GCSBackend(bucket, prefix=f"fz{next(_examples)}/", cache_timeout=0) as b:
            bad = _base_object(b, prefix)
            fields = sorted(bad.body if where == "body" else bad.metadata)
            name = data.draw(st.sampled_from(fields), label="field")
            if where == "body":
                bad.body[name] = data.draw(BODY_VALUES, label="value")
            else:
                bad.metadata[name] = data.draw(METADATA_VALUES, label="value")
            await _the_rest_goes_on(b, bad, prefix, where)

    asyncio.run(run())


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    prefix=st.sampled_from(PREFIXES),
    depth=st.one_of(st.integers(1, 3_000), st.integers(3_000, 200_000)),
    pad=st.one_of(st.just(0), st.integers(1, 4 * 1024 * 1024)),
    data=st.data(),
)
def test_deep_and_huge_bodies_under_every_prefix_stop_nothing(
    prefix: str, depth: int, pad: int, data: st.DataObject
) -> None:
    """Any field of any object nested ``depth`` levels deep (past the JSON parser's recursion
    limit too) and padded by up to 4 MB: every reader, claimer and reaper goes on around it
    (on the in-memory store: the depth, not the transport, is under test)."""

    async def run() -> None:
        store = MemoryObjectStore("fz-deep")
        async with GCSBackend("fz-deep", object_store=store, cache_timeout=0) as b:
            bad = _base_object(b, prefix)
            name = data.draw(st.sampled_from(sorted(bad.body)), label="field")
            marker = "\u0000omniq-deep\u0000"
            text = json.dumps({**bad.body, name: marker, "pad": "x" * pad})
            nested = "[" * depth + "]" * depth
            bad.raw = text.replace(json.dumps(marker), nested).encode()
            await _the_rest_goes_on(b, bad, prefix, "body")

    asyncio.run(run())


def _is_date(value: object) -> bool:
    if not isinstance(value, str) or len(value) < 19:
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _every_date(base: Base, value: str, where: str) -> Base:
    """``base`` with each date of its body or of its metadata replaced by ``value``."""
    body, metadata = dict(base.body), dict(base.metadata)
    target: dict[str, Any] = body if where == "body" else metadata
    for name in [k for k, v in target.items() if _is_date(v)]:
        target[name] = value
    return Base(base.key, body, metadata, base.name)


NAMED_DATES = ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"]


async def test_overflowing_dates_everywhere_stop_no_worker_and_no_scheduler(
    backend: GCSBackend,
) -> None:
    """The dates of issue 16 in every date field of every prefix, in metadata and in bodies,
    all at once; plus tasks and results created in year 9999 with a ttl. A real worker and a
    real scheduler run beside them and do their work."""
    planted: list[str] = []
    for n, (prefix, where, value) in enumerate(
        (p, w, v) for p in PREFIXES for w in ("body", "metadata") for v in NAMED_DATES
    ):
        base = _base_object(backend, prefix)
        bad = _every_date(base, value, where)
        key = f"{bad.key[: -len('.json')]}-{n}.json" if bad.key.endswith(".json") else bad.key
        await backend.store.write(key, json.dumps(bad.body).encode(), metadata=bad.metadata)
        planted.append(key)
    for prefix in ("tasks", "results"):
        base = _base_object(backend, prefix)
        body = {**base.body, "created_at": "9999-12-31T23:00:00+00:00", "ttl": 7200.0}
        body.pop("expires_at", None)
        key = base.key.replace(".json", "-y9999.json")
        await backend.store.write(key, json.dumps(body).encode(), metadata=base.metadata)
        planted.append(key)

    omniq = OmniQ(backend)
    omniq.task(name="fz.good", queue="work")(lambda: "done")
    worker = omniq.worker(
        ["default", "work"], lease_seconds=3, poll_interval=0.1, reap_interval=0.3
    )
    scheduler = omniq.scheduler(interval=0.2)
    schedule_id = await omniq.schedule_async("fz.good", interval=1, schedule_id="every-second")
    loops = [asyncio.create_task(worker.run()), asyncio.create_task(scheduler.run())]
    try:
        task_id = await omniq.enqueue_async("fz.good")
        result = await omniq.get_result_async(task_id, timeout=20)
        assert result.status == ResultStatus.SUCCESS and result.result == "done"

        async def scheduled_run_done() -> bool:
            assert not any(loop.done() for loop in loops), "a loop ended"
            return any(
                t.metadata.get("schedule_id") == schedule_id and t.status == TaskStatus.COMPLETED
                for t in await backend.async_task_storage.list_tasks(queue_name="work")
            )

        await wait_until(scheduled_run_done, "the schedule's run worked off", every=0.2)
        assert not any(loop.done() for loop in loops), "the worker or the scheduler ended"
    finally:
        worker.stop()
        scheduler.stop()
        outcomes = await asyncio.gather(*loops, return_exceptions=True)
    assert outcomes == [None, None]
    assert worker.processed >= 2
    # The stores report the planted objects instead of failing on them.
    listed = await backend.async_task_storage.list_tasks()
    results = await backend.async_result_storage.list_results(status="pending")
    events = await backend.async_event_storage.get_events()
    schedules = await backend.async_schedule_storage.list_schedules()
    reported = {u.key for u in [*listed.unreadable, *results.unreadable]}
    reported |= {u.key for u in [*events.unreadable, *schedules.unreadable]}
    bodies = [k for k in planted if "-y9999" in k]
    assert set(bodies) <= reported, bodies


@pytest.mark.parametrize("lease_s", ["-1e9", "-3", "nan", "inf", "1e308", "junk"])
async def test_a_lease_length_out_of_range_neither_steals_nor_pins_a_lease(
    bucket: str, lease_s: str
) -> None:
    """A running record whose index gives a lease length no worker could hold (negative, not
    finite, not a number): a reaper takes it as unknown (its own lease length) instead of
    judging the live lease dead at first sight, or never."""
    async with GCSBackend(bucket) as holder, GCSBackend(bucket) as reaper:
        held = await task_in(holder, TaskStatus.RUNNING, id="held")
        key = holder.layout.result(held.id)
        [info] = await holder.store.list(key)
        body = (await holder.store.read(key)).data
        await holder.store.write(key, body, metadata={**info.metadata, "lease_s": lease_s})
        clock = FakeClock()
        queue = reaper.async_task_storage
        queue.clock = clock
        assert (await queue.maintain()).requeued == []  # first sight: only observed
        clock.advance(queue.lease_seconds / 2)
        assert (await queue.maintain()).requeued == []  # still within any lease
        clock.advance(queue.lease_seconds + LEASE_MARGIN_S)
        requeued = [task_id for task_id, _ in (await queue.maintain()).requeued]
        assert requeued == [held.id]  # never renewed for a whole lease: dead after all
