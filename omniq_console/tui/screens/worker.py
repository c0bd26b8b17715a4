"""One worker: the tasks it runs now and the ones it just finished (Sidekiq's Busy, Flower).

Opened with ``enter`` on a worker of the Workers view. It follows the app's snapshots: the
tasks are picked out of the snapshot's rows in a thread (100,000 rows are no work for the UI
loop), and the arguments of the running tasks are read from their bodies (a GET each, at
most ``ARGS_READ`` of them, once per task).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from ...models import Task, TaskStatus
from ...monitor.groups import failed_at, failed_ts
from ...monitor.snapshot import Snapshot, TaskRow, WorkerRow
from .. import cells, fmt
from ..columns import FittedTable, TableSpec, Width
from ..context import ConsoleContext, console_of
from ..messages import OpenTask
from ..text import literal

FINISHED_ROWS = 30
"""Finished tasks listed, the latest first."""

ARGS_READ = 50
"""Running tasks whose bodies are read for their arguments, at most."""

ARGS_SHOWN = 60
"""Characters of the arguments shown in the table (the task detail shows them all)."""

_RUNNING = TaskStatus.RUNNING.value
_FINISHED = frozenset(s.value for s in TaskStatus if s.is_final)


@dataclass(frozen=True, slots=True)
class WorkerTasks:
    """What one worker runs (longest running first) and what it finished (latest first)."""

    running: tuple[TaskRow, ...]
    finished: tuple[TaskRow, ...]


def worker_tasks(
    rows: Sequence[TaskRow], worker: WorkerRow, limit: int = FINISHED_ROWS
) -> WorkerTasks:
    """Pick ``worker``'s tasks out of ``rows``: those it runs (by its heartbeat, and rows
    leased to it) and the ``limit`` it finished last."""
    running_ids = set(worker.running)
    running: dict[str, TaskRow] = {}
    finished: list[TaskRow] = []
    for row in rows:
        if row.id in running_ids or (row.status == _RUNNING and row.worker_id == worker.id):
            running[row.id] = row
        elif row.worker_id == worker.id and row.status in _FINISHED:
            finished.append(row)
    # A task its heartbeat names that the listing has not shown yet: what the heartbeat says.
    for i, task_id in enumerate(worker.running):
        if task_id not in running:
            func = worker.running_funcs[i] if i < len(worker.running_funcs) else ""
            running[task_id] = TaskRow(
                task_id, "", func, _RUNNING, 0, None, None, 0, worker.id, None
            )
    started = sorted(running.values(), key=lambda r: (r.started_ts is None, r.started_ts, r.id))
    finished.sort(key=lambda r: (failed_ts(r) is not None, failed_ts(r), r.id), reverse=True)
    return WorkerTasks(tuple(started), tuple(finished[:limit]))


def arguments(task: Task | None) -> Text:
    """``('ann@example.com',) {'template': 'digest'}``, cut to ``ARGS_SHOWN`` characters."""
    if task is None:
        return Text(fmt.DASH, style="dim", end="")
    shown = repr(task.args) + (f" {task.kwargs!r}" if task.kwargs else "")
    if len(shown) > ARGS_SHOWN:
        shown = shown[: ARGS_SHOWN - 1] + "…"
    return literal(shown)


def running_cells(item: tuple[TaskRow, Task | None, bool, datetime]) -> list[Text]:
    """task, function, arguments, queue, started, running for."""
    row, body, read, now = item
    return [
        cells.short_id(row.id),
        cells.func_name(row.func, "bold"),
        arguments(body) if read else Text("reading…", style="dim italic", end=""),
        literal(row.queue_name),
        Text(fmt.clock_time(row.started_at), end=""),
        Text(
            fmt.duration((now - row.started_at).total_seconds()) if row.started_at else fmt.DASH,
            justify="right",
            end="",
        ),
    ]


RUNNING_TABLE = TableSpec(
    running_cells,
    columns=(
        ("id", "Task"),
        ("func", "Function"),
        ("args", "Arguments"),
        ("queue", "Queue"),
        ("started", "Started (UTC)"),
        ("for", "Running for"),
    ),
    widths={
        "func": Width(cut=10),
        "args": Width(cut=12, fill=True),
        "queue": Width(cut=6, drop=1),
    },
)


def finished_cells(item: tuple[TaskRow, datetime]) -> list[Text]:
    """task, outcome, function, finished, took, exception."""
    row, now = item
    done = failed_at(row)
    took = (
        fmt.duration((row.completed_at - row.started_at).total_seconds())
        if row.completed_at and row.started_at
        else fmt.DASH
    )
    return [
        cells.short_id(row.id),
        cells.status(row.status),
        cells.func_name(row.func),
        Text(fmt.ago(done, now), justify="right", end=""),
        Text(took, justify="right", end=""),
        literal(row.error_type, "red", empty=""),
    ]


FINISHED_TABLE = TableSpec(
    finished_cells,
    columns=(
        ("id", "Task"),
        ("status", "Outcome"),
        ("func", "Function"),
        ("done", "Finished"),
        ("took", "Took"),
        ("error", "Exception"),
    ),
    widths={"func": Width(cut=10), "error": Width(cut=9, fill=True)},
)


def worker_heading(worker: WorkerRow) -> Text:
    """``worker-a  busy · 2/4 50% · heartbeat 3s ago · node-1 pid 4121 · queues emails``."""
    text = Text("Worker ", style="bold", end="")
    text.append_text(literal(worker.id, "bold"))
    text.append("  ")
    text.append_text(cells.worker_state(worker))
    text.append(" · ")
    text.append_text(cells.worker_load(worker))
    text.append(" · heartbeat ")
    text.append_text(cells.heartbeat(worker))
    text.append(" · ")
    text.append_text(literal(worker.host or fmt.DASH))
    if worker.pid:
        text.append(f" pid {worker.pid}")
    text.append(f" · done {fmt.count(worker.processed)}, failed {fmt.count(worker.failed)}")
    if worker.queues:
        text.append(" · queues ")
        text.append_text(literal(", ".join(worker.queues)))
    return text


class WorkerTasksFound(Message):
    """The tasks of the worker, picked from one snapshot."""

    def __init__(self, tasks: WorkerTasks, now: datetime) -> None:
        super().__init__()
        self.tasks = tasks
        self.now = now


class WorkerScreen(Screen[None]):
    """What one worker is busy with; ``enter`` opens a task, ``escape`` goes back."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q", "close", "Back")]

    def __init__(self, worker_id: str) -> None:
        super().__init__()
        self.worker_id = worker_id
        self.tasks: WorkerTasks | None = None
        self._bodies: dict[str, Task | None] = {}

    @property
    def console(self) -> ConsoleContext:
        return console_of(self)

    def compose(self) -> ComposeResult:
        yield Static(id="worker-heading")
        with Vertical(id="worker-body"):
            running = FittedTable(RUNNING_TABLE, openable=True, id="worker-running")
            running.border_title = "Running now"
            yield running
            finished = FittedTable(FINISHED_TABLE, openable=True, id="worker-finished")
            finished.border_title = f"Just finished (latest {FINISHED_ROWS})"
            yield finished
        yield Footer()

    def on_mount(self) -> None:
        self.watch(self.app, "snapshot", self._snapshot_arrived, init=False)
        self._snapshot_arrived(self.console.snapshot)

    def worker(self, snapshot: Snapshot) -> WorkerRow | None:
        return next((w for w in snapshot.workers if w.id == self.worker_id), None)

    def _snapshot_arrived(self, snapshot: Snapshot | None) -> None:
        if snapshot is None:
            return
        worker = self.worker(snapshot)
        heading = self.query_one("#worker-heading", Static)
        if worker is None:
            gone = Text("Worker ", style="bold", end="")
            gone.append_text(literal(self.worker_id, "bold"))
            gone.append(" is no longer in the bucket (its heartbeat was removed).", style="yellow")
            heading.update(gone)
            worker = WorkerRow(
                id=self.worker_id, state="gone", alive=False, last_seen=None, age_s=None
            )
        else:
            heading.update(worker_heading(worker))
        self._pick(snapshot.task_rows, worker, self.console.now())

    # Named here: Textual's default description is the repr() of all 100,000 rows.
    @work(thread=True, exclusive=True, group="worker-tasks", description="worker tasks")
    def _pick(self, rows: tuple[TaskRow, ...], worker: WorkerRow, now: datetime) -> None:
        self.post_message(WorkerTasksFound(worker_tasks(rows, worker), now))

    def on_worker_tasks_found(self, message: WorkerTasksFound) -> None:
        message.stop()
        self.tasks = message.tasks
        self._show(message.now)
        unread = [r.id for r in message.tasks.running if r.id not in self._bodies][:ARGS_READ]
        if unread:
            self._read_args(unread, message.now)

    def _show(self, now: datetime) -> None:
        tasks = self.tasks
        if tasks is None:
            return
        running: FittedTable[tuple[TaskRow, Task | None, bool, datetime]] = self.query_one(
            "#worker-running", FittedTable
        )
        running.sync(
            [(r.id, (r, self._bodies.get(r.id), r.id in self._bodies, now)) for r in tasks.running]
        )
        running.border_title = f"Running now ({len(tasks.running)})"
        finished: FittedTable[tuple[TaskRow, datetime]] = self.query_one(
            "#worker-finished", FittedTable
        )
        finished.sync([(r.id, (r, now)) for r in tasks.finished])

    @work(group="worker-args", exit_on_error=False, description="read arguments")
    async def _read_args(self, task_ids: list[str], now: datetime) -> None:
        try:
            bodies = await self.console.source.task_bodies(task_ids)
        except Exception:  # said once; the next snapshot tries again
            self.app.notify("Could not read the running tasks' arguments.", severity="warning")
            return
        self._bodies.update(bodies)
        self._show(now)

    @on(DataTable.RowSelected)
    def _open_task(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.post_message(OpenTask(event.row_key.value))

    def action_close(self) -> None:
        self.dismiss()
