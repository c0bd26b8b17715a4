"""Monitor polls against the real emulator: counts, cost, freshness, corrupt objects, events."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest

from omniq_console.backend.errors import BucketNotFoundError
from omniq_console.backend.gcs import GCSBackend
from omniq_console.backend.index import (
    WorkerIndex,
    event_metadata,
    schedule_metadata,
    task_metadata,
    worker_metadata,
)
from omniq_console.backend.layout import Layout
from omniq_console.backend.objectstore import ObjectStore
from omniq_console.models import (
    EventType,
    ResultStatus,
    Schedule,
    ScheduleStatus,
    ScheduleType,
    Task,
    TaskEvent,
    TaskResult,
    TaskStatus,
    new_event_id,
    utcnow,
)
from omniq_console.monitor import Monitor, Snapshot, take_snapshot
from omniq_console.monitor.sources import listing as listing_module


def _iso(value: datetime | None) -> str:
    return value.isoformat() if value is not None else ""


def task_md(task: Task) -> dict[str, str]:
    """A task definition's index metadata (docs/architecture.md, "Index metadata")."""
    return {
        "omniq_index": "1", "status": "pending", "queue": task.queue_name,
        "priority": str(task.priority), "func": task.func, "run_at": _iso(task.run_at),
        "expires_at": _iso(task.expires_at), "created_at": _iso(task.created_at),
    }  # fmt: skip


def record_md(task_id: str, state: str, status: str, **fields: str) -> dict[str, str]:
    """A state record's index metadata; ``fields`` as named in docs/architecture.md."""
    return {"omniq_index": "1", "status": status, "state": state, "attempt": "1", **fields}


async def put_task(
    b: GCSBackend, task: Task, *, entry: bool = False, record: dict[str, str] | None = None
) -> None:
    """A task as the write protocol leaves it: definition, queue entry (while not final) and
    state record (once claimed or final)."""
    md = task_md(task)
    await b.store.write(b.layout.task(task.id), task.to_json(), metadata=md)
    if entry:
        keys = ("omniq_index", "priority", "run_at", "expires_at", "created_at")
        await b.store.write(
            b.layout.queue_entry(task.queue_name, task.id),
            b'{"schema_version":1}',
            metadata={k: md[k] for k in keys},
        )
    if record is not None:
        await b.store.write(b.layout.result(task.id), b"{}", metadata=record)


async def put_result(b: GCSBackend, result: TaskResult) -> None:
    state = {"success": "completed", "error": "failed"}.get(result.status.value, "cancelled")
    md = record_md(
        result.task_id, state, result.status.value,
        completed_at=_iso(result.completed_at), error_type=result.error_type or "",
    )  # fmt: skip
    await b.store.write(b.layout.result(result.task_id), result.to_json(), metadata=md)


async def put_schedule(b: GCSBackend, schedule: Schedule) -> None:
    await b.store.write(
        b.layout.schedule(schedule.id), schedule.to_json(), metadata=schedule_metadata(schedule)
    )


async def put_worker(b: GCSBackend, worker_id: str, state: str, last_seen: datetime) -> None:
    index = WorkerIndex(worker_id, state, last_seen, last_seen, "host-a", 42, ("alpha",), (), 7, 1)
    await b.store.write(b.layout.worker(worker_id), b"{}", metadata=worker_metadata(index))


def by_row(snap: Snapshot, tid: str) -> Any:
    return next(r for r in snap.task_rows if r.id == tid)


def queue(snap: Snapshot, name: str) -> dict[str, object]:
    return next(q for q in snap.queues if q.name == name).model_dump()


async def test_seeded_state_counts(backend: GCSBackend) -> None:
    now = utcnow().replace(second=30, microsecond=0)

    def ago(seconds: float) -> datetime:
        return now - timedelta(seconds=seconds)

    def pending(created: datetime, **kw: Any) -> Task:
        return Task(func="mod.work", queue_name="alpha", created_at=created, **kw)

    # alpha: 4 ready, 1 delayed, 1 expired, 1 retry waiting for its run_at (its record says
    # pending, without a worker), 1 running and 1 stuck: entries stay while a task is not final.
    await put_task(backend, pending(ago(60)), entry=True)
    await put_task(backend, pending(ago(30)), entry=True)
    await put_task(backend, pending(ago(10)), entry=True)
    await put_task(backend, pending(ago(20)), entry=True)
    await put_task(backend, pending(ago(5), run_at=now + timedelta(minutes=5)), entry=True)
    await put_task(backend, pending(ago(500), expires_at=ago(1)), entry=True)
    retry = pending(ago(50))
    await put_task(backend, retry, entry=True, record=record_md(
        retry.id, "pending", "pending", retry_count="1", run_at=_iso(now + timedelta(seconds=9)),
    ))  # fmt: skip

    def running(q: str, lease_end: datetime, worker: str) -> tuple[Task, dict[str, str]]:
        task = Task(func="mod.run", queue_name=q, created_at=ago(200))
        md = record_md(
            task.id, "running", "pending", worker_id=worker, lease_s="30", queue=q,
            lease_expires_at=_iso(lease_end), started_at=_iso(ago(100)), func="mod.run",
        )  # fmt: skip
        return task, md

    stuck, stuck_md = running("alpha", ago(45), "w-dead")
    for t, md in (running("alpha", now + timedelta(seconds=30), "w-1"), (stuck, stuck_md),
                  running("beta", now + timedelta(seconds=30), "w-2")):  # fmt: skip
        await put_task(backend, t, entry=True, record=md)
    done = [Task(func="f", queue_name="beta") for _ in range(2)]
    failed = Task(func="f", queue_name="beta", created_at=ago(1000))
    for t in (*done, failed):
        await put_task(backend, t)

    def ok(tid: str, at: datetime) -> TaskResult:
        return TaskResult(task_id=tid, status=ResultStatus.SUCCESS, completed_at=at)

    def err(tid: str, at: datetime, kind: str) -> TaskResult:
        return TaskResult(task_id=tid, status=ResultStatus.ERROR, completed_at=at, error_type=kind)

    await put_result(backend, ok(done[0].id, ago(30)))
    await put_result(backend, ok(done[1].id, ago(90)))
    await put_result(backend, err(failed.id, ago(60), "ValueError"))
    await put_result(backend, err("gone-1", ago(20 * 60), "KeyError"))  # outside 5 min
    await put_result(backend, err("gone-2", ago(2 * 3600), "ValueError"))  # outside 30 min

    minute = timedelta(minutes=1)
    overdue = Schedule(schedule_type=ScheduleType.INTERVAL, func="s.late", interval=minute,
                       next_run=ago(600))  # fmt: skip
    soon = Schedule(schedule_type=ScheduleType.INTERVAL, func="s.soon", interval=minute,
                    next_run=now + minute)  # fmt: skip
    paused = Schedule(schedule_type=ScheduleType.CRON, func="s.paused", cron_expression="* * * * *",
                      status=ScheduleStatus.PAUSED, next_run=ago(3600))  # fmt: skip
    within_grace = Schedule(schedule_type=ScheduleType.INTERVAL, func="s.grace", interval=minute,
                            next_run=ago(30))  # fmt: skip
    for s in (overdue, soon, paused, within_grace):
        await put_schedule(backend, s)

    await put_worker(backend, "w-alive", "running", ago(5))
    await put_worker(backend, "w-dead", "running", ago(120))
    await put_worker(backend, "w-stopped", "stopped", ago(1))

    monitor = Monitor(backend, clock=lambda: now)
    snap = await monitor.poll()

    assert not snap.stale and snap.error is None and snap.unreadable == ()
    alpha = queue(snap, "alpha")
    assert (alpha["pending"], alpha["delayed"], alpha["running"]) == (4, 2, 2)
    # Claimed: entries of running tasks, still in the queue until their outcome.
    assert (alpha["expired"], alpha["claimed"]) == (1, 2)
    assert alpha["oldest_pending_age_s"] == pytest.approx(60)
    assert alpha["depth_trend"] == (6,)
    beta = queue(snap, "beta")
    assert (beta["pending"], beta["delayed"], beta["running"]) == (0, 0, 1)
    assert beta["oldest_pending_age_s"] is None
    assert snap.tasks == {
        "pending": 7, "running": 3, "completed": 2, "failed": 1, "cancelled": 0, "expired": 0,
    }  # fmt: skip

    assert [(s.id, s.worker_id, s.overdue_s) for s in snap.stuck] == [(stuck.id, "w-dead", 45.0)]

    # Running tasks' and the waiting retry's records say "pending" (no outcome yet). Results
    # and groups count the tasks in the bucket; the records of deleted tasks are counted apart.
    assert snap.results == {"pending": 4, "success": 2, "error": 1, "cancelled": 0, "expired": 0}
    assert snap.failures_by_type == {"ValueError": 1}
    assert snap.results_without_task == {"error": 2}
    assert snap.failure_rate == pytest.approx(1 / 3)
    assert len(snap.results_per_minute) == 30
    assert snap.results_per_minute[-1].minute == now.replace(second=0)
    by_minute = {m.minute: (m.success, m.error) for m in snap.results_per_minute}
    assert by_minute[now.replace(second=0)] == (1, 0)  # 30 s ago
    assert by_minute[now.replace(second=0) - minute] == (1, 1)  # 60 s and 90 s ago
    # Before the oldest success listed (90 s ago), successes may have been deleted by
    # retention: those minutes are not drawn (the failure 20 minutes ago included).
    assert by_minute[now.replace(second=0) - 20 * minute] == (0, 0)
    assert not snap.results_per_minute[-20 - 1].known
    assert sum(m.error for m in snap.results_per_minute) == 1

    rows = {r.func: r for r in snap.schedules}
    assert rows["s.late"].overdue and not rows["s.soon"].overdue
    assert not rows["s.paused"].overdue and not rows["s.grace"].overdue
    assert rows["s.paused"].status == "paused" and rows["s.paused"].schedule_type == "cron"
    assert rows["s.late"].interval_s == 60 and rows["s.late"].generation

    workers = {w.id: w for w in snap.workers}
    assert workers["w-alive"].alive and workers["w-alive"].age_s == pytest.approx(5)
    assert not workers["w-dead"].alive and not workers["w-stopped"].alive
    assert workers["w-alive"].queues == ("alpha",) and workers["w-alive"].processed == 7

    assert len(snap.task_rows) == 13
    assert by_row(snap, retry.id).retry_count == 1 and by_row(snap, stuck.id).worker_id == "w-dead"
    by_id = {r.id: r for r in snap.task_rows}
    assert by_id[failed.id].error_type == "ValueError" and by_id[failed.id].status == "failed"
    created = [r.created_at for r in snap.task_rows if r.created_at is not None]
    assert len(created) == 13 and created == sorted(created, reverse=True)  # newest first

    data = snap.to_json_dict()
    assert {"taken_at", "stale", "queues", "tasks", "results", "schedules", "events",
            "unreadable", "requests"} <= set(data)  # fmt: skip
    assert "task_rows" not in data and len(snap.to_json_dict(include_tasks=True)["task_rows"]) == 13

    # The trend line grows by one sample per poll.
    again = await monitor.poll()
    assert queue(again, "alpha")["depth_trend"] == (6, 6)


async def test_quiet_poll_reads_no_bodies(backend: GCSBackend) -> None:
    queue_ = backend.async_task_storage
    for i in range(2):
        await queue_.enqueue(Task(func=f"f{i}", queue_name="q1"))
    # A third task as its worker leaves it once complete: the definition, no entry, a state
    # record that says success. Each object is written once, in its final state: GCS takes
    # about one mutation of a name a second, so claiming it here and then overwriting its
    # record and deleting its entry would be refused (429).
    task = Task(func="f2", queue_name="q1")
    await put_task(backend, task, record=record_md(
        task.id, "completed", "success", completed_at=_iso(utcnow()),
    ))  # fmt: skip
    for kind in (EventType.ENQUEUED, EventType.DEQUEUED, EventType.COMPLETED):
        await backend.async_event_storage.log_event(TaskEvent(task_id=task.id, event_type=kind))
    schedule = Schedule(
        schedule_type=ScheduleType.CRON, func="nightly", cron_expression="0 3 * * *"
    )
    await backend.async_schedule_storage.save_schedule(schedule)
    await put_worker(backend, "w1", "running", utcnow())

    monitor = Monitor(backend)
    first = await monitor.poll()
    assert len(first.events) == 3 and len(first.schedules) == 1
    assert first.requests.by_kind["get"] == 4  # 3 new events + 1 schedule

    before = backend.store.stats.copy()
    second = await monitor.poll()
    delta = backend.store.stats.since(before)
    # Six prefixes listed whole, one listing for the event tail, and not one body.
    assert delta.count == {"list": 7, "get": 0, "write": 0, "delete": 0, "bucket": 0}
    assert second.requests.last_poll_requests == 7
    assert second.events == first.events and second.schedules == first.schedules
    assert second.tasks == first.tasks and second.queues[0].pending == 2
    assert second.task_rows is first.task_rows  # nothing changed: the rows are reused

    # A change costs exactly its own bodies: one new event, one schedule that changed.
    await backend.async_event_storage.log_event(
        TaskEvent(task_id=task.id, event_type=EventType.OPERATOR_ACTION, message="retried")
    )
    await backend.async_schedule_storage.pause_schedule(schedule.id)
    before = backend.store.stats.copy()
    third = await monitor.poll()
    assert backend.store.stats.since(before).count["get"] == 2
    assert third.events[0].message == "retried" and len(third.events) == 4
    assert third.schedules[0].status == "paused"
    assert third.task_rows is first.task_rows  # tasks and results did not change

    await queue_.enqueue(Task(func="late", queue_name="q1"))
    fourth = await monitor.poll()
    assert len(fourth.task_rows) == 4 and fourth.tasks["pending"] == 3
    # Unchanged tasks keep their row objects; only the new task got one.
    old_rows = {r.id: r for r in first.task_rows}
    kept = [r for r in fourth.task_rows if old_rows.get(r.id) is r]
    assert len(kept) == 3

    figures = fourth.requests
    assert figures.total == first.requests.total + 7 + 9 + 7
    assert figures.by_kind["list"] == 9 + 7 + 7 + 7 and figures.errors == 0
    # Four polls within a second are no window to measure a rate over.
    assert figures.requests_per_minute is None and figures.cost_per_hour_usd is None
    assert figures.mean_latency_ms > 0 and figures.last_poll_ms > 0


async def test_change_from_another_client_shows_in_next_poll(backend: GCSBackend) -> None:
    monitor = Monitor(backend)
    assert (await monitor.poll()).queues == ()
    async with GCSBackend(backend.bucket_name) as other:
        task = Task(func="remote", queue_name="fresh")
        await other.async_task_storage.enqueue(task)
        await other.async_event_storage.log_event(
            TaskEvent(task_id=task.id, event_type=EventType.ENQUEUED, queue_name="fresh")
        )
        snap = await monitor.poll()
        assert queue(snap, "fresh")["pending"] == 1
        assert [(e.event_type, e.task_id) for e in snap.events] == [("enqueued", task.id)]

        claimed = await other.async_task_storage.dequeue(["fresh"])
        assert claimed is not None
        snap = await monitor.poll()
        assert (queue(snap, "fresh")["pending"], queue(snap, "fresh")["running"]) == (0, 1)

        await other.async_task_storage.delete_task(task.id)
        snap = await monitor.poll()
        assert snap.tasks["running"] == 0 and snap.queues == ()


async def test_corrupt_objects_are_reported_and_nothing_else_breaks(
    backend: GCSBackend,
) -> None:
    store, layout = backend.store, backend.layout
    good = Task(func="fine", queue_name="ok")
    await backend.async_task_storage.enqueue(good)
    # A valid task written without index metadata (another OmniQ backend): counted from its body.
    plain = Task(func="plain", queue_name="ok", status=TaskStatus.FAILED)
    await store.write(layout.task(plain.id), plain.to_json())
    bad = {
        layout.task("not-json"): b"{this is not json",
        layout.task("wrong-shape"): b'{"func": 5, "id": "wrong-shape"}',
        layout.task("other-id"): Task(func="x", id="someone-else").to_json(),
        layout.schedules + "sched-bad.json": b'{"schedule_type": "cron", "func": "x", '
        b'"cron_expression": "not a cron", "id": "sched-bad"}',
        layout.schedules + "sched-text.json": b"\x00\xff binary",
        layout.result("res-bad"): b"[1, 2, 3]",
        layout.queue_entry("ok", "entry-bad"): b"nope",
        layout.queues + "stray.json": b"{}",
        layout.workers + "w-bad.json": b'{"state": "running"}',
    }
    generations = {key: (await store.write(key, data)).generation for key, data in bad.items()}
    event_key = layout.event(new_event_id())
    await store.write(event_key, b"<html>not an event</html>")
    schedule = Schedule(schedule_type=ScheduleType.INTERVAL, func="tick", interval=timedelta(1))
    await backend.async_schedule_storage.save_schedule(schedule)

    monitor = Monitor(backend)
    snap = await monitor.poll()
    reasons = {u.key: u.reason for u in snap.unreadable}
    assert set(reasons) == {*bad, event_key}
    assert reasons[layout.task("not-json")].startswith("not valid JSON")
    assert "func" in reasons[layout.task("wrong-shape")]
    assert "does not match its key" in reasons[layout.task("other-id")]
    assert "cron" in reasons[layout.schedules + "sched-bad.json"]
    assert "queue entry key" in reasons[layout.queues + "stray.json"]
    assert "heartbeat" in reasons[layout.workers + "w-bad.json"]
    # Everything readable is still there.
    # Status is derived from the state record, as get_task derives it: the body's FAILED
    # without a record is pending.
    assert snap.tasks["pending"] == 2 and snap.tasks["failed"] == 0
    assert queue(snap, "ok")["pending"] == 1  # the good entry; the bad one is reported
    assert [s.func for s in snap.schedules] == ["tick"]
    assert not snap.stale and snap.error is None

    # Bad objects are not re-read while their generation stays the same.
    before = store.stats.copy()
    again = await monitor.poll()
    assert store.stats.since(before).count["get"] == 0
    assert again.unreadable == snap.unreadable

    # Repaired, it leaves the list. The repair replaces exactly the version found bad (a
    # compare-and-swap on its generation), as a repair of a shared object must; that also
    # makes it safe to retry: GCS refuses (429) a rewrite of a name within about a second of
    # its last write, and ObjectStore retries a conditional write after its backoff.
    fixed = Task(func="repaired", id="not-json", queue_name="ok")
    await store.write(
        layout.task("not-json"), fixed.to_json(), metadata=task_metadata(fixed),
        if_generation_match=generations[layout.task("not-json")],
    )  # fmt: skip
    snap = await monitor.poll()
    assert layout.task("not-json") not in {u.key for u in snap.unreadable}
    assert snap.tasks["pending"] == 3


async def test_events_are_tailed_bounded_and_deduplicated(backend: GCSBackend) -> None:
    store, layout = backend.store, backend.layout

    async def log(at: datetime, message: str) -> TaskEvent:
        event = TaskEvent(event_type=EventType.ENQUEUED, timestamp=at, message=message)
        await store.write(layout.event(event.id), event.to_json(), metadata=event_metadata(event))
        return event

    now = utcnow()
    await log(now - timedelta(hours=2), "ancient")  # before the first poll's window
    for i in range(8):
        await log(now - timedelta(seconds=40 - i), f"e{i}")

    monitor = Monitor(backend, recent_events=5)
    before = store.stats.copy()
    snap = await monitor.poll()
    assert [e.message for e in snap.events] == ["e7", "e6", "e5", "e4", "e3"]
    assert store.stats.since(before).count["get"] == 5  # only the bodies shown

    # A late writer (its key sorts before the newest seen) is still picked up; nothing repeats.
    newest = snap.events[0].timestamp
    await log(newest - timedelta(seconds=1.5), "late")
    await log(utcnow(), "new")
    before = store.stats.copy()
    snap = await monitor.poll()
    assert store.stats.since(before).count["get"] == 2
    assert [e.message for e in snap.events] == ["new", "e7", "e6", "late", "e5"]
    assert len({e.id for e in snap.events}) == 5

    # A writer whose clock runs an hour ahead does not hide everyone else's later events.
    await log(utcnow() + timedelta(hours=1), "future")
    await monitor.poll()
    await log(utcnow(), "after")
    snap = await monitor.poll()
    assert {"future", "after"} <= {e.message for e in snap.events}


async def test_task_detail_reads_one_task_on_demand(backend: GCSBackend) -> None:
    queue_ = backend.async_task_storage
    events = backend.async_event_storage
    task = Task(func="detail.me", queue_name="d")
    other = Task(func="other", queue_name="d")
    for t in (task, other):
        await queue_.enqueue(t)
        await events.log_event(TaskEvent(task_id=t.id, event_type=EventType.ENQUEUED))
    await events.log_event(TaskEvent(task_id=task.id, event_type=EventType.FAILED, message="boom"))
    await backend.async_result_storage.set(
        TaskResult(task_id=task.id, status=ResultStatus.ERROR, error="boom", error_type="E")
    )
    monitor = Monitor(backend)
    await monitor.poll()

    before = backend.store.stats.copy()
    detail = await monitor.task_detail(task.id)
    assert detail.task is not None and detail.task.func == "detail.me"
    assert detail.result is not None and detail.result.error_type == "E"
    assert [e.event_type for e in detail.events] == ["enqueued", "failed"]
    assert detail.unreadable == ()
    # Two bodies, one listing of events and the two event objects that name the task.
    assert backend.store.stats.since(before).count == {
        "list": 1, "get": 4, "write": 0, "delete": 0, "bucket": 0,
    }  # fmt: skip

    missing = await monitor.task_detail("no-such-task")
    assert missing.task is None and missing.result is None and missing.events == ()
    with pytest.raises(ValueError):
        await monitor.task_detail("../escape")

    # A task whose definition is garbage (written once: a rewrite of ``other``'s definition
    # within a second of its enqueue would be refused by GCS).
    garbled = backend.layout.task("garbled")
    await backend.store.write(garbled, b"garbage")
    broken = await monitor.task_detail("garbled")
    assert broken.task is None
    assert [u.key for u in broken.unreadable] == [garbled]


async def test_take_snapshot_raises_on_a_missing_bucket(gcs_env: object) -> None:
    class Adapter:
        """Any object with these four attributes can be monitored."""

        def __init__(self, store: ObjectStore) -> None:
            self.store, self.layout = store, Layout("omniq/")
            self.bucket_name, self.prefix = store.bucket, "omniq/"

    store = ObjectStore("no-such-bucket-anywhere")
    await store.open()
    try:
        with pytest.raises(BucketNotFoundError):
            await take_snapshot(Adapter(store))
        monitor = Monitor(Adapter(store))
        stale = await monitor.poll()
        assert stale.stale and stale.error and "BucketNotFoundError" in stale.error
    finally:
        await store.close()


async def test_take_snapshot_of_an_open_backend(backend: GCSBackend) -> None:
    await backend.async_task_storage.enqueue(Task(func="one", queue_name="solo"))
    snap = await take_snapshot(backend)
    assert snap.queues[0].name == "solo" and snap.task_rows == ()
    assert len((await take_snapshot(backend, include_tasks=True)).task_rows) == 1


async def test_polls_never_overlap_and_subscribers_get_each_snapshot(
    backend: GCSBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monitor = Monitor(backend)
    inside = peak = 0
    real = monitor._poll_once

    async def counted(reconcile: bool) -> Snapshot:
        nonlocal inside, peak
        inside += 1
        peak = max(peak, inside)
        try:
            return await real(reconcile)
        finally:
            inside -= 1

    monkeypatch.setattr(monitor, "_poll_once", counted)
    seen: list[Snapshot] = []
    unsubscribe = monitor.subscribe(seen.append)

    async def failing(_: Snapshot) -> None:
        raise RuntimeError("a broken subscriber")

    monitor.subscribe(failing)
    snaps = await asyncio.gather(*(monitor.poll() for _ in range(4)))
    assert peak == 1 and seen == list(snaps) and monitor.latest is snaps[-1]
    unsubscribe()
    await monitor.poll()
    assert len(seen) == 4


async def test_large_prefixes_are_listed_as_key_ranges(
    backend: GCSBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listing_module, "SPLIT_EVERY", 3)
    for i in range(10):
        await backend.async_task_storage.enqueue(Task(func=f"f{i}", queue_name="r"))
    monitor = Monitor(backend)
    first = await monitor.poll()
    before = backend.store.stats.copy()
    second = await monitor.poll()
    # tasks/ and queues/ as 4 ranges each (split every 3rd key); results/, schedules/,
    # workers/ and paused/ whole; the events tail.
    assert backend.store.stats.since(before).count["list"] == 4 + 4 + 1 + 1 + 1 + 1 + 1
    assert second.tasks == first.tasks and second.queues[0].depth_trend == (10, 10)
    assert second.task_rows is first.task_rows
    await backend.async_task_storage.dequeue(["r"])
    third = await monitor.poll()
    assert (third.queues[0].pending, third.queues[0].running) == (9, 1)
