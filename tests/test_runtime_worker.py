"""The worker on the emulator: results and events, retries with backoff, unknown functions,
concurrency off the event loop, lost leases, clean stops, signals, and a killed worker's task
run again by another worker; an idle worker's pauses on its injected clock."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
from waiting import wait_until

from omniq_console import OmniQ
from omniq_console.backend.gcs import GCSBackend
from omniq_console.backend.index import worker_index
from omniq_console.backend.memstore import MemoryObjectStore
from omniq_console.clock import FakeClock
from omniq_console.models import EventType, ResultStatus, TaskStatus
from omniq_console.runtime import Operator, Worker, current_task
from omniq_console.runtime.registry import TaskRegistry


@pytest.fixture
async def backend(bucket: str) -> AsyncIterator[GCSBackend]:
    async with GCSBackend(bucket) as b:
        yield b


async def _events(backend: GCSBackend, task_id: str) -> list:
    return list(await backend.async_event_storage.get_events(task_id=task_id))


def _start(worker: Worker) -> asyncio.Task[None]:
    return asyncio.create_task(worker.run())


async def test_task_runs_and_its_result_and_events_are_stored(backend: GCSBackend) -> None:
    omniq = OmniQ(backend)

    @omniq.task
    def add(x: int, y: int) -> int:
        return x + y

    task_id = await omniq.enqueue_async(add, 1, 2)
    worker = omniq.worker("default", worker_id="w-one", heartbeat_interval=1)
    running = _start(worker)
    result = await omniq.get_result_async(task_id, timeout=10)
    worker.stop()
    await asyncio.wait_for(running, 10)

    assert result.status == ResultStatus.SUCCESS and result.result == 3
    assert result.worker_id == "w-one"
    assert result.execution_time is not None and 0 <= result.execution_time < 1
    assert result.started_at is not None and result.completed_at is not None
    task = await backend.async_task_storage.get_task(task_id)
    assert task is not None and task.status == TaskStatus.COMPLETED and task.worker_id == "w-one"
    events = await _events(backend, task_id)
    assert [e.event_type for e in events] == [
        EventType.ENQUEUED,
        EventType.DEQUEUED,
        EventType.EXECUTING,
        EventType.COMPLETED,
    ]
    assert [e.worker_id for e in events[1:]] == ["w-one"] * 3
    assert all(e.queue_name == "default" for e in events)
    assert events[-1].execution_time == pytest.approx(result.execution_time)
    # The heartbeat says who ran what, from metadata alone, and that the worker stopped.
    infos = await backend.store.list(backend.layout.workers)
    beat = worker_index(infos[0])
    assert beat is not None and beat.id == "w-one" and beat.state == "stopped"
    assert beat.processed == 1 and beat.failed == 0 and beat.queues == ("default",)


async def test_an_idle_worker_pauses_on_its_injected_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Pauses of 1 to 10 minutes between looks: on the wall clock the second look alone would
    # come a minute later; on a FakeClock six looks take no real time.
    clock = FakeClock()
    async with GCSBackend("idle-clock", object_store=MemoryObjectStore("idle-clock")) as backend:
        queue = backend.async_task_storage
        queue.clock = clock
        looks: list[float] = []
        claim_pass = queue.claim_pass

        async def counted(*args: Any, **kwargs: Any) -> Any:
            looks.append(clock.monotonic())
            return await claim_pass(*args, **kwargs)

        monkeypatch.setattr(queue, "claim_pass", counted)
        worker = Worker(
            backend, TaskRegistry(), ["q"], poll_interval=60, poll_timeout=600, clock=clock
        )
        running = _start(worker)
        try:
            await wait_until(lambda: len(looks) >= 6, "six looks at the idle queue", within=60)
        finally:
            worker.stop()
            await asyncio.wait_for(running, 30)
    # Each pause is at least 0.8 x its backoff ceiling on the fake clock (the heartbeat and the
    # reaper sleep on it too, so a gap may be longer, never shorter).
    gaps = [later - earlier for earlier, later in itertools.pairwise(looks[:6])]
    ceilings = [60, 120, 240, 480, 600]
    assert all(gap >= 0.8 * ceiling for gap, ceiling in zip(gaps, ceilings, strict=True)), gaps


async def test_failing_task_retries_with_backoff_then_fails_with_traceback(
    backend: GCSBackend,
) -> None:
    omniq = OmniQ(backend)

    @omniq.task(max_retries=2, retry_delay=0.3)
    async def explode(n: int) -> None:
        raise ValueError(f"bad input {n}")

    task_id = await omniq.enqueue_async(explode, 7)
    worker = omniq.worker(worker_id="w-retry")
    running = _start(worker)
    result = await omniq.get_result_async(task_id, timeout=15)
    worker.stop()
    await asyncio.wait_for(running, 10)

    assert result.status == ResultStatus.ERROR
    assert result.error_type == "ValueError" and result.error == "bad input 7"
    assert result.traceback is not None
    assert "raise ValueError" in result.traceback and "in explode" in result.traceback
    task = await backend.async_task_storage.get_task(task_id)
    assert task is not None and task.status == TaskStatus.FAILED and task.retry_count == 2
    events = await _events(backend, task_id)
    kinds = [e.event_type for e in events]
    assert kinds.count(EventType.EXECUTING) == 3
    assert kinds.count(EventType.RETRY) == 2 and kinds[-1] == EventType.FAILED
    retries = [e for e in events if e.event_type == EventType.RETRY]
    assert [r.details["delay_s"] for r in retries] == [pytest.approx(0.3), pytest.approx(0.6)]
    assert all(r.error_type == "ValueError" and r.worker_id == "w-retry" for r in retries)
    # The backoff held: each attempt started no earlier than its delay after the failure.
    starts = [e.timestamp for e in events if e.event_type == EventType.EXECUTING]
    assert (starts[1] - retries[0].timestamp).total_seconds() >= 0.3 - 0.01
    assert (starts[2] - retries[1].timestamp).total_seconds() >= 0.6 - 0.01
    assert events[-1].traceback == result.traceback


async def test_task_succeeds_after_retries(backend: GCSBackend) -> None:
    omniq = OmniQ(backend)

    @omniq.task(max_retries=3, retry_delay=0.05)
    def flaky() -> int:
        task = current_task()
        assert task is not None  # sync functions see their task too
        if task.retry_count < 2:
            raise ConnectionError("reset by peer")
        return task.retry_count

    task_id = await omniq.enqueue_async(flaky)
    worker = omniq.worker()
    running = _start(worker)
    result = await omniq.get_result_async(task_id, timeout=10)
    worker.stop()
    await running
    assert result.status == ResultStatus.SUCCESS and result.result == 2
    kinds = [e.event_type for e in await _events(backend, task_id)]
    assert kinds.count(EventType.RETRY) == 2 and kinds[-1] == EventType.COMPLETED


@pytest.mark.parametrize("fails", [False, True])
async def test_a_task_outliving_its_lease_confirmation_ends_in_a_final_state(
    backend: GCSBackend, fails: bool
) -> None:
    # Runs until its lease was renewed: the outcome's compare-and-swap must use the renewed
    # generation, not the claim's.
    omniq = OmniQ(backend)
    release = asyncio.Event()

    @omniq.task(max_retries=0)
    async def slow(fail: bool) -> str:
        await release.wait()
        if fail:
            raise RuntimeError("late failure")
        return "late success"

    task_id = await omniq.enqueue_async(slow, fails)
    worker = omniq.worker(lease_seconds=3)  # renewed every second
    running = _start(worker)
    await wait_until(lambda: _lease_end(backend, task_id), "the claim's lease")
    claimed_until = await _lease_end(backend, task_id)
    assert claimed_until is not None

    async def renewed() -> bool:
        until = await _lease_end(backend, task_id)
        return until is not None and until > claimed_until

    await wait_until(renewed, "a renewal of the lease")
    release.set()
    result = await omniq.get_result_async(task_id, timeout=10)
    await wait_until(lambda: _final(backend, task_id), "the task's final state")
    worker.stop()
    await running
    task = await backend.async_task_storage.get_task(task_id)
    assert task is not None
    assert task.status == (TaskStatus.FAILED if fails else TaskStatus.COMPLETED)
    assert result.status == (ResultStatus.ERROR if fails else ResultStatus.SUCCESS)
    assert (await _events(backend, task_id))[-1].event_type == (
        EventType.FAILED if fails else EventType.COMPLETED
    )


async def _lease_end(backend: GCSBackend, task_id: str) -> datetime | None:
    record = await backend.async_result_storage.get(task_id)
    return None if record is None else record.lease_expires_at


async def _final(backend: GCSBackend, task_id: str) -> bool:
    task = await backend.async_task_storage.get_task(task_id)
    return task is not None and task.status.is_final


async def test_a_task_that_waited_past_its_ttl_expires(backend: GCSBackend) -> None:
    omniq = OmniQ(backend)
    task_id = await omniq.enqueue_async("nobody:runs_this", queue="cold")
    stored = await backend.async_task_storage.get_task(task_id)
    assert stored is not None
    stored.expires_at = stored.created_at  # its ttl ran out while it waited
    await backend.async_task_storage.update_task(stored)
    worker = omniq.worker(["other"], reap_interval=0.2)
    running = _start(worker)
    result = await omniq.get_result_async(task_id, timeout=10)
    worker.stop()
    await running
    assert result.status == ResultStatus.EXPIRED
    task = await backend.async_task_storage.get_task(task_id)
    assert task is not None and task.status == TaskStatus.EXPIRED
    assert await backend.async_task_storage.get_queue_size("cold") == 0


async def test_unknown_function_fails_clearly_without_retry(backend: GCSBackend) -> None:
    omniq = OmniQ(backend)
    task_id = await omniq.enqueue_async("billing.jobs:vanished", 1)
    worker = omniq.worker(["default"], worker_id="w-unknown")
    running = _start(worker)
    result = await omniq.get_result_async(task_id, timeout=10)
    worker.stop()
    await running
    assert result.status == ResultStatus.ERROR and result.error_type == "UnknownTaskError"
    assert "billing.jobs:vanished" in (result.error or "")
    assert "w-unknown" in (result.error or "")
    task = await backend.async_task_storage.get_task(task_id)
    assert task is not None and task.status == TaskStatus.FAILED and task.retry_count == 0
    kinds = [e.event_type for e in await _events(backend, task_id)]
    assert EventType.RETRY not in kinds and kinds[-1] == EventType.FAILED


async def test_sync_functions_run_concurrently_off_the_event_loop(backend: GCSBackend) -> None:
    omniq = OmniQ(backend)

    both_in = threading.Barrier(2)
    inside: list[int] = []
    release = threading.Event()

    @omniq.task
    def block(n: int) -> int:
        # Blocks its thread (it would freeze the worker's loop if run on it) until the other
        # call is in too and the test lets both go.
        both_in.wait(timeout=30)
        inside.append(n)
        release.wait(timeout=30)
        return n

    ids = [await omniq.enqueue_async(block, n) for n in range(2)]
    worker = omniq.worker(concurrency=2, lease_seconds=3)
    running = _start(worker)
    try:
        # Polled on the worker's loop: it kept turning while both threads blocked.
        await wait_until(lambda: len(inside) == 2, "both calls blocking at once")
    finally:
        release.set()
    results = [await omniq.get_result_async(i, timeout=10) for i in ids]
    worker.stop()
    await running
    assert all(r.status == ResultStatus.SUCCESS for r in results)
    # Both ran at the same time: each started before the other finished.
    a, b = results
    assert a.started_at < b.completed_at and b.started_at < a.completed_at  # type: ignore[operator]


async def test_lost_lease_does_not_overwrite_the_newer_state(backend: GCSBackend) -> None:
    omniq = OmniQ(backend)
    seen: list[str] = []

    @omniq.task
    async def long_job() -> str:
        try:
            await asyncio.Event().wait()  # until cancelled
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        return "finished"

    task_id = await omniq.enqueue_async(long_job)
    # The shortest lease: a renewal every second, as often as GCS takes a write of the record.
    # The operator's swap can lose to each renewal; the holder then cancels on request.
    worker = omniq.worker(worker_id="w-lease", lease_seconds=3)
    running = _start(worker)

    async def is_running():  # type: ignore[no-untyped-def]
        t = await backend.async_task_storage.get_task(task_id)
        return t is not None and t.status == TaskStatus.RUNNING

    await wait_until(is_running, "the task running")
    await Operator(backend, "alice").cancel_task(task_id)
    await wait_until(lambda: seen == ["cancelled"], "the cancellation at its next renewal")
    worker.stop()
    await running
    task = await backend.async_task_storage.get_task(task_id)
    result = await backend.async_result_storage.get(task_id)
    assert task is not None and task.status == TaskStatus.CANCELLED
    assert result is not None and result.status == ResultStatus.CANCELLED
    kinds = [e.event_type for e in await _events(backend, task_id)]
    assert EventType.COMPLETED not in kinds and EventType.FAILED not in kinds


async def test_stop_mid_task_releases_an_async_task_to_its_queue(backend: GCSBackend) -> None:
    omniq = OmniQ(backend)

    @omniq.task(name="slow")
    async def slow() -> None:
        await asyncio.Event().wait()  # until the stop cancels it

    task_id = await omniq.enqueue_async("slow")
    worker = omniq.worker(worker_id="w-stop", shutdown_grace=0.3)
    running = _start(worker)
    await wait_until(lambda: worker.running_task_ids, "the task running")
    started = time.monotonic()
    worker.stop()
    await asyncio.wait_for(running, 10)
    assert time.monotonic() - started < 4
    task = await backend.async_task_storage.get_task(task_id)
    assert task is not None and task.status == TaskStatus.PENDING and task.worker_id is None
    assert await backend.async_task_storage.get_queue_size("default") == 1
    result = await backend.async_result_storage.get(task_id)
    assert result is not None and result.status == ResultStatus.PENDING  # the state record
    last = (await _events(backend, task_id))[-1]
    assert last.event_type == EventType.ENQUEUED and last.details["released_by"] == "w-stop"
    # Another worker takes it from there (within one claim cycle once the record may change).
    omniq2 = OmniQ(backend)
    omniq2.task(name="slow")(lambda: "done")
    worker2 = omniq2.worker(worker_id="w-next")
    running2 = _start(worker2)
    result = await omniq2.get_result_async(task_id, timeout=10)
    worker2.stop()
    await running2
    assert result.result == "done" and result.worker_id == "w-next"


async def test_graceful_stop_keeps_a_sync_tasks_lease_until_its_thread_ends(
    backend: GCSBackend,
) -> None:
    """A thread cannot be interrupted: handing its task back would run it twice at once."""
    omniq = OmniQ(backend)
    runs: list[str] = []
    release = threading.Event()

    @omniq.task(name="slow_sync")
    def slow_sync() -> str:
        runs.append("start")
        release.wait(timeout=60)
        return "finished"

    task_id = await omniq.enqueue_async("slow_sync")
    worker = omniq.worker(worker_id="w-sync", shutdown_grace=0.2, lease_seconds=3)
    running = _start(worker)
    await wait_until(lambda: worker.running_task_ids, "the task running")
    other = OmniQ(backend)
    other.task(name="slow_sync")(lambda: "stolen")
    thief = other.worker(worker_id="w-thief", reap_interval=0.3, lease_seconds=3)
    thief_run = _start(thief)
    worker.stop()
    stopped_until = await _lease_end(backend, task_id)
    assert stopped_until is not None

    async def kept_past_a_lease() -> bool:
        # Renewed for longer than a lease since the stop (and so past the grace), while the
        # thief looked for dead leases every 0.3 s.
        until = await _lease_end(backend, task_id)
        return until is not None and (until - stopped_until).total_seconds() >= 3

    try:
        await wait_until(kept_past_a_lease, "the lease kept alive for a lease length")
    finally:
        release.set()
    await asyncio.wait_for(running, 15)
    thief.stop()
    await thief_run
    result = await backend.async_result_storage.get(task_id)
    assert result is not None and result.result == "finished" and result.worker_id == "w-sync"
    assert runs == ["start"]
    kinds = [(e.event_type, e.worker_id) for e in await _events(backend, task_id)]
    assert (EventType.DEQUEUED, "w-thief") not in kinds


async def test_stop_lets_a_short_task_finish_within_the_grace(backend: GCSBackend) -> None:
    omniq = OmniQ(backend)

    release = asyncio.Event()

    @omniq.task
    async def short() -> str:
        await release.wait()  # let go once the worker is draining
        return "ok"

    task_id = await omniq.enqueue_async(short)
    worker = omniq.worker(shutdown_grace=30)
    running = _start(worker)
    await wait_until(lambda: worker.running_task_ids, "the task running")
    assert _heartbeat_loop_runs()
    worker.stop()
    # The heartbeat loop ends as the drain begins: the task is still running then.
    await wait_until(lambda: not _heartbeat_loop_runs(), "the worker draining")
    assert worker.running_task_ids
    release.set()
    await asyncio.wait_for(running, 10)
    task = await backend.async_task_storage.get_task(task_id)
    assert task is not None and task.status == TaskStatus.COMPLETED
    result = await backend.async_result_storage.get(task_id)
    assert result is not None and result.result == "ok"


def _heartbeat_loop_runs() -> bool:
    return any(
        getattr(t.get_coro(), "__qualname__", "") == "Worker._heartbeat_loop"
        for t in asyncio.all_tasks()
        if not t.done()
    )


_WORKER_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from omniq_console import OmniQ
    from omniq_console.backend.gcs import GCSBackend

    omniq = OmniQ(GCSBackend(sys.argv[1]))

    @omniq.task(name="tests.job")
    async def job():
        print("RUNNING", flush=True)
        await asyncio.Event().wait()  # until killed or stopped

    if sys.argv[2] == "sync":
        print("READY", flush=True)
        omniq.run_worker_sync(["default"], worker_id="doomed", lease_seconds=3,
                              heartbeat_interval=1, shutdown_grace=0.2)
        print("STOPPED", flush=True)
    else:
        async def main():
            async with omniq:
                print("READY", flush=True)
                await omniq.run_worker(["default"], worker_id="doomed", lease_seconds=3,
                                       heartbeat_interval=1)
        asyncio.run(main())
    """
)


def _spawn(bucket: str, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _WORKER_SCRIPT, bucket, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )


async def _wait_line(proc: subprocess.Popen[str], line: str, timeout: float = 30) -> None:
    assert proc.stdout is not None

    def read() -> None:
        for got in proc.stdout:  # type: ignore[union-attr]
            if got.strip() == line:
                return
        raise AssertionError(f"worker exited before {line}: {proc.stderr.read()}")  # type: ignore[union-attr]

    await asyncio.wait_for(asyncio.to_thread(read), timeout)


async def test_killed_worker_task_is_run_again_by_another_worker(
    backend: GCSBackend, bucket: str
) -> None:
    omniq = OmniQ(backend)
    task_id = await omniq.enqueue_async("tests.job")
    proc = _spawn(bucket, "async")
    try:
        await _wait_line(proc, "RUNNING")
        task = await backend.async_task_storage.get_task(task_id)
        assert task is not None and task.status == TaskStatus.RUNNING and task.worker_id == "doomed"

        async def claim_logged():  # type: ignore[no-untyped-def]
            # Events go out in the worker's batch about a second after the claim.
            return any(e.worker_id == "doomed" for e in await _events(backend, task_id))

        await wait_until(claim_logged, "the claim's event")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    rescuer = OmniQ(backend)
    rescuer.task(name="tests.job")(lambda: "second run")
    worker = rescuer.worker(worker_id="rescuer", lease_seconds=3, reap_interval=0.3)
    running = _start(worker)
    result = await rescuer.get_result_async(task_id, timeout=15)
    worker.stop()
    await running
    assert result.status == ResultStatus.SUCCESS and result.result == "second run"
    assert result.worker_id == "rescuer"
    events = await _events(backend, task_id)
    expired = [e for e in events if e.event_type == EventType.LEASE_EXPIRED]
    assert len(expired) == 1 and expired[0].worker_id == "rescuer"
    assert expired[0].queue_name == "default"
    claims = [e.worker_id for e in events if e.event_type == EventType.DEQUEUED]
    assert claims == ["doomed", "rescuer"]
    # In time order: claimed by the dead worker, reaped, claimed again.
    order = [(e.event_type, e.worker_id) for e in events]
    assert (
        order.index((EventType.DEQUEUED, "doomed"))
        < order.index((EventType.LEASE_EXPIRED, "rescuer"))
        < order.index((EventType.DEQUEUED, "rescuer"))
    )
    task = await backend.async_task_storage.get_task(task_id)
    assert task is not None and task.status == TaskStatus.COMPLETED and task.retry_count == 0
    # The dead worker's heartbeat stays "running" with an old last_seen: the console's cue.
    beat = worker_index(
        next(
            i
            for i in await backend.store.list(backend.layout.workers)
            if i.key.endswith("doomed.json")
        )
    )
    assert beat is not None and beat.state == "running"


async def test_run_worker_sync_stops_cleanly_on_sigterm(backend: GCSBackend, bucket: str) -> None:
    omniq = OmniQ(backend)
    task_id = await omniq.enqueue_async("tests.job")
    proc = _spawn(bucket, "sync")
    try:
        await _wait_line(proc, "RUNNING")
        proc.send_signal(signal.SIGTERM)
        await _wait_line(proc, "STOPPED", timeout=10)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    task = await backend.async_task_storage.get_task(task_id)
    assert task is not None and task.status == TaskStatus.PENDING and task.worker_id is None
    assert await backend.async_task_storage.get_queue_size("default") == 1
    beat = json.loads((await backend.store.read(backend.layout.worker("doomed"))).data)
    assert beat["state"] == "stopped"
