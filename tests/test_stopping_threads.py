"""Setting a loop's event from any thread (``stopping.set_from_any_thread``), as ``StopSignal``
and the monitor's run loop do it: on the loop's thread, from another thread, before the loop
waits, and after the loop is closed; and ``StopSignal.wait`` timing out on an injected clock."""

from __future__ import annotations

import asyncio
import contextlib
import threading

from omniq_console.clock import FakeClock
from omniq_console.stopping import StopSignal, set_from_any_thread


async def test_on_the_loops_own_thread_the_event_is_set_at_once() -> None:
    event = asyncio.Event()
    set_from_any_thread(asyncio.get_running_loop(), event)
    assert event.is_set()  # not scheduled for later: set before this coroutine yields


async def test_from_another_thread_the_loop_is_woken() -> None:
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    thread = threading.Thread(target=set_from_any_thread, args=(loop, event))
    thread.start()
    async with asyncio.timeout(30):
        await event.wait()
    thread.join()


def test_a_closed_loop_is_left_alone() -> None:
    loop = asyncio.new_event_loop()
    event = asyncio.Event()
    loop.close()
    set_from_any_thread(loop, event)  # no RuntimeError("Event loop is closed")
    assert not event.is_set()


async def test_a_stop_signal_set_from_another_thread_ends_a_wait() -> None:
    stop = StopSignal()
    stop.bind()
    thread = threading.Thread(target=stop.set)
    waiting = asyncio.create_task(stop.wait(timeout=60))
    thread.start()
    async with asyncio.timeout(30):
        assert await waiting is True
    thread.join()


async def test_a_stop_signal_set_before_its_loop_waits_is_seen() -> None:
    stop = StopSignal()
    stop.set()
    assert await stop.wait(timeout=60) is True


def test_a_stop_signal_set_after_its_loop_closed_only_records_the_stop() -> None:
    stop = StopSignal()
    loop = asyncio.new_event_loop()
    loop.run_until_complete(_bind(stop))
    loop.close()
    stop.set()  # a late signal handler or thread: nothing to wake, no error
    assert stop.is_set()


async def _bind(stop: StopSignal) -> None:
    stop.bind()


async def test_a_stop_signal_times_out_on_its_injected_clock() -> None:
    clock, stop = FakeClock(), StopSignal()
    start = clock.monotonic()
    async with asyncio.timeout(30):  # an hour of the fake clock, no real wait
        assert await stop.wait(3600, clock=clock) is False
    assert clock.monotonic() - start == 3600


async def test_a_cancelled_stop_wait_leaves_no_waiter_behind() -> None:
    stop = StopSignal()
    waiting = asyncio.create_task(stop.wait(60))
    await asyncio.sleep(0)  # let it start waiting on the event and the clock
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting
    await asyncio.sleep(0)  # the cancelled waiters finish
    assert asyncio.all_tasks() == {asyncio.current_task()}
