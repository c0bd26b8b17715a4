"""Snapshot fields on the emulator: events from batches (a future clock cannot hold the live
slots), ids the stores refuse reported, workers' slots, throughput windows, "connecting"."""

from __future__ import annotations

import asyncio
import urllib.request
from datetime import datetime, timedelta

import pytest
from protocol_helpers import task_in

from omniq_console.backend.gcs import GCSBackend
from omniq_console.backend.index import result_metadata, task_metadata
from omniq_console.demo.emulator import Emulator
from omniq_console.models import (
    EventType,
    ResultStatus,
    Task,
    TaskEvent,
    TaskResult,
    TaskStatus,
    utcnow,
)
from omniq_console.monitor import Monitor


def iso(seconds: float = 0.0) -> str:
    return (utcnow() + timedelta(seconds=seconds)).isoformat()


async def test_batches_fill_the_live_slots_and_a_future_clock_does_not_hold_them(
    backend: GCSBackend,
) -> None:
    events = backend.async_event_storage
    monitor = Monitor(backend, recent_events=3)
    future = TaskEvent(task_id="fast", event_type=EventType.EXECUTING,
                       timestamp=utcnow() + timedelta(hours=1), message="future")  # fmt: skip
    await events.log_events([future])
    snap = await monitor.poll()
    assert [e.message for e in snap.events] == ["future"]
    now = [TaskEvent(task_id=f"t{i}", event_type=EventType.COMPLETED, message=f"m{i}")
           for i in range(3)]  # fmt: skip
    await events.log_events(now)
    snap = await monitor.poll()
    # Ranked by when they were seen (the future one clamped to its arrival): the three newer
    # events hold the three slots.
    assert sorted(e.message or "" for e in snap.events) == ["m0", "m1", "m2"]


async def test_ids_the_stores_refuse_are_reported_not_counted(backend: GCSBackend) -> None:
    md = {"omniq_index": "1", "status": "pending", "queue": "q", "func": "f", "created_at": iso()}
    names = ["esc\x1b[31m", "rtl\u202eexe.fdp", "x" * 201]
    for name in names:
        await backend.store.write(f"{backend.layout.tasks}{name}.json", b"{}", metadata=md)
    await backend.store.write(backend.layout.task("fine"), b"{}", metadata=md)
    snap = await Monitor(backend).poll()
    assert snap.tasks["pending"] == 1
    reasons = [u.reason for u in snap.unreadable]
    assert len(reasons) == 3 and all("refused by the stores" in r for r in reasons)
    assert not any(ch in r for r in reasons for ch in "\x1b\u202e")


async def test_workers_show_slots_what_they_run_and_a_dead_heartbeat(
    backend: GCSBackend,
) -> None:
    await backend.store.write(
        backend.layout.task("job-1"), b"{}",
        metadata={"omniq_index": "1", "status": "pending", "queue": "q", "func": "app.resize",
                  "created_at": iso(-10)},
    )  # fmt: skip
    await backend.store.write(
        backend.layout.result("job-1"), b"{}",
        metadata={"omniq_index": "1", "status": "pending", "state": "running", "worker_id": "w1",
                  "attempt": "1", "lease_s": "30", "started_at": iso(-2), "queue": "q"},
    )  # fmt: skip
    beat = {"omniq_index": "1", "state": "running", "host": "h", "pid": "1", "queues": "q",
            "processed": "3", "failed": "0", "concurrency": "4"}  # fmt: skip
    fresh = {**beat, "last_seen": iso(), "running": "job-1"}
    stale = {**beat, "last_seen": iso(-600), "running": ""}
    await backend.store.write(backend.layout.worker("w1"), b"{}", metadata=fresh)
    await backend.store.write(backend.layout.worker("w2"), b"{}", metadata=stale)
    snap = await Monitor(backend).poll()
    w1, w2 = snap.workers
    assert (w1.concurrency, w1.utilisation, w1.running_funcs) == (4, 0.25, ("app.resize",))
    assert w1.alive and not w1.dead
    assert w2.dead and not w2.alive and w2.utilisation == 0.0


async def test_a_worker_never_shows_more_functions_running_than_its_slots(
    backend: GCSBackend,
) -> None:
    # A slot is freed when its function returns; the outcome lands up to a second later (the
    # per-name gap), so the bucket briefly holds more running records of one worker than it
    # has slots. Seen as "5/3 167%" before: now 3 of 3 slots, and 2 finishing.
    for i in range(5):
        await backend.store.write(
            backend.layout.task(f"job-{i}"), b"{}",
            metadata={"omniq_index": "1", "status": "pending", "queue": "q", "func": "f",
                      "created_at": iso(-10)},
        )  # fmt: skip
        await backend.store.write(
            backend.layout.result(f"job-{i}"), b"{}",
            metadata={"omniq_index": "1", "status": "pending", "state": "running",
                      "worker_id": "w1", "attempt": "1", "lease_s": "30",
                      "started_at": iso(-2), "queue": "q"},
        )  # fmt: skip
    beat = {"omniq_index": "1", "state": "running", "host": "h", "pid": "1", "queues": "q",
            "processed": "3", "failed": "0", "concurrency": "3", "last_seen": iso()}  # fmt: skip
    await backend.store.write(backend.layout.worker("w1"), b"{}", metadata=beat)
    (w1,) = (await Monitor(backend).poll()).workers
    assert len(w1.running) == 5  # what the bucket says: five records held by w1
    assert (w1.busy, w1.finishing, w1.utilisation) == (3, 2, 1.0)
    assert w1.load_text() == "3/3 +2"


async def test_throughput_windows_per_queue(backend: GCSBackend) -> None:
    # Each outcome lands a second after the function returned (the per-name gap): run time
    # is the function's own (execution_time), not completed - started.
    for i, (wait, run) in enumerate([(1.0, 2.0), (3.0, 4.0), (5.0, 6.0)]):
        tid = f"done-{i}"
        done = utcnow() - timedelta(minutes=i)
        started = done - timedelta(seconds=run + 1.0)
        created = started - timedelta(seconds=wait)
        await backend.store.write(
            backend.layout.result(tid), b"{}",
            metadata={"omniq_index": "1", "status": "success", "state": "completed",
                      "queue": "mail", "created_at": created.isoformat(),
                      "started_at": started.isoformat(), "completed_at": done.isoformat(),
                      "execution_time": f"{run:g}"},
        )  # fmt: skip
    snap = await Monitor(backend).poll()
    mail = next(q for q in snap.queues if q.name == "mail")
    windows = {w.window: w for w in mail.throughput}
    assert set(windows) == {"15m", "1h", "6h"}
    w = windows["15m"]
    assert (w.completed, w.failed) == (3, 0)
    assert (w.wait_p50_s, w.wait_p95_s) == pytest.approx((3.0, 5.0), abs=0.01)
    assert (w.run_p50_s, w.run_p95_s) == pytest.approx((4.0, 6.0), abs=0.01)
    assert 0 < w.covered_s <= w.window_s


async def test_before_the_first_poll_succeeds_each_attempt_says_connecting(
    backend: GCSBackend, gcs_env: Emulator
) -> None:
    # The bucket goes away after the backend opened it: every poll fails from the first.
    url = f"{gcs_env.url}/storage/v1/b/{backend.bucket_name}"
    request = urllib.request.Request(url, method="DELETE")
    await asyncio.to_thread(lambda: urllib.request.urlopen(request, timeout=10).close())
    monitor = Monitor(backend)
    first = await monitor.poll()
    second = await monitor.poll()
    assert first.connecting and first.stale and first.attempt == 1
    assert second.connecting and second.attempt == 2
    assert second.error is not None and "BucketNotFoundError" in second.error


async def test_bodies_for_search_are_read_once_per_generation(backend: GCSBackend) -> None:
    from omniq_console.models import Task

    task = Task(func="app.mail", args=("password-reset",), queue_name="q")
    await backend.async_task_storage.enqueue(task)
    monitor = Monitor(backend)
    await monitor.poll()
    first = await monitor.task_bodies([task.id, "missing-id"])
    found = first[task.id]
    assert found is not None and found.args == ("password-reset",)
    assert first["missing-id"] is None
    before = backend.store.stats.copy()
    again = await monitor.task_bodies([task.id])
    assert again[task.id] == found
    assert backend.store.stats.since(before).count["get"] == 0  # same generation: cached
    assert (await monitor.result_bodies([task.id])) == {task.id: None}


async def _put(backend: GCSBackend, task: Task | None, record: TaskResult | None) -> None:
    store, layout = backend.store, backend.layout
    if task is not None:
        await store.write(layout.task(task.id), task.to_json(), metadata=task_metadata(task))
    if record is not None:
        await store.write(
            layout.result(record.task_id), record.to_json(), metadata=result_metadata(record)
        )


def _failed(task_id: str, error_type: str, at: datetime) -> TaskResult:
    return TaskResult(
        task_id=task_id, status=ResultStatus.ERROR, error_type=error_type, completed_at=at
    )


async def test_results_and_failure_groups_count_the_same_tasks(backend: GCSBackend) -> None:
    # One failed task, and six error records whose tasks were deleted (history): the header's
    # "error" count, the groups and the failed task rows all count the one task; the six are
    # counted apart.
    task = Task(func="f", queue_name="q")
    await _put(backend, task, _failed(task.id, "TimeoutError", utcnow()))
    for n in range(6):
        await _put(backend, None, _failed(f"gone-{n}", "ValueError", utcnow()))
    snap = await Monitor(backend).poll()
    assert snap.results["error"] == 1
    assert snap.failures_by_type == {"TimeoutError": 1}
    assert [r.status for r in snap.task_rows] == ["failed"]
    assert snap.results_without_task == {"error": 6}


async def test_the_outcome_chart_counts_only_minutes_where_both_kinds_are_known(
    backend: GCSBackend,
) -> None:
    # Retention kept successes 3 minutes and failures 15: before the oldest success listed,
    # successes are gone and failures are not. Those minutes are neither drawn nor counted.
    now = utcnow().replace(second=30, microsecond=0)
    ok = Task(func="f", queue_name="q")
    await _put(
        backend,
        ok,
        TaskResult(
            task_id=ok.id, status=ResultStatus.SUCCESS, completed_at=now - timedelta(minutes=2)
        ),
    )
    for minutes in (10, 1):
        t = Task(func="f", queue_name="q")
        await _put(backend, t, _failed(t.id, "KeyError", now - timedelta(minutes=minutes)))
    snap = await Monitor(backend, clock=lambda: now).poll()
    assert snap.outcomes_known_since == now - timedelta(minutes=2)
    known = [b for b in snap.results_per_minute if b.known]
    unknown = [b for b in snap.results_per_minute if not b.known]
    assert all(b.minute < now - timedelta(minutes=2, seconds=30) for b in unknown)
    assert sum(b.error for b in unknown) == 0  # the failure 10 minutes ago is not drawn
    assert (sum(b.success for b in known), sum(b.error for b in known)) == (1, 1)
    assert snap.window_outcomes == {"success": 1, "error": 1, "cancelled": 0, "expired": 0}
    assert snap.failure_rate == 0.5
    assert snap.outcome_window_s == pytest.approx(150.0)


async def test_task_detail_shows_the_derived_status_not_the_definitions(
    backend: GCSBackend,
) -> None:
    # A task that failed after two retries, as a worker leaves it: its definition body still
    # says pending, retries 0, no worker.
    failed = await task_in(backend, TaskStatus.FAILED, retries=2, max_retries=2, worker="w-7")
    monitor = Monitor(backend)
    snap = await monitor.poll()
    detail = await monitor.task_detail(failed.id)
    assert detail.task is not None and detail.result is not None
    assert (detail.status, detail.worker_id, detail.attempt, detail.retry_count) == (
        "failed",
        "w-7",
        3,
        2,
    )
    assert detail.max_retries == 2
    # The task itself as get_task returns it: what the console's panels read.
    assert (detail.task.status, detail.task.retry_count, detail.task.worker_id) == (
        TaskStatus.FAILED,
        2,
        "w-7",
    )
    (row,) = snap.task_rows
    assert (row.status, row.retry_count, row.worker_id, row.attempt) == ("failed", 2, "w-7", 3)


async def test_a_paused_schedule_says_who_paused_it_and_when(backend: GCSBackend) -> None:
    from omniq_console import OmniQ
    from omniq_console.runtime import Operator

    schedule_id = await OmniQ(backend).schedule_async("jobs:report", interval=60)
    monitor = Monitor(backend)
    before = utcnow()
    await Operator(backend, "alice@ops").pause_schedule(schedule_id)
    (row,) = (await monitor.poll()).schedules
    assert (row.status, row.paused_by) == ("paused", "alice@ops")
    assert row.paused_at is not None and before <= row.paused_at <= utcnow()
    await Operator(backend, "bob@ops").resume_schedule(schedule_id)
    (row,) = (await monitor.poll()).schedules
    assert (row.status, row.paused_by, row.paused_at) == ("active", None, None)
