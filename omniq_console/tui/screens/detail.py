"""One task: its body, its result (with the traceback) and its event timeline."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

from ...backend.lifecycle import overlay, status_of
from ...models import Task, TaskResult, allowed_task_actions
from ...monitor.snapshot import EventRow, TaskDetail, TaskRow
from .. import cells, fmt
from ..context import ConsoleContext, console_of
from ..fmt import plural
from ..operations import describe_error
from ..text import literal


def _fields(rows: list[tuple[str, Text]]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    for name, value in rows:
        grid.add_row(name, value)
    return grid


REPR_LIMIT = 4000
"""Characters of a task's arguments or result shown; the rest is counted, not drawn."""


def _data(value: object) -> Text:
    # repr, never markup: arguments and results are arbitrary data from the bucket.
    shown = repr(value)
    cut = len(shown) - REPR_LIMIT
    text = literal(shown[:REPR_LIMIT] if cut > 0 else shown, multiline=True)
    if cut > 0:
        text.append(f" … ({cut:,} more characters)", style="dim")
    return text


def derived_task(detail: TaskDetail) -> Task | None:
    """The task as it is now: its definition with status, worker, retries and lease taken
    from its state record (``results/{id}.json``), through the backend's one ``overlay``.

    The definition body keeps the status it was enqueued with (pending): read alone, a
    failed task would show ``Status pending`` and offer Cancel. Overlaying a task the
    monitor already derived from the same record changes nothing.
    """
    if detail.task is None:
        return None
    return overlay(detail.task, detail.result)


def task_panel(task: Task, record: TaskResult | None = None) -> RenderableType:
    """The task's fields; ``task`` is the derived one (:func:`derived_task`), ``record`` its
    state record, which says which attempt runs or ran."""
    attempt = record.attempt if record is not None else 0
    return _fields(
        [
            ("Id", literal(task.id)),
            ("Function", literal(task.func, "bold")),
            ("Queue", literal(task.queue_name)),
            ("Status", cells.status(task.status.value)),
            ("Priority", Text(str(task.priority))),
            ("Args", _data(task.args)),
            ("Kwargs", _data(task.kwargs)),
            ("Created", Text(fmt.timestamp(task.created_at))),
            ("Run at", Text(fmt.timestamp(task.run_at))),
            ("Attempt", Text(str(attempt) if attempt else fmt.DASH)),
            ("Retries", Text(f"{task.retry_count} of {task.max_retries}")),
            ("Worker", literal(task.worker_id, empty=fmt.DASH)),
            ("Lease until", Text(fmt.timestamp(task.lease_expires_at))),
            ("Expires", Text(fmt.timestamp(task.expires_at))),
            ("Generation", Text(str(task.generation) if task.generation is not None else fmt.DASH)),
        ]
    )


def result_panel(result: TaskResult) -> RenderableType:
    rows = [
        ("Outcome", cells.status(result.status.value)),
        ("Completed", Text(fmt.timestamp(result.completed_at))),
        (
            "Took",
            Text(
                f"{result.execution_time:.3f}s" if result.execution_time is not None else fmt.DASH
            ),
        ),
        ("Worker", literal(result.worker_id, empty=fmt.DASH)),
    ]
    if result.error_type or result.error:
        rows.append(("Exception", literal(result.error_type, "bold red", empty=fmt.DASH)))
        rows.append(("Error", literal(result.error, "red", multiline=True, empty=fmt.DASH)))
    else:
        rows.append(("Result", _data(result.result)))
    return _fields(rows)


def timeline(events: tuple[EventRow, ...]) -> RenderableType:
    if not events:
        return Text("No events recorded for this task.", style="dim")
    table = Table(box=None, padding=(0, 1), show_edge=False, header_style="bold")
    # The task column would repeat the task's own id on every line.
    columns = cells.EVENT_TABLE.columns
    keep = [i for i, (key, _) in enumerate(columns) if key != "task"]
    for i in keep:
        table.add_column(columns[i][1])
    for event in events:
        row = cells.event_cells(event)
        row[0] = Text(fmt.timestamp(event.timestamp), style="dim")
        table.add_row(*(row[i] for i in keep))
    return table


class TaskDetailScreen(Screen[None]):
    """Loaded in a worker through ``source.task_detail``; ``ctrl+r`` loads it again."""

    ACTIONS: ClassVar[frozenset[str]] = frozenset({"retry", "cancel", "delete"})
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "close", "Back"),
        Binding("ctrl+r,f5", "reload", "Reload"),
        Binding("r", "retry", "Retry"),
        Binding("c", "cancel", "Cancel"),
        Binding("d", "delete", "Delete"),
        Binding("y", "copy_id", "Copy id"),
        Binding("Y", "copy_traceback", "Copy traceback", key_display="Y"),
    ]

    def __init__(self, task_id: str, row: TaskRow | None = None) -> None:
        super().__init__()
        self.task_id = task_id
        self.row = row
        self.detail: TaskDetail | None = None

    @property
    def console(self) -> ConsoleContext:
        return console_of(self)

    def compose(self) -> ComposeResult:
        heading = Text("Task ", style="bold", end="")
        heading.append_text(literal(self.task_id, "bold"))
        if self.row is not None:
            heading.append("  ")
            heading.append_text(literal(self.row.func))
            heading.append(" in queue ")
            heading.append_text(literal(self.row.queue_name))
        yield Static(heading, id="detail-heading")
        with VerticalScroll(id="detail-body"):
            task = Static(Text("Loading…", style="italic"), id="detail-task")
            task.border_title = "Task"
            yield task
            result = Static(Text("Loading…", style="italic"), id="detail-result")
            result.border_title = "Result"
            yield result
            traceback = Static(id="detail-traceback")
            traceback.border_title = "Traceback"
            traceback.display = False
            yield traceback
            events = Static(Text("Loading…", style="italic"), id="detail-events")
            events.border_title = "Events (oldest first)"
            yield events
        yield Footer()

    def on_mount(self) -> None:
        self.load()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in self.ACTIONS:
            status = self._seen_status()
            return self.console.can_act and (
                status is None or action in allowed_task_actions(status)
            )
        if action == "copy_traceback":
            result = self.detail.result if self.detail is not None else None
            return result is not None and bool(result.traceback)
        return True

    def commands(self) -> Iterable[SystemCommand]:
        """The detail's actions that apply to the task as it is now, for the palette."""
        for action, title in (
            ("retry", "Retry this task"),
            ("cancel", "Cancel this task"),
            ("delete", "Delete this task"),
            ("copy_id", "Copy the task id"),
            ("copy_traceback", "Copy the traceback"),
        ):
            if self.check_action(action, ()):
                yield SystemCommand(title, "Task detail", getattr(self, f"action_{action}"))

    def action_copy_id(self) -> None:
        """Copy the task id to the clipboard."""
        self.app.copy_to_clipboard(self.task_id)
        self.app.notify(f"Copied task id {self.task_id}", timeout=4)

    def action_copy_traceback(self) -> None:
        """Copy the traceback of the task's failure to the clipboard."""
        result = self.detail.result if self.detail is not None else None
        if result is not None and result.traceback:
            self.app.copy_to_clipboard(result.traceback)
            lines = result.traceback.count("\n") + 1
            self.app.notify(f"Copied the traceback ({plural(lines, 'line')})", timeout=4)

    @work(exclusive=True, group="task-detail", exit_on_error=False, description="load task")
    async def load(self) -> None:
        """Read the task's detail from the source and show it."""
        try:
            detail = await self.console.source.task_detail(self.task_id)
        except Exception as error:  # shown on the screen: the operator can reload
            self.query_one("#detail-task", Static).update(
                literal(describe_error(f"Load task {self.task_id}", error), "bold red")
            )
            return
        self.show_detail(detail)

    def show_detail(self, detail: TaskDetail) -> None:
        self.detail = detail
        head = Text(end="")
        task = derived_task(detail)
        if task is None:
            head.append("The task object is not in the bucket ", style="bold yellow")
            head.append("(deleted, or not written yet).", style="yellow")
            task_view: RenderableType = head
        else:
            task_view = task_panel(task, detail.result)
        if detail.unreadable:
            problems = Text(end="")
            for row in detail.unreadable:
                problems.append("\nunreadable ", style="bold yellow")
                problems.append_text(literal(row.key, "yellow"))
                problems.append(": ")
                problems.append_text(literal(row.reason))
            task_view = Group(task_view, problems)
        self.query_one("#detail-task", Static).update(task_view)
        result = detail.result
        self.query_one("#detail-result", Static).update(
            # A pending state record is the claim, not an outcome: the task panel shows it.
            result_panel(result)
            if result is not None and result.is_final
            else Text("No outcome yet.", style="dim")
        )
        traceback = self.query_one("#detail-traceback", Static)
        if result is not None and result.traceback:
            traceback.update(literal(result.traceback, "red", multiline=True))
            traceback.display = True
        else:
            traceback.display = False
        self.query_one("#detail-events", Static).update(timeline(detail.events))
        self.refresh_bindings()

    def _seen_status(self) -> str | None:
        # What was read for this screen is fresher than the listing row it was opened from;
        # the status is the derived one (state record over definition), as shown.
        if self.detail is not None:
            if (task := derived_task(self.detail)) is not None:
                return task.status.value
            if self.detail.result is not None:
                return status_of(self.detail.result).value
        return self.row.status if self.row is not None else None

    def action_close(self) -> None:
        self.dismiss()

    def action_reload(self) -> None:
        self.load()

    def action_retry(self) -> None:
        self._act("retry")

    def action_cancel(self) -> None:
        self._act("cancel")

    def action_delete(self) -> None:
        self._act("delete")

    def _act(self, action: str) -> None:
        """``action`` on this task as the screen shows it; the screen reloads after it."""
        self.console.actions.task_action(
            action, self.task_id, self.row, status=self._seen_status(), after=self.load
        )
