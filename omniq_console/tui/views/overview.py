"""Overview: what needs attention now, on one screen."""

from __future__ import annotations

from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import DataTable, Static

from ...monitor.snapshot import Snapshot
from .. import cells, fmt
from ..columns import FittedTable
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
    grid.add_column(style="bold", no_wrap=True, min_width=10)
    # Wrappable, so that Rich narrows this column (and never the figures) to fit; its cells
    # are cut with an ellipsis instead of wrapping.
    grid.add_column()
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
        (Text("Stuck"), Text(str(stuck), style=Level.CRITICAL.style if stuck else "green")),
        (
            Text("Overdue"),
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
        d.no_wrap = True
        d.overflow = "ellipsis"
        grid.add_row(a, b, c, d)
    return grid


def attention_line(snapshot: Snapshot, thresholds: Thresholds) -> Text:
    """The health panel's alarms in one line, for a narrow terminal's first screen:
    ``failures 7.3% · 1 stuck · 1 overdue · workers 2/3 alive · 1 unreadable``."""
    rate = snapshot.failure_rate
    line = Text("failures ", end="")
    line.append(fmt.percent(rate), style=thresholds.failure_rate(rate).style or "green")
    stuck = len(snapshot.stuck)
    overdue = sum(1 for s in snapshot.schedules if s.overdue)
    for n, word in ((stuck, "stuck"), (overdue, "overdue")):
        line.append(" · ", style="dim")
        line.append(f"{n} {word}", style=Level.CRITICAL.style if n else "green")
    alive = sum(1 for w in snapshot.workers if w.alive and not w.dead)
    line.append(" · ", style="dim")
    line.append(
        f"workers {alive}/{len(snapshot.workers)} alive",
        style=Level.CRITICAL.style if alive < len(snapshot.workers) else "green",
    )
    if snapshot.unreadable:
        line.append(" · ", style="dim")
        line.append(f"{len(snapshot.unreadable)} unreadable", style=Level.WARNING.style)
    return line


class OverviewView(View):
    """Queues, outcome chart, health, stuck tasks, overdue schedules, event tail, workers.

    On a narrow terminal the panels stack and the view scrolls (``PageDown``/``PageUp``
    page it whichever panel has the focus); a line at the top keeps the alarms on the
    first screen.
    """

    TITLE = "Overview"
    BINDINGS: ClassVar[list[BindingType]] = [
        # Priority: the focused panel would otherwise page its own few rows.
        Binding("pagedown", "page(1)", "Page down", show=False, priority=True),
        Binding("pageup", "page(-1)", "Page up", show=False, priority=True),
    ]

    def compose(self) -> ComposeResult:
        thresholds = self.console.thresholds
        yield Static(id="ov-attention", classes="view-summary")
        with Horizontal(id="ov-top"):
            queues = FittedTable(cells.queue_table(thresholds), openable=True, id="ov-queues")
            queues.border_title = "Queues"
            yield queues
            chart = OutcomeChart(id="ov-chart")
            chart.border_title = "Outcomes per minute (UTC)"
            yield chart
        with Horizontal(id="ov-middle"):
            health = Static(id="ov-health")
            health.border_title = "Health"
            yield health
            stuck = FittedTable(cells.STUCK_TABLE, openable=True, id="ov-stuck")
            stuck.border_title = "Stuck tasks"
            yield stuck
            overdue = FittedTable(cells.OVERDUE_TABLE, id="ov-overdue")
            overdue.border_title = "Overdue schedules"
            yield overdue
        with Horizontal(id="ov-bottom"):
            events = FittedTable(cells.TAIL_TABLE, follow_top=True, openable=True, id="ov-events")
            events.border_title = "Live events (UTC)"
            yield events
            workers = FittedTable(cells.WORKER_SUMMARY_TABLE, id="ov-workers")
            workers.border_title = "Workers"
            yield workers

    @property
    def main_widget(self) -> Widget:
        return self.query_one("#ov-queues")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "page":
            # Only when the view scrolls: otherwise the key goes on to the focused panel.
            return self.max_scroll_y > 0
        return super().check_action(action, parameters)

    def action_page(self, step: int) -> None:
        """Scroll the view a page down (1) or up (-1)."""
        if step > 0:
            self.scroll_page_down(animate=False)
        else:
            self.scroll_page_up(animate=False)

    def show_snapshot(self, snapshot: Snapshot) -> None:
        self.query_one("#ov-attention", Static).update(
            attention_line(snapshot, self.console.thresholds)
        )
        self.query_one("#ov-queues", KeyedTable).sync([(q.name, q) for q in snapshot.queues])
        chart = self.query_one(OutcomeChart)
        chart.show(snapshot.results_per_minute)
        minutes = len(snapshot.results_per_minute)
        both = snapshot.outcome_source == "results+events"
        source = "results and events" if both else "results"
        title = f"Outcomes per minute, last {minutes} min (UTC, from {source})"
        if len(title) + 6 > chart.size.width:
            # A narrow panel: the same facts, short, rather than a title cut mid-word.
            title = f"Outcomes/min, {minutes} min, UTC, {'results+events' if both else 'results'}"
        chart.border_title = title
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
