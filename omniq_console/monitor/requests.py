"""Request accounting: what this monitor sent, and what watching costs per hour.

A rate needs a window. ``RequestFigures.requests_per_minute`` and ``cost_per_hour_usd`` stay
None until the samples span ``RATE_MIN_WINDOW_S`` (60 s), or until ``RATE_MIN_POLLS`` (3) polls
span at least ``RATE_SHORT_WINDOW_S`` (30 s): one poll extrapolated to a minute said
"10,531 req/min" on the first frame. While paused the monitor sends nothing: no live cost.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

from ..backend.storeapi import FAILURE_CLASSES, REQUEST_KINDS, RequestStats
from .snapshot import RequestFigures

CLASS_A_USD = 0.05 / 10_000
"""GCS Class A operations (list, write), standard storage, per request."""
CLASS_B_USD = 0.004 / 10_000
"""GCS Class B operations (get), standard storage, per request."""
PUBSUB_USD_PER_TIB = 40.0
"""Pub/Sub message delivery, per TiB (the first 10 GiB a month are free); each pull is billed
at least 1 KB per message batch."""
RATE_WINDOW_S = 600.0
RATE_MIN_WINDOW_S = 60.0
RATE_SHORT_WINDOW_S = 30.0
RATE_MIN_POLLS = 3


class RateSample(NamedTuple):
    at: float  # monotonic seconds
    total: int
    class_a: int
    class_b: int


def add_into(total: RequestStats, delta: RequestStats) -> None:
    for kind in REQUEST_KINDS:
        total.count[kind] += delta.count[kind]
        total.errors[kind] += delta.errors[kind]
        total.seconds[kind] += delta.seconds[kind]
    for failure in FAILURE_CLASSES:
        total.failures[failure] += delta.failures[failure]
    total.retries += delta.retries
    total.conflicts += delta.conflicts
    total.latencies.extend(delta.latencies)
    total.sampled += delta.sampled


def latency_percentiles(
    samples: Iterable[tuple[str, float]],
) -> tuple[dict[str, float], dict[str, float]]:
    """p50 and p95 in ms by request kind, over ``(kind, seconds)`` samples (nearest rank)."""
    by_kind: dict[str, list[float]] = {}
    for kind, seconds in samples:
        by_kind.setdefault(kind, []).append(seconds)
    p50: dict[str, float] = {}
    p95: dict[str, float] = {}
    for kind, values in sorted(by_kind.items()):
        values.sort()
        p50[kind] = round(_rank(values, 0.50) * 1000, 2)
        p95[kind] = round(_rank(values, 0.95) * 1000, 2)
    return p50, p95


def _rank(sorted_values: list[float], q: float) -> float:
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


class RequestMeter:
    """Counts a store's requests while the monitor has work in flight (overlapping polls and
    details are counted once), and turns samples into rates."""

    def __init__(
        self, stats: Callable[[], RequestStats], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._stats = stats
        self._clock = clock
        self._totals = RequestStats()
        self._active = 0
        self._start: RequestStats | None = None
        self._samples: deque[RateSample] = deque(maxlen=2000)
        self.last_poll_requests = 0
        self.last_poll_ms = 0.0

    @contextlib.contextmanager
    def metered(self) -> Iterator[None]:
        if self._active == 0:
            self._start = self._stats().copy()
        self._active += 1
        try:
            yield
        finally:
            self._active -= 1
            if self._active == 0 and self._start is not None:
                add_into(self._totals, self._stats().since(self._start))
                self._start = None

    def totals(self) -> RequestStats:
        totals = self._totals.copy()
        totals.latencies.extend(self._totals.latencies)  # a copy leaves them behind
        if self._start is not None:
            add_into(totals, self._stats().since(self._start))
        return totals

    def sample(self) -> None:
        """Record the cumulative totals after a poll (GCS requests only: Pub/Sub is priced by
        bytes delivered, see ``PUBSUB_USD_PER_TIB``)."""
        t = self.totals()
        self._samples.append(
            RateSample(
                self._clock(),
                t.total,
                t.count["list"] + t.count["write"],
                t.count["get"] + t.count["bucket"],
            )
        )

    def reset_window(self) -> None:
        """Forget the samples: after a pause the old rate says nothing about the next one."""
        self._samples.clear()

    def figures(
        self, *, paused: bool, cache_hits: int = 0, cache_misses: int = 0
    ) -> RequestFigures:
        """The totals, rates and price; latency percentiles over the monitor's latest
        ``LATENCY_SAMPLES`` requests; ``cache_*``: the body cache's counters, passed through."""
        t = self.totals()
        seconds = sum(t.seconds.values())
        now = self._clock()
        samples = [s for s in self._samples if now - s.at <= RATE_WINDOW_S]
        span = samples[-1].at - samples[0].at if len(samples) >= 2 else 0.0
        has_window = span >= RATE_MIN_WINDOW_S or (
            len(samples) >= RATE_MIN_POLLS and span >= RATE_SHORT_WINDOW_S
        )
        per_min: float | None = None
        cost: float | None = None
        if has_window and not paused:
            first, last = samples[0], samples[-1]
            minutes = span / 60
            per_min = round((last.total - first.total) / minutes, 2)
            per_a = (last.class_a - first.class_a) / minutes
            per_b = (last.class_b - first.class_b) / minutes
            cost = round(60 * (per_a * CLASS_A_USD + per_b * CLASS_B_USD), 6)
        p50, p95 = latency_percentiles(t.latencies)
        return RequestFigures(
            total=t.total,
            by_kind={k: t.count[k] for k in REQUEST_KINDS},
            errors=sum(t.errors.values()),
            retries=t.retries,
            last_poll_requests=self.last_poll_requests,
            last_poll_ms=round(self.last_poll_ms, 1),
            mean_latency_ms=round(seconds / t.total * 1000, 2) if t.total else 0.0,
            requests_per_minute=per_min,
            cost_per_hour_usd=cost,
            window_s=round(span, 1),
            paused=paused,
            latency_p50_ms=p50,
            latency_p95_ms=p95,
            errors_by_status=dict(t.failures),
            cache_hits=cache_hits,
            cache_misses=cache_misses,
        )
