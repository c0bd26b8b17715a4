"""Responsiveness: the longest time the console's event loop is blocked while a snapshot of
``n`` tasks arrives and renders, then while the operator opens the Tasks view, filters it, the
next snapshot arrives, and the other views are opened. Beside it, in the same run and measured
the same way: Textual's plain ``DataTable.add_rows`` of the same ``n`` rows (what a console
that rebuilds its table does), and an idle console (the machine's own noise).

The console runs headless (``App.run_test``) on a ``StaticSource``; the snapshots are built in
memory beforehand (bigsnapshot.py). A probe coroutine on the app's loop sleeps 5 ms at a time
and notes how late it wakes: that lateness is the time the loop was blocked. The garbage
collector's passes are timed too: they stop every thread, the loop's included.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

# What ``omniq_console.cli.run_console`` sets before it runs the app.
from omniq_console.cli import GC_THRESHOLDS as CLI_GC_THRESHOLDS

from .bigsnapshot import build
from .common import GcWatch, LoopLagProbe, Table, log, ms, verdict

TARGET_MS = 50.0
SIZE = (160, 50)
FILTER_TEXT = "digest"  # matches one function of six: app.mail:send_digest
PHASE_TIMEOUT = 300.0  # a cold poll of 100,000 tasks took 47 s on a loaded machine
IDLE_S = 2.0
LIVE_WATCH_S = 10.0
LIVE_POLLS = 3
"""Polls a live phase must contain: a phase with none measures nothing of polling."""
LIVE_MAX_S = 120.0
VIEW_KEYS = (("4", "Results"), ("5", "Events"), ("6", "Schedules"), ("7", "Workers"),
             ("2", "Queues"), ("1", "Overview"))  # fmt: skip


@dataclass
class Phase:
    name: str
    seconds: float  # until what the operator asked for is on screen
    worst_ms: float
    p99_ms: float
    blocked_over_target: int
    samples: int
    longest_gc_ms: float


@contextlib.contextmanager
def as_the_cli_runs() -> Iterator[None]:
    """The process settings of a console started from the command line: the CLI's collector
    thresholds. (The app's own once-only freeze of long-lived objects, which it skips when
    headless, is done by the steps below at the same moment the app would do it.)"""
    old = gc.get_threshold()
    gc.set_threshold(*CLI_GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*old)
        gc.unfreeze()


def freeze_like_the_app(app: Any) -> None:
    """What the console does once the first snapshot is on screen in a real terminal."""
    freeze = getattr(app, "freeze_long_lived_objects", None)
    if freeze is not None:
        freeze()


class _Phases:
    """Runs one step at a time with the probe and the GC watch around it."""

    def __init__(self, pilot: Any | None) -> None:
        self.pilot = pilot
        self.probe = LoopLagProbe()
        self.gcw = GcWatch()
        self.done: list[Phase] = []

    async def settle(self) -> None:
        # The refresh that draws the step, and whatever it scheduled.
        assert self.pilot is not None, "a step needs the running app's pilot"
        await self.pilot.pause()
        await asyncio.sleep(0.1)
        await self.pilot.pause()

    async def step(
        self,
        name: str,
        action: Callable[[], Awaitable[Any] | Any],
        done: Callable[[], bool],
        after: Callable[[], Any] | None = None,
    ) -> None:
        self.gcw.take()
        self.probe.start()
        started = time.perf_counter()
        result = action()
        if asyncio.iscoroutine(result):
            await result
        deadline = started + PHASE_TIMEOUT
        while not done():
            if time.perf_counter() > deadline:
                raise TimeoutError(f"ui benchmark: {name!r} not done after {PHASE_TIMEOUT:.0f} s")
            await asyncio.sleep(0.002)
        seconds = time.perf_counter() - started
        if after is not None:
            assert self.pilot is not None
            await self.pilot.pause()
            after()
        await self.settle()
        await self.probe.stop()
        gc_ms = ms(max((d for _, d in self.gcw.take()), default=0.0))
        probe = self.probe
        log(f"ui: {name}: {seconds:.2f} s, worst block {ms(probe.worst):.1f} ms, GC {gc_ms:.0f} ms")
        self.done.append(
            Phase(
                name,
                seconds,
                ms(probe.worst),
                ms(probe.percentile(0.99)),
                probe.over(TARGET_MS / 1000),
                len(probe.lags),
                gc_ms,
            )
        )


async def console_phases(n: int) -> list[Phase]:
    from omniq_console.tui.app import build_app
    from omniq_console.tui.source import StaticSource
    from omniq_console.tui.taskfilter import TaskFilter

    first = build(n)
    second = build(n, changed=0.01)
    wanted = TaskFilter(func=FILTER_TEXT).predicate()
    matching_first = sum(1 for r in first.task_rows if wanted(r))
    matching_second = sum(1 for r in second.task_rows if wanted(r))
    source = StaticSource()
    app = build_app(source, bucket="bench", prefix="omniq/", read_only=True)
    gc.collect()
    with as_the_cli_runs():
        return await _console_steps(app, source, first, second, matching_first, matching_second, n)


async def _console_steps(
    app: Any,
    source: Any,
    first: Any,
    second: Any,
    matching_first: int,
    matching_second: int,
    n: int,
) -> list[Phase]:
    from omniq_console.tui.views.tasks import TasksView

    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        steps = _Phases(pilot)
        with steps.gcw:

            def tasks_view() -> TasksView:
                return app.screen_stack[0].query_one(TasksView)

            async def idle() -> None:
                await asyncio.sleep(IDLE_S)

            async def type_filter() -> None:
                app.screen_stack[0].query_one("#tasks-func").focus()
                # Enter applies the filter at once and puts the focus back in the table (the
                # view keys would otherwise type into the input).
                await pilot.press(*FILTER_TEXT, "enter")

            await steps.step("idle console, no snapshot (the machine's noise)", idle, lambda: True)
            await steps.step(
                f"snapshot of {n:,} tasks arrives, Overview drawn",
                lambda: source.push(first),
                lambda: app.snapshot is first,
                after=lambda: freeze_like_the_app(app),
            )
            await steps.step(
                "switch to the Tasks view (first page of all tasks)",
                lambda: pilot.press("3"),
                lambda: tasks_view().page is not None and tasks_view().table.row_count > 0,
            )
            await steps.step(
                f"type a filter ({FILTER_TEXT!r} + enter) until its page is shown",
                type_filter,
                lambda: (page := tasks_view().page) is not None and page.matched == matching_first,
            )
            shown = tasks_view().page
            await steps.step(
                "next snapshot (1% changed) arrives on the filtered Tasks view",
                lambda: source.push(second),
                lambda: (
                    app.snapshot is second
                    and (page := tasks_view().page) is not shown
                    and page is not None
                    and page.matched == matching_second
                ),
            )
            for key, title in VIEW_KEYS:
                await steps.step(
                    f"switch to the {title} view", lambda key=key: pilot.press(key), lambda: True
                )
    return steps.done


async def baseline_add_rows(n: int) -> Phase:
    """Plain Textual: one DataTable, ``add_rows`` of ``n`` rows with a column per field of
    the console's task row (taken from ``TaskRow`` itself, so the two never disagree)."""
    from textual.app import App, ComposeResult
    from textual.widgets import DataTable

    import msgspec

    from omniq_console.monitor.snapshot import ROW_FIELDS

    snapshot = build(n)
    rows = [
        tuple("" if v is None else str(v) for v in msgspec.structs.astuple(row))
        for row in snapshot.task_rows
    ]
    del snapshot

    class Plain(App[None]):
        def compose(self) -> ComposeResult:
            yield DataTable()

        def on_mount(self) -> None:
            self.query_one(DataTable).add_columns(*ROW_FIELDS)

    app = Plain()
    gc.collect()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        table = app.query_one(DataTable)
        steps = _Phases(pilot)
        with steps.gcw:
            await steps.step(
                f"plain DataTable.add_rows of {n:,} rows",
                lambda: table.add_rows(rows),
                lambda: table.row_count == n,
            )
    return steps.done[0]


async def live_phases(n: int, interval: float = 2.0) -> tuple[list[Phase], int, float]:
    """The console as `omniq-console` runs it: a real Monitor polling (every ``interval`` s)
    in the console's process, against the in-memory GCS stand-in holding ``n`` tasks.
    Returns the phases, the polls seen and the console process's CPU seconds."""
    from omniq_console.backend.gcs import GCSBackend
    from omniq_console.monitor.thread import monitor_thread
    from omniq_console.tui.app import build_app
    from omniq_console.tui.views.tasks import TasksView

    from .standin import server

    with server(n) as url:
        # As ``run_console`` runs it: the Monitor on a thread and loop of its own, with a
        # backend opened there (its CPU reaches the app's loop only through the GIL).
        monitor = monitor_thread(
            lambda: GCSBackend("standin", endpoint_url=url, token="anon"),
            interval=interval,
            poll_timeout=120.0,
        )
        try:
            polls = 0

            def count(_: object) -> None:
                nonlocal polls
                polls += 1

            monitor.subscribe(count)
            app = build_app(monitor, bucket="standin", prefix="omniq/", read_only=True)
            gc.collect()
            cpu = time.process_time()
            steps = _Phases(None)
            with steps.gcw, as_the_cli_runs():
                # The probe starts before the app: run_test runs it on this same loop.
                steps.probe.start()
                async with app.run_test(size=SIZE) as pilot:
                    steps.pilot = pilot
                    await steps.probe.stop()
                    steps.probe.lags.clear()

                    def tasks_view() -> TasksView:
                        return app.screen_stack[0].query_one(TasksView)

                    watched: list[int] = []

                    async def watch() -> None:
                        # Long enough to hold several polls (a big bucket's polls come 5-13 s
                        # apart on a quiet machine, a minute apart on a loaded one):
                        # LIVE_POLLS of them and at least LIVE_WATCH_S, at most LIVE_MAX_S;
                        # how many came is part of the phase's name.
                        start = polls
                        deadline = time.monotonic() + LIVE_MAX_S
                        await asyncio.sleep(LIVE_WATCH_S)
                        while polls - start < LIVE_POLLS and time.monotonic() < deadline:  # noqa: ASYNC110
                            await asyncio.sleep(0.1)
                        watched.append(polls - start)

                    await steps.step(
                        f"first poll of {n:,} tasks (cold) arrives, Overview drawn",
                        lambda: None,
                        lambda: app.snapshot is not None,
                        after=lambda: freeze_like_the_app(app),
                    )
                    await steps.step("Overview open while polls arrive", watch, lambda: True)
                    await steps.step(
                        "switch to the Tasks view (first page of all tasks)",
                        lambda: pilot.press("3"),
                        lambda: tasks_view().page is not None and tasks_view().table.row_count > 0,
                    )
                    await steps.step("Tasks view open while polls arrive", watch, lambda: True)
            cpu = time.process_time() - cpu
            for phase, count in zip((steps.done[1], steps.done[3]), watched, strict=True):
                phase.name += f" ({count} in {phase.seconds:.0f} s)"
        finally:
            await monitor.aclose()
    for phase in steps.done:
        phase.name = f"live: {phase.name}"
    return steps.done, polls, cpu


def run(n: int, *, live: bool = True) -> list[Table]:
    phases = asyncio.run(console_phases(n))
    base = asyncio.run(baseline_add_rows(n))
    live_figures: tuple[list[Phase], int, float] | None = None
    live_error = ""
    if live:
        # The other rows took minutes: a live run that fails is reported, not allowed to
        # take them with it.
        try:
            live_figures = asyncio.run(live_phases(n))
        except Exception as exc:
            live_error = f"{type(exc).__name__}: {exc}"
            log(f"ui: the live phases failed: {live_error}")
        else:
            phases = [*phases, *live_figures[0]]
    table = Table(
        f"Responsiveness: longest event-loop block, console vs plain DataTable, {n:,} tasks",
        [
            "what",
            "until shown (s)",
            "longest block (ms)",
            "p99 (ms)",
            "blocks > 50 ms",
            "longest GC pause (ms)",
            "target < 50 ms",
        ],
    )
    for p in [*phases, base]:
        name = p.name if p is not base else f"baseline: {p.name}"
        table.add(
            name,
            round(p.seconds, 2),
            round(p.worst_ms, 1),
            round(p.p99_ms, 1),
            p.blocked_over_target,
            round(p.longest_gc_ms, 1),
            verdict(p.worst_ms, TARGET_MS, unit=" ms"),
        )
    worst = max((p for p in phases if "noise" not in p.name), key=lambda p: p.worst_ms)
    table.notes.append(
        f"Console worst: {worst.worst_ms:.0f} ms ({worst.name}) vs {base.worst_ms:,.0f} ms for the "
        f"plain table ({base.worst_ms / max(worst.worst_ms, 0.001):,.0f}x shorter); the idle "
        f"console's own worst was {phases[0].worst_ms:.0f} ms. Headless (App.run_test, "
        f"{SIZE[0]}x{SIZE[1]}) with the CLI's process settings (collector thresholds "
        f"{CLI_GC_THRESHOLDS}; long-lived objects frozen once the first snapshot is drawn, as the "
        "app does in a terminal); "
        "snapshots built in memory beforehand; a 5 ms probe on the app's loop measures how late "
        "it wakes. 'Until shown' counts from the key or the snapshot's "
        "arrival to the state asked for (filtering runs in a thread)."
    )
    if live_error:
        table.notes.append(f"The live rows are missing: the live run failed ({live_error}).")
    if live_figures is not None:
        _, polls, cpu = live_figures
        table.notes.append(
            f"'live' rows: the console with a real Monitor in its process (interval 2 s), polling "
            f"the in-memory GCS stand-in (benchmarks/standin.py, another process) holding {n:,} "
            f"tasks and their objects: {polls} polls arrived; the console process used {cpu:.0f} s "
            "of CPU over the live phases (listings parsed, indexes decoded, snapshot built, drawn)."
        )
    return [table]
