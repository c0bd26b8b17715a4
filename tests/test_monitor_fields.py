"""Snapshot fields on the emulator: events from batches (a future clock cannot hold the live
slots), ids the stores refuse reported, workers' slots, throughput windows, "connecting"."""

from __future__ import annotations

import asyncio
import urllib.request
from datetime import timedelta

import pytest

from omniq_console.backend.gcs import GCSBackend
from omniq_console.demo.emulator import Emulator
from omniq_console.models import EventType, TaskEvent, utcnow
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
