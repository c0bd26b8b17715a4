"""Monitoring that scales with changes: the change feed (Pub/Sub) beside listing mode.

For each size, in a fresh process per mode (so peak RSS and the collector are each mode's
own, with the console's GC thresholds): one cold poll, then warm polls each after 1% of the
tasks changed (claims and completions, with their event batch), then, up to 100,000 tasks, the
live run loop at a 2 s interval for ``LIVE_S`` seconds while small changes keep coming.

Everything runs against the in-memory GCS stand-in (``benchmarks/standin.py``: its own process
on loopback, the object model of docs/architecture.md, compact JSON as with
``prettyPrint=false``), which also answers the Pub/Sub pull/acknowledge REST calls with GCS
notifications of every change, so the monitor's real ObjectStore and its real gcloud-aio-pubsub
client do the work: request counts are exact, CPU and loop blocks are the client's own.
The emulators cannot hold 100,000+ objects (docs/architecture.md, "Layers").

    python -m benchmarks.changes [--sizes 10000,100000,1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import urllib.request
from functools import partial
from typing import Any

from .common import ROOT, LoopLagProbe, Table, log, machine_line, save_raw
from .ui import CLI_GC_THRESHOLDS

SIZES = (10_000, 100_000, 1_000_000)
MODES = ("listing", "pubsub")
WARM_POLLS = 3
LIVE_S = 30.0
LIVE_FRACTION = 0.001
LIVE_MAX_TASKS = 100_000
INTERVAL = 2.0
SUBSCRIPTION = "projects/bench/subscriptions/console"
CLASS_A_USD = 0.05 / 10_000
CLASS_B_USD = 0.004 / 10_000
PUBSUB_USD_PER_BYTE = 40.0 / 2**40


def _reached(target: int, feed: Any) -> bool:
    return bool(feed.received >= target)


def _post(url: str) -> dict[str, Any]:
    request = urllib.request.Request(url, method="POST")
    with urllib.request.urlopen(request, timeout=600) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


async def _change(url: str, fraction: float) -> dict[str, Any]:
    return await asyncio.to_thread(_post, f"{url}/_bench/change?fraction={fraction}")


async def measure(n: int, mode: str) -> dict[str, Any]:
    """One size in one mode (call in a fresh process)."""
    from omniq_console.backend.gcs import GCSBackend
    from omniq_console.monitor import Monitor, Snapshot

    from .standin import server

    gc.set_threshold(*CLI_GC_THRESHOLDS)
    out: dict[str, Any] = {"n": n, "mode": mode}
    with server(n, bucket="standin") as url:
        if mode == "pubsub":
            await asyncio.to_thread(_post, f"{url}/_bench/notify?on=1")
        backend = GCSBackend("standin", endpoint_url=url, token="anon")
        async with backend:
            store = backend.store
            monitor = Monitor(
                backend,
                interval=INTERVAL,
                poll_timeout=3600.0,
                subscription=SUBSCRIPTION if mode == "pubsub" else None,
                pubsub_api_root=f"{url}/v1",
            )
            started = time.perf_counter()
            first = await monitor.poll()
            out["cold_s"] = round(time.perf_counter() - started, 2)
            out["changes"] = first.changes
            warm: list[dict[str, float]] = []
            for _ in range(WARM_POLLS):
                changed = await _change(url, 0.01)
                feed = monitor.feed
                if feed is not None:
                    target = feed.received + changed["notified"]
                    async with asyncio.timeout(120):
                        await feed.wait_until(partial(_reached, target))
                before = store.stats.copy()
                pulls = (feed.pulls + feed.ack_calls) if feed is not None else 0
                probe = LoopLagProbe()
                probe.start()
                cpu = time.process_time()
                snap = await monitor.poll()
                cpu = time.process_time() - cpu
                await probe.stop()
                delta = store.stats.since(before)
                warm.append(
                    {
                        "requests": delta.total,
                        "lists": delta.count["list"],
                        "gets": delta.count["get"],
                        "pubsub_calls": ((feed.pulls + feed.ack_calls) - pulls) if feed else 0,
                        "cpu_ms": cpu * 1000,
                        "block_ms": probe.worst * 1000,
                        "messages": changed["notified"],
                    }
                )
            out["warm"] = warm
            out["changes_live"] = snap.changes
            out["feed_bytes"] = monitor.feed.received_bytes if monitor.feed else 0
            out["feed_messages"] = monitor.feed.received if monitor.feed else 0
            out["effective_interval_s"] = monitor.effective_interval
            if n <= LIVE_MAX_TASKS:
                out.update(await _live(monitor, url, Snapshot))
            await monitor.aclose()
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


async def _live(monitor: Any, url: str, snapshot_type: type) -> dict[str, Any]:
    """The run loop for ``LIVE_S``: the longest loop block, and write-to-screen latency (a
    change's POST to the first published snapshot whose counts moved)."""
    seen = asyncio.Event()
    last: list[tuple[int, int]] = []

    def on_snapshot(snap: Any) -> None:
        key = (snap.tasks["running"], snap.tasks["completed"])
        if last and key != last[-1]:
            seen.set()
        last.append(key)

    monitor.subscribe(on_snapshot)
    probe = LoopLagProbe()
    probe.start()
    runner = asyncio.create_task(monitor.run())
    latencies: list[float] = []
    deadline = time.monotonic() + LIVE_S
    polls_before = len(last)
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        seen.clear()
        t0 = time.perf_counter()
        await _change(url, LIVE_FRACTION)
        try:
            async with asyncio.timeout(60):
                await seen.wait()
        except TimeoutError:
            continue
        latencies.append(time.perf_counter() - t0)
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)
    await probe.stop()
    latencies.sort()
    p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))] if latencies else None
    return {
        "live_block_ms": probe.worst * 1000,
        "live_blocks_over_50ms": probe.over(0.05),
        "latency_p95_s": p95,
        "latency_n": len(latencies),
        "live_snapshots": len(last) - polls_before,
    }


def _run_one(n: int, mode: str) -> dict[str, Any]:
    """``measure`` in a child process (its own RSS, its own collector)."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.changes", "--one", str(n), mode],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"changes {n} {mode} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def _per_hour(r: dict[str, Any], interval: float) -> float:
    polls = 3600 / interval
    lists = _median(r["warm"], "lists")
    gets = _median(r["warm"], "gets")
    usd = polls * (lists * CLASS_A_USD + gets * CLASS_B_USD)
    if r["feed_messages"]:
        usd += (
            polls
            * _median(r["warm"], "messages")
            * r["feed_bytes"]
            / r["feed_messages"]
            * (PUBSUB_USD_PER_BYTE)
        )
    return usd


def tables(results: list[dict[str, Any]]) -> list[Table]:
    by = {(r["n"], r["mode"]): r for r in results}
    sizes = sorted({r["n"] for r in results})
    table = Table(
        "Monitoring by changes: Pub/Sub feed beside listing mode (warm polls at 1% changed)",
        ("tasks", "mode", "requests/poll", "CPU ms/poll", "loop block ms (poll)",
         "live loop block ms", "peak RSS MB", "write-to-screen p95 s", "$/hour at 2 s"),
    )  # fmt: skip
    for n in sizes:
        for mode in MODES:
            r = by.get((n, mode))
            if r is None:
                continue
            table.add(
                f"{n:,}",
                "Pub/Sub" if mode == "pubsub" else "listing",
                f"{_median(r['warm'], 'requests'):.0f}"
                + (
                    f" (+{_median(r['warm'], 'pubsub_calls'):.0f} Pub/Sub)"
                    if mode == "pubsub"
                    else ""
                ),
                f"{_median(r['warm'], 'cpu_ms'):.0f}",
                f"{max(w['block_ms'] for w in r['warm']):.0f}",
                f"{r['live_block_ms']:.0f}" if "live_block_ms" in r else "-",
                f"{r['peak_rss_mb']:.0f}",
                f"{r['latency_p95_s']:.2f}" if r.get("latency_p95_s") is not None else "-",
                f"{_per_hour(r, INTERVAL):.4f}",
            )
    table.notes = [
        "In-memory GCS stand-in in its own process (benchmarks/standin.py) at every size; it "
        "also serves the Pub/Sub pull/acknowledge calls with GCS notifications of each change. "
        f"Warm polls: median of {WARM_POLLS}, each after 1% of the tasks changed. Live: the run "
        f"loop at a {INTERVAL:g} s interval for {LIVE_S:g} s with 0.1% changes every ~0.5 s "
        f"(sizes up to {LIVE_MAX_TASKS:,}). $/hour: Class A $0.05 and Class B $0.004 per 10,000, "
        "Pub/Sub $40/TiB of messages at the benchmark's change rate, at one poll per 2 s "
        "(listing mode stretches its interval on big buckets, so it polls less often than that).",
        "The machine was shared with other work while measuring: CPU and block figures are "
        "upper bounds; request counts are exact.",
    ]
    return [table]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.changes")
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES))
    parser.add_argument("--one", nargs=2, metavar=("N", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        result = asyncio.run(measure(int(args.one[0]), args.one[1]))
        print(json.dumps(result))
        return
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    results = []
    for n in sizes:
        for mode in MODES:
            log(f"changes {n:,} {mode}: starting")
            r = _run_one(n, mode)
            log(f"changes {n:,} {mode}: {json.dumps(r)[:400]}")
            results.append(r)
    save_raw("changes", results)
    print(machine_line())
    for table in tables(results):
        print()
        print(table.markdown())


if __name__ == "__main__":
    main(sys.argv[1:])
