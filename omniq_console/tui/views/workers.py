"""Workers: who is alive, what they run, how much they did."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.widget import Widget
from textual.widgets import DataTable, Static

from ...monitor.snapshot import Snapshot, WorkerRow
from .. import cells
from ..columns import FittedTable
from ..fmt import plural
from ..screens.worker import WorkerScreen
from .base import View


class WorkersView(View):
    """Every worker that wrote a heartbeat; silent ones in red. ``enter`` opens a worker:
    the tasks it runs and the ones it just finished."""

    TITLE = "Workers"

    def compose(self) -> ComposeResult:
        yield Static(id="workers-info", classes="view-summary")
        yield FittedTable(cells.WORKER_TABLE, openable=True, id="workers-table")

    @property
    def main_widget(self) -> Widget:
        return self.query_one("#workers-table")

    def show_snapshot(self, snapshot: Snapshot) -> None:
        table: FittedTable[WorkerRow] = self.query_one("#workers-table", FittedTable)
        table.sync([(w.id, w) for w in snapshot.workers])
        workers = snapshot.workers
        info = Text(plural(len(workers), "worker"), end="")
        dead = sum(1 for w in workers if w.dead)
        silent = sum(1 for w in workers if not w.alive and not w.dead)
        if dead:
            info.append(f" · {dead} dead (heartbeat stale while running)", style="bold red")
        if silent:
            info.append(f" · {silent} silent", style="bold red")
        finishing = sum(w.finishing for w in workers)
        running = sum(w.busy for w in workers)
        slots = sum(w.concurrency for w in workers)
        info.append(f" · {plural(running, 'task')} running")
        if slots:
            info.append(f" in {plural(slots, 'slot')} ({running / slots:.0%} used)")
        if finishing:
            info.append(f" · {finishing} finishing", style="dim")  # outcomes being written
        self.query_one("#workers-info", Static).update(info)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.app.push_screen(WorkerScreen(event.row_key.value))
