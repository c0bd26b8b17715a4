"""The first frame waits for the shown view only: the hidden views are mounted after it, and
any view asked for before then (a key, a click, the help) is mounted on demand."""

from __future__ import annotations

import pytest
from textual.widgets import TabbedContent
from tui_fixtures import make_app, settle

from omniq_console.tui.screens.main import MainScreen
from omniq_console.tui.views.base import View
from omniq_console.tui.views.tasks import TasksView

SIZE = (140, 42)


async def test_the_hidden_views_are_mounted_after_the_first_frame(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before: list[list[str]] = []
    real = MainScreen._mount_hidden

    def recording(self: MainScreen) -> None:
        before.append([v.id or "" for v in self.query(View)])
        real(self)

    monkeypatch.setattr(MainScreen, "_mount_hidden", recording)
    app, _, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, MainScreen)
        assert before == [["view-overview"]], "compose mounted the shown view alone"
        every = [f"view-{name}" for name, _ in screen._view_classes]
        assert [v.id for v in screen.query(View)] == every


async def test_a_view_not_mounted_yet_is_mounted_and_shown_by_its_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(MainScreen, "_mount_hidden", lambda self: None)
    app, _, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        screen = app.screen
        assert [v.id for v in screen.query(View)] == ["view-overview"]
        await pilot.press("3")
        await settle(pilot)
        assert screen.query_one(TabbedContent).active == "tasks"
        tasks = screen.query_one(TasksView)
        assert app.focused is not None and tasks in app.focused.ancestors_with_self
        assert tasks.query("DataTable"), "the tasks view drew its table"
