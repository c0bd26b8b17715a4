"""The README's guarantees under stalls, clock skew and unlucky timing (issue items 16.1-16.6).

Each test failed on the first protocol: a stalled worker's outcome overwrote the real one, an
in-flight renewal cancelled at completion made tasks run forever, a skewed reaper stole live
leases, a retry's entry was deleted as stale.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta

from waiting import wait_until

from omniq_console import OmniQ
from omniq_console.backend.gcs import GCSBackend
from omniq_console.clock import SystemClock
from omniq_console.models import EventType, ResultStatus, Task, TaskStatus


class SkewedClock(SystemClock):
    """A machine whose wall clock is ``offset`` seconds off (its monotonic clock is fine)."""

    def __init__(self, offset: float) -> None:
        self.offset = timedelta(seconds=offset)

    def now(self) -> datetime:
        return super().now() + self.offset


async def _status(backend: GCSBackend, task_id: str) -> TaskStatus | None:
    task = await backend.async_task_storage.get_task(task_id)
    return task.status if task is not None else None


async def test_a_stalled_worker_cannot_land_its_outcome_after_losing_its_lease(
    bucket: str,
) -> None:
    """16.1: the worker stops renewing (a SIGSTOP, a long GC); another takes the task over
    and completes it; when the stalled one wakes, its outcome is refused by the fence."""
    async with GCSBackend(bucket) as stalled_backend, GCSBackend(bucket) as live_backend:
        stalled_q = OmniQ(stalled_backend)
        woke = asyncio.Event()

        @stalled_q.task(name="job")
        async def slow_job() -> str:
            await woke.wait()
            return "stale outcome"

        task_id = await stalled_q.enqueue_async("job")
        stalled = stalled_q.worker(worker_id="stalled", lease_seconds=3, reap_interval=60)

        async def never_renew(task: Task, lease_seconds: float | None = None) -> Task:
            # Stalled: the worker believes it renewed, but nothing reached the bucket (a
            # process stopped between its last check and its write looks the same from
            # outside: its record stops changing).
            return task

        stalled_backend.async_task_storage.renew_lease = never_renew  # type: ignore[method-assign]
        stalled_run = asyncio.create_task(stalled.run())
        await wait_until(
            lambda: _is(stalled_backend, task_id, TaskStatus.RUNNING), "the first claim"
        )

        live_q = OmniQ(live_backend)
        live_q.task(name="job")(lambda: "real outcome")
        live = live_q.worker(worker_id="live", lease_seconds=3, reap_interval=0.5)
        live_run = asyncio.create_task(live.run())
        result = await live_q.get_result_async(task_id, timeout=30)
        assert result.status == ResultStatus.SUCCESS and result.result == "real outcome"

        woke.set()  # the stalled worker wakes up and tries to write its outcome
        await wait_until(lambda: stalled.running_task_ids == [], "the stalled run to end")
        stalled.stop()
        live.stop()
        await asyncio.gather(stalled_run, live_run)

        final = await live_backend.async_result_storage.get(task_id)
        assert final is not None and final.result == "real outcome" and final.worker_id == "live"
        assert await _status(live_backend, task_id) == TaskStatus.COMPLETED
        events = await live_backend.async_event_storage.get_events(task_id=task_id)
        completed = [e.worker_id for e in events if e.event_type == EventType.COMPLETED]
        assert completed == ["live"]


async def test_tasks_lasting_a_third_of_the_lease_complete_once(backend: GCSBackend) -> None:
    """16.3: the outcome waits for an in-flight renewal instead of cancelling it, so the
    fence it writes on is always the newest; tasks that end as their lease (3 s) is renewed
    after a third of it run once."""
    omniq = OmniQ(backend)
    runs: dict[str, int] = {}
    renewing = asyncio.Event()
    queue = backend.async_task_storage
    renew_lease = queue.renew_lease

    async def renew_as_tasks_end(task: Task, lease_seconds: float | None = None) -> Task:
        renewing.set()  # the tasks end while this renewal is in flight
        return await renew_lease(task, lease_seconds)

    queue.renew_lease = renew_as_tasks_end  # type: ignore[method-assign]

    @omniq.task(name="third")
    async def third(n: int) -> int:
        runs[str(n)] = runs.get(str(n), 0) + 1
        await renewing.wait()
        return n

    ids = [await omniq.enqueue_async("third", n) for n in range(4)]
    worker = omniq.worker(concurrency=4, lease_seconds=3, reap_interval=0.5)
    running = asyncio.create_task(worker.run())
    results = [await omniq.get_result_async(i, timeout=20) for i in ids]
    worker.stop()
    await running
    assert [r.result for r in results] == [0, 1, 2, 3]
    assert runs == {"0": 1, "1": 1, "2": 1, "3": 1}


async def test_reapers_with_skewed_clocks_never_steal_a_live_lease(bucket: str) -> None:
    """16.5: leases are judged by an unchanged generation on the reaper's monotonic clock, so
    machines 90 s ahead or behind reap nothing that is renewed."""
    async with GCSBackend(bucket) as owner_backend:
        owner_q = OmniQ(owner_backend)
        runs: list[str] = []

        release = asyncio.Event()

        @owner_q.task(name="long")
        async def long_job() -> str:
            runs.append("owner")
            await release.wait()
            return "owner"

        task_id = await owner_q.enqueue_async("long")
        owner = owner_q.worker(worker_id="owner", lease_seconds=3, reap_interval=60)
        owner_run = asyncio.create_task(owner.run())
        await wait_until(lambda: _is(owner_backend, task_id, TaskStatus.RUNNING), "the claim")
        reapers = []
        for name, offset in (("ahead", 90.0), ("behind", -90.0)):
            backend = GCSBackend(bucket)
            await backend.aopen()
            backend.async_task_storage.clock = SkewedClock(offset)
            q = OmniQ(backend)
            q.task(name="long")(lambda: runs.append("thief") or "thief")
            worker = q.worker(
                worker_id=name, lease_seconds=3, reap_interval=0.3, clock=SkewedClock(offset)
            )
            reapers.append((backend, worker, asyncio.create_task(worker.run())))
        watched_from = await _lease_end(owner_backend, task_id)

        async def renewed_for_two_leases() -> bool:
            # Two leases' worth of renewals while both reapers looked every 0.3 s.
            until = await _lease_end(owner_backend, task_id)
            return (until - watched_from).total_seconds() >= 6

        try:
            await wait_until(renewed_for_two_leases, "the owner renewing for two leases")
        finally:
            release.set()
        result = await owner_q.get_result_async(task_id, timeout=30)
        for backend, worker, run in reapers:
            worker.stop()
            await run
            await backend.aclose()
        owner.stop()
        await owner_run
        assert result.result == "owner" and runs == ["owner"]
        events = await owner_backend.async_event_storage.get_events(task_id=task_id)
        assert not [e for e in events if e.event_type == EventType.LEASE_EXPIRED]


async def test_a_retry_is_claimed_again_within_a_claim_cycle(backend: GCSBackend) -> None:
    """16.6: a retry rewrites its entry's hint; nobody deletes it as stale, and the next
    attempt starts about when it is due, not after a 30-60 s repair grace."""
    omniq = OmniQ(backend)
    attempts: list[float] = []

    @omniq.task(name="flaky", max_retries=2, retry_delay=timedelta(seconds=1))
    async def flaky() -> str:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise RuntimeError("not yet")
        return "third time"

    task_id = await omniq.enqueue_async("flaky")
    workers = [omniq.worker(worker_id=f"w{i}", lease_seconds=3) for i in range(2)]
    runs = [asyncio.create_task(w.run()) for w in workers]
    result = await omniq.get_result_async(task_id, timeout=30)
    for w in workers:
        w.stop()
    await asyncio.gather(*runs)
    assert result.result == "third time" and len(attempts) == 3
    # Delays of 1 s then 2 s, plus the outcome's per-name second and a claim pass or two.
    assert attempts[1] - attempts[0] < 5 and attempts[2] - attempts[1] < 7


async def _lease_end(backend: GCSBackend, task_id: str) -> datetime:
    record = await backend.async_result_storage.get(task_id)
    assert record is not None and record.lease_expires_at is not None
    return record.lease_expires_at


async def _is(backend: GCSBackend, task_id: str, status: TaskStatus) -> bool:
    return await _status(backend, task_id) == status
