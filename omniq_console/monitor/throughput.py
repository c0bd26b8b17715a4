"""Throughput per queue over sliding windows, kept per outcome as per-minute histograms.

Each outcome adds to its queue's minute: a success or an error count, and its wait and run
times in histogram bins. Each window (15 minutes, 1 hour, 6 hours) keeps the sum of its
minutes, moved along as the clock passes a minute (the minute leaving is subtracted, the one
arriving added): an outcome costs O(windows) and a clock step O(minutes passed), never
O(outcomes). Percentiles walk a window's bins (a few thousand at most), and only for the
queues whose windows changed.

Bins: milliseconds below ``EXACT_BELOW_S`` (a percentile is then the value rounded to the
millisecond, as before), logarithmic above with a ratio of ``1 + RELATIVE_ERROR`` (a bin's
middle is within 0.1% of every value in it; a day spans ~6,000 bins, so a percentile sorts
a few thousand keys at most). A window is whole minutes: the current one and
the ``span / 60 - 1`` before it, so it reaches between ``span - 60`` and ``span`` seconds back.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from .snapshot import QueueWindow

MINUTE = 60.0
WINDOWS = (("15m", 900.0), ("1h", 3600.0), ("6h", 21600.0))
_WIDTHS = tuple(int(span // MINUTE) for _, span in WINDOWS)
EXACT_BELOW_S = 1.0
RELATIVE_ERROR = 0.002
_EXACT_BINS = int(EXACT_BELOW_S * 1000)
_LOG_RATIO = math.log1p(RELATIVE_ERROR)


def to_bin(seconds: float) -> int:
    """The histogram bin of a duration (>= 0)."""
    if seconds < EXACT_BELOW_S:
        return round(seconds * 1000)
    return _EXACT_BINS + int(math.log(seconds / EXACT_BELOW_S) / _LOG_RATIO)


def bin_value(b: int) -> float:
    """The duration bin ``b`` stands for (exact to the millisecond below ``EXACT_BELOW_S``)."""
    if b < _EXACT_BINS:
        return b / 1000
    return EXACT_BELOW_S * math.exp((b - _EXACT_BINS + 0.5) * _LOG_RATIO)


@dataclass(slots=True)
class Tally:
    """The outcomes of one queue over a minute or a window."""

    success: int = 0
    error: int = 0
    waits: Counter[int] = field(default_factory=Counter)
    runs: Counter[int] = field(default_factory=Counter)

    def count(self, status: str, wait: int | None, run: int | None, sign: int) -> None:
        if status == "success":
            self.success += sign
        elif status == "error":
            self.error += sign
        if wait is not None:
            _bump(self.waits, wait, sign)
        if run is not None:
            _bump(self.runs, run, sign)

    def merge(self, other: Tally, sign: int) -> None:
        self.success += sign * other.success
        self.error += sign * other.error
        for b, n in other.waits.items():
            _bump(self.waits, b, sign * n)
        for b, n in other.runs.items():
            _bump(self.runs, b, sign * n)

    def empty(self) -> bool:
        return not (self.success or self.error or self.waits or self.runs)


def _bump(counter: Counter[int], b: int, by: int) -> None:
    left = counter[b] + by
    if left:
        counter[b] = left
    else:
        del counter[b]


def percentiles(hist: Counter[int], qs: tuple[float, ...]) -> list[float | None]:
    """The ``qs`` quantiles (the value at rank ``ceil(q * n)``) of the durations in ``hist``,
    ``qs`` ascending."""
    n = sum(hist.values())
    if n <= 0:
        return [None] * len(qs)
    ranks = [min(n - 1, max(0, math.ceil(q * n) - 1)) for q in qs]
    out: list[float | None] = []
    seen = 0
    for b in sorted(hist):
        seen += hist[b]
        while len(out) < len(ranks) and ranks[len(out)] < seen:
            out.append(round(bin_value(b), 3))
        if len(out) == len(ranks):
            break
    return out


class Throughput:
    """Per-queue windows of outcomes, kept per ``count`` and per clock step."""

    def __init__(self) -> None:
        self._minutes: dict[int, dict[str, Tally]] = {}  # minute -> queue -> tally
        self._windows: dict[tuple[str, int], Tally] = {}  # (queue, window index)
        self._now: int | None = None  # the current minute of the windows
        self._rows: dict[str, tuple[QueueWindow, ...]] = {}
        self._dirty: set[str] = set()
        self._covered: list[float] = []  # how much of each window the outcomes cover

    def count(self, queue: str | None, completed_at: float, wait: float | None,
              run: float | None, status: str, sign: int) -> None:  # fmt: skip
        """Count one outcome in (``sign`` 1) or out (-1)."""
        q = queue or ""
        m = int(completed_at // MINUTE)
        w = to_bin(wait) if wait is not None and wait >= 0 else None
        r = to_bin(run) if run is not None and run >= 0 else None
        per_queue = self._minutes.setdefault(m, {})
        tally = per_queue.get(q)
        if tally is None:
            tally = per_queue[q] = Tally()
        tally.count(status, w, r, sign)
        if tally.empty():
            del per_queue[q]
            if not per_queue:
                del self._minutes[m]
        if self._now is not None:
            for i, width in enumerate(_WIDTHS):
                if self._now - width < m <= self._now:
                    self._window(q, i).count(status, w, r, sign)
        self._dirty.add(q)

    def _window(self, queue: str, i: int) -> Tally:
        w = self._windows.get((queue, i))
        if w is None:
            w = self._windows[(queue, i)] = Tally()
        return w

    def _advance(self, now: float) -> None:
        minute = int(now // MINUTE)
        last = self._now
        if last == minute:
            return
        if last is None or minute < last or minute - last > _WIDTHS[-1]:
            self._rebuild(minute)
            return
        for m in range(last + 1, minute + 1):
            for i, width in enumerate(_WIDTHS):
                self._shift(i, m, 1)
                self._shift(i, m - width, -1)
        self._now = minute

    def _shift(self, i: int, minute: int, sign: int) -> None:
        for q, tally in self._minutes.get(minute, {}).items():
            w = self._window(q, i)
            w.merge(tally, sign)
            if w.empty():
                del self._windows[(q, i)]
            self._dirty.add(q)

    def _rebuild(self, minute: int) -> None:
        self._now = minute
        self._dirty.update(q for q, _ in self._windows)
        self._windows = {}
        for m, per_queue in self._minutes.items():
            for i, width in enumerate(_WIDTHS):
                if minute - width < m <= minute:
                    for q, tally in per_queue.items():
                        self._window(q, i).merge(tally, 1)
                        self._dirty.add(q)

    def windows(self, now: float, oldest: float | None) -> dict[str, tuple[QueueWindow, ...]]:
        """Each queue's windows at ``now``; ``oldest``: the earliest outcome remembered (how
        much of a window the data covers). Recomputed for the queues that changed."""
        self._advance(now)
        covered = [min(span, max(0.0, now - (oldest if oldest is not None else now)))
                   for _, span in WINDOWS]  # fmt: skip
        if covered != self._covered:
            self._covered = covered
            self._dirty.update(self._rows)
        for q in self._dirty:
            tallies = [self._windows.get((q, i)) for i in range(len(WINDOWS))]
            if all(t is None for t in tallies):
                self._rows.pop(q, None)
                continue
            self._rows[q] = tuple(
                _row(name, span, t or Tally(), cov)
                for (name, span), t, cov in zip(WINDOWS, tallies, covered, strict=True)
            )
        self._dirty.clear()
        return dict(self._rows)


def _row(name: str, span: float, t: Tally, covered: float) -> QueueWindow:
    wait50, wait95 = percentiles(t.waits, (0.5, 0.95))
    run50, run95 = percentiles(t.runs, (0.5, 0.95))
    return QueueWindow(
        window=name,
        window_s=span,
        completed=t.success,
        failed=t.error,
        per_minute=round((t.success + t.error) / (max(covered, 60.0) / 60), 3),
        wait_p50_s=wait50,
        wait_p95_s=wait95,
        run_p50_s=run50,
        run_p95_s=run95,
        covered_s=round(covered, 1),
    )
