"""Schedules: status, next-run countdown, last run, run count; pause, resume, run now."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.widget import Widget
from textual.widgets import Static

from ...monitor.snapshot import ScheduleRow, Snapshot
from .. import cells
from ..columns import FittedTable
from ..text import literal
from .base import Command, View, keys


class SchedulesView(View):
    """Every schedule; countdowns tick between polls."""

    TITLE = "Schedules"
    ACTIONS = frozenset({"pause", "resume", "trigger"})
    COMMANDS = (
        Command("p", "pause", "Pause schedule", "Pause selected schedule", "Stop it firing"),
        Command("u", "resume", "Resume schedule", "Resume selected schedule", "Fire again"),
        Command("t", "trigger", "Run now", "Run selected schedule now", "Enqueue one run now"),
    )
    BINDINGS: ClassVar[list[BindingType]] = keys(COMMANDS)

    def compose(self) -> ComposeResult:
        yield Static(id="schedules-info", classes="view-summary")
        yield FittedTable(cells.SCHEDULE_TABLE, id="schedules-table")

    @property
    def main_widget(self) -> Widget:
        return self.table

    @property
    def table(self) -> FittedTable[tuple[ScheduleRow, datetime]]:
        return self.query_one("#schedules-table", FittedTable)

    def on_mount(self) -> None:
        # Countdowns move between polls; a hidden view does not redraw them.
        self.set_interval(1.0, self.tick)

    def show_snapshot(self, snapshot: Snapshot) -> None:
        self._draw(snapshot)

    def tick(self) -> None:
        """Redraw the countdowns from the clock (once a second, while shown)."""
        if self.shown and (snapshot := self.console.snapshot) is not None:
            self._draw(snapshot)

    def _draw(self, snapshot: Snapshot) -> None:
        now = self.console.now()
        rows = sorted(
            snapshot.schedules,
            key=lambda s: (s.status != "active", s.next_run is None, s.next_run or now, s.id),
        )
        self.table.sync([(s.id, (s, now)) for s in rows])
        by_status: dict[str, int] = {}
        for s in snapshot.schedules:
            by_status[s.status] = by_status.get(s.status, 0) + 1
        info = Text(f"{len(snapshot.schedules)} schedules", end="")
        for name, n in sorted(by_status.items()):
            info.append(" · ", style="dim")
            info.append(f"{name} {n}", style=cells.STATUS_STYLES.get(name, ""))
        overdue = sum(1 for s in snapshot.schedules if s.overdue)
        if overdue:
            info.append(f" · {overdue} overdue", style="bold red")
        for row in [s for s in snapshot.schedules if s.status == "paused"][:2]:
            info.append(" · ", style="dim")
            info.append_text(literal(row.id, "bold"))
            info.append(" paused by ")
            info.append_text(cells.paused_by(row.paused_by, row.paused_at, now))
        self.query_one("#schedules-info", Static).update(info)

    def action_applies(self, action: str) -> bool:
        item = self.table.selected_item
        if item is None:
            return False
        status = item[0].status
        if action == "pause":
            return status == "active"
        if action == "resume":
            return status == "paused"
        return status in ("active", "paused")

    def on_data_table_row_highlighted(self) -> None:
        self.refresh_bindings()

    def _selected(self) -> ScheduleRow | None:
        item = self.table.selected_item
        if item is None:
            self.app.notify("No schedule selected.", severity="warning")
            return None
        return item[0]

    def action_pause(self) -> None:
        if (row := self._selected()) is not None:
            self.console.actions.pause_schedule(row.id, row.generation)

    def action_resume(self) -> None:
        if (row := self._selected()) is not None:
            self.console.actions.resume_schedule(row.id, row.generation)

    def action_trigger(self) -> None:
        if (row := self._selected()) is not None:
            self.console.actions.trigger_schedule(row.id, paused=row.status == "paused")
