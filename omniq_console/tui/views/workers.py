"""Workers: who is alive, what they run, how much they did."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.widget import Widget
from textual.widgets import Static

from ...monitor.snapshot import Snapshot, WorkerRow
from .. import cells
from ..fmt import plural
from ..widgets.keyed_table import KeyedTable
from .base import View


class WorkersView(View):
    """Every worker that wrote a heartbeat; silent ones in red."""

    TITLE = "Workers"

    def compose(self) -> ComposeResult:
        yield Static(id="workers-info", classes="view-summary")
        yield KeyedTable(cells.WORKER_COLUMNS, cells.worker_cells, id="workers-table")

    @property
    def main_widget(self) -> Widget:
        return self.query_one("#workers-table")

    def show_snapshot(self, snapshot: Snapshot) -> None:
        table: KeyedTable[WorkerRow] = self.query_one("#workers-table", KeyedTable)
        table.sync([(w.id, w) for w in snapshot.workers])
        workers = snapshot.workers
        info = Text(plural(len(workers), "worker"), end="")
        dead = sum(1 for w in workers if w.dead)
        silent = sum(1 for w in workers if not w.alive and not w.dead)
        if dead:
            info.append(f" · {dead} dead (heartbeat stale while running)", style="bold red")
        if silent:
            info.append(f" · {silent} silent", style="bold red")
        running = sum(len(w.running) for w in workers)
        slots = sum(w.concurrency for w in workers)
        info.append(f" · {plural(running, 'task')} running")
        if slots:
            info.append(f" in {plural(slots, 'slot')} ({running / slots:.0%} used)")
        self.query_one("#workers-info", Static).update(info)
