"""Running tasks: per-queue counts, who holds what, and the stuck ones, kept per change.

A running task is stuck once its lease has expired, which depends on the clock only through
that one instant: leases sit in a heap, so a clock step pops the leases it passed instead of
walking every running task. A change to a task replaces it (what the heap holds of the old
version is dropped when it comes up); a clock that goes back re-places every task.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Iterator

import msgspec

from .records import Entry


class LiveTask(msgspec.Struct, frozen=True, gc=False):
    """A running task, joined from its objects, for the clock-dependent figures (untracked
    by the collector, as the records it is joined from)."""

    id: str
    queue: str
    func: str
    entry: Entry | None  # stays in its queue until the outcome (counted as claimed)
    worker_id: str | None
    lease_expires_at: float | None


class RunningSet:
    """Running tasks by id, with running and claimed counts per queue, the tasks each worker
    holds, and those whose lease expired before ``now``."""

    def __init__(self) -> None:
        self.now = -math.inf
        self._tasks: dict[str, tuple[LiveTask, int]] = {}  # task, version
        self._version = 0
        self.by_queue: Counter[str] = Counter()
        self.claimed: Counter[str] = Counter()
        """Running tasks whose entry is still in its queue, by the entry's queue."""
        self.held: dict[str, set[str]] = {}
        """Task ids by the worker holding their lease."""
        self.stuck: dict[str, LiveTask] = {}
        """Tasks whose lease expired before ``now``."""
        self._leases: list[tuple[float, int, str]] = []  # (expiry, version, tid)

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[str]:
        return iter(self._tasks)

    def __contains__(self, tid: object) -> bool:
        return tid in self._tasks

    def values(self) -> Iterator[LiveTask]:
        return (t for t, _ in self._tasks.values())

    def get(self, tid: str) -> LiveTask | None:
        held = self._tasks.get(tid)
        return held[0] if held is not None else None

    def put(self, t: LiveTask) -> None:
        """``t`` runs (replacing what it was)."""
        old = self._tasks.get(t.id)
        if old is not None and old[0] == t:
            return
        self.discard(t.id)
        self._version += 1
        self._place(t, self._version)
        _add(self.by_queue, t.queue, 1)
        if t.entry is not None:
            _add(self.claimed, t.entry.queue, 1)
        if t.worker_id is not None:
            self.held.setdefault(t.worker_id, set()).add(t.id)

    def discard(self, tid: str) -> None:
        """``tid`` no longer runs."""
        old = self._tasks.pop(tid, None)
        if old is None:
            return
        t = old[0]
        self.stuck.pop(tid, None)
        _add(self.by_queue, t.queue, -1)
        if t.entry is not None:
            _add(self.claimed, t.entry.queue, -1)
        if t.worker_id is not None:
            ids = self.held[t.worker_id]
            ids.discard(tid)
            if not ids:
                del self.held[t.worker_id]

    def _place(self, t: LiveTask, version: int) -> None:
        self._tasks[t.id] = (t, version)
        lease = t.lease_expires_at
        if lease is None:
            return
        if lease < self.now:
            self.stuck[t.id] = t
        else:
            heapq.heappush(self._leases, (lease, version, t.id))

    def advance(self, now: float) -> None:
        """Move the tasks whose lease expired before ``now`` to ``stuck``."""
        if now < self.now:
            self._rebuild(now)
            return
        self.now = now
        leases = self._leases
        while leases and leases[0][0] < now:
            _, version, tid = heapq.heappop(leases)
            held = self._tasks.get(tid)
            if held is not None and held[1] == version:
                self.stuck[tid] = held[0]
        # Leases of replaced tasks go when they come up; a heap grown far beyond the tasks
        # it stands for is rebuilt (amortised: after as many changes).
        if len(leases) > 2 * len(self._tasks) + 4096:
            self._rebuild(now)

    def _rebuild(self, now: float) -> None:
        self.now = now
        self.stuck = {}
        self._leases = []
        for t, version in list(self._tasks.values()):
            self._place(t, version)


def _add(counter: Counter[str], key: str, by: int) -> None:
    left = counter[key] + by
    if left > 0:
        counter[key] = left
    else:
        del counter[key]
