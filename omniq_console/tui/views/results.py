"""Results: failures grouped by exception type; open one for its traceback."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import DataTable, Select, Static

from ...models import TaskStatus
from ...monitor.groups import FailureGroup, failure_groups
from ...monitor.snapshot import Snapshot, TaskRow
from .. import cells, fmt
from ..columns import FittedTable, PagedTable
from ..messages import OpenTask
from ..taskfilter import PAGE_SIZE, TaskFilter, TaskOrder, TaskPage, select_tasks
from ..text import literal
from .base import PAGE_BINDINGS, Command, FilterAnswer, FilteredView, keys, offer_queues

LATEST_FAILURE_FIRST = TaskOrder("failed")
"""How the failures of a group are listed until the operator sorts them otherwise."""


@dataclass(frozen=True, slots=True)
class Failures:
    """The groups, and the page of the group looked at."""

    groups: tuple[FailureGroup, ...]
    group: str | None
    page: TaskPage | None


def find_failures(
    rows: tuple[TaskRow, ...],
    queue: str | None,
    group: str | None,
    start: int,
    *,
    now: datetime,
    order: TaskOrder = LATEST_FAILURE_FIRST,
) -> Failures:
    """Group the failed tasks (of ``queue``) as of ``now`` and page through the ``group``
    looked at, sorted by ``order``."""
    groups = failure_groups(rows, queue=queue, now=now)
    if not groups:
        return Failures(groups, None, None)
    if group not in {g.error_type for g in groups}:
        group, start = groups[0].error_type, 0
    flt = TaskFilter(queue=queue, status=TaskStatus.FAILED.value, error_type=group)
    return Failures(groups, group, select_tasks(rows, flt, start, order=order))


class ResultsView(FilteredView[Failures]):
    """Outcome counts, failures by exception type, and the failed tasks of one type."""

    TITLE = "Results"
    ACTIONS = frozenset({"retry", "retry_group", "delete_group"})
    COMMANDS = (
        Command("r", "retry", "Retry", "Retry selected failure", "Put the task back in its queue"),
        Command(
            "R",
            "retry_group",
            "Retry group",
            "Retry all failures of this group",
            "Asks first, with the count",
            key_display="R",
        ),
        Command(
            "D",
            "delete_group",
            "Delete group",
            "Delete all failures of this group",
            "Asks first, with the count",
            key_display="D",
        ),
        Command(
            "y", "copy_id", "Copy id", "Copy the selected task id", "To the clipboard (OSC 52)"
        ),
    )
    BINDINGS: ClassVar[list[BindingType]] = [
        *keys(COMMANDS),
        *PAGE_BINDINGS,
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._failures: Failures | None = None
        self._group: str | None = None
        self._queues: tuple[str, ...] = ()
        self._order = LATEST_FAILURE_FIRST

    def compose(self) -> ComposeResult:
        with Horizontal(classes="filters"):
            yield Select[str]((), prompt="Any queue", id="results-queue")
            yield Static(id="results-outcomes", classes="view-summary")
        with Horizontal(id="results-body"):
            groups = FittedTable(cells.GROUP_TABLE, openable=True, id="results-groups")
            groups.border_title = "Failures by exception (since when)"
            yield groups
            with Vertical(id="results-right"):
                yield Static(id="results-info", classes="view-summary")
                yield PagedTable(
                    cells.FAILURE_TABLE,
                    order=(self._order.column, self._order.descending),
                    openable=True,
                    id="results-failures",
                )

    @property
    def main_widget(self) -> Widget:
        return self.query_one("#results-groups")

    @property
    def failures(self) -> Failures | None:
        return self._failures

    @property
    def queue(self) -> str | None:
        value = self.query_one("#results-queue", Select).value
        return value if isinstance(value, str) else None

    def show_snapshot(self, snapshot: Snapshot) -> None:
        queues = tuple(sorted({q.name for q in snapshot.queues}))
        if queues != self._queues:
            self._queues = queues
            offer_queues(self.query_one("#results-queue", Select), queues)
        results = snapshot.results
        text = Text("results in the bucket: ", style="dim", end="")
        for i, (name, n) in enumerate(results.items()):
            if i:
                text.append(" · ", style="dim")
            text.append(f"{name} ")
            text.append(fmt.count(n), style=cells.STATUS_STYLES.get(name, "") if n else "dim")
        rate = snapshot.failure_rate
        text.append(
            f"   failure rate (last {fmt.duration(snapshot.outcome_window_s)}) ", style="bold"
        )
        text.append(fmt.percent(rate), style=self.console.thresholds.failure_rate(rate).style)
        self.query_one("#results-outcomes", Static).update(text)
        super().show_snapshot(snapshot)

    def start_filter(self, rows: Sequence[TaskRow], generation: int) -> None:
        snapshot = self.console.snapshot
        now = snapshot.taken_at if snapshot is not None else self.console.now()
        self._find(tuple(rows), self.queue, self._group, self._start, self._order, now, generation)

    # Named here: Textual's default description is the repr() of all 100,000 rows.
    @work(thread=True, exclusive=True, group="results-filter", description="group failures")
    def _find(
        self,
        rows: tuple[TaskRow, ...],
        queue: str | None,
        group: str | None,
        start: int,
        order: TaskOrder,
        now: datetime,
        generation: int,
    ) -> None:
        failures = find_failures(rows, queue, group, start, now=now, order=order)
        self.post_message(FilterAnswer(failures, generation))

    def show_found(self, failures: Failures) -> None:
        self._failures = failures
        self._group = failures.group
        groups_table: FittedTable[FailureGroup] = self.query_one("#results-groups", FittedTable)
        groups_table.sync([(g.error_type, g) for g in failures.groups])
        if failures.group is not None and groups_table.selected_key != failures.group:
            groups_table.move_cursor(row=groups_table.get_row_index(failures.group))
        page = failures.page
        table = self._failure_table
        table.sync([(r.id, r) for r in page.rows] if page is not None else [])
        info = Text(end="")
        if page is None:
            info.append("No failed tasks.", style="green")
        else:
            self._start = page.start
            info.append_text(literal(failures.group, "bold red"))
            noun = "task" if page.matched == 1 else "tasks"
            info.append(f": {fmt.count(page.matched)} failed {noun}")
            group = next(g for g in failures.groups if g.error_type == failures.group)
            if group.first_seen is not None and group.now is not None:
                info.append(f" since {fmt.ago(group.first_seen, group.now)}")
            if page.filter.queue:
                info.append(" in queue ")
                info.append_text(literal(page.filter.queue))
            if page.matched > PAGE_SIZE:
                info.append(f" · showing {page.start + 1:,}-{page.end:,} ([ ])", style="dim")
            label = cells.FAILURE_TABLE.header(page.order.column)
            info.append(f" · {page.order.describe(label)}", style="bold")
            info.append(" · enter: traceback", style="dim")
        self.query_one("#results-info", Static).update(info)
        self.refresh_bindings()

    @on(DataTable.RowHighlighted, "#results-groups")
    def _group_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        key = event.row_key.value
        if key is not None and key != self._group:
            self._group = key
            self.turn_to(0)

    @on(DataTable.RowSelected, "#results-groups")
    def _group_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.query_one("#results-failures").focus()

    @on(DataTable.RowSelected, "#results-failures")
    def _failure_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.post_message(OpenTask(event.row_key.value))

    @property
    def shown_page(self) -> TaskPage | None:
        return self._failures.page if self._failures is not None else None

    def action_applies(self, action: str) -> bool:
        failures = self._failures
        if action == "retry":
            return self._failure_table.selected_key is not None
        return failures is not None and failures.page is not None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "copy_id":
            return self._failure_table.selected_key is not None
        return super().check_action(action, parameters)

    @property
    def _failure_table(self) -> PagedTable[TaskRow]:
        return self.query_one("#results-failures", PagedTable)

    def action_copy_id(self) -> None:
        """Copy the selected failed task's id to the clipboard."""
        if (key := self._failure_table.selected_key) is not None:
            self.app.copy_to_clipboard(key)
            self.app.notify(f"Copied task id {key}", timeout=4)

    def action_delete_group(self) -> None:
        failures = self._failures
        if failures is None or failures.page is None:
            return
        page = failures.page
        self.console.actions.delete_tasks(page.ids, f"failed {page.failed_description()}")

    def action_retry(self) -> None:
        table = self._failure_table
        key = table.selected_key
        if key is None:
            self.app.notify("No failed task selected.", severity="warning")
            return
        self.console.actions.task_action("retry", key, table.item(key))

    def action_retry_group(self) -> None:
        failures = self._failures
        if failures is None or failures.page is None:
            self.app.notify("No failed task to retry here.", severity="warning")
            return
        page = failures.page
        self.console.actions.retry_failed(page.failed_ids, page.failed_description())
