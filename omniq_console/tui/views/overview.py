"""Overview: what needs attention now, on one screen."""

from __future__ import annotations

from datetime import datetime

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import DataTable, Static

from ...monitor.snapshot import EventRow, QueueStats, ScheduleRow, Snapshot, StuckTask, WorkerRow
from .. import cells, fmt
from ..messages import OpenTask, ShowQueueTasks
from ..text import literal
from ..thresholds import Level, Thresholds
from ..widgets.keyed_table import KeyedTable
from ..widgets.outcome_chart import OutcomeChart
from .base import View

TAIL_ROWS = 50


def health_panel(snapshot: Snapshot, thresholds: Thresholds) -> Table:
    """Failure rate, tasks by status, stuck, overdue, workers, unreadable objects."""
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True, min_width=12)
    grid.add_column(no_wrap=True, min_width=6)
    grid.add_column(style="bold", no_wrap=True, min_width=17)
    grid.add_column(no_wrap=True, overflow="ellipsis")
    rate = snapshot.failure_rate
    # Labels go in as Text: a plain str in a rich Table cell would be parsed as markup, and
    # status names come from the bucket's index.
    left: list[tuple[Text, Text]] = [
        (
            Text("Failure rate"),
            Text(fmt.percent(rate), style=thresholds.failure_rate(rate).style or "green"),
        )
    ]
    for name, n in snapshot.tasks.items():
        style = cells.STATUS_STYLES.get(name, "") if n else "dim"
        left.append((literal(name.capitalize()), Text(fmt.count(n), style=style)))
    stuck = len(snapshot.stuck)
    overdue = sum(1 for s in snapshot.schedules if s.overdue)
    dead = sum(1 for w in snapshot.workers if w.dead)
    silent = sum(1 for w in snapshot.workers if not w.alive and not w.dead)
    workers = Text(f"{len(snapshot.workers) - dead - silent} alive", style="green")
    for n, word in ((dead, "dead"), (silent, "silent")):
        if n:
            workers.append(f", {n} {word}", style=Level.CRITICAL.style)
    right: list[tuple[Text, Text]] = [
        (Text("Stuck tasks"), Text(str(stuck), style=Level.CRITICAL.style if stuck else "green")),
        (
            Text("Overdue schedules"),
            Text(str(overdue), style=Level.CRITICAL.style if overdue else "green"),
        ),
        (Text("Workers"), workers),
        (
            Text("Unreadable"),
            Text(
                str(len(snapshot.unreadable)),
                style=Level.WARNING.style if snapshot.unreadable else "green",
            ),
        ),
    ]
    for row in snapshot.unreadable[:3]:
        right.append((Text(), Text.assemble(literal(row.key, "yellow"), ": ", literal(row.reason))))
    for i in range(max(len(left), len(right))):
        a, b = left[i] if i < len(left) else (Text(), Text())
        c, d = right[i] if i < len(right) else (Text(), Text())
        grid.add_row(a, b, c, d)
    return grid


class OverviewView(View):
    """Queues, outcome chart, health, stuck tasks, overdue schedules, event tail, workers."""

    TITLE = "Overview"

    def compose(self) -> ComposeResult:
        thresholds = self.console.thresholds
        with Horizontal(id="ov-top"):
            queues: KeyedTable[QueueStats] = KeyedTable(
                (
                    ("name", "Queue"),
                    ("pending", "Pending"),
                    ("delayed", "Delayed"),
                    ("running", "Running"),
                    ("oldest", "Oldest"),
                    ("trend", "Depth trend"),
                ),
                lambda q: cells.queue_cells(q, thresholds),
                openable=True,
                id="ov-queues",
            )
            queues.border_title = "Queues"
            yield queues
            chart = OutcomeChart(id="ov-chart")
            chart.border_title = "Outcomes per minute (UTC)"
            yield chart
        with Horizontal(id="ov-middle"):
            health = Static(id="ov-health")
            health.border_title = "Health"
            yield health
            stuck: KeyedTable[StuckTask] = KeyedTable(
                cells.STUCK_COLUMNS, cells.stuck_cells, openable=True, id="ov-stuck"
            )
            stuck.border_title = "Stuck tasks"
            yield stuck
            overdue: KeyedTable[tuple[ScheduleRow, datetime]] = KeyedTable(
                (("id", "Schedule"), ("func", "Function"), ("late", "Next run")),
                lambda item: [
                    literal(item[0].id),
                    literal(item[0].func),
                    Text(fmt.countdown(item[0].next_run, item[1]), style="bold red", end=""),
                ],
                id="ov-overdue",
            )
            overdue.border_title = "Overdue schedules"
            yield overdue
        with Horizontal(id="ov-bottom"):
            events: KeyedTable[EventRow] = KeyedTable(
                cells.EVENT_COLUMNS,
                lambda e: cells.event_cells(e, short=True),
                follow_top=True,
                openable=True,
                id="ov-events",
            )
            events.border_title = "Live events"
            yield events
            workers: KeyedTable[WorkerRow] = KeyedTable(
                cells.WORKER_SUMMARY_COLUMNS, cells.worker_summary_cells, id="ov-workers"
            )
            workers.border_title = "Workers"
            yield workers

    @property
    def main_widget(self) -> Widget:
        return self.query_one("#ov-queues")

    def show_snapshot(self, snapshot: Snapshot) -> None:
        self.query_one("#ov-queues", KeyedTable).sync([(q.name, q) for q in snapshot.queues])
        chart = self.query_one(OutcomeChart)
        chart.show(snapshot.results_per_minute)
        minutes = len(snapshot.results_per_minute)
        source = "results and events" if snapshot.outcome_source == "results+events" else "results"
        chart.border_title = f"Outcomes per minute, last {minutes} min (UTC, from {source})"
        health = self.query_one("#ov-health", Static)
        health.update(health_panel(snapshot, self.console.thresholds))
        health.border_title = (
            f"Health · failure rate over {fmt.duration(snapshot.outcome_window_s)}"
        )
        self.query_one("#ov-stuck", KeyedTable).sync([(s.id, s) for s in snapshot.stuck])
        self.query_one("#ov-overdue", KeyedTable).sync(
            [(s.id, (s, snapshot.taken_at)) for s in snapshot.schedules if s.overdue]
        )
        self.query_one("#ov-events", KeyedTable).sync(
            [(e.id, e) for e in snapshot.events[:TAIL_ROWS]]
        )
        self.query_one("#ov-workers", KeyedTable).sync([(w.id, w) for w in snapshot.workers])
        for widget_id, n in (
            ("#ov-stuck", len(snapshot.stuck)),
            ("#ov-overdue", sum(1 for s in snapshot.schedules if s.overdue)),
        ):
            self.query_one(widget_id).set_class(n > 0, "-alert")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        table = event.data_table
        key = event.row_key.value
        if key is None:
            return
        event.stop()
        if table.id == "ov-queues":
            self.post_message(ShowQueueTasks(key))
        elif table.id == "ov-stuck":
            self.post_message(OpenTask(key))
        elif table.id == "ov-events" and isinstance(table, KeyedTable):
            item = table.item(key)
            if item is not None and item.task_id:
                self.post_message(OpenTask(item.task_id))
