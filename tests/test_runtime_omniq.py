"""The OmniQ facade on the emulator: the document's example as written, task registration and
options, enqueue options, waiting for results, schedules, and opening/closing the backend."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from typing import IO

import pytest
from protocol_helpers import task_in

from omniq_console import OmniQ
from omniq_console.backend import lifecycle
from omniq_console.backend.errors import ConflictError, ObjectNotFoundError
from omniq_console.backend.gcs import GCSBackend
from omniq_console.models import ResultStatus, ScheduleStatus, ScheduleType, TaskStatus, utcnow


def my_task(x: int, y: int) -> int:
    return x + y


def _worker_elsewhere(bucket: str, stop: threading.Event) -> threading.Thread:
    """A worker in another thread with its own backend, as if on another machine."""

    async def main() -> None:
        async with GCSBackend(bucket) as backend:
            remote = OmniQ(backend)
            remote.task(my_task)
            worker = remote.worker(["default"], poll_timeout=0.2)
            running = asyncio.create_task(worker.run())
            await asyncio.to_thread(stop.wait)
            worker.stop()
            await running

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    return thread


def test_the_documents_example_runs_as_written(bucket: str) -> None:
    backend = GCSBackend(bucket_name=bucket, project="my-gcp-project")
    omniq = OmniQ(backend=backend)

    @omniq.task
    def my_task(x, y):  # type: ignore[no-untyped-def]  # the document's example, untyped
        return x + y

    result = omniq.enqueue(my_task, 1, 2)
    assert isinstance(result, str)
    assert backend.is_open  # opened for the blocking API, on the sync bridge
    task = backend.task_storage.get_task_sync(result)
    assert task is not None and task.status == TaskStatus.PENDING
    assert task.func == f"{__name__}:test_the_documents_example_runs_as_written.<locals>.my_task"
    assert task.args == (1, 2) and task.queue_name == "default"
    omniq.close()
    assert not backend.is_open


def test_blocking_api_end_to_end_with_a_remote_worker(bucket: str) -> None:
    stop = threading.Event()
    thread = _worker_elsewhere(bucket, stop)
    try:
        with OmniQ(GCSBackend(bucket)) as omniq:
            omniq.task(my_task)
            task_id = omniq.enqueue(my_task, 20, 22)
            result = omniq.get_result(task_id, timeout=15)
            assert result.status == ResultStatus.SUCCESS and result.result == 42
            assert omniq.backend.is_open
        assert not omniq.backend.is_open
    finally:
        stop.set()
        thread.join(15)


def test_a_backend_the_caller_opened_is_used_and_left_open(bucket: str) -> None:
    backend = GCSBackend(bucket)
    with backend:
        omniq = OmniQ(backend)
        task_id = omniq.enqueue("jobs:ping", queue="pings")
        omniq.close()
        assert backend.is_open
        assert backend.task_storage.get_queue_size_sync("pings") == 1
        assert backend.task_storage.get_task_sync(task_id) is not None
    assert not backend.is_open


async def test_registration_options_reach_the_task(backend: GCSBackend) -> None:
    omniq = OmniQ(backend)

    @omniq.task(queue="mail", priority=5, max_retries=7, retry_delay=2.5, ttl=60)
    async def notify(user: str, *, urgent: bool = False) -> None:
        return None

    assert notify.__name__ == "notify"  # the function is returned unchanged
    task_id = await omniq.enqueue_async(notify, "ann", urgent=True)
    task = await backend.async_task_storage.get_task(task_id)
    assert task is not None
    assert (task.queue_name, task.priority, task.max_retries) == ("mail", 5, 7)
    assert task.retry_delay == timedelta(seconds=2.5) and task.ttl == timedelta(seconds=60)
    assert task.expires_at is not None
    assert task.args == ("ann",) and task.kwargs == {"urgent": True}
    # Per call overrides.
    other = await backend.async_task_storage.get_task(
        await omniq.enqueue_async(notify, "bob", queue="mail-bulk", priority=-1)
    )
    assert other is not None and (other.queue_name, other.priority) == ("mail-bulk", -1)
    # The same name for another function is refused; re-registering the same one is fine.
    omniq.task(queue="mail")(notify)
    with pytest.raises(ValueError, match="already registered"):
        omniq.task(name=omniq.registry.resolve(notify)[0])(lambda: None)


async def test_enqueue_delay_run_at_and_names(backend: GCSBackend) -> None:
    omniq = OmniQ(backend)
    before = utcnow()
    delayed = await backend.async_task_storage.get_task(
        await omniq.enqueue_async(my_task, 1, 2, delay=30)
    )
    assert delayed is not None and delayed.run_at is not None
    assert timedelta(seconds=29) < delayed.run_at - before < timedelta(seconds=31)
    assert delayed.func == f"{__name__}:my_task"  # unregistered functions go by module:qualname
    at = utcnow() + timedelta(hours=1)
    later = await backend.async_task_storage.get_task(
        await omniq.enqueue_async("reports:nightly", run_at=at)
    )
    assert later is not None and later.run_at == at and later.func == "reports:nightly"
    with pytest.raises(ValueError, match="run_at or delay"):
        await omniq.enqueue_async(my_task, run_at=at, delay=1)
    with pytest.raises(ValueError, match="negative"):
        await omniq.enqueue_async(my_task, delay=-1)
    with pytest.raises(ValueError, match="queue name"):
        await omniq.enqueue_async(my_task, queue="../etc")
    assert await backend.async_task_storage.get_queue_size("default") == 2


async def test_get_result_times_out_or_names_a_missing_task(backend: GCSBackend) -> None:
    omniq = OmniQ(backend)
    task_id = await omniq.enqueue_async("nobody:runs_this")
    with pytest.raises(TimeoutError, match=task_id):
        await omniq.get_result_async(task_id, timeout=0.3)
    with pytest.raises(ObjectNotFoundError):
        await omniq.get_result_async("no-such-task", timeout=1)
    with pytest.raises(ValueError):
        await omniq.get_result_async("a/b")
    # A task that ended before it ran still answers (here: cancelled while pending).
    task = await backend.async_task_storage.get_task(task_id)
    assert task is not None
    cancelled = lifecycle.cancel(task, task.record, actor="ops", now=utcnow())
    await backend.async_task_storage.apply(task, cancelled)
    result = await omniq.get_result_async(task_id, timeout=1)
    assert result.status == ResultStatus.CANCELLED and "ops" in (result.error or "")
    # ... or expired before it ran, as the reaper leaves it.
    expired = await task_in(backend, TaskStatus.EXPIRED, func="nobody:runs_this")
    result = await omniq.get_result_async(expired.id, timeout=1)
    assert result.status == ResultStatus.EXPIRED and "expired" in (result.error or "")


async def test_schedules_of_every_kind(backend: GCSBackend) -> None:
    omniq = OmniQ(backend)
    omniq.task(queue="math", priority=3, max_retries=1)(my_task)
    cron_id = await omniq.schedule_async(my_task, 1, 2, cron="*/5 * * * *")
    interval_id = await omniq.schedule_async(my_task, interval=timedelta(minutes=1), max_runs=3)
    at = utcnow() + timedelta(hours=2)
    once_id = await omniq.schedule_async("jobs:once", at=at, queue="misc", ttl=7200)
    paused_id = await omniq.schedule_async(my_task, interval=10, paused=True, y=4, x=1)
    store = backend.async_schedule_storage
    cron = await store.get_schedule(cron_id)
    assert cron is not None and cron.schedule_type == ScheduleType.CRON
    assert cron.cron_expression == "*/5 * * * *" and cron.args == (1, 2)
    assert cron.queue_name == "math" and cron.next_run is not None
    assert cron.metadata["task_options"]["priority"] == 3
    interval = await store.get_schedule(interval_id)
    assert interval is not None and interval.interval == timedelta(minutes=1)
    assert interval.max_runs == 3
    once = await store.get_schedule(once_id)
    assert once is not None and once.schedule_type == ScheduleType.TIMESTAMP
    assert once.next_run == at and once.queue_name == "misc"
    assert once.ttl == timedelta(hours=2)
    paused = await store.get_schedule(paused_id)
    assert paused is not None and paused.status == ScheduleStatus.PAUSED
    assert paused.next_run is None and paused.kwargs == {"x": 1, "y": 4}
    with pytest.raises(ValueError, match="exactly one"):
        await omniq.schedule_async(my_task)
    with pytest.raises(ValueError, match="exactly one"):
        await omniq.schedule_async(my_task, cron="* * * * *", interval=5)
    with pytest.raises(ValueError, match="cron"):
        await omniq.schedule_async(my_task, cron="not a cron")


async def test_declared_schedules_are_idempotent(backend: GCSBackend) -> None:
    omniq = OmniQ(backend)
    first = await omniq.schedule_async(my_task, 1, 2, cron="0 * * * *", schedule_id="hourly")
    stored = await backend.async_schedule_storage.get_schedule("hourly")
    assert stored is not None
    stored.pause()
    await backend.async_schedule_storage.update_schedule(stored)
    # An app restart declares it again: kept as it is (still paused), same id.
    again = await omniq.schedule_async(my_task, 1, 2, cron="0 * * * *", schedule_id="hourly")
    assert first == again == "hourly"
    kept = await backend.async_schedule_storage.get_schedule("hourly")
    assert kept is not None and kept.status == ScheduleStatus.PAUSED
    with pytest.raises(ConflictError, match="another definition"):
        await omniq.schedule_async(my_task, 1, 3, cron="0 * * * *", schedule_id="hourly")
    with pytest.raises(ValueError):
        await omniq.schedule_async(my_task, cron="0 * * * *", schedule_id="a/b")


async def test_async_api_opens_and_closes_an_unopened_backend(bucket: str) -> None:
    backend = GCSBackend(bucket)
    async with OmniQ(backend) as omniq:
        assert backend.is_open
        task_id = await omniq.enqueue_async("jobs:x")
        assert await backend.async_task_storage.get_task(task_id) is not None
        with pytest.raises(RuntimeError, match="async twin"):
            omniq.enqueue("jobs:y")  # blocking call on the loop that runs the backend
    assert not backend.is_open


async def test_async_api_on_a_backend_opened_for_sync_use(bucket: str) -> None:
    backend = GCSBackend(bucket)
    await asyncio.to_thread(backend.__enter__)
    try:
        omniq = OmniQ(backend)
        task_id = await omniq.enqueue_async("jobs:x")  # runs on the backend's bridge
        found = await asyncio.to_thread(backend.task_storage.get_task_sync, task_id)
        assert found is not None and found.func == "jobs:x"
    finally:
        await asyncio.to_thread(backend.__exit__, None, None, None)


_SLOW_WORKER = """
import asyncio, sys, threading
from omniq_console import OmniQ
from omniq_console.backend.gcs import GCSBackend

omniq = OmniQ(GCSBackend(sys.argv[1]))


@omniq.task(name="tests.slow")
async def slow() -> None:
    print("RUNNING", flush=True)
    await asyncio.Event().wait()  # until cancelled


@omniq.task(name="tests.blocking")
def blocking() -> str:
    print("RUNNING", flush=True)
    threading.Event().wait()  # never ends: only abandoning its thread stops the worker
    return "finished"


omniq.run_worker_sync(["default"], poll_timeout=0.2, shutdown_grace=120)
print("STOPPED", flush=True)
"""


def _wait_for_output(stream: IO[bytes] | None, text: str, timeout: float) -> None:
    """Read ``stream`` until ``text`` shows; fail naming it when it does not in time."""
    assert stream is not None
    fd, seen = stream.fileno(), b""
    deadline = time.monotonic() + timeout
    while text.encode() not in seen:
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(remaining, 0))
        if not ready:
            raise AssertionError(f"the worker did not print {text!r} within {timeout} s: {seen!r}")
        chunk = os.read(fd, 65536)
        if not chunk:
            raise AssertionError(f"the worker exited before printing {text!r}: {seen!r}")
        seen += chunk


@pytest.mark.parametrize(
    ("func", "signum", "left"),
    [
        # An async function is cancelled and its task released to its queue.
        ("tests.slow", signal.SIGINT, TaskStatus.PENDING),
        # A sync function's thread is abandoned: no outcome, its lease left to expire.
        ("tests.blocking", signal.SIGTERM, TaskStatus.RUNNING),
    ],
)
def test_run_worker_sync_second_signal_stops_what_the_first_waits_for(
    bucket: str, func: str, signum: signal.Signals, left: TaskStatus
) -> None:
    with OmniQ(GCSBackend(bucket)) as omniq:
        task_id = omniq.enqueue(func)
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_WORKER, bucket],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for_output(proc.stdout, "RUNNING", timeout=30)
        proc.send_signal(signum)  # a clean stop would wait its 120 s grace for the task...
        _wait_for_output(proc.stderr, "send the signal again", timeout=60)
        proc.send_signal(signum)  # ...the second stops at once
        _wait_for_output(proc.stdout, "STOPPED", timeout=60)
        assert proc.wait(30) == 0  # not the grace of 120 s
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with OmniQ(GCSBackend(bucket)) as omniq:
        task = omniq.backend.task_storage.get_task_sync(task_id)
    assert task is not None and task.status == left


def test_blocking_call_on_a_backend_open_for_async_use_is_refused(bucket: str) -> None:
    async def main() -> None:
        async with GCSBackend(bucket) as backend:
            omniq = OmniQ(backend)
            with pytest.raises(RuntimeError, match="async twin"):
                await asyncio.to_thread(omniq.enqueue, "jobs:x")  # from another thread, too
            assert await omniq.enqueue_async("jobs:x")

    asyncio.run(main())
