"""Tasks waiting in a queue, counted as pending, delayed or expired at a moving clock.

A waiting task's class depends on the clock only through two instants: its entry's expiry
(expired from then on) and its run-at (delayed before it). Each task's next such instant sits in
a heap, so advancing the clock touches only the tasks whose class changes, not every waiting
task; the oldest pending task of a queue is the top of a heap too. A change to a task replaces
it (a new version: what the heaps hold of the old one is dropped when it comes up).
"""

from __future__ import annotations

import heapq
import math
from collections import Counter

import msgspec

PENDING, DELAYED, EXPIRED = 0, 1, 2


class Waiter(msgspec.Struct, frozen=True, gc=False):
    """What the clock-dependent figures need of a waiting task (untracked by the collector:
    only numbers and a string)."""

    queue: str  # its entry's queue
    run_at: float | None
    expires_at: float | None
    since: float | None
    """Waiting since (its run-at for a delayed task, else when it was enqueued)."""


def _class(w: Waiter, now: float) -> int:
    if w.expires_at is not None and w.expires_at <= now:
        return EXPIRED
    if w.run_at is not None and w.run_at > now:
        return DELAYED
    return PENDING


def _next_change(w: Waiter, cls: int) -> float | None:
    """When ``w`` leaves class ``cls`` (None: never, by the clock alone)."""
    if cls == DELAYED:
        assert w.run_at is not None
        return w.run_at if w.expires_at is None else min(w.run_at, w.expires_at)
    if cls == PENDING:
        return w.expires_at
    return None


class WaitingSet:
    """Per-queue pending, delayed and expired counts and the oldest pending task, kept per
    change and per clock step (the clock may also go back: then every task is re-classed)."""

    def __init__(self) -> None:
        self.now = -math.inf
        self._tasks: dict[str, tuple[Waiter, int, int]] = {}  # waiter, version, class
        self._version = 0
        self.counts: Counter[tuple[str, int]] = Counter()
        """Waiting tasks by (queue, class) as of ``now``."""
        self._changes: list[tuple[float, int, str]] = []  # (when, version, tid)
        self._oldest: dict[str, list[tuple[float, int, str]]] = {}  # per queue: (since, ...)
        self._oldest_size = 0

    def __len__(self) -> int:
        return len(self._tasks)

    def __contains__(self, tid: object) -> bool:
        return tid in self._tasks

    def put(self, tid: str, w: Waiter) -> None:
        """``tid`` waits as ``w`` (replacing what it was)."""
        self.discard(tid)
        self._version += 1
        self._place(tid, w, self._version)

    def discard(self, tid: str) -> None:
        """``tid`` no longer waits (running, final or gone)."""
        old = self._tasks.pop(tid, None)
        if old is not None:
            w, _, cls = old
            self._uncount(w.queue, cls)

    def _uncount(self, queue: str, cls: int) -> None:
        self.counts[(queue, cls)] -= 1
        if self.counts[(queue, cls)] <= 0:
            del self.counts[(queue, cls)]

    def _place(self, tid: str, w: Waiter, version: int) -> None:
        cls = _class(w, self.now)
        self._tasks[tid] = (w, version, cls)
        self.counts[(w.queue, cls)] += 1
        when = _next_change(w, cls)
        if when is not None:
            heapq.heappush(self._changes, (when, version, tid))
        if cls == PENDING and w.since is not None:
            heapq.heappush(self._oldest.setdefault(w.queue, []), (w.since, version, tid))
            self._oldest_size += 1

    def advance(self, now: float) -> None:
        """Re-class the tasks whose class the clock changed since the last step."""
        if now < self.now:
            self._rebuild(now)
            return
        self.now = now
        changes = self._changes
        while changes and changes[0][0] <= now:
            _, version, tid = heapq.heappop(changes)
            held = self._tasks.get(tid)
            if held is None or held[1] != version:
                continue  # changed or gone since this was pushed
            w, _, cls = held
            self._uncount(w.queue, cls)
            self._place(tid, w, version)
        # What the heaps hold of replaced tasks goes when it comes up; a heap grown far
        # beyond the tasks it stands for is rebuilt (amortised: after as many changes).
        if len(changes) + self._oldest_size > 4 * len(self._tasks) + 4096:
            self._rebuild(now)

    def _rebuild(self, now: float) -> None:
        tasks = list(self._tasks.items())
        self.now = now
        self._tasks = {}
        self.counts.clear()
        self._changes = []
        self._oldest = {}
        self._oldest_size = 0
        for tid, (w, version, _) in tasks:
            self._place(tid, w, version)

    def oldest(self, queue: str) -> float | None:
        """When the longest-waiting pending task of ``queue`` began waiting (as of ``now``)."""
        heap = self._oldest.get(queue)
        while heap:
            _, version, tid = heap[0]
            held = self._tasks.get(tid)
            if held is not None and held[1] == version and held[2] == PENDING:
                return heap[0][0]
            heapq.heappop(heap)
            self._oldest_size -= 1
        return None

    def count(self, queue: str, cls: int) -> int:
        return self.counts.get((queue, cls), 0)

    def queues(self) -> set[str]:
        """Queues with a waiting task."""
        return {q for q, _ in self.counts}
