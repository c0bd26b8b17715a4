"""A lease ends on the holder's own monotonic clock (docs/architecture.md, "Leases and clock
skew"): a holder that cannot renew stops, and no function starts on a claim whose answer came
after its lease had passed.

The worker runs on the in-memory store (GCS's rules) wrapped with faults on the task's state
record (``results/``): writes that fail, writes that hang, an answer that arrives late. The
clock is real time plus a jump the test controls, so "late" needs no waiting.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import datetime, timedelta

import pytest
from waiting import wait_until

from omniq_console import OmniQ
from omniq_console.backend.errors import StorageError
from omniq_console.backend.gcs import GCSBackend
from omniq_console.backend.memstore import MemoryObjectStore
from omniq_console.backend.objectstore import ObjectInfo
from omniq_console.clock import SystemClock
from omniq_console.models import ResultStatus, TaskResult, utcnow
from omniq_console.runtime import current_task

LEASE = 3.0


class JumpClock(SystemClock):
    """The machine's clocks plus an offset the test moves forward (``jump``)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def jump(self, seconds: float) -> None:
        self.offset += seconds

    def now(self) -> datetime:
        return utcnow() + timedelta(seconds=self.offset)

    def monotonic(self) -> float:
        return time.monotonic() + self.offset


Hook = Callable[[str, int | None], Awaitable[None]]


class FaultyStore(MemoryObjectStore):
    """The memory store, with a hook before and after each write of a state record."""

    def __init__(self) -> None:
        super().__init__("lease-end", per_name_limit=True)
        self.before: Hook | None = None
        self.after: Hook | None = None

    async def write(
        self,
        key: str,
        data: bytes,
        *,
        metadata: Mapping[str, str] | None = None,
        if_generation_match: int | None = None,
    ) -> ObjectInfo:
        record = "/results/" in f"/{key}"
        if record and self.before is not None:
            await self.before(key, if_generation_match)
        info = await super().write(
            key, data, metadata=metadata, if_generation_match=if_generation_match
        )
        if record and self.after is not None:
            await self.after(key, if_generation_match)
        return info


@pytest.fixture
def clock() -> JumpClock:
    return JumpClock()


@pytest.fixture
async def faulty(clock: JumpClock) -> AsyncIterator[tuple[GCSBackend, FaultyStore]]:
    store = FaultyStore()
    async with GCSBackend("lease-end", object_store=store) as backend:
        backend.async_task_storage.clock = clock
        yield backend, store


async def _record(backend: GCSBackend, task_id: str) -> TaskResult:
    record = await backend.async_result_storage.get(task_id)
    assert record is not None
    return record


async def test_no_function_starts_on_a_claim_answered_after_its_lease(
    faulty: tuple[GCSBackend, FaultyStore], clock: JumpClock
) -> None:
    backend, store = faulty
    omniq = OmniQ(backend)
    attempts: list[int] = []

    @omniq.task
    async def work() -> str:
        task = current_task()
        assert task is not None and task.record is not None
        attempts.append(task.record.attempt)
        return "done"

    async def late_answer(key: str, expected: int | None) -> None:
        if expected == 0 and store.after is not None:  # the first claim (create-only)
            store.after = None
            clock.jump(LEASE + 1)

    store.after = late_answer
    task_id = await omniq.enqueue_async(work)
    worker = omniq.worker(lease_seconds=LEASE, poll_interval=0.05, clock=clock)
    running = asyncio.create_task(worker.run())
    try:
        result = await omniq.get_result_async(task_id, timeout=20)
    finally:
        worker.stop()
        await running
    # The late claim was released unrun; the function ran once, on the next claim.
    assert result.status == ResultStatus.SUCCESS
    assert attempts == [2]


@pytest.mark.parametrize("renewals", ["fail", "hang"])
async def test_a_holder_that_cannot_renew_cancels_its_async_function(
    faulty: tuple[GCSBackend, FaultyStore], clock: JumpClock, renewals: str
) -> None:
    backend, store = faulty
    omniq = OmniQ(backend)
    started, cancelled = asyncio.Event(), asyncio.Event()
    cut_off = asyncio.Event()

    cancelled_at: list[datetime] = []

    @omniq.task
    async def hold() -> None:
        started.set()
        try:
            await asyncio.Event().wait()  # until the lost lease cancels it
        except asyncio.CancelledError:
            cancelled_at.append(clock.now())
            cancelled.set()
            raise

    async def renewal(key: str, expected: int | None) -> None:
        if expected:  # every write after the claim: renewals (and any outcome)
            if renewals == "fail":
                raise StorageError(f"{key}: connection refused (injected)")
            await cut_off.wait()  # never set: the request hangs

    task_id = await omniq.enqueue_async(hold)
    worker = omniq.worker(lease_seconds=LEASE, poll_interval=0.05, clock=clock)
    running = asyncio.create_task(worker.run())
    try:
        await wait_until(started.is_set, "the task started")
        claimed = await _record(backend, task_id)
        store.before = renewal
        await wait_until(cancelled.is_set, "the function cancelled as its lease ended")
        # Once the lease of the claim ran out, not before: failing renewals do not cut it short
        # ("how soon after" depends on the machine's load: not asserted).
        assert claimed.lease_expires_at is not None
        assert (cancelled_at[0] - claimed.lease_expires_at).total_seconds() >= -0.5
        await wait_until(lambda: not worker.running_task_ids, "the slot freed")
    finally:
        store.before = None
        worker.stop()
        await running
    # Nothing more was written for it: the record is the claim's, left to expire.
    record = await _record(backend, task_id)
    assert record.generation == claimed.generation and record.status == ResultStatus.PENDING


async def test_a_sync_function_that_lost_its_lease_has_its_outcome_dropped(
    faulty: tuple[GCSBackend, FaultyStore], clock: JumpClock, caplog: pytest.LogCaptureFixture
) -> None:
    backend, store = faulty
    omniq = OmniQ(backend)
    started, go = threading.Event(), threading.Event()

    @omniq.task
    def blocking() -> str:
        started.set()
        go.wait(30)
        return "too late"

    async def refuse(key: str, expected: int | None) -> None:
        if expected:
            raise StorageError(f"{key}: connection refused (injected)")

    task_id = await omniq.enqueue_async(blocking)
    worker = omniq.worker(lease_seconds=LEASE, poll_interval=0.05, clock=clock)
    running = asyncio.create_task(worker.run())
    caplog.set_level(logging.WARNING, logger="omniq_console.runtime.worker")
    try:
        await wait_until(started.is_set, "the task started")
        claimed = await _record(backend, task_id)
        store.before = refuse
        await wait_until(lambda: "outcome will be dropped" in caplog.text, "the lease loss logged")
        # Storage is back before the function returns: its outcome would land, but the lease
        # ended while it ran (another worker may have run it meanwhile), so it is dropped.
        store.before = None
        go.set()
        await wait_until(lambda: not worker.running_task_ids, "the thread ended")
    finally:
        go.set()
        worker.stop()
        await running
    record = await _record(backend, task_id)
    assert record.generation == claimed.generation and record.status == ResultStatus.PENDING
