"""Queues: depth, age and trend of every queue; pause, resume, purge; throughput and latency."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import DataTable, Static

from ...models import TaskStatus
from ...monitor.snapshot import QueueStats, QueueWindow, Snapshot
from .. import cells, fmt
from ..columns import FittedTable, TableSpec, Width
from ..messages import ShowQueueTasks
from ..text import literal
from .base import Command, View, keys

WINDOWS = ("15m", "1h", "6h")
"""Throughput windows ``w`` steps through (the monitor computes each)."""


def _seconds(value: float | None) -> Text:
    if value is None:
        return Text(fmt.DASH, style="dim", justify="right", end="")
    shown = f"{value:.2f}s" if value < 10 else fmt.duration(value)
    return Text(shown, justify="right", end="")


def window_of(queue: QueueStats, window: str) -> QueueWindow | None:
    """The queue's figures over ``window`` (None when the monitor has none)."""
    return next((w for w in queue.throughput if w.window == window), None)


def throughput_cells(item: tuple[QueueStats, QueueWindow]) -> list[Text]:
    """queue, completed, failed, per minute, wait p50/p95, run p50/p95, covered."""
    queue, w = item
    return [
        literal(queue.name, "bold"),
        cells.number(w.completed),
        Text(fmt.count(w.failed), style="bold red" if w.failed else "", justify="right", end=""),
        Text(f"{w.per_minute:,.1f}", justify="right", end=""),
        _seconds(w.wait_p50_s),
        _seconds(w.wait_p95_s),
        _seconds(w.run_p50_s),
        _seconds(w.run_p95_s),
        Text(
            fmt.duration(w.covered_s),
            style="yellow" if w.covered_s < w.window_s * 0.99 else "",
            justify="right",
            end="",
        ),
    ]


THROUGHPUT_TABLE = TableSpec(
    throughput_cells,
    columns=(
        ("name", "Queue"),
        ("completed", "Completed"),
        ("failed", "Failed"),
        ("per_minute", "Done/min"),
        ("wait50", "Wait p50"),
        ("wait95", "Wait p95"),
        ("run50", "Run p50"),
        ("run95", "Run p95"),
        ("covered", "Data for"),
    ),
    widths={"name": Width(cut=6)},
)


class QueuesView(View):
    """Every queue with its depth trend and throughput; enter shows the queue's tasks."""

    TITLE = "Queues"
    ACTIONS = frozenset({"pause_queue", "resume_queue", "purge"})
    COMMANDS = (
        Command(
            "p",
            "pause_queue",
            "Pause queue",
            "Pause selected queue",
            "Workers stop claiming from it",
        ),
        Command(
            "u",
            "resume_queue",
            "Resume queue",
            "Resume selected queue",
            "Workers claim from it again",
        ),
        Command(
            "X",
            "purge",
            "Purge",
            "Purge selected queue",
            "Delete its pending tasks (asks first)",
            key_display="X",
            tooltip="Delete its pending tasks",
        ),
        Command(
            "w",
            "next_window",
            "Window",
            "Next throughput window",
            "15 min, 1 h, 6 h",
            tooltip="Throughput over 15 min, 1 h or 6 h",
        ),
    )
    BINDINGS: ClassVar[list[BindingType]] = keys(COMMANDS)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.window = WINDOWS[0]

    def compose(self) -> ComposeResult:
        yield Static(id="queues-summary", classes="view-summary")
        thresholds = self.console.thresholds
        yield FittedTable(cells.queue_detail_table(thresholds), openable=True, id="queues-table")
        yield Static(id="queues-window", classes="view-summary")
        with Horizontal(id="queues-throughput"):
            yield FittedTable(THROUGHPUT_TABLE, id="throughput-table")
            # plotext loads with the view, not with the console's first frame.
            from ..widgets.throughput_chart import ThroughputChart

            yield ThroughputChart(id="throughput-chart")

    @property
    def main_widget(self) -> Widget:
        return self.table

    @property
    def table(self) -> FittedTable[tuple[QueueStats, datetime]]:
        return self.query_one("#queues-table", FittedTable)

    @property
    def selected_queue(self) -> QueueStats | None:
        item = self.table.selected_item
        return item[0] if item is not None else None

    def show_snapshot(self, snapshot: Snapshot) -> None:
        now = self.console.now()
        self.table.sync([(q.name, (q, now)) for q in snapshot.queues])
        waiting = sum(q.pending + q.delayed for q in snapshot.queues)
        running = sum(q.running for q in snapshot.queues)
        summary = Text(
            f"{fmt.plural(len(snapshot.queues), 'queue')} · {fmt.count(waiting)} waiting · "
            f"{fmt.count(running)} running",
            end="",
        )
        paused = [q for q in snapshot.queues if q.paused]
        if paused:
            summary.append(f" · {len(paused)} paused", style="bold yellow")
            for q in paused[:2]:
                summary.append(" · ", style="dim")
                summary.append_text(literal(q.name, "bold"))
                summary.append(" by ")
                summary.append_text(cells.paused_by(q.paused_by, q.paused_at, now))
        self.query_one("#queues-summary", Static).update(summary)
        self._show_throughput(snapshot)
        self.refresh_bindings()

    def _show_throughput(self, snapshot: Snapshot) -> None:
        rows = [(q, w) for q in snapshot.queues if (w := window_of(q, self.window)) is not None]
        table: FittedTable[tuple[QueueStats, QueueWindow]] = self.query_one(
            "#throughput-table", FittedTable
        )
        table.sync([(q.name, (q, w)) for q, w in rows])
        from ..widgets.throughput_chart import ThroughputChart  # loaded by compose

        self.query_one(ThroughputChart).show(rows, self.window)
        line = Text(f"Throughput and latency, last {self.window}", style="bold", end="")
        if rows:
            window_s = rows[0][1].window_s
            covered = max(w.covered_s for _, w in rows)
            if covered < window_s * 0.99:
                line.append(
                    f" · the bucket holds only the last {fmt.duration(covered)} of it",
                    style="yellow",
                )
        else:
            line.append(" · no figures yet", style="dim")
        line.append(" · w: 15m / 1h / 6h", style="dim")
        self.query_one("#queues-window", Static).update(line)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.data_table.id == "queues-table" and event.row_key.value is not None:
            self.post_message(ShowQueueTasks(event.row_key.value))

    def on_data_table_row_highlighted(self) -> None:
        self.refresh_bindings()

    def action_applies(self, action: str) -> bool:
        queue = self.selected_queue
        if queue is None:
            return False
        if action == "pause_queue":
            return not queue.paused
        if action == "resume_queue":
            return queue.paused
        return queue.pending > 0

    def action_next_window(self) -> None:
        """Show throughput over the next window (15 min, 1 h, 6 h)."""
        self.window = WINDOWS[(WINDOWS.index(self.window) + 1) % len(WINDOWS)]
        if (snapshot := self.console.snapshot) is not None:
            self._show_throughput(snapshot)

    def action_pause_queue(self) -> None:
        if (queue := self.selected_queue) is not None:
            self.console.actions.pause_queue(queue.name)

    def action_resume_queue(self) -> None:
        if (queue := self.selected_queue) is not None:
            self.console.actions.resume_queue(queue.name)

    def action_purge(self) -> None:
        queue = self.selected_queue
        snapshot = self.console.snapshot
        if queue is None or snapshot is None:
            return
        pending = TaskStatus.PENDING.value
        ids = [
            r.id for r in snapshot.task_rows if r.queue_name == queue.name and r.status == pending
        ]
        self.console.actions.purge_queue(queue.name, ids)
