"""Queues: depth, age and trend of every queue."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.widget import Widget
from textual.widgets import DataTable, Static

from ...monitor.snapshot import QueueStats, Snapshot
from .. import cells, fmt
from ..messages import ShowQueueTasks
from ..widgets.keyed_table import KeyedTable
from .base import View


class QueuesView(View):
    """Every queue with its depth trend; enter shows the queue's tasks."""

    TITLE = "Queues"

    def compose(self) -> ComposeResult:
        yield Static(id="queues-summary", classes="view-summary")
        thresholds = self.console.thresholds
        yield KeyedTable(
            cells.QUEUE_DETAIL_COLUMNS,
            lambda q: cells.queue_detail_cells(q, thresholds),
            openable=True,
            id="queues-table",
        )

    @property
    def main_widget(self) -> Widget:
        return self.query_one("#queues-table")

    def show_snapshot(self, snapshot: Snapshot) -> None:
        table: KeyedTable[QueueStats] = self.query_one("#queues-table", KeyedTable)
        table.sync([(q.name, q) for q in snapshot.queues])
        waiting = sum(q.pending + q.delayed for q in snapshot.queues)
        running = sum(q.running for q in snapshot.queues)
        self.query_one("#queues-summary", Static).update(
            Text(
                f"{len(snapshot.queues)} queues · {fmt.count(waiting)} waiting · "
                f"{fmt.count(running)} running",
                end="",
            )
        )

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.post_message(ShowQueueTasks(event.row_key.value))
