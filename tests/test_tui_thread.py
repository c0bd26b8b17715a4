"""The console's keys never wait on a poll: the source runs on its own thread and loop.

A poll here blocks its loop synchronously (it waits on a ``threading.Event``), as a CPU-heavy
poll does: on the console's own loop every key would wait for it. Each test waits on
conditions; the only time-outs are hang guards.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import pytest
from protocol_helpers import task_in
from textual.pilot import Pilot
from textual.widgets import TabbedContent
from tui_fixtures import LIGHT, demo_snapshot, failed_task_detail, settle, task_id

from omniq_console.backend.gcs import GCSBackend
from omniq_console.models import Task, TaskStatus
from omniq_console.monitor.snapshot import Snapshot, TaskDetail
from omniq_console.monitor.thread import MonitorThread, SourceStopped, monitor_thread
from omniq_console.runtime import Operator
from omniq_console.tui import ConsoleApp, StaticSource, build_app
from omniq_console.tui.screens.detail import TaskDetailScreen
from omniq_console.tui.screens.main import MainScreen

SIZE = (120, 40)
GUARD_S = 60.0
"""Hang guard: how long a blocked poll waits before giving up on its own."""


class BlockingSource(StaticSource):
    """A source whose polls, once ``block()`` is called, hold their loop synchronously until
    ``release``: a poll busy decoding, as far as the loop can tell. It records the threads it
    ran on and what ran to the end."""

    def __init__(self, snapshots: Snapshot | Sequence[Snapshot] = ()) -> None:
        super().__init__(snapshots, details={task_id(41): failed_task_detail()})
        self._block = threading.Event()
        self.blocked = threading.Event()
        self.release = threading.Event()
        self.polls_done = 0
        self.threads: set[int] = set()
        self.closed = threading.Event()

    def block(self) -> None:
        self._block.set()

    def _advance(self) -> None:
        self.threads.add(threading.get_ident())
        if self._block.is_set():
            self.blocked.set()
            self.release.wait(GUARD_S)  # blocks this source's whole loop
        super()._advance()
        self.polls_done += 1

    async def task_detail(self, task_id: str) -> TaskDetail:
        self.threads.add(threading.get_ident())
        return await super().task_detail(task_id)


class AwaitingSource(StaticSource):
    """A source whose second poll awaits forever (a request that never answers)."""

    def __init__(self) -> None:
        super().__init__(demo_snapshot())
        self.waiting = threading.Event()
        self.cancelled = threading.Event()

    async def run(self) -> None:
        self._advance()
        try:
            self.waiting.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


def threaded(source: StaticSource, **options: float) -> MonitorThread:
    """``source`` on a thread of its own; ``source.closed`` is set when its opener exits."""

    @asynccontextmanager
    async def opened() -> AsyncIterator[StaticSource]:
        try:
            yield source
        finally:
            if isinstance(source, BlockingSource):
                source.closed.set()

    return MonitorThread(opened, **options)


async def until(pilot: Pilot[None], predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for the console"
        await pilot.pause(0.02)


def console(source: MonitorThread, **kwargs: object) -> ConsoleApp:
    """The console on ``source``: the cheapest view unless ``views`` says which (what is
    tested here is the thread, not a view)."""
    kwargs.setdefault("views", LIGHT)
    return build_app(source, **kwargs)  # type: ignore[arg-type]


def active(app: ConsoleApp) -> str:
    main = app.screen_stack[0]
    assert isinstance(main, MainScreen)
    return main.query_one(TabbedContent).active


async def test_keys_switch_views_while_a_poll_holds_its_loop() -> None:
    source = BlockingSource(demo_snapshot())
    app = console(threaded(source), views=("overview", "events"))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.snapshot is not None)
        source.block()
        await pilot.press("ctrl+r")
        await until(pilot, source.blocked.is_set)
        done = source.polls_done
        await pilot.press("5")
        await until(pilot, lambda: active(app) == "events")
        await pilot.press("escape", "1")
        await until(pilot, lambda: active(app) == "overview")
        # The keys were handled while the poll still held its loop.
        assert source.polls_done == done
        source.release.set()
        await until(pilot, lambda: source.polls_done == done + 1)


async def test_polls_and_reads_run_on_the_thread_snapshots_arrive_on_the_ui_loop() -> None:
    source = BlockingSource(demo_snapshot())
    thread = threaded(source)
    app = console(thread)
    delivered: list[int] = []
    ui = threading.get_ident()
    async with app.run_test(size=SIZE) as pilot:
        thread.subscribe(lambda _: delivered.append(threading.get_ident()))
        await until(pilot, lambda: app.snapshot is not None)
        await pilot.press("ctrl+r")
        await until(pilot, lambda: bool(delivered))
        app.open_task(task_id(41))
        await until(pilot, lambda: isinstance(app.screen, TaskDetailScreen))
        screen = app.screen
        assert isinstance(screen, TaskDetailScreen)
        await until(pilot, lambda: screen.detail is not None)
        assert screen.detail is not None and screen.detail.result is not None
        assert thread.thread is not None
        assert source.threads == {thread.thread.ident}, "the source ran off its thread"
        assert ui not in source.threads
        assert set(delivered) == {ui}, "a snapshot was handed over on the source's thread"
    assert not thread.thread.is_alive()
    assert source.closed.is_set()


async def test_quit_while_a_poll_awaits_ends_the_thread() -> None:
    source = AwaitingSource()
    thread = threaded(source)
    app = console(thread)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, source.waiting.is_set)
        await pilot.press("q")
    assert source.cancelled.is_set()
    assert thread.thread is not None and not thread.thread.is_alive()


async def test_quit_while_a_poll_blocks_its_loop_waits_for_it_then_joins() -> None:
    source = BlockingSource(demo_snapshot())
    thread = threaded(source)
    app = console(thread)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.snapshot is not None)
        source.block()
        await pilot.press("ctrl+r", "q")
        await until(pilot, source.blocked.is_set)
        # The poll ends (a CPU-heavy one does, in its time): the stop lands right after it.
        source.release.set()
    assert thread.thread is not None and not thread.thread.is_alive()
    assert source.closed.is_set()


async def test_a_poll_stuck_in_blocking_code_does_not_keep_the_console_open(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = BlockingSource(demo_snapshot())
    thread = threaded(source, stop_wait=0.2)
    app = console(thread)
    with caplog.at_level(logging.WARNING, logger="omniq_console.monitor.thread"):
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: app.snapshot is not None)
            source.block()
            await pilot.press("ctrl+r")
            await until(pilot, source.blocked.is_set)
            await pilot.press("q")
    assert thread.thread is not None and thread.thread.is_alive()
    assert not source.release.is_set(), "the console waited for the stuck poll"
    assert "did not stop" in caplog.text
    source.release.set()
    await asyncio.to_thread(thread.thread.join, GUARD_S)
    assert not thread.thread.is_alive()


async def test_controls_reach_the_source_on_its_loop_even_before_it_exists() -> None:
    source = StaticSource(demo_snapshot())
    opening = threading.Event()
    may_open = threading.Event()

    @asynccontextmanager
    async def slow_open() -> AsyncIterator[StaticSource]:
        opening.set()
        await asyncio.to_thread(may_open.wait, GUARD_S)
        yield source

    thread = MonitorThread(slow_open)
    arrived = asyncio.Event()
    thread.subscribe(lambda _: arrived.set())
    running = asyncio.create_task(thread.run())
    await asyncio.to_thread(opening.wait, GUARD_S)
    thread.set_interval(7.0)  # before the source exists: applied before its first poll
    thread.pause()
    with pytest.raises(ValueError, match="interval"):
        thread.set_interval(0)  # refused here, in the caller's thread
    may_open.set()
    await asyncio.wait_for(arrived.wait(), GUARD_S)
    assert (source.interval, source.paused) == (7.0, True)
    arrived.clear()
    thread.resume()
    thread.request_poll()  # resumed first (in order, on its loop): this poll publishes
    await asyncio.wait_for(arrived.wait(), GUARD_S)
    assert (source.poll_requests, source.paused) == (1, False)
    details = await thread.task_detail("a")
    assert details.task_id == "a" and source.detail_requests == ["a"]
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert thread.thread is not None and not thread.thread.is_alive()
    with pytest.raises(SourceStopped):
        await thread.task_bodies(["a"])


async def test_a_source_that_cannot_open_fails_run_with_its_error() -> None:
    @asynccontextmanager
    async def broken() -> AsyncIterator[StaticSource]:
        raise PermissionError("no access to the bucket")
        yield StaticSource()  # pragma: no cover

    thread = MonitorThread(broken)
    with pytest.raises(PermissionError, match="no access"):
        await asyncio.wait_for(thread.run(), GUARD_S)
    with pytest.raises(SourceStopped, match="no access"):
        await thread.task_detail("a")


# -- the real thing: a Monitor on its thread, the Operator on the console's loop ---------------


@pytest.fixture
async def backend(bucket: str) -> AsyncIterator[GCSBackend]:
    async with GCSBackend(bucket) as b:
        yield b


async def test_actions_and_detail_work_with_the_monitor_on_its_thread(
    backend: GCSBackend, bucket: str
) -> None:
    failed = await task_in(
        backend, TaskStatus.FAILED, queue="emails", func="app.jobs:send", error_type="ValueError"
    )
    # The monitor opens a backend of its own on its loop; the operator's is this loop's.
    thread = monitor_thread(lambda: GCSBackend(bucket), interval=60.0, poll_timeout=10.0)
    app = build_app(thread, operator=Operator(backend, "alice@ops"), bucket=bucket, views=LIGHT)
    async with app.run_test(size=(160, 48)) as pilot:
        await until(
            pilot,
            lambda: (
                thread.latest is not None and [r.id for r in thread.latest.task_rows] == [failed.id]
            ),
        )
        app.open_task(failed.id)
        await until(pilot, lambda: isinstance(app.screen, TaskDetailScreen))
        screen = app.screen
        assert isinstance(screen, TaskDetailScreen)
        await until(pilot, lambda: screen.detail is not None)
        assert screen.detail is not None and screen.detail.result is not None
        assert screen.detail.result.error_type == "ValueError"
        await pilot.press("escape")
        await settle(pilot)
        app.actions.task_action("retry", failed.id, status="failed")  # on this loop, a worker
        await until(
            pilot,
            lambda: (
                thread.latest is not None
                and [r.status for r in thread.latest.task_rows] == ["pending"]
            ),
        )
        found = await thread.task_bodies([failed.id])
        assert isinstance(found[failed.id], Task)
    stored = await backend.async_task_storage.get_task(failed.id)
    assert stored is not None and stored.status == TaskStatus.PENDING
    assert thread.thread is not None and not thread.thread.is_alive()
