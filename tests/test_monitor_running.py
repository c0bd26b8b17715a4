"""The running set: running and claimed counts per queue, who holds what, and the stuck tasks
(found by popping a lease heap), equal a recount as tasks and the clock move."""

from __future__ import annotations

import random
from collections.abc import Iterable

import pytest

from omniq_console.monitor.records import Entry
from omniq_console.monitor.running import LiveTask, RunningSet


def _entry(queue: str) -> Entry:
    return Entry("t", queue, 0, None, None, None, None, 1, "f")


@pytest.mark.parametrize("seed", range(8))
def test_counts_holders_and_stuck_equal_a_recount_as_tasks_and_the_clock_move(
    seed: int,
) -> None:
    rng = random.Random(seed)
    rs = RunningSet()
    tasks: dict[str, LiveTask] = {}
    now = 1000.0
    for _ in range(3000):
        tid = f"t{rng.randrange(150)}"
        roll = rng.random()
        if roll < 0.55:
            queue = rng.choice("ab")
            t = LiveTask(
                tid, queue, "f",
                _entry(rng.choice("ab")) if rng.random() < 0.7 else None,
                rng.choice(["w1", "w2", None]),
                None if rng.random() < 0.1 else now + rng.uniform(-30, 60),
            )  # fmt: skip
            rs.put(t)
            tasks[tid] = t
        elif roll < 0.75:
            rs.discard(tid)
            tasks.pop(tid, None)
        else:
            # Mostly forward, sometimes back (a corrected clock).
            now += rng.uniform(-20, 30) if rng.random() < 0.1 else rng.uniform(0, 10)
            rs.advance(now)
        stuck = {
            tid for tid, t in tasks.items()
            if t.lease_expires_at is not None and t.lease_expires_at < rs.now
        }  # fmt: skip
        assert set(rs.stuck) == stuck
        assert dict(rs.by_queue) == _count(t.queue for t in tasks.values())
        assert dict(rs.claimed) == _count(t.entry.queue for t in tasks.values() if t.entry)
        holders: dict[str, set[str]] = {}
        for t in tasks.values():
            if t.worker_id is not None:
                holders.setdefault(t.worker_id, set()).add(t.id)
        assert rs.held == holders
        assert sorted(rs) == sorted(tasks) and len(rs) == len(tasks)


def _count(items: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for x in items:
        out[x] = out.get(x, 0) + 1
    return out


def test_a_renewed_lease_leaves_the_stuck_tasks() -> None:
    rs = RunningSet()
    rs.put(LiveTask("t", "q", "f", None, "w", 100.0))
    rs.advance(101.0)
    assert set(rs.stuck) == {"t"}
    rs.put(LiveTask("t", "q", "f", None, "w", 200.0))
    assert not rs.stuck
    rs.advance(150.0)
    assert not rs.stuck
    rs.advance(201.0)
    assert set(rs.stuck) == {"t"}
