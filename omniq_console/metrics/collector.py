"""The Prometheus view of a snapshot: every figure of the latest ``Snapshot``, read at scrape time.

The collector polls nothing: it reads whatever snapshot its source returns (the running
Monitor's ``latest``), so a scrape costs no request to the bucket and the figures are the ones
the console shows. Metric names start with ``omniq_``; seconds, bytes and ratios are in base
units as Prometheus wants. ``omniq_data_age_seconds`` is measured at scrape time, so it keeps
growing when the monitor stops publishing (a hung poll, a failing bucket): alert on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..models import ScheduleStatus
from ..monitor.snapshot import RequestFigures, Snapshot

SnapshotSource = Callable[[], Snapshot | None]


class SnapshotCollector(Collector):
    """A custom collector over ``source()`` (None before the first snapshot: then only
    ``omniq_monitor_up 0`` is exposed). ``clock`` gives POSIX seconds (tests fix it)."""

    def __init__(self, source: SnapshotSource, clock: Callable[[], float] = time.time) -> None:
        self._source = source
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        snapshot = self._source()
        up = GaugeMetricFamily(
            "omniq_monitor_up",
            "1 when the latest poll of the bucket succeeded, 0 when it failed or none did yet",
        )
        up.add_metric([], 0.0 if snapshot is None or snapshot.stale else 1.0)
        yield up
        if snapshot is None or snapshot.connecting:
            return
        yield from _freshness(snapshot, self._clock())
        yield from _queues(snapshot)
        yield from _tasks(snapshot)
        yield from _workers_and_schedules(snapshot)
        yield from _requests(snapshot.requests)
        yield from _storage(snapshot)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc)
    family.add_metric([], value)
    return family


def _freshness(s: Snapshot, now: float) -> Iterator[Metric]:
    taken = s.taken_at.timestamp()
    yield _gauge(
        "omniq_data_age_seconds",
        "Seconds since the figures were read from the bucket (grows while polls fail)",
        max(0.0, now - taken),
    )
    yield _gauge("omniq_snapshot_timestamp_seconds", "When the figures were read", taken)
    yield _gauge(
        "omniq_snapshot_stale", "1 when the last poll failed and older figures are shown", s.stale
    )
    yield _gauge("omniq_poll_interval_seconds", "Seconds between polls", s.poll_interval_s)


def _queues(s: Snapshot) -> Iterator[Metric]:
    labels = ["queue"]
    pending = GaugeMetricFamily("omniq_queue_pending", "Tasks ready to run now", labels=labels)
    delayed = GaugeMetricFamily(
        "omniq_queue_delayed", "Tasks waiting for their run_at", labels=labels
    )
    depth = GaugeMetricFamily("omniq_queue_depth", "Pending plus delayed tasks", labels=labels)
    running = GaugeMetricFamily("omniq_queue_running", "Tasks running", labels=labels)
    oldest = GaugeMetricFamily(
        "omniq_queue_oldest_pending_age_seconds",
        "Age of the oldest task ready to run (0 when none waits)",
        labels=labels,
    )
    paused = GaugeMetricFamily(
        "omniq_queue_paused", "1 when workers do not claim from the queue", labels=labels
    )
    window_labels = ["queue", "window"]
    per_minute = GaugeMetricFamily(
        "omniq_queue_throughput_per_minute",
        "Tasks completed per minute over the window",
        labels=window_labels,
    )
    completed = GaugeMetricFamily(
        "omniq_queue_completed", "Tasks completed within the window", labels=window_labels
    )
    failed = GaugeMetricFamily(
        "omniq_queue_failed", "Tasks failed within the window", labels=window_labels
    )
    for q in s.queues:
        name = [q.name]
        pending.add_metric(name, q.pending)
        delayed.add_metric(name, q.delayed)
        depth.add_metric(name, q.pending + q.delayed)
        running.add_metric(name, q.running)
        oldest.add_metric(name, q.oldest_pending_age_s or 0.0)
        paused.add_metric(name, q.paused)
        for w in q.throughput:
            per_minute.add_metric([q.name, w.window], w.per_minute)
            completed.add_metric([q.name, w.window], w.completed)
            failed.add_metric([q.name, w.window], w.failed)
    yield from (pending, delayed, depth, running, oldest, paused, per_minute, completed, failed)


def _tasks(s: Snapshot) -> Iterator[Metric]:
    tasks = GaugeMetricFamily("omniq_tasks", "Tasks by status", labels=["status"])
    for status, count in s.tasks.items():
        tasks.add_metric([status], count)
    results = GaugeMetricFamily("omniq_results", "Result records by status", labels=["status"])
    for status, count in s.results.items():
        results.add_metric([status], count)
    by_type = GaugeMetricFamily(
        "omniq_failed_tasks", "Failed results in the bucket by error type", labels=["error_type"]
    )
    for error_type, count in s.failures_by_type.items():
        by_type.add_metric([error_type], count)
    yield from (tasks, results, by_type)
    yield _gauge(
        "omniq_failure_ratio",
        "Errors / (successes + errors) over omniq_failure_window_seconds",
        s.failure_rate,
    )
    yield _gauge(
        "omniq_failure_window_seconds", "The window omniq_failure_ratio covers", s.outcome_window_s
    )
    yield _gauge(
        "omniq_stuck_tasks", "Running tasks whose lease expired (worker dead or hung)", len(s.stuck)
    )
    yield _gauge("omniq_unreadable_objects", "Objects that could not be parsed", len(s.unreadable))


def _workers_and_schedules(s: Snapshot) -> Iterator[Metric]:
    workers = GaugeMetricFamily(
        "omniq_workers",
        "Workers by state: alive (fresh heartbeat), dead (says it runs, heartbeat stale)",
        labels=["state"],
    )
    workers.add_metric(["alive"], sum(w.alive for w in s.workers))
    workers.add_metric(["dead"], sum(w.dead for w in s.workers))
    yield workers
    schedules = GaugeMetricFamily("omniq_schedules", "Schedules by status", labels=["status"])
    statuses: dict[str, int] = {}
    for row in s.schedules:
        statuses[row.status] = statuses.get(row.status, 0) + 1
    for status, count in sorted(statuses.items()):
        schedules.add_metric([status], count)
    yield schedules
    yield _gauge(
        "omniq_schedules_overdue",
        "Active schedules whose next run is past its grace period",
        sum(row.overdue for row in s.schedules),
    )
    yield _gauge(
        "omniq_schedules_paused",
        "Paused schedules",
        statuses.get(ScheduleStatus.PAUSED.value, 0),
    )


def _requests(r: RequestFigures) -> Iterator[Metric]:
    total = CounterMetricFamily(
        "omniq_monitor_requests", "GCS requests the monitor sent, by kind", labels=["kind"]
    )
    for kind, count in r.by_kind.items():
        total.add_metric([kind], count)
    yield total
    errors = CounterMetricFamily(
        "omniq_monitor_request_errors",
        "The monitor's failed GCS requests by status (412, 429, 5xx, 4xx, network)",
        labels=["status"],
    )
    for status, count in r.errors_by_status.items():
        errors.add_metric([status], count)
    yield errors
    retries = CounterMetricFamily("omniq_monitor_request_retries", "Retried requests")
    retries.add_metric([], r.retries)
    yield retries
    latency = Metric(
        "omniq_monitor_request_latency_seconds",
        "Latency of the monitor's latest requests by kind (quantiles 0.5 and 0.95)",
        "summary",
    )
    for kind in r.latency_p50_ms:
        labels = {"kind": kind}
        latency.add_sample(
            latency.name, {**labels, "quantile": "0.5"}, r.latency_p50_ms[kind] / 1e3
        )
        if kind in r.latency_p95_ms:
            value = r.latency_p95_ms[kind] / 1e3
            latency.add_sample(latency.name, {**labels, "quantile": "0.95"}, value)
        latency.add_sample(f"{latency.name}_count", labels, r.by_kind.get(kind, 0))
    yield latency
    if r.requests_per_minute is not None:
        yield _gauge(
            "omniq_monitor_requests_per_minute",
            "Requests per minute over the rate window",
            r.requests_per_minute,
        )
    if r.cost_per_hour_usd is not None:
        yield _gauge(
            "omniq_monitor_cost_usd_per_hour",
            "Estimated price of the monitor's requests per hour, in US dollars",
            r.cost_per_hour_usd,
        )
    yield _gauge(
        "omniq_monitor_last_poll_seconds", "Duration of the last poll", r.last_poll_ms / 1e3
    )
    yield _gauge(
        "omniq_monitor_last_poll_requests", "Requests of the last poll", r.last_poll_requests
    )
    hits = CounterMetricFamily("omniq_body_cache_hits", "Bodies served from the monitor's cache")
    hits.add_metric([], r.cache_hits)
    misses = CounterMetricFamily("omniq_body_cache_misses", "Bodies the monitor had to read")
    misses.add_metric([], r.cache_misses)
    yield from (hits, misses)
    looked_up = r.cache_hits + r.cache_misses
    if looked_up:
        yield _gauge(
            "omniq_body_cache_hit_ratio",
            "Hits / (hits + misses) since start",
            r.cache_hits / looked_up,
        )


def _storage(s: Snapshot) -> Iterator[Metric]:
    objects = GaugeMetricFamily(
        "omniq_storage_objects", "Objects under each prefix of the layout", labels=["prefix"]
    )
    size = GaugeMetricFamily(
        "omniq_storage_bytes", "Bytes under each prefix of the layout", labels=["prefix"]
    )
    for usage in s.storage:
        objects.add_metric([usage.prefix], usage.objects)
        size.add_metric([usage.prefix], usage.bytes)
    yield from (objects, size)
