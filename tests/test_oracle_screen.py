"""The screen equals the snapshot: a snapshot the oracle has checked against the bucket (a
random fleet on the emulator, ``tests/oracle.py``) is shown through Pilot at 80x24, 120x40 and
160x48, and every number the operator reads in each main view is the snapshot's.

Cells are read from the tables by row key and column key, and panels by widget id, never by
screen position: layouts change, the numbers must not.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable
from typing import Any

from oracle import monitor_for, run_oracle
from rich.console import Console
from rich.text import Text
from textual.widgets import DataTable, Static
from tui_fixtures import frozen_clock, settle

from omniq_console.backend.gcs import GCSBackend
from omniq_console.clock import FakeClock
from omniq_console.monitor.snapshot import Snapshot
from omniq_console.tui import StaticSource, build_app, fmt
from omniq_console.tui.screens.main import MainScreen

SIZES = ((80, 24), (120, 40), (160, 48))
STEPS = 80


def _int(text: str) -> int | None:
    found = re.search(r"-?\d[\d,]*", text)
    return int(found.group(0).replace(",", "")) if found else None


class Screen:
    """Reads what one view shows, and collects what differs from the snapshot."""

    def __init__(self, app: Any, size: tuple[int, int]) -> None:
        self.app = app
        self.size = size
        self.view = ""
        self.mismatches: list[str] = []

    def check(self, name: str, expected: Any, shown: Any) -> None:
        if expected != shown:
            self.mismatches.append(
                f"{self.size[0]}x{self.size[1]} {self.view}: {name}: expected {expected!r}, "
                f"shown {shown!r}"
            )

    def table(self, widget_id: str) -> DataTable[Any]:
        return self.app.screen.query_one(f"#{widget_id}", DataTable)

    def cell(self, widget_id: str, row: str, column: str) -> str:
        value = self.table(widget_id).get_cell(row, column)
        return value.plain if isinstance(value, Text) else str(value)

    def rows(self, widget_id: str) -> list[str]:
        return [str(r.key.value) for r in self.table(widget_id).ordered_rows]

    def text(self, widget_id: str) -> str:
        """A panel's content as plain text, whitespace collapsed (wide: nothing wraps)."""
        content = self.app.screen.query_one(f"#{widget_id}", Static).content
        if isinstance(content, str | Text):
            plain = content.plain if isinstance(content, Text) else content
        else:
            console = Console(width=400, record=True, file=io.StringIO())
            console.print(content)
            plain = console.export_text()
        return " ".join(plain.split())

    def numbers(
        self, widget_id: str, row: str, columns: Iterable[tuple[str, int]], what: str
    ) -> None:
        for column, expected in columns:
            self.check(f"{what}.{column}", expected, _int(self.cell(widget_id, row, column)))


async def _snapshot(backend: GCSBackend) -> Snapshot:
    """A snapshot of a random fleet's bucket, checked by the oracle step by step."""
    clock = FakeClock()
    monitor = monitor_for(backend, clock)
    last: list[Snapshot] = []

    async def keep(n: int, label: str, snap: Snapshot, truth: object) -> None:
        last[:] = [snap]

    mismatches = await run_oracle(
        backend, seed=7, steps=STEPS, monitor=monitor, clock=clock, on_step=keep
    )
    assert not mismatches, "\n".join(map(str, mismatches))
    return last[0]


async def test_every_view_shows_the_snapshots_numbers_at_every_size(backend: GCSBackend) -> None:
    snap = await _snapshot(backend)
    assert snap.queues and snap.task_rows and snap.workers  # the fleet did something
    problems: list[str] = []
    for size in SIZES:
        app = build_app(StaticSource(snap), clock=frozen_clock)
        async with app.run_test(size=size) as pilot:
            await settle(pilot)
            screen = Screen(app, size)
            main = app.screen
            assert isinstance(main, MainScreen)
            for name in ("overview", "queues", "tasks", "results", "schedules", "workers"):
                main.action_show_view(name)
                await settle(pilot)
                screen.view = name
                _check_view(screen, name, snap)
            problems.extend(screen.mismatches)
    assert not problems, "\n".join(problems[:40])


def _check_view(screen: Screen, name: str, snap: Snapshot) -> None:
    if name in ("overview", "queues"):
        table = "ov-queues" if name == "overview" else "queues-table"
        screen.check("queue rows", sorted(q.name for q in snap.queues), sorted(screen.rows(table)))
        for q in snap.queues:
            columns = [("pending", q.pending), ("delayed", q.delayed), ("running", q.running)]
            if name == "queues":
                columns += [("claimed", q.claimed), ("expired", q.expired)]
            screen.numbers(table, q.name, columns, f"queues[{q.name}]")
            paused = "(paused)" in screen.cell(table, q.name, "name")
            screen.check(f"queues[{q.name}].paused", q.paused, paused)
    if name == "overview":
        health = screen.text("ov-health")
        wanted = [f"Failure rate {fmt.percent(snap.failure_rate)}"]
        wanted += [f"{status.capitalize()} {fmt.count(n)}" for status, n in snap.tasks.items()]
        for piece in wanted:
            screen.check(f"health shows {piece!r}", True, piece in health)
        screen.check(
            "stuck rows", sorted(s.id for s in snap.stuck), sorted(screen.rows("ov-stuck"))
        )
        for w in snap.workers:
            screen.check(
                f"workers[{w.id}].running",
                len(w.running),
                _int(screen.cell("ov-workers", w.id, "load")),
            )
    if name == "tasks":
        shown = screen.rows("tasks-table")
        by_id = {r.id: r for r in snap.task_rows}
        screen.check("task rows", sorted(by_id)[: len(shown)], sorted(shown))
        for tid in shown:
            row = by_id[tid]
            status = screen.cell("tasks-table", tid, "status")
            screen.check(f"tasks[{tid[:8]}].status", row.status, status.strip())
            retries = _int(screen.cell("tasks-table", tid, "retries"))
            screen.check(f"tasks[{tid[:8]}].retries", row.retry_count, retries)
            worker = screen.cell("tasks-table", tid, "worker").strip()
            screen.check(f"tasks[{tid[:8]}].worker", row.worker_id or fmt.DASH, worker)
    if name == "results":
        groups = screen.rows("results-groups")
        screen.check("failure groups", sorted(snap.failures_by_type), sorted(groups))
        for error_type, count in snap.failures_by_type.items():
            if error_type in groups:
                shown_count = _int(screen.cell("results-groups", error_type, "count"))
                screen.check(f"groups[{error_type}]", count, shown_count)
        header = screen.text("results-outcomes")
        for status, n in snap.results.items():
            piece = f"{status} {fmt.count(n)}"
            screen.check(f"results header shows {piece!r}", True, piece in header)
    if name == "schedules":
        screen.check(
            "schedule rows",
            sorted(s.id for s in snap.schedules),
            sorted(screen.rows("schedules-table")),
        )
        for s in snap.schedules:
            status = screen.cell("schedules-table", s.id, "status")
            screen.check(f"schedules[{s.id[:8]}].status", True, s.status in status)
    if name == "workers":
        screen.check(
            "worker rows", sorted(w.id for w in snap.workers), screen.rows("workers-table")
        )
        for w in snap.workers:
            screen.numbers(
                "workers-table",
                w.id,
                [("load", len(w.running)), ("processed", w.processed), ("failed", w.failed)],
                f"workers[{w.id}]",
            )
