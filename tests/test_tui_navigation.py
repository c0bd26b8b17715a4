"""The console's screens and keys: every view by key, help, palette, status bar, detail."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from textual.widgets import TabbedContent
from tui_fixtures import (
    LIGHT,
    TAKEN_AT,
    demo_snapshot,
    make_app,
    run_command,
    screen_text,
    search_tasks,
    settle,
    stale_snapshot,
    task_id,
    toasts,
    until_toast,
)

from omniq_console.monitor.snapshot import RequestFigures, Snapshot, TaskDetail
from omniq_console.tui import ConsoleApp, StaticSource
from omniq_console.tui.screens.confirm import ConfirmScreen
from omniq_console.tui.screens.detail import TaskDetailScreen
from omniq_console.tui.screens.help import HelpScreen
from omniq_console.tui.widgets.status_bar import StatusBar

SIZE = (160, 48)
VIEW_KEYS = {
    "1": "overview",
    "2": "queues",
    "3": "tasks",
    "4": "results",
    "5": "events",
    "6": "schedules",
    "7": "workers",
    "8": "backend",
}


async def test_every_view_is_one_key_away() -> None:
    app, _, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        tabs = app.screen.query_one(TabbedContent)
        assert tabs.active == "overview"
        for key, view in [*VIEW_KEYS.items(), ("1", "overview")]:
            await pilot.press(key)
            await settle(pilot)
            assert tabs.active == view
            # The view's main widget has the focus, so its keys work at once.
            assert app.focused is not None
            assert app.screen.query_one(f"#view-{view}") in app.focused.ancestors_with_self


async def test_tabs_answer_the_mouse() -> None:
    app, _, _ = make_app(views=("backend", "schedules"))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.click("#--content-tab-schedules")
        await settle(pilot)
        assert app.screen.query_one(TabbedContent).active == "schedules"


async def test_footer_shows_the_keys_of_the_view() -> None:
    app, _, _ = make_app(views=("schedules",))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        keys = {b.binding.action for b in app.screen.active_bindings.values() if b.binding.show}
        # The first schedule is active: pause applies, resume does not.
        assert {"pause", "trigger", "app.help", "app.refresh_now"} <= keys
        assert "resume" not in keys
        text = screen_text(app)
        assert "Pause schedule" in text and "Run now" in text and "Help" in text


async def test_status_bar_shows_source_freshness_and_cost() -> None:
    app, _, _ = make_app(bucket="acme-jobs", prefix="omniq/", views=LIGHT)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        status = app.screen.query_one(StatusBar)
        line = status.content.plain
        assert "gs://acme-jobs/omniq/" in line
        assert "data 0s old" in line
        assert "every 2 s" in line
        assert "150 req/min" in line and "$0.0452/h" in line
        assert not status.has_class("-stale")


async def test_stale_snapshot_turns_the_status_bar_red() -> None:
    app, _, _ = make_app(StaticSource(stale_snapshot()), views=LIGHT)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        status = app.screen.query_one(StatusBar)
        line = status.content.plain
        assert "STALE: data 47s old" in line
        assert "BackendUnavailableError: timed out" in line
        assert status.has_class("-stale")
        stale_spans = [s for s in status.content.spans if "red" in str(s.style)]
        assert stale_spans, "the stale warning must be drawn in red"


async def test_refresh_interval_and_pause_keys_drive_the_source() -> None:
    source = StaticSource([demo_snapshot(), demo_snapshot(age_s=0.1)])
    app, _, _ = make_app(source, views=LIGHT)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+r")
        await settle(pilot)
        assert source.poll_requests == 1
        assert app.snapshot is not None and app.snapshot.age_s == 0.1
        await pilot.press("plus")
        assert source.interval == 5.0
        await pilot.press("minus", "minus")
        assert source.interval == 1.0
        assert "every 1 s" in app.screen.query_one(StatusBar).content.plain
        await pilot.press("P")
        assert source.paused
        assert "polling paused" in app.screen.query_one(StatusBar).content.plain
        await pilot.press("P")
        assert not source.paused


async def test_help_lists_keys_of_every_view() -> None:
    app, _, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await settle(pilot)
        assert isinstance(app.screen, HelpScreen)
        text = app.screen.query_one("#help-text").content.plain
        for needle in ("Tasks view", "Retry failed", "Schedules view", "Pause schedule", "Refresh"):
            assert needle in text
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_command_palette_switches_views() -> None:
    app, _, _ = make_app(views=("backend", "workers"))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await run_command(pilot, "show workers", "Show Workers")
        assert app.screen.query_one(TabbedContent).active == "workers"


@pytest.mark.parametrize(("view_key", "focus_tab"), [("3", 0), ("4", 1)])
async def test_enter_on_a_task_opens_its_detail(view_key: str, focus_tab: int) -> None:
    app, source, _ = make_app(views=("tasks", "results"))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press(view_key)
        await settle(pilot)
        for _ in range(focus_tab):
            await pilot.press("tab")
        if view_key == "3":
            await pilot.press("slash", *task_id(41)[:8], "enter")  # ids differ in 8 chars
            await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, TaskDetailScreen)
        assert source.detail_requests == [task_id(41)]
        text = screen_text(app)
        assert "Traceback (most recent call last):" in text
        assert "ValueError: bad address [b]ann[/b]" in text
        assert "enqueued" in text and "failed" in text
        await pilot.press("escape")
        assert not isinstance(app.screen, TaskDetailScreen)


async def test_enter_on_a_queue_shows_its_tasks() -> None:
    app, _, _ = make_app(views=("queues", "tasks"))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("2", "down", "enter")
        await settle(pilot)
        assert app.screen.query_one(TabbedContent).active == "tasks"
        view = app.screen.query_one("#view-tasks")
        assert view.filter.queue == "reports"
        assert view.page is not None
        assert {row.queue_name for row in view.page.rows} == {"reports"}


# Never frozen, never losing keys (issue 20.6)


class Clock:
    """A wall clock a test moves by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_data_age_is_the_age_of_the_snapshot_drawn_and_ticks() -> None:
    # Delivered now, taken four minutes ago (a poll stuck behind a busy loop): never "0s old".
    old = demo_snapshot(taken_at=TAKEN_AT - timedelta(minutes=4), age_s=0.0)
    clock = Clock(TAKEN_AT.timestamp())
    app, _, _ = make_app(StaticSource(old), views=LIGHT, clock=clock)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        status = app.screen.query_one(StatusBar)
        assert "data 4m 00s old" in status.content.plain
        clock.now += 5
        status.redraw()  # what its one-second timer does
        assert "data 4m 05s old" in status.content.plain


async def test_a_burst_of_snapshots_is_drawn_once_newest_first() -> None:
    source = StaticSource(demo_snapshot())
    app, _, _ = make_app(source, views=LIGHT)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        drawn: list[int] = []
        app.watch(app, "snapshot", lambda s: drawn.append(s.requests.total), init=False)
        for total in range(20):
            source.push(demo_snapshot(requests=RequestFigures(total=total)))
        await settle(pilot)
        assert drawn == [19]


class StalledSource(StaticSource):
    """A source that publishes its first snapshot, then stalls: no later poll and no detail
    read ever answers (a bucket behind a dead network, a monitor stuck in a long poll)."""

    def __init__(self, snapshot: Snapshot) -> None:
        super().__init__(snapshot)
        self._first = snapshot
        self._never = asyncio.Event()

    async def run(self) -> None:
        self.push(self._first)
        await self._never.wait()

    async def task_detail(self, task_id: str) -> TaskDetail:
        await self._never.wait()
        raise AssertionError("a stalled source never answers")


async def test_keys_switch_views_and_esc_works_while_the_source_is_slow() -> None:
    source = StalledSource(demo_snapshot())
    app, _, _ = make_app(source, views=("overview", "queues", "workers", "backend"))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        tabs = app.screen.query_one(TabbedContent)
        await pilot.press("ctrl+r")  # a poll that will not answer within the test
        for key, view in (("7", "workers"), ("2", "queues"), ("8", "backend"), ("1", "overview")):
            await pilot.press(key)
            assert tabs.active == view
        app.open_task(task_id(41))  # its detail never loads
        await pilot.pause()
        assert isinstance(app.screen, TaskDetailScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, TaskDetailScreen)
        await pilot.press("7")
        assert tabs.active == "workers"


async def test_the_footer_follows_the_view_at_once() -> None:
    app, _, _ = make_app(views=("schedules", "workers"))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert "pause" in shown_actions(app)
        await pilot.press("7")
        # No settle: the bindings the footer draws are already the Workers view's.
        assert "pause" not in shown_actions(app)
        await settle(pilot)
        assert "Pause schedule" not in footer_line(app)


def shown_actions(app: ConsoleApp) -> set[str]:
    return {b.binding.action for b in app.screen.active_bindings.values() if b.binding.show}


def footer_line(app: ConsoleApp) -> str:
    return screen_text(app).splitlines()[-1]


async def test_q_in_the_demo_asks_first_and_starts_on_no() -> None:
    app, _, _ = make_app(views=LIGHT, quit_warning="Quitting stops the demo's fleet.")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("q")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        assert "stops the demo's fleet" in screen_text(app)
        assert app.focused is not None and app.focused.id == "confirm-no"
        await pilot.press("enter")
        await settle(pilot)
        assert app.is_running and not isinstance(app.screen, ConfirmScreen)
        await pilot.press("q", "y")
        await settle(pilot)
        assert not app.is_running


async def test_q_quits_at_once_outside_the_demo() -> None:
    app, _, _ = make_app(views=LIGHT)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("q")
        await settle(pilot)
        assert not app.is_running


# Chrome at every size (issue 24.1, 24.4)

SIZES = [(80, 24), (120, 40), (160, 48)]


@pytest.mark.parametrize("size", SIZES)
async def test_status_bar_is_one_line_of_whole_parts(size: tuple[int, int]) -> None:
    app, _, _ = make_app(bucket="acme-jobs-production-eu", prefix="omniq/", views=LIGHT)
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        status = app.screen.query_one(StatusBar)
        line = status.content.plain
        assert "\n" not in line and status.size.height == 1
        assert len(line) <= size[0]
        parts = [p.strip() for p in line.split("│")]
        assert parts[:3] == ["gs://acme-jobs-production-eu/omniq/", "● data 0s old", "every 2 s"]
        # Whatever is shown is whole: no number without its unit.
        for part in parts[3:]:
            assert part in {"changes: listing", "150 req/min", "~$0.0452/h", "57 tasks"}, part
        if size[0] >= 120:
            assert "150 req/min" in parts
        if size[0] >= 160:
            assert "~$0.0452/h" in parts and "57 tasks" in parts


async def test_footer_keeps_quit_and_help_in_every_view_at_80_columns() -> None:
    app, _, _ = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        for key in "12345678":
            await pilot.press(key)
            await settle(pilot)
            footer = footer_line(app)
            assert "? Help" in footer and "q Quit" in footer, (key, footer)


@pytest.mark.parametrize("size", SIZES[1:])
async def test_footer_keeps_quit_and_help_beside_the_most_keys(size: tuple[int, int]) -> None:
    # Tasks offers the most keys: at 120 and 160 columns they pushed Quit off the edge.
    app, _, _ = make_app(views=("tasks",))
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        footer = footer_line(app)
        assert "? Help" in footer and "q Quit" in footer, footer


@pytest.mark.parametrize("size", SIZES)
async def test_help_and_confirmation_dialogs_fit_the_screen(size: tuple[int, int]) -> None:
    app, _, _ = make_app(views=("tasks",))
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await settle(pilot)
        dialog = app.screen.query_one("#help-dialog")
        assert dialog.region.right <= size[0] and dialog.region.x >= 0
        assert "esc to close" in screen_text(app)
        await pilot.press("escape")
        await search_tasks(pilot, task_id(21))
        await pilot.press("d")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        dialog = app.screen.query_one("#confirm-dialog")
        assert dialog.region.right <= size[0] and dialog.region.x >= 0
        text = screen_text(app)
        assert "No (n)" in text and "Delete task (y)" in text


async def test_footer_says_resume_while_polling_is_paused() -> None:
    app, _, _ = make_app(views=LIGHT)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert "P Pause" in footer_line(app)
        await pilot.press("P")
        await settle(pilot)
        assert "P Resume" in footer_line(app) and "P Pause" not in footer_line(app)
        await pilot.press("P")
        await settle(pilot)
        assert "P Pause" in footer_line(app)


async def test_footer_says_resume_tail_while_the_tail_is_paused() -> None:
    app, _, _ = make_app(views=("events",))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert "space Pause tail" in footer_line(app)
        await pilot.press("space")
        await settle(pilot)
        assert "space Resume tail" in footer_line(app) and "Pause tail" not in footer_line(app)
        await pilot.press("space")
        await settle(pilot)
        assert "space Pause tail" in footer_line(app)


async def test_a_toast_is_shown_once_not_again_on_the_next_screen() -> None:
    app, _, _ = make_app(views=LIGHT)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await settle(pilot)
        app.open_task(task_id(41))
        await settle(pilot)
        await pilot.press("r")
        await settle(pilot)
        await until_toast(pilot, "pending again")
        await pilot.press("escape")
        await settle(pilot)
        assert not isinstance(app.screen, TaskDetailScreen)
        assert not toasts(app)


# The Backend panel (issue 24.10)


@pytest.mark.parametrize("size", SIZES)
async def test_backend_panel_shows_the_snapshot_figures(size: tuple[int, int]) -> None:
    app, _, _ = make_app(views=("backend",))
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        lines = [" ".join(line.split()) for line in screen_text(app).splitlines()]
        text = "\n".join(lines)
        for shown in (
            "Rate 150 req/min · ~$0.0452/h",
            "Errors 412 0 · 429 3 · 5xx 1 · 4xx 0 · network 0 · retried 4",
            "Body cache 93.5% hits (290 from memory, 20 read)",
            "list 14 ms 48 ms 3,900",
            "get 9 ms 31 ms 310",
            "tasks/ 57 40.3 KiB",
            "events/ 1,204 3.3 MiB",
        ):
            assert shown in text, shown
        # The status bar's figures are the panel's, from the same fields.
        assert "150 req/min" in app.screen.query_one(StatusBar).content.plain
