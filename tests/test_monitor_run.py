"""The monitor's run loop and failures: a stopped emulator makes snapshots stale, a restarted
one makes them fresh again without help; requests coalesce; pause, resume, intervals."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Iterator

import pytest
from waiting import wait_until

from omniq_console.backend.gcs import GCSBackend
from omniq_console.backend.layout import Layout
from omniq_console.backend.objectstore import RetryPolicy
from omniq_console.clock import FakeClock
from omniq_console.demo.emulator import Emulator
from omniq_console.models import Task
from omniq_console.monitor import Monitor, Snapshot

FAST_FAIL = RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.05, request_timeout=1.0)


@pytest.fixture
def own_emulator() -> Iterator[Emulator]:
    """An emulator this test may stop and restart (not the session's)."""
    emu = Emulator()
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


async def test_stopped_emulator_makes_it_stale_and_restart_makes_it_fresh(
    own_emulator: Emulator,
) -> None:
    bucket = f"stale-{uuid.uuid4().hex[:12]}"
    own_emulator.create_bucket(bucket)
    async with GCSBackend(bucket, endpoint_url=own_emulator.url, retry=FAST_FAIL) as backend:
        await backend.async_task_storage.enqueue(Task(func="kept", queue_name="before"))
        clock = FakeClock()
        monitor = Monitor(backend, poll_timeout=3.0, clock=clock.now)
        good = await monitor.poll()
        assert not good.stale and good.queues[0].name == "before"

        own_emulator.stop()
        clock.advance(1.0)
        stale = await monitor.poll()
        assert stale.stale and monitor.failures == 1
        assert stale.error and "\n" not in stale.error and "BackendUnavailableError" in stale.error
        # The last good data is kept, and said to be old.
        assert stale.queues == good.queues and stale.taken_at == good.taken_at
        assert stale.requests.errors > 0
        clock.advance(1.0)
        older = await monitor.poll()
        assert older.stale and older.age_s > stale.age_s > 0 and monitor.failures == 2
        assert monitor.latest is older

        # Same port, new process: the memory backend forgot everything, bucket included.
        own_emulator.start()
        own_emulator.create_bucket(bucket)
        fresh = await monitor.poll()
        assert not fresh.stale and fresh.error is None and fresh.age_s == 0
        assert fresh.queues == () and monitor.failures == 0


async def test_run_loop_backs_off_and_recovers_by_itself(own_emulator: Emulator) -> None:
    bucket = f"loop-{uuid.uuid4().hex[:12]}"
    own_emulator.create_bucket(bucket)
    async with GCSBackend(bucket, endpoint_url=own_emulator.url, retry=FAST_FAIL) as backend:
        monitor = Monitor(backend, interval=0.05, poll_timeout=2.0, max_backoff=0.4)
        seen: list[Snapshot] = []
        monitor.subscribe(seen.append)
        runner = asyncio.create_task(monitor.run())
        try:
            await wait_until(lambda: len(seen) >= 2, "two snapshots")
            assert not seen[-1].stale

            own_emulator.stop()
            await wait_until(lambda: monitor.failures >= 4, "four failed polls")
            assert seen[-1].stale and seen[-1].error
            # Backing off: doubling from the interval, capped.
            assert monitor.next_delay() == 0.4
            stale_count = sum(s.stale for s in seen)

            own_emulator.start()
            own_emulator.create_bucket(bucket)
            await wait_until(lambda: not seen[-1].stale, "a fresh snapshot after the restart")
            assert monitor.failures == 0 and monitor.next_delay() == 0.05
            # While failing, polls were spaced out: about log2(0.4 / 0.05) + a few, not dozens.
            assert stale_count < 12
        finally:
            runner.cancel()
            with pytest.raises(asyncio.CancelledError):
                await runner


async def test_poll_timeout_marks_stale(backend: GCSBackend) -> None:
    monitor = Monitor(backend, poll_timeout=0.001)
    snap = await monitor.poll()
    assert snap.stale and snap.error == "poll timed out after 0.001 s"
    with pytest.raises(TimeoutError, match="did not finish within"):
        await monitor.poll(raise_errors=True)


async def test_request_poll_coalesces_and_pause_stops_timed_polls(backend: GCSBackend) -> None:
    # Timed polls a minute apart on the injected clock: they come at once in real time.
    timer = FakeClock()
    monitor = Monitor(backend, interval=60.0, timer=timer)
    polls: list[Snapshot] = []
    settled: list[tuple[int, float]] = []

    def seen(snapshot: Snapshot) -> None:
        polls.append(snapshot)
        if len(polls) == 4:
            # Inside a poll (none other runs meanwhile): pause, and ask five times.
            monitor.pause()
            for _ in range(5):
                monitor.request_poll()
            settled.append((len(polls), timer.monotonic()))

    monitor.subscribe(seen)
    started = timer.monotonic()
    runner = asyncio.create_task(monitor.run())
    try:
        await wait_until(lambda: settled, "timed polls every 60 s up to the pause")
        assert monitor.paused
        ((paused_at, paused_time),) = settled
        assert paused_time - started >= 3 * 60.0  # three waits of the interval, on the timer
        await wait_until(lambda: len(polls) >= paused_at + 1, "the poll the five requests asked")
        # From another thread, as a Textual thread worker would.
        await asyncio.to_thread(monitor.request_poll)
        await wait_until(lambda: len(polls) >= paused_at + 2, "the thread's request")
        # Two requested polls, one for five requests; and no timed one: a loop ignoring the
        # pause would have slept on the timer (moving it) and polled again after each poll.
        assert len(polls) == paused_at + 2
        assert timer.monotonic() == paused_time
        monitor.resume()
        await wait_until(lambda: len(polls) >= paused_at + 4, "timed polls after the resume")
        assert timer.monotonic() >= paused_time + 60.0
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner


async def test_one_run_loop_per_monitor(backend: GCSBackend) -> None:
    monitor = Monitor(backend, interval=60.0)
    first: list[Snapshot] = []
    unsubscribe = monitor.subscribe(first.append)
    runner = asyncio.create_task(monitor.run())
    await wait_until(lambda: first, "the first loop's first poll")
    unsubscribe()
    try:
        with pytest.raises(RuntimeError, match="already running"):
            await monitor.run()
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
    # Once stopped, it may run again.
    polls: list[Snapshot] = []
    monitor.subscribe(polls.append)
    again = asyncio.create_task(monitor.run())
    await wait_until(lambda: len(polls) == 1, "the first poll of the second loop")
    again.cancel()
    with pytest.raises(asyncio.CancelledError):
        await again


@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf])
def test_bad_settings_are_refused(bad: float) -> None:
    class Nothing:
        store = None
        layout = Layout()
        bucket_name = prefix = "x"

    with pytest.raises(ValueError, match="interval"):
        Monitor(Nothing(), interval=bad)  # type: ignore[arg-type]
    monitor = Monitor(Nothing())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="interval"):
        monitor.set_interval(bad)
    with pytest.raises(ValueError, match="poll_timeout"):
        Monitor(Nothing(), poll_timeout=bad)  # type: ignore[arg-type]
