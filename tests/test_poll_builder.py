"""What the snapshot builder keeps between builds never shows a stale figure."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from omniq_console.backend.layout import Layout
from omniq_console.monitor.builder import SnapshotBuilder, Thresholds
from omniq_console.monitor.model import BucketModel
from omniq_console.monitor.records import Entry, Heartbeat, StateRecord, TaskDef

LAYOUT = Layout("omniq/")
NOW = 1_800_000_000.0


def _running(tid: str, worker: str, func: str | None = "f") -> StateRecord:
    return StateRecord(
        tid, "pending", "running", "q", func, 1, worker, 30.0, NOW + 3600, None,
        0, NOW - 60, NOW - 30, None, None, None, None,
    )  # fmt: skip


def _rows(builder: SnapshotBuilder, model: BucketModel) -> dict[str, tuple[tuple[str, ...], ...]]:
    at = datetime.fromtimestamp(NOW, UTC)
    parts = asyncio.run(builder.build(model, at, Thresholds()))
    return {w.id: (w.running, w.running_funcs) for w in parts.workers}


def test_worker_rows_follow_every_change_to_what_each_worker_holds() -> None:
    model = BucketModel(LAYOUT)
    builder = SnapshotBuilder()
    for w in ("w-1", "w-2"):
        beat = Heartbeat(
            w, "running", NOW, NOW - 100, "h", 1, ("q",), (), 0, 0, 4, (), False, False
        )
        model.offer("workers", LAYOUT.worker(w), 1, beat)
    generation = iter(range(10, 1000))

    def run(tid: str, worker: str, func: str | None = "f") -> None:
        if func is not None:
            define(tid, func)
        else:  # known by its queue entry alone (no function there either)
            entry = Entry(tid, "q", 0, None, None, NOW - 60, None, 1, None)
            model.offer("queues", LAYOUT.queue_entry("q", tid), next(generation), entry)
        model.offer("results", LAYOUT.result(tid), next(generation), _running(tid, worker, func))

    def define(tid: str, func: str) -> None:
        definition = TaskDef(tid, "q", func, 0, None, NOW - 60)
        model.offer("tasks", LAYOUT.task(tid), next(generation), definition)

    run("b", "w-1")
    run("a", "w-1")
    assert _rows(builder, model) == {"w-1": (("a", "b"), ("f", "f")), "w-2": ((), ())}
    # The same number of tasks, other ids: a cache keyed on the count would be stale.
    model.withdraw("results", LAYOUT.result("b"), None, before=model.seq)
    run("c", "w-1")
    assert _rows(builder, model) == {"w-1": (("a", "c"), ("f", "f")), "w-2": ((), ())}
    # A task that moves to another worker.
    run("a", "w-2")
    assert _rows(builder, model) == {"w-1": (("c",), ("f",)), "w-2": (("a",), ("f",))}
    # Nothing held changes, but a task's function becomes known (its definition arrives
    # after its state record): the row shows it.
    run("d", "w-2", func=None)
    assert _rows(builder, model)["w-2"] == (("a", "d"), ("f", ""))
    define("d", "g")
    assert _rows(builder, model)["w-2"] == (("a", "d"), ("f", "g"))
