"""Throughput windows kept per outcome as per-minute histograms equal a recount of the
outcomes (counts exactly; percentiles to the millisecond below 1 s, within 0.2% above), as
outcomes come and go and the clock moves."""

from __future__ import annotations

import math
import random

import pytest

from omniq_console.monitor.snapshot import QueueWindow
from omniq_console.monitor.throughput import (
    EXACT_BELOW_S,
    MINUTE,
    RELATIVE_ERROR,
    WINDOWS,
    Throughput,
    bin_value,
    to_bin,
)

Outcome = tuple[str, float, float | None, float | None, str]  # queue, completed, wait, run, status


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def recount(
    outcomes: list[Outcome], now: float
) -> dict[str, list[tuple[int, int, list[float | None]]]]:
    """Per queue and window: completed, failed and the four percentiles, from the outcomes."""
    out: dict[str, list[tuple[int, int, list[float | None]]]] = {}
    minute = int(now // MINUTE)
    for q in sorted({o[0] for o in outcomes}):
        rows = []
        for _, span in WINDOWS:
            inside = [o for o in outcomes if o[0] == q
                      and minute - int(span // MINUTE) < int(o[1] // MINUTE) <= minute]  # fmt: skip
            waits = [o[2] for o in inside if o[2] is not None and o[2] >= 0]
            runs = [o[3] for o in inside if o[3] is not None and o[3] >= 0]
            rows.append((
                sum(o[4] == "success" for o in inside), sum(o[4] == "error" for o in inside),
                [_pct(waits, 0.5), _pct(waits, 0.95), _pct(runs, 0.5), _pct(runs, 0.95)],
            ))  # fmt: skip
        out[q] = rows
    return out


def _close(got: float | None, want: float | None) -> bool:
    if got is None or want is None:
        return got is want
    if want < EXACT_BELOW_S:
        return abs(got - want) <= 0.0015  # rounded to the millisecond
    return abs(got - want) <= want * RELATIVE_ERROR


@pytest.mark.parametrize("seed", range(6))
def test_windows_equal_a_recount_as_outcomes_come_and_go_and_the_clock_moves(seed: int) -> None:
    rng = random.Random(seed)
    tp = Throughput()
    held: list[Outcome] = []
    now = 1_800_000_000.0
    for step in range(400):
        roll = rng.random()
        if roll < 0.6:
            # A wait under 1 s (kept to the millisecond) or longer (within the relative error).
            wait = rng.choice([rng.uniform(0, 1), rng.uniform(1, 900)])
            o: Outcome = (
                rng.choice("ab"),
                now - rng.uniform(-60, 7 * 3600),  # a little in the future too (clock skew)
                None if rng.random() < 0.2 else wait,
                None if rng.random() < 0.2 else rng.uniform(-1, 30),
                rng.choice(["success", "error", "cancelled"]),
            )  # fmt: skip
            tp.count(*o, sign=1)
            held.append(o)
        elif roll < 0.8 and held:
            o = held.pop(rng.randrange(len(held)))
            tp.count(*o, sign=-1)
        else:
            now += rng.uniform(-120, 30) if rng.random() < 0.1 else rng.uniform(0, 400)
        if step % 7:
            continue
        got = tp.windows(now, None)
        want = recount(held, now)
        for q in set(got) | set(want):
            windows: tuple[QueueWindow, ...] = got.get(q, ())
            rows = want.get(q) or [(0, 0, [None] * 4)] * len(WINDOWS)
            if not windows:
                assert all(r == (0, 0, [None] * 4) for r in rows)
                continue
            for w, (done, failed, pcts) in zip(windows, rows, strict=True):
                assert (w.completed, w.failed) == (done, failed)
                got_pcts = [w.wait_p50_s, w.wait_p95_s, w.run_p50_s, w.run_p95_s]
                assert all(_close(g, p) for g, p in zip(got_pcts, pcts, strict=True)), (
                    got_pcts, pcts)  # fmt: skip


def test_a_bin_stands_for_its_values_to_the_millisecond_then_within_the_relative_error() -> None:
    for v in [0.0, 0.0004, 0.0016, 0.9994, 1.0, 3.0, 42.5, 3600.0, 86_400.0 * 3]:
        got = bin_value(to_bin(v))
        assert abs(got - v) <= (0.0005 if v < EXACT_BELOW_S else v * RELATIVE_ERROR), (v, got)


def test_covered_is_how_far_back_the_outcomes_reach() -> None:
    tp = Throughput()
    now = 1_800_000_000.0
    tp.count("q", now - 120, 1.0, 2.0, "success", 1)
    windows = {w.window: w for w in tp.windows(now, now - 120)["q"]}
    assert windows["15m"].covered_s == 120.0 and windows["6h"].covered_s == 120.0
    assert windows["15m"].per_minute == 0.5
