"""The runtime as GCS behaves (the rules model in front of the emulator): object-only roles,
8 KiB of metadata in bytes, a 30 s outage, and a scheduler that meets storage faults.

(The model itself, and ObjectStore under it, are tested in test_gcs_rules*.py.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from typing import Any

import pytest
from faultproxy import GCSRulesProxy
from waiting import wait_until

from omniq_console import OmniQ
from omniq_console.backend.errors import BackendUnavailableError
from omniq_console.backend.gcs import GCSBackend
from omniq_console.backend.index import (
    METADATA_LIMIT_BYTES,
    WorkerIndex,
    metadata_bytes,
    worker_index,
    worker_metadata,
)
from omniq_console.backend.objectstore import ObjectInfo
from omniq_console.models import ResultStatus, Schedule, ScheduleType, TaskStatus, utcnow
from omniq_console.monitor import take_snapshot
from omniq_console.runtime import Scheduler
from omniq_console.runtime.scheduler import run_task_id


def _heartbeat(queues: int, running: int) -> WorkerIndex:
    return WorkerIndex(
        id="w-1",
        state="running",
        last_seen=utcnow(),
        started_at=utcnow(),
        host="host",
        pid=1,
        queues=tuple(f"очередь-{i:03d}-注文-📦" for i in range(queues)),
        running=tuple(f"задача-{i:04d}-{'é' * 40}" for i in range(running)),
        processed=0,
        failed=0,
        concurrency=running,
        running_funcs=tuple(f"модуль.функция_{i}" for i in range(running)),
    )


def test_a_heartbeat_of_120_non_ascii_queues_stays_under_8_kib_cut_at_whole_items() -> None:
    index = _heartbeat(queues=120, running=200)
    md = worker_metadata(index)
    assert metadata_bytes(md) <= METADATA_LIMIT_BYTES
    back = worker_index(ObjectInfo("omniq/workers/w-1.json", 1, 0, None, md))
    assert back is not None
    # Whole items only, and the cut is said.
    assert set(back.queues) <= set(index.queues) and set(back.running) <= set(index.running)
    assert len(back.queues) + back.queues_truncated == 120
    assert len(back.running) + back.running_truncated == 200
    assert back.running_truncated > 0 and back.queues_truncated > 0


async def test_a_worker_with_120_non_ascii_queues_beats_under_gcs_rules(
    rules_backend: GCSBackend, gcs_rules: GCSRulesProxy
) -> None:
    omniq = OmniQ(rules_backend)
    queues = [f"очередь-{i:03d}-注文" for i in range(120)]
    worker = omniq.worker(queues, worker_id="w-many", heartbeat_interval=1)
    run = asyncio.create_task(worker.run())
    await wait_until(
        lambda: rules_backend.store.list(rules_backend.layout.workers), "the first heartbeat"
    )
    worker.stop()
    await run  # a 400 (metadata over 8 KiB) would have been logged and the beat lost
    listed = await rules_backend.store.list(rules_backend.layout.workers)
    beat = worker_index(listed[0])
    assert beat is not None and beat.state == "stopped"
    assert len(beat.queues) + beat.queues_truncated == 120


async def test_a_worker_runs_as_object_admin_and_a_console_snapshots_as_viewer(
    rules_backend: GCSBackend, gcs_rules: GCSRulesProxy
) -> None:
    omniq = OmniQ(rules_backend)
    omniq.task(name="m:add")(lambda a, b: a + b)
    task_id = await omniq.enqueue_async("m:add", 2, 3)
    worker = omniq.worker(lease_seconds=3)
    run = asyncio.create_task(worker.run())
    result = await omniq.get_result_async(task_id, timeout=20)
    worker.stop()
    await run
    assert result.status == ResultStatus.SUCCESS and result.result == 5
    gcs_rules.role = "objectViewer"
    assert gcs_rules.bucket is not None
    viewer = GCSBackend(gcs_rules.bucket, endpoint_url=gcs_rules.url, access="read_only")
    async with viewer:
        snapshot = await take_snapshot(viewer)
    assert snapshot.tasks["completed"] == 1 and not snapshot.stale
    refused = [r for r in gcs_rules.records if r.status == 403]
    assert refused == []  # nothing needed a permission the roles lack


@pytest.mark.timeout(150)
async def test_a_worker_survives_a_30_second_outage_without_failing_or_losing_a_task(
    gcs_rules: GCSRulesProxy,
) -> None:
    """Google's retry policy (1 s, x2, 32 s cap, 120 s deadline): nothing fails, nothing is
    lost, and the work goes on when the bucket is back."""
    assert gcs_rules.bucket is not None
    backend = GCSBackend(gcs_rules.bucket, endpoint_url=gcs_rules.url)
    async with backend:
        omniq = OmniQ(backend)
        begun: list[int] = []
        done: list[int] = []
        outage_began = asyncio.Event()

        @omniq.task(name="m:step")
        async def step(n: int) -> int:
            begun.append(n)
            if done:  # after the first: it runs while the outage starts
                await outage_began.wait()
            done.append(n)
            return n

        ids = [await omniq.enqueue_async("m:step", n) for n in range(6)]
        worker = omniq.worker(lease_seconds=30, concurrency=2)
        run = asyncio.create_task(worker.run())
        await wait_until(
            lambda: done and len(begun) > len(done), "a task running after the first", within=60
        )
        gcs_rules.outage(seconds=30)
        outage_began.set()
        started = time.monotonic()
        results = [await omniq.get_result_async(i, timeout=120) for i in ids]
        worker.stop()
        await run
        assert time.monotonic() - started >= 29  # the outage did happen in the middle
        assert [r.status for r in results] == [ResultStatus.SUCCESS] * 6
        assert sorted(r.result for r in results) == list(range(6))
        assert worker.failed == 0
        statuses = await backend.async_task_storage.statuses()
        assert set(statuses.values()) == {TaskStatus.COMPLETED}


async def test_a_scheduler_retries_an_enqueue_that_failed_after_it_won_the_run(
    backend: GCSBackend,
) -> None:
    """16.8: the swap was won, then the enqueue failed: the run is enqueued on a later tick
    (its task id is deterministic, so never twice)."""
    schedule = Schedule(
        schedule_type=ScheduleType.INTERVAL, func="m:f", interval=timedelta(seconds=30)
    )
    schedule.next_run = utcnow() - timedelta(seconds=1)
    await backend.async_schedule_storage.save_schedule(schedule)
    due = schedule.next_run
    scheduler = Scheduler(backend, scheduler_id="s-1")
    real_enqueue = backend.async_task_storage.enqueue
    failures = iter([BackendUnavailableError("GCS did not answer")])

    async def flaky_enqueue(task: Any) -> str:
        error = next(failures, None)
        if error is not None:
            raise error
        return await real_enqueue(task)

    backend.async_task_storage.enqueue = flaky_enqueue  # type: ignore[method-assign]
    assert await scheduler.tick() == []  # won the swap, the enqueue failed
    stored = await backend.async_schedule_storage.get_schedule(schedule.id)
    assert stored is not None and stored.run_count == 1  # the run is taken...
    fired = await scheduler.tick()  # ...and enqueued on the next tick
    assert fired == [run_task_id(schedule.id, due)]
    assert await scheduler.tick() == []
    task = await backend.async_task_storage.get_task(fired[0])
    assert task is not None and task.status == TaskStatus.PENDING


async def test_a_cron_that_can_never_fire_is_reported_once(
    backend: GCSBackend, caplog: pytest.LogCaptureFixture
) -> None:
    """16.8: February 30th: reported once, not on every tick; other schedules go on."""
    never = Schedule(schedule_type=ScheduleType.CRON, func="m:f", cron_expression="0 0 * * *")
    never.next_run = utcnow() - timedelta(seconds=1)
    await backend.async_schedule_storage.save_schedule(never)
    stored = await backend.async_schedule_storage.get_schedule(never.id)
    assert stored is not None
    body = stored.model_dump(mode="json")
    body["cron_expression"] = "0 0 30 2 *"
    # Written as another tool would (the model refuses to build it), with its index.
    await backend.store.write(
        backend.layout.schedule(never.id),
        Schedule.model_construct(**{**stored.__dict__, "cron_expression": "0 0 30 2 *"}).to_json(),
        metadata={"omniq_index": "1", "status": "active", "next_run": body["next_run"]},
        if_generation_match=stored.generation,
    )
    good = Schedule(schedule_type=ScheduleType.INTERVAL, func="m:g", interval=timedelta(minutes=5))
    good.next_run = utcnow() - timedelta(seconds=1)
    await backend.async_schedule_storage.save_schedule(good)
    scheduler = Scheduler(backend, scheduler_id="s-cron")
    caplog.set_level(logging.WARNING)
    fired: list[str] = []
    for _ in range(5):
        fired += await scheduler.tick()
    about_never = [r for r in caplog.records if never.id in r.getMessage()]
    assert len(about_never) == 1, [r.getMessage() for r in caplog.records]
    assert len(fired) == 1  # the good schedule fired
