"""Tasks: every task, filtered in a thread and shown one bounded page at a time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import DataTable, Input, ProgressBar, Select, Static

from ...models import TaskStatus, allowed_task_actions
from ...monitor.snapshot import Snapshot, TaskRow
from .. import cells
from ..columns import PagedTable
from ..messages import OpenTask
from ..taskfilter import PAGE_SIZE, TaskFilter, TaskOrder, TaskPage, body_text, select_tasks
from .base import PAGE_BINDINGS, Command, FilterAnswer, FilteredView, keys, offer_queues

TYPING_PAUSE_S = 0.2
"""Filter this long after the last keystroke, not on every one."""

SCAN_SLICE = 50
"""Bodies read per request batch of the background search scan (one GET each)."""


class TasksView(FilteredView[TaskPage]):
    """Filter by queue, status, function, id or text; page through the matches."""

    TITLE = "Tasks"
    ACTIONS = frozenset({"retry", "cancel", "delete", "retry_all", "cancel_all", "delete_all"})
    COMMANDS = (
        Command("r", "retry", "Retry", "Retry selected task", "Put the task back in its queue"),
        Command("c", "cancel", "Cancel", "Cancel selected task", "Asks first"),
        Command("d", "delete", "Delete", "Delete selected task", "Asks first"),
        Command(
            "R",
            "retry_all",
            "Retry failed",
            "Retry all failed tasks of the current filter",
            "Asks first, with the count",
            key_display="R",
            tooltip="Retry every failed task of the filter (asks first)",
        ),
        Command(
            "C",
            "cancel_all",
            "Cancel all",
            "Cancel all pending and running tasks of the current filter",
            "Asks first, with the count",
            key_display="C",
            tooltip="Cancel every pending or running task of the filter (asks first)",
        ),
        Command(
            "D",
            "delete_all",
            "Delete all",
            "Delete all tasks of the current filter",
            "Asks first, with the count",
            key_display="D",
            tooltip="Delete every task of the filter (asks first)",
        ),
        Command(
            "y", "copy_id", "Copy id", "Copy the selected task id", "To the clipboard (OSC 52)"
        ),
        Command(
            "s",
            "stop_scan",
            "Stop scan",
            "Stop the body search scan",
            "Keep what was found",
            tooltip="Stop reading bodies for the search",
        ),
    )
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "focus_search", "Search", key_display="/"),
        *PAGE_BINDINGS,
        Binding("x", "clear_filter", "Clear", tooltip="Clear the filter"),
        *keys(COMMANDS),
        Binding("escape", "focus_table", "Back to table", show=False),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._page: TaskPage | None = None
        self._typing: Timer | None = None
        self._queues: tuple[str, ...] = ()
        # First row of the page the operator moved to (None: the top, which follows new rows).
        self._anchor: str | None = None
        # Casefolded body text (args, kwargs, error) by task id: what text search also sees.
        self._texts: dict[str, str] = {}
        self._scanned: set[str] = set()
        self._scan_text = ""

    def compose(self) -> ComposeResult:
        with Horizontal(classes="filters"):
            yield Select[str]((), prompt="Any queue", id="tasks-queue")
            yield Select[str](
                [(s.value, s.value) for s in TaskStatus], prompt="Any status", id="tasks-status"
            )
            yield Input(placeholder="function contains…", id="tasks-func")
            yield Input(placeholder="id or text…", id="tasks-text")
        yield Static(id="tasks-info", classes="view-summary")
        with Horizontal(id="tasks-scan"):
            yield ProgressBar(id="tasks-scan-bar", show_eta=False)
            yield Static(id="tasks-scan-info")
        yield PagedTable(
            cells.TASK_TABLE,
            order=(self._order.column, self._order.descending),
            follow_top=True,
            openable=True,
            id="tasks-table",
        )

    @property
    def main_widget(self) -> Widget:
        return self.table

    @property
    def table(self) -> PagedTable[TaskRow]:
        return self.query_one("#tasks-table", PagedTable)

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
                self._set_queue_options((*self._queues, flt.queue))
            queue_select.value = flt.queue if flt.queue is not None else Select.NULL
            status = self.query_one("#tasks-status", Select)
            status.value = flt.status if flt.status is not None else Select.NULL
            self.query_one("#tasks-func", Input).value = flt.func
            self.query_one("#tasks-text", Input).value = flt.text
        self.turn_to(0)

    def _set_queue_options(self, queues: tuple[str, ...]) -> None:
        self._queues = queues
        offer_queues(self.query_one("#tasks-queue", Select), queues)

    def on_mount(self) -> None:
        self.query_one("#tasks-scan").display = False

    def show_snapshot(self, snapshot: Snapshot) -> None:
        queues = tuple(sorted({q.name for q in snapshot.queues}))
        if queues != self._queues:
            self._set_queue_options(queues)
        # Error messages the snapshot's events carry are searchable at once, without a GET.
        for event in snapshot.events:
            if event.task_id and event.error_message:
                known = self._texts.get(event.task_id, "")
                message = event.error_message.casefold()
                if message not in known:
                    self._texts[event.task_id] = f"{known} {message}"
        super().show_snapshot(snapshot)

    def start_filter(self, rows: Sequence[TaskRow], generation: int) -> None:
        self._filter_in_thread(
            tuple(rows),
            self.filter,
            self._order,
            self._start,
            self._anchor,
            self._texts,
            generation,
        )

    # A description of our own: by default Textual writes repr() of every argument into
    # it, and the repr of 100,000 rows alone blocks the UI for most of a second.
    @work(thread=True, exclusive=True, group="tasks-filter", description="filter tasks")
    def _filter_in_thread(
        self,
        rows: tuple[TaskRow, ...],
        flt: TaskFilter,
        order: TaskOrder,
        start: int,
        anchor: str | None,
        texts: dict[str, str],
        generation: int,
    ) -> None:
        page = select_tasks(rows, flt, start, texts=texts, anchor=anchor, order=order)
        self.post_message(FilterAnswer(page, generation))
        if flt.text and flt.text != self._scan_text:
            # The rows the other filters keep, whose bodies have not been searched yet.
            rest = TaskFilter(queue=flt.queue, status=flt.status, func=flt.func)
            keep = rest.predicate()
            unread = tuple(r.id for r in rows if keep(r) and r.id not in self._scanned)
            self.app.call_from_thread(self._start_scan, flt.text, unread)

    # Search across bodies: a GET each, so read in the background, a slice at a time.

    def _start_scan(self, text: str, unread: tuple[str, ...]) -> None:
        if text != self.filter.text or not unread:
            return
        self._scan_text = text
        self._scan(unread)

    @work(exclusive=True, group="tasks-scan", exit_on_error=False, description="search bodies")
    async def _scan(self, unread: tuple[str, ...]) -> None:
        """Read the bodies (and results of failed tasks) of ``unread`` for the text search,
        in slices; each slice read is searched at once (a refilter)."""
        bar = self.query_one("#tasks-scan-bar", ProgressBar)
        info = self.query_one("#tasks-scan-info", Static)
        self.query_one("#tasks-scan").display = True
        bar.update(total=len(unread), progress=0)
        source = self.console.source
        try:
            for at in range(0, len(unread), SCAN_SLICE):
                chunk = unread[at : at + SCAN_SLICE]
                bodies = await source.task_bodies(chunk)
                results = await source.result_bodies(chunk)
                for task_id in chunk:
                    task, result = bodies.get(task_id), results.get(task_id)
                    parts: list[object] = []
                    if task is not None:
                        parts += [task.args, task.kwargs]
                    if result is not None and (result.error or result.error_type):
                        parts += [result.error or "", result.error_type or ""]
                    if parts:
                        self._texts[task_id] = f"{self._texts.get(task_id, '')} {body_text(*parts)}"
                    self._scanned.add(task_id)
                bar.advance(len(chunk))
                done = min(at + SCAN_SLICE, len(unread))
                info.update(
                    Text(
                        f" searching bodies: {done:,} of {len(unread):,} read · s stops",
                        end="",
                    )
                )
                self.refilter()
        finally:
            self._scan_text = ""
            self.query_one("#tasks-scan").display = False
            self.refresh_bindings()

    @property
    def scanning(self) -> bool:
        """Whether bodies are being read for the search now."""
        return any(w.group == "tasks-scan" and w.is_running for w in self.workers)

    def action_stop_scan(self) -> None:
        """Stop reading bodies; what was read stays searchable."""
        self.workers.cancel_group(self, "tasks-scan")
        self.app.notify("Body search stopped; what was read is searched.", timeout=4)

    def show_found(self, page: TaskPage) -> None:
        self._page = page
        self._start = page.start
        self._anchor = page.rows[0].id if page.start > 0 and page.rows else None
        self.table.sync([(row.id, row) for row in page.rows])
        self.refresh_bindings()
        info = Text(page.describe(), end="")
        if page.matched > PAGE_SIZE:
            pages = (page.matched - 1) // PAGE_SIZE + 1
            info.append(f" · page {page.start // PAGE_SIZE + 1:,}/{pages:,} ([ ])", style="dim")
        label = cells.TASK_TABLE.header(page.order.column)
        info.append(f" · {page.order.describe(label)}", style="bold")
        if page.failed:
            info.append(f" · {page.failed:,} failed", style="red")
        if page.filter.text:
            info.append(" · text also searched in args, kwargs, errors", style="dim")
        self.query_one("#tasks-info", Static).update(info)

    @on(Input.Changed)
    def _input_changed(self, event: Input.Changed) -> None:
        event.stop()
        if self._typing is not None:
            self._typing.stop()
        self._start = 0
        self._anchor = None
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

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        # The keys offered follow the selected task's state.
        self.refresh_bindings()

    def action_applies(self, action: str) -> bool:
        page = self._page
        if action in ("retry", "cancel", "delete"):
            row = self.table.selected_item
            return row is not None and action in allowed_task_actions(row.status)
        # Counts, not ids: this runs on every refresh of the keys offered.
        if action == "retry_all":
            return page is not None and page.failed > 0
        if action == "cancel_all":
            return page is not None and page.cancellable > 0
        if action == "delete_all":
            return page is not None and page.matched > 0
        return True

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop_scan":
            return self.scanning
        if action == "copy_id":
            return self.table.selected_key is not None
        return super().check_action(action, parameters)

    def action_copy_id(self) -> None:
        """Copy the selected task's id to the clipboard."""
        if (key := self.table.selected_key) is not None:
            self.app.copy_to_clipboard(key)
            self.app.notify(f"Copied task id {key}", timeout=4)

    def action_focus_search(self) -> None:
        self.query_one("#tasks-text", Input).focus()

    def action_focus_table(self) -> None:
        self.table.focus()

    def action_clear_filter(self) -> None:
        self.set_filter(TaskFilter())

    @property
    def shown_page(self) -> TaskPage | None:
        return self._page

    def turn_to(self, start: int) -> None:
        self._anchor = None  # the page asked for, not the row that was on top
        super().turn_to(start)

    def _act_on_selected(self, action: str) -> None:
        key = self.table.selected_key
        if key is None:
            self.app.notify("No task selected.", severity="warning")
            return
        self.console.actions.task_action(action, key, self.table.item(key))

    def action_retry(self) -> None:
        self._act_on_selected("retry")

    def action_cancel(self) -> None:
        self._act_on_selected("cancel")

    def action_delete(self) -> None:
        self._act_on_selected("delete")

    def action_retry_all(self) -> None:
        page = self._page
        if page is None:
            return
        self.console.actions.retry_failed(page.failed_ids, page.failed_description())

    def action_cancel_all(self) -> None:
        if (page := self._page) is not None:
            what = page.filter.describe() or "of every queue"
            self.console.actions.cancel_tasks(page.cancellable_ids, f"pending or running {what}")

    def action_delete_all(self) -> None:
        if (page := self._page) is not None:
            self.console.actions.delete_tasks(page.ids, page.filter.describe() or "of every queue")
