"""Prometheus metrics: the snapshot's figures, their exposition, the command and the alert rules.

The exposition is read back with ``prometheus_client.parser`` (the client's own parser) and
compared with the snapshot it came from, on the emulator. The alert rules are loaded (and
unit-tested) by ``promtool`` and their metric names checked against the exposition.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from waiting import wait_until_sync

from omniq_console.backend.errors import ConflictError
from omniq_console.backend.gcs import GCSBackend
from omniq_console.backend.storeapi import FAILURE_CLASSES, ObjectInfo, RequestStats, failure_class
from omniq_console.demo.emulator import free_port
from omniq_console.metrics import SnapshotCollector, registry_for
from omniq_console.models import Task
from omniq_console.monitor.monitor import Monitor
from omniq_console.monitor.requests import RequestMeter
from omniq_console.monitor.snapshot import Snapshot
from omniq_console.monitor.usage import StorageTally

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "examples" / "prometheus-alerts.yml"
ALERT_TESTS = Path(__file__).with_name("prometheus_alerts_test.yml")
PROMQL_WORDS = frozenset(
    {
        *("and", "or", "unless", "on", "by", "without", "ignoring", "group_left"),
        *("sum", "rate", "delta", "deriv", "absent", "max", "min", "count", "bool"),
    }
)


def exposed(snapshot: Snapshot | None, now: float) -> dict[str, list[Sample]]:
    """The collector's exposition of ``snapshot``, parsed back: samples by family name."""
    text = generate_latest(registry_for(SnapshotCollector(lambda: snapshot, clock=lambda: now)))
    return {f.name: f.samples for f in text_string_to_metric_families(text.decode())}


def value(
    families: dict[str, list[Sample]], family: str, sample: str | None = None, **labels: str
) -> float:
    (match,) = [
        s
        for s in families[family]
        if (sample is None or s.name == sample)
        and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    return match.value


async def _seed(backend: GCSBackend) -> list[str]:
    ids = []
    for priority in range(3):
        task = Task(func="app:send", queue_name="emails", priority=priority)
        ids.append(await backend.async_task_storage.enqueue(task))
    return ids


def test_failed_attempts_are_classed_by_status() -> None:
    assert [failure_class(s) for s in (None, 412, 429, 500, 503, 404, 400)] == [
        "network", "412", "429", "5xx", "5xx", "4xx", "4xx",
    ]  # fmt: skip
    stats = RequestStats()
    stats.record("list", 0.010, False)
    before = stats.copy()
    stats.record("get", 0.020, True, "4xx")
    stats.record("write", 0.030, False, "412")
    delta = stats.since(before)
    assert list(delta.latencies) == [("get", 0.020), ("write", 0.030)]
    assert delta.failures == {**dict.fromkeys(FAILURE_CLASSES, 0), "4xx": 1, "412": 1}


def test_the_meter_gives_percentiles_by_kind_over_the_monitors_own_requests() -> None:
    stats = RequestStats()
    meter = RequestMeter(lambda: stats)
    stats.record("get", 5.0, False)  # not the monitor's: sent outside metered()
    with meter.metered():
        for ms in range(1, 101):
            stats.record("list", ms / 1000, False)
        stats.record("get", 0.002, True, "5xx")
    figures = meter.figures(paused=False, cache_hits=3, cache_misses=1)
    assert figures.latency_p50_ms == {"get": 2.0, "list": 50.0}
    assert figures.latency_p95_ms == {"get": 2.0, "list": 95.0}
    assert figures.errors_by_status["5xx"] == 1
    assert (figures.cache_hits, figures.cache_misses) == (3, 1)


def test_storage_is_replaced_only_by_a_complete_walk() -> None:
    def infos(*sizes: int) -> list[ObjectInfo]:
        return [ObjectInfo(f"omniq/tasks/{n}", 1, size, None, {}) for n, size in enumerate(sizes)]

    tally = StorageTally("omniq/")
    tally.page("omniq/tasks/", infos(10, 20))
    assert [(u.prefix, u.objects, u.bytes) for u in tally.rows()] == [("tasks/", 2, 30)]
    tally.page("omniq/tasks/", infos(1), first=True, last=False)
    assert tally.rows()[0].bytes == 30  # a walk in progress changes nothing yet
    tally.page(
        "omniq/tasks/",
        [*infos(2, 3), ObjectInfo("omniq/tasks/", 1, 0, None, {})],
        first=False,
        last=True,
    )
    assert [(u.objects, u.bytes) for u in tally.rows()] == [(3, 6)]


async def test_the_snapshot_carries_latency_errors_cache_and_storage(backend: GCSBackend) -> None:
    ids = await _seed(backend)
    monitor = Monitor(backend)
    await monitor.poll(raise_errors=True)  # the model learns the generations
    await monitor.task_bodies(ids)
    await monitor.task_bodies(ids)  # the same generations: served from the cache
    await monitor.task_detail("no-such-task")  # its reads answer 404
    snapshot = await monitor.poll(raise_errors=True)
    figures = snapshot.requests
    assert (figures.cache_hits, figures.cache_misses) == (3, 3)
    assert figures.errors_by_status["4xx"] >= 2
    assert set(figures.latency_p50_ms) >= {"list", "get"}
    assert all(
        figures.latency_p95_ms[k] >= figures.latency_p50_ms[k] > 0 for k in figures.latency_p50_ms
    )
    listed = await backend.store.list(backend.layout.tasks)
    usage = {u.prefix: u for u in snapshot.storage}
    assert (usage["tasks/"].objects, usage["tasks/"].bytes) == (3, sum(i.size for i in listed))
    assert usage["queues/"].objects == 3


async def test_a_lost_precondition_counts_as_412(backend: GCSBackend) -> None:
    store = backend.store
    written = await store.write("omniq/probe.json", b"{}")
    with pytest.raises(ConflictError):
        await store.write("omniq/probe.json", b"{}", if_generation_match=written.generation + 1)
    assert store.stats.failures["412"] == 1


async def test_the_exposition_equals_the_snapshot(backend: GCSBackend) -> None:
    await _seed(backend)
    monitor = Monitor(backend)
    await monitor.poll(raise_errors=True)
    snapshot = await monitor.poll(raise_errors=True)
    now = snapshot.taken_at.timestamp() + 7.5
    got = exposed(snapshot, now)
    (emails,) = [q for q in snapshot.queues if q.name == "emails"]
    assert value(got, "omniq_monitor_up") == 1
    assert value(got, "omniq_data_age_seconds") == pytest.approx(7.5)
    assert value(got, "omniq_queue_pending", queue="emails") == emails.pending == 3
    assert value(got, "omniq_queue_depth", queue="emails") == emails.pending + emails.delayed
    assert value(got, "omniq_queue_oldest_pending_age_seconds", queue="emails") == pytest.approx(
        emails.oldest_pending_age_s
    )
    assert value(got, "omniq_queue_paused", queue="emails") == 0
    for status, count in snapshot.tasks.items():
        assert value(got, "omniq_tasks", status=status) == count
    assert value(got, "omniq_workers", state="alive") == 0
    assert value(got, "omniq_stuck_tasks") == len(snapshot.stuck)
    assert value(got, "omniq_failure_ratio") == snapshot.failure_rate
    figures = snapshot.requests
    for kind, count in figures.by_kind.items():
        assert (
            value(got, "omniq_monitor_requests", "omniq_monitor_requests_total", kind=kind) == count
        )
    for status, count in figures.errors_by_status.items():
        assert value(got, "omniq_monitor_request_errors", status=status) == count
    for kind, p50 in figures.latency_p50_ms.items():
        latency = "omniq_monitor_request_latency_seconds"
        assert value(got, latency, latency, kind=kind, quantile="0.5") == pytest.approx(p50 / 1000)
        p95 = value(got, latency, latency, kind=kind, quantile="0.95")
        assert p95 == pytest.approx(figures.latency_p95_ms[kind] / 1000)
    for usage in snapshot.storage:
        assert value(got, "omniq_storage_objects", prefix=usage.prefix) == usage.objects
        assert value(got, "omniq_storage_bytes", prefix=usage.prefix) == usage.bytes


def test_a_stale_snapshot_says_so_and_none_yet_is_down() -> None:
    assert exposed(None, 0.0) == {"omniq_monitor_up": [Sample("omniq_monitor_up", {}, 0.0)]}
    taken = datetime(2026, 12, 7, tzinfo=UTC)
    stale = Snapshot(bucket="b", prefix="omniq/", taken_at=taken, stale=True, error="down")
    got = exposed(stale, (taken + timedelta(minutes=5)).timestamp())
    assert value(got, "omniq_monitor_up") == 0
    assert value(got, "omniq_snapshot_stale") == 1
    assert value(got, "omniq_data_age_seconds") == 300


def _metric_names(expr: str) -> set[str]:
    names = set(re.findall(r"\b(omniq_[a-z_]+)", expr))
    return {re.sub(r"_total$", "", n) for n in names}


def test_every_metric_an_alert_uses_is_exposed(backend: GCSBackend) -> None:
    import yaml

    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    alerts = {r["alert"] for r in rules}
    assert {
        *("OmniQQueueBacklogGrowing", "OmniQOldestPendingTooOld", "OmniQFailureRateSpike"),
        *("OmniQNoLiveWorker", "OmniQScheduleOverdue", "OmniQMonitoringStale"),
    } <= alerts
    snapshot = Snapshot(bucket="b", prefix="omniq/", taken_at=datetime.now(UTC))
    names = set(exposed(snapshot, time.time()))
    for rule in rules:
        used = _metric_names(rule["expr"])
        assert used, rule["alert"]
        assert used <= names, f"{rule['alert']} uses {sorted(used - names)}, not exposed"


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        message = "promtool is not installed (Debian: apt-get install prometheus)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + "; .ci/run installs it")  # CI proves the rules, never skips
        pytest.skip(message)
    return path


def test_promtool_loads_the_alert_rules() -> None:
    result = subprocess.run(
        [_promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_fires_the_alerts_on_series_shaped_like_the_exposition() -> None:
    result = subprocess.run(
        [_promtool(), "test", "rules", str(ALERT_TESTS)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ALERT_TESTS.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def metrics_command(bucket: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "omniq_console", "metrics", "--bucket", bucket, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _scrape(proc: subprocess.Popen[str], port: int, until_up: bool) -> dict[str, list[Sample]]:
    def scraped() -> dict[str, list[Sample]] | None:
        if proc.poll() is not None:
            pytest.fail(f"metrics exited with {proc.returncode}: {proc.stderr.read()}")  # type: ignore[union-attr]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                families = {
                    f.name: f.samples for f in text_string_to_metric_families(r.read().decode())
                }
        except (urllib.error.URLError, ConnectionError):
            return None
        return families if not until_up or value(families, "omniq_monitor_up") == 1 else None

    return wait_until_sync(scraped, "the metrics endpoint up", within=60, every=0.2)


async def test_the_metrics_command_serves_the_bucket(
    backend: GCSBackend, metrics_command: tuple[subprocess.Popen[str], int]
) -> None:
    await _seed(backend)
    proc, port = metrics_command
    got = _scrape(proc, port, until_up=True)
    assert value(got, "omniq_queue_pending", queue="emails") == 3
    assert value(got, "omniq_storage_objects", prefix="tasks/") == 3
    assert value(got, "omniq_monitor_requests", "omniq_monitor_requests_total", kind="write") == 0
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert "serving metrics of gs://" in proc.stdout.read()  # type: ignore[union-attr]
    assert "Traceback" not in proc.stderr.read()  # type: ignore[union-attr]


def test_the_metrics_command_names_a_busy_port(bucket: str) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "omniq_console",
                "metrics",
                "--bucket",
                bucket,
                "--port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"omniq-console: error: cannot listen on 127.0.0.1:{port}: address already in use"
    ]
