"""What the console reads from: a snapshot source (the Monitor's API), and a fixed one.

The console never touches storage itself. It runs ``source.run()`` in a worker, hears about
each new snapshot through ``subscribe`` and opens one task through ``task_detail``. The
console's own CLI gives it a ``MonitorThread`` (``monitor/thread.py``): the polls run on
another thread, so no poll ever holds the loop that handles keys.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence

from ..models import Task, TaskResult
from ..monitor.snapshot import Snapshot, TaskDetail
from ..monitor.source import SnapshotCallback, SnapshotSource

__all__ = ["SnapshotCallback", "SnapshotSource", "StaticSource"]


class StaticSource:
    """A source replaying fixed snapshots: for tests, screenshots and offline demos.

    ``run()`` publishes the first snapshot, then the next one each time a poll is requested
    (the last one again when there are no more). ``push`` publishes any snapshot at once.
    Calls are recorded (``poll_requests``, ``paused``, ``interval``, ``detail_requests``) so a
    test can check what the console asked for.
    """

    def __init__(
        self,
        snapshots: Snapshot | Sequence[Snapshot] = (),
        *,
        details: Mapping[str, TaskDetail] | None = None,
    ) -> None:
        # Bodies and results come from the details given: what a bucket would hold.
        self._pending: list[Snapshot] = (
            [snapshots] if isinstance(snapshots, Snapshot) else list(snapshots)
        )
        self._details = dict(details or {})
        self._subscribers: list[SnapshotCallback] = []
        self._wake: asyncio.Event | None = None
        self._latest: Snapshot | None = None
        self.poll_requests = 0
        self.paused = False
        self.interval: float | None = None
        self.detail_requests: list[str] = []
        self.body_requests: list[str] = []

    @property
    def latest(self) -> Snapshot | None:
        return self._latest

    def push(self, snapshot: Snapshot) -> None:
        """Publish ``snapshot`` to every subscriber now."""
        self._latest = snapshot
        for callback in list(self._subscribers):
            callback(snapshot)

    def _advance(self) -> None:
        if self._pending:
            self.push(self._pending.pop(0))
        elif self._latest is not None:
            self.push(self._latest)

    async def run(self) -> None:
        self._wake = asyncio.Event()
        self._advance()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self.paused:
                self._advance()

    def subscribe(self, callback: SnapshotCallback) -> Callable[[], None]:
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def request_poll(self) -> None:
        self.poll_requests += 1
        if self._wake is not None:
            self._wake.set()

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def set_interval(self, seconds: float) -> None:
        if seconds <= 0:
            raise ValueError("the poll interval must be positive")
        self.interval = seconds

    async def task_detail(self, task_id: str) -> TaskDetail:
        self.detail_requests.append(task_id)
        return self._details.get(task_id) or TaskDetail(task_id=task_id)

    async def task_bodies(self, task_ids: Sequence[str]) -> dict[str, Task | None]:
        self.body_requests.extend(task_ids)
        return {i: (d.task if (d := self._details.get(i)) else None) for i in task_ids}

    async def result_bodies(self, task_ids: Sequence[str]) -> dict[str, TaskResult | None]:
        return {i: (d.result if (d := self._details.get(i)) else None) for i in task_ids}
