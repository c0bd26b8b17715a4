"""A poll joins changed tasks in slices: no reader of the aggregates on the poll's path (the
event tail, the minute's forgetting of outcomes) joins them all in one turn of the loop."""

from __future__ import annotations

from omniq_console.backend.gcs import GCSBackend
from omniq_console.backend.memstore import MemoryObjectStore
from omniq_console.models import Task
from omniq_console.monitor import Monitor
from omniq_console.monitor.model import SETTLE_SLICE, BucketModel


async def test_a_cold_poll_never_joins_more_than_a_slice_of_tasks_at_once() -> None:
    store = MemoryObjectStore("slices")
    async with GCSBackend("slices", object_store=store) as backend:
        storage = backend.async_task_storage
        for n in range(3 * SETTLE_SLICE):
            await storage.enqueue(Task(func="jobs:work", queue_name="q", args=(n,)))
        monitor = Monitor(backend, poll_timeout=60)
        joined_at_once: list[int] = []
        model = monitor.model
        settle = BucketModel.settle

        def watched(self: BucketModel) -> None:
            joined_at_once.append(len(self._stale))
            settle(self)

        model.settle = watched.__get__(model)  # type: ignore[method-assign]
        snap = await monitor.poll(raise_errors=True)
        assert snap.tasks["pending"] == 3 * SETTLE_SLICE
        # Before: the minute's forgetting of outcomes joined all 1,500 in one call (a cold
        # load of a million tasks held the loop 11 s).
        assert max(joined_at_once, default=0) <= SETTLE_SLICE, joined_at_once
