"""The waiting set: pending, delayed and expired counts and the oldest pending task per queue,
kept per change and per clock step, equal a recount at every step."""

from __future__ import annotations

import random

import pytest

from omniq_console.monitor.waiting import DELAYED, EXPIRED, PENDING, Waiter, WaitingSet


def recount(
    tasks: dict[str, Waiter], now: float
) -> tuple[dict[tuple[str, int], int], dict[str, float]]:
    counts: dict[tuple[str, int], int] = {}
    oldest: dict[str, float] = {}
    for w in tasks.values():
        if w.expires_at is not None and w.expires_at <= now:
            cls = EXPIRED
        elif w.run_at is not None and w.run_at > now:
            cls = DELAYED
        else:
            cls = PENDING
            if w.since is not None and (w.queue not in oldest or w.since < oldest[w.queue]):
                oldest[w.queue] = w.since
        counts[(w.queue, cls)] = counts.get((w.queue, cls), 0) + 1
    return counts, oldest


@pytest.mark.parametrize("seed", range(10))
def test_counts_and_oldest_equal_a_recount_as_tasks_and_the_clock_move(seed: int) -> None:
    rng = random.Random(seed)
    ws = WaitingSet()
    tasks: dict[str, Waiter] = {}
    now = 1000.0

    def maybe(lo: float, hi: float) -> float | None:
        return None if rng.random() < 0.3 else float(rng.randint(int(lo), int(hi)))

    for step in range(3000):
        tid = f"t{rng.randrange(150)}"
        if rng.random() < 0.7:
            run_at = maybe(now - 50, now + 100)
            w = Waiter(rng.choice("ab"), run_at, maybe(now, now + 200), maybe(now - 100, now))
            ws.put(tid, w)
            tasks[tid] = w
        else:
            ws.discard(tid)
            tasks.pop(tid, None)
        if step % 5 == 0:
            # Mostly forward, in steps that land on the instants themselves too; sometimes back.
            now += rng.choice([0, 1, 3, 20, -30 if rng.random() < 0.05 else 7])
            ws.advance(now)
            counts, oldest = recount(tasks, now)
            assert dict(ws.counts) == counts
            assert {q: ws.oldest(q) for q in "ab" if ws.oldest(q) is not None} == oldest
            assert len(ws) == len(tasks)
