"""The console's screens and keys: every view by key, help, palette, status bar, detail."""

from __future__ import annotations

import pytest
from textual.widgets import TabbedContent
from tui_fixtures import (
    LIGHT,
    demo_snapshot,
    make_app,
    run_command,
    screen_text,
    settle,
    stale_snapshot,
    task_id,
)

from omniq_console.tui import StaticSource
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
    app, _, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.click("#--content-tab-schedules")
        await settle(pilot)
        assert app.screen.query_one(TabbedContent).active == "schedules"


async def test_footer_shows_the_keys_of_the_view() -> None:
    app, _, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("6")
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
    app, _, _ = make_app()
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
