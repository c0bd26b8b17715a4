"""A finished task's row names the worker that ran it: the console's finished lists (Tasks,
Results, a worker's drill-in) show who ran it; a task waiting again after a retry names none."""

from __future__ import annotations

from omniq_console.backend.layout import Layout
from omniq_console.monitor.model import BucketModel
from omniq_console.monitor.records import StateRecord, TaskDef

LAYOUT = Layout("omniq/")
NOW = 1_800_000_000.0


def record(tid: str, state: str, status: str, worker: str | None) -> StateRecord:
    done = NOW if state in ("completed", "failed") else None
    error = "ValueError" if state == "failed" else None
    return StateRecord(
        tid, status, state, "q", "f", 1, worker, 30.0, None, None,
        0, NOW - 60, NOW - 30, done, error, None, None,
    )  # fmt: skip


def test_finished_rows_keep_their_worker_and_a_retried_one_drops_it() -> None:
    m = BucketModel(LAYOUT)
    cases = {
        "ran": ("running", "pending", "w-run"),
        "done": ("completed", "success", "w-ok"),
        "broke": ("failed", "error", "w-bad"),
        "again": ("pending", "pending", "w-old"),
    }
    for tid, (state, status, worker) in cases.items():
        definition = TaskDef(tid, "q", "f", 0, None, NOW - 60)
        m.offer("tasks", LAYOUT.task(tid), 1, definition)
        m.offer("results", LAYOUT.result(tid), 2, record(tid, state, status, worker))
    workers = {row.id: row.worker_id for row in m.task_rows()}
    assert workers == {"ran": "w-run", "done": "w-ok", "broke": "w-bad", "again": None}
