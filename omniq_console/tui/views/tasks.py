"""Tasks: every task, filtered in a thread and shown one bounded page at a time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.message import Message
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import DataTable, Input, Select, Static

from ...models import TaskStatus
from ...monitor.snapshot import Snapshot, TaskRow
from .. import cells
from ..messages import OpenTask
from ..taskfilter import PAGE_SIZE, TaskFilter, TaskPage, select_tasks
from ..widgets.keyed_table import KeyedTable
from .base import PAGE_KEYS, FilteredView

TYPING_PAUSE_S = 0.2
"""Filter this long after the last keystroke, not on every one."""


class TasksSelected(Message):
    """A filter worker finished: the page to show."""

    def __init__(self, page: TaskPage, generation: int) -> None:
        super().__init__()
        self.page = page
        self.generation = generation


class TasksView(FilteredView):
    """Filter by queue, status, function, id or text; page through the matches."""

    TITLE = "Tasks"
    ACTIONS = frozenset({"retry", "cancel", "delete", "retry_all"})
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "focus_search", "Search", key_display="/"),
        Binding(
            "left_square_bracket", "page(-1)", "Previous page", key_display="[", group=PAGE_KEYS
        ),
        Binding("right_square_bracket", "page(1)", "Next page", key_display="]", group=PAGE_KEYS),
        Binding("x", "clear_filter", "Clear", tooltip="Clear the filter"),
        Binding("r", "retry", "Retry"),
        Binding("c", "cancel", "Cancel"),
        Binding("d", "delete", "Delete"),
        Binding(
            "R",
            "retry_all",
            "Retry failed",
            tooltip="Retry every failed task of the filter (asks first)",
            key_display="R",
        ),
        Binding("escape", "focus_table", "Back to table", show=False),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._page: TaskPage | None = None
        self._start = 0
        self._typing: Timer | None = None
        self._queues: tuple[str, ...] = ()

    def compose(self) -> ComposeResult:
        with Horizontal(classes="filters"):
            yield Select[str]((), prompt="Any queue", id="tasks-queue")
            yield Select[str](
                [(s.value, s.value) for s in TaskStatus], prompt="Any status", id="tasks-status"
            )
            yield Input(placeholder="function contains…", id="tasks-func")
            yield Input(placeholder="id or text…", id="tasks-text")
        yield Static(id="tasks-info", classes="view-summary")
        yield KeyedTable(cells.TASK_COLUMNS, cells.task_cells, openable=True, id="tasks-table")

    @property
    def main_widget(self) -> Widget:
        return self.table

    @property
    def table(self) -> KeyedTable[TaskRow]:
        return self.query_one("#tasks-table", KeyedTable)

    @property
    def page(self) -> TaskPage | None:
        """The page shown now (None before the first filter finished)."""
        return self._page

    @property
    def filter(self) -> TaskFilter:
        """The filter the widgets describe."""
        queue = self.query_one("#tasks-queue", Select).value
        status = self.query_one("#tasks-status", Select).value
        return TaskFilter(
            queue=queue if isinstance(queue, str) else None,
            status=status if isinstance(status, str) else None,
            func=self.query_one("#tasks-func", Input).value.strip(),
            text=self.query_one("#tasks-text", Input).value.strip(),
        )

    def set_filter(self, flt: TaskFilter) -> None:
        """Show the tasks matching ``flt`` (e.g. one queue's, from the queues view)."""
        queue_select = self.query_one("#tasks-queue", Select)
        with self.prevent(Select.Changed, Input.Changed):
            if flt.queue is not None and flt.queue not in self._queues:
                self._set_queue_options(self._queues + (flt.queue,))
            queue_select.value = flt.queue if flt.queue is not None else Select.NULL
            status = self.query_one("#tasks-status", Select)
            status.value = flt.status if flt.status is not None else Select.NULL
            self.query_one("#tasks-func", Input).value = flt.func
            self.query_one("#tasks-text", Input).value = flt.text
        self._start = 0
        self.refilter()

    def _set_queue_options(self, queues: tuple[str, ...]) -> None:
        select = self.query_one("#tasks-queue", Select)
        current = select.value
        self._queues = queues
        with self.prevent(Select.Changed):
            select.set_options([(Text(q, end=""), q) for q in queues])
            if isinstance(current, str) and current in queues:
                select.value = current

    def show_snapshot(self, snapshot: Snapshot) -> None:
        queues = tuple(sorted({q.name for q in snapshot.queues}))
        if queues != self._queues:
            self._set_queue_options(queues)
        super().show_snapshot(snapshot)

    def start_filter(self, rows: Sequence[TaskRow], generation: int) -> None:
        self._filter_in_thread(tuple(rows), self.filter, self._start, generation)

    # A description of our own: by default Textual writes repr() of every argument into
    # it, and the repr of 100,000 rows alone blocks the UI for most of a second.
    @work(thread=True, exclusive=True, group="tasks-filter", description="filter tasks")
    def _filter_in_thread(
        self, rows: tuple[TaskRow, ...], flt: TaskFilter, start: int, generation: int
    ) -> None:
        self.post_message(TasksSelected(select_tasks(rows, flt, start), generation))

    def on_tasks_selected(self, message: TasksSelected) -> None:
        message.stop()
        if not self.is_current(message.generation):
            return
        page = message.page
        self._page = page
        self._start = page.start
        self.table.sync([(row.id, row) for row in page.rows])
        info = Text(page.describe(), end="")
        if page.matched > PAGE_SIZE:
            pages = (page.matched - 1) // PAGE_SIZE + 1
            info.append(f" · page {page.start // PAGE_SIZE + 1:,}/{pages:,} ([ ])", style="dim")
        info.append(" · newest first", style="dim")
        if page.failed_ids:
            info.append(f" · {len(page.failed_ids):,} failed", style="red")
        self.query_one("#tasks-info", Static).update(info)

    @on(Select.Changed)
    def _select_changed(self, event: Select.Changed) -> None:
        event.stop()
        self._start = 0
        self.refilter()

    @on(Input.Changed)
    def _input_changed(self, event: Input.Changed) -> None:
        event.stop()
        if self._typing is not None:
            self._typing.stop()
        self._start = 0
        self._typing = self.set_timer(TYPING_PAUSE_S, self.refilter)

    @on(Input.Submitted)
    def _input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self._typing is not None:
            self._typing.stop()
        self.refilter()
        self.table.focus()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.post_message(OpenTask(event.row_key.value))

    def action_focus_search(self) -> None:
        self.query_one("#tasks-text", Input).focus()

    def action_focus_table(self) -> None:
        self.table.focus()

    def action_clear_filter(self) -> None:
        self.set_filter(TaskFilter())

    def action_page(self, step: int) -> None:
        page = self._page
        if page is None:
            return
        start = page.start + step * PAGE_SIZE
        if start < 0 or start >= page.matched:
            self.app.bell()
            return
        self._start = start
        self.refilter()

    def _selected(self) -> tuple[str, TaskRow | None] | None:
        key = self.table.selected_key
        if key is None:
            self.app.notify("No task selected.", severity="warning")
            return None
        return key, self.table.item(key)

    def action_retry(self) -> None:
        if (selected := self._selected()) is not None:
            self.console.actions.retry_task(*selected)

    def action_cancel(self) -> None:
        if (selected := self._selected()) is not None:
            self.console.actions.cancel_task(*selected)

    def action_delete(self) -> None:
        if (selected := self._selected()) is not None:
            self.console.actions.delete_task(*selected)

    def action_retry_all(self) -> None:
        page = self._page
        if page is None:
            return
        self.console.actions.retry_failed(page.failed_ids, page.failed_description())
