"""Events: the live tail, which can be paused and filtered by type, task and queue."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import DataTable, Input, Select, Static

from ...models import EventType
from ...monitor.snapshot import EventRow, Snapshot
from .. import cells
from ..columns import FittedTable
from ..eventlog import EventFilter, EventLog
from ..fmt import plural
from ..messages import OpenTask
from .base import View


class EventsView(View):
    """Newest first. Paused, the tail keeps collecting and says how many events wait."""

    TITLE = "Events"
    BINDINGS: ClassVar[list[BindingType]] = [
        # One key, two bindings: the one that applies shows, so the footer says what it does.
        Binding("space", "pause_tail", "Pause tail"),
        Binding("space", "resume_tail", "Resume tail"),
        Binding("slash", "focus_filter", "Filter", key_display="/"),
        Binding("x", "clear_filter", "Clear filter"),
        Binding("escape", "focus_table", "Back to table", show=False),
    ]

    def __init__(self, *, id: str | None = None, capacity: int = 1000) -> None:
        super().__init__(id=id)
        self.event_log = EventLog(capacity)
        self.paused = False
        self._waiting = 0

    def compose(self) -> ComposeResult:
        with Horizontal(classes="filters"):
            yield Select[str](
                [(t.value, t.value) for t in EventType], prompt="Any event", id="events-type"
            )
            yield Input(placeholder="task id contains…", id="events-task")
            yield Input(placeholder="queue contains…", id="events-queue")
        yield Static(id="events-info", classes="view-summary")
        yield FittedTable(cells.EVENT_TABLE, follow_top=True, openable=True, id="events-table")

    @property
    def main_widget(self) -> Widget:
        return self.table

    @property
    def table(self) -> FittedTable[EventRow]:
        return self.query_one("#events-table", FittedTable)

    @property
    def filter(self) -> EventFilter:
        kind = self.query_one("#events-type", Select).value
        return EventFilter(
            event_type=kind if isinstance(kind, str) else None,
            task=self.query_one("#events-task", Input).value.strip(),
            queue=self.query_one("#events-queue", Input).value.strip(),
        )

    def show_snapshot(self, snapshot: Snapshot) -> None:
        new = self.event_log.merge(snapshot.events)
        if self.paused:
            self._waiting += new
            self._show_info()
            return
        self._redraw()

    def _redraw(self) -> None:
        rows = self.event_log.newest_first(self.filter)
        self.table.sync([(e.id, e) for e in rows])
        self._show_info(len(rows))

    def _show_info(self, shown: int | None = None) -> None:
        info = Text(end="")
        if self.paused:
            info.append(" TAIL PAUSED ", style="bold black on yellow")
            info.append(f" {plural(self._waiting, 'new event')} waiting · space resumes")
        else:
            info.append("● live", style="green")
            if shown is not None:
                info.append(f" · {shown:,} events shown of {len(self.event_log):,} kept")
        self.query_one("#events-info", Static).update(info)

    def commands(self) -> Iterable[SystemCommand]:
        yield SystemCommand(
            "Resume event tail" if self.paused else "Pause event tail",
            "Stop or restart the live tail",
            self.action_toggle_tail,
        )

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("pause_tail", "resume_tail"):
            return self.paused == (action == "resume_tail")
        return super().check_action(action, parameters)

    def action_pause_tail(self) -> None:
        self.action_toggle_tail()

    def action_resume_tail(self) -> None:
        self.action_toggle_tail()

    def action_toggle_tail(self) -> None:
        self.paused = not self.paused
        self._waiting = 0
        self.refresh_bindings()
        if self.paused:
            self._show_info()
        else:
            self._redraw()

    @on(Select.Changed)
    @on(Input.Changed)
    def _filter_changed(self, event: Select.Changed | Input.Changed) -> None:
        event.stop()
        if not self.paused:
            self._redraw()

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.table.focus()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        key = event.row_key.value
        item = self.table.item(key) if key is not None else None
        if item is not None and item.task_id:
            self.post_message(OpenTask(item.task_id))

    def action_focus_filter(self) -> None:
        self.query_one("#events-task", Input).focus()

    def action_focus_table(self) -> None:
        self.table.focus()

    def action_clear_filter(self) -> None:
        with self.prevent(Select.Changed, Input.Changed):
            self.query_one("#events-type", Select).value = Select.NULL
            self.query_one("#events-task", Input).value = ""
            self.query_one("#events-queue", Input).value = ""
        if not self.paused:
            self._redraw()
