"""Monitoring that scales with changes: the change feed (Pub/Sub) beside listing mode.

For each size, in a fresh process per mode (so peak RSS and the collector are each mode's
own, with the console's GC thresholds): one cold poll (the first listing into the model), then
warm polls each after 1% of the tasks changed (claims and completions, with their event
batch), then the live run loop at a 2 s interval while small changes keep coming (listing
mode up to ``LIVE_LISTING_MAX_TASKS``: its polls at a million tasks take minutes).

A warm poll's CPU and loop block are counted from the change onwards: in feed mode the
messages are pulled and decoded between two polls, by the feed's own task, and that is part
of what a poll costs. Each warm round is two changes and polls: the CPU is the first's, run
without the loop probe (its 200 wake-ups a second cost ~20 ms of CPU a second, up to a fifth
of a poll at 100,000 tasks), the longest block the second's, with it. Write-to-screen is measured in both modes: a change's POST to the first
published snapshot whose counts moved, at least ``LIVE_SAMPLES`` times.

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
import contextlib
import gc
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from functools import partial
from pathlib import Path
from typing import Any

from .common import (
    ROOT,
    GcWatch,
    LoopLagProbe,
    Table,
    checkout,
    log,
    machine_line,
    save_raw,
)
from .ui import CLI_GC_THRESHOLDS

SIZES = (10_000, 100_000, 1_000_000)
MODES = ("listing", "pubsub")
WARM_POLLS = 3
LIVE_S = 30.0
LIVE_SAMPLES = 5
LIVE_MAX_S = 300.0
WRITE_TIMEOUT_S = 120.0
"""A change not on screen after this is counted as this long (and said so in the table)."""
LIVE_FRACTION = 0.001
LIVE_LISTING_MAX_TASKS = 100_000
INTERVAL = 2.0
CHILD_TIMEOUT_S = 1800.0
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


def _report(out: dict[str, Any]) -> None:
    """What is measured so far, as one JSON line (the parent keeps the last one it got, so a
    run stopped at its time limit still says how far it came)."""
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out), flush=True)


async def measure(n: int, mode: str) -> dict[str, Any]:
    """One size in one mode (call in a fresh process)."""
    from omniq_console.backend.gcs import GCSBackend
    from omniq_console.monitor import Monitor, Snapshot

    from .standin import server

    gc.set_threshold(*CLI_GC_THRESHOLDS)
    out: dict[str, Any] = {"n": n, "mode": mode}
    started = time.perf_counter()
    with server(n, bucket="standin") as url:
        out["standin_ready_s"] = round(time.perf_counter() - started, 1)
        _report(out)
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
            started, cpu = time.perf_counter(), time.process_time()
            first = await monitor.poll()
            out["cold_s"] = round(time.perf_counter() - started, 2)
            # Its CPU too: on a shared machine the wall time is mostly the load's.
            out["cold_cpu_s"] = round(time.process_time() - cpu, 2)
            out["changes"] = first.changes
            # What the console does once its first snapshot is on screen (OmniqApp.
            # freeze_long_lived_objects): one full collection, then what is alive now is left
            # out of later full passes.
            gc.collect()
            gc.freeze()
            _report(out)
            warm: list[dict[str, float]] = []
            out["warm"] = warm
            for _ in range(WARM_POLLS):
                cpu = await _warm_poll(monitor, store, url, probe=False)
                blocked = await _warm_poll(monitor, store, url, probe=True)
                warm.append({**cpu, "block_ms": blocked["block_ms"]})
                _report(out)
            feed = monitor.feed
            out["feed_bytes"] = feed.received_bytes if feed else 0
            out["feed_messages"] = feed.received if feed else 0
            out["effective_interval_s"] = monitor.effective_interval
            if mode == "pubsub" or n <= LIVE_LISTING_MAX_TASKS:
                out.update(await _live(monitor, url, Snapshot))
            await monitor.aclose()
    return out


async def _warm_poll(monitor: Any, store: Any, url: str, *, probe: bool) -> dict[str, float]:
    """1% of the tasks change, then one poll. CPU and (with ``probe``) the longest loop block
    are counted from the change on: the feed pulls and decodes the change's messages before
    the poll applies them (in listing mode nothing happens in between but the change's own
    POST)."""
    feed = monitor.feed
    pulls = (feed.pulls + feed.ack_calls) if feed is not None else 0
    lag = LoopLagProbe()
    if probe:
        lag.start()
    with GcWatch() as gcw:
        cpu_from_change = time.process_time()
        # Counted before the change: the feed pulls while the stand-in applies a big change
        # in slices, so messages of this change arrive before its POST returns.
        received = feed.received if feed is not None else 0
        changed = await _change(url, 0.01)
        if feed is not None:
            target = received + changed["notified"]
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                await feed.wait_until(partial(_reached, target))
        before = store.stats.copy()
        cpu_poll = time.process_time()
        await monitor.poll()
        now = time.process_time()
    if probe:
        await lag.stop()
    delta = store.stats.since(before)
    return {
        "requests": delta.total,
        "lists": delta.count["list"],
        "gets": delta.count["get"],
        "pubsub_calls": ((feed.pulls + feed.ack_calls) - pulls) if feed else 0,
        "cpu_ms": (now - cpu_from_change) * 1000,
        "poll_cpu_ms": (now - cpu_poll) * 1000,
        "block_ms": lag.worst * 1000,
        "gc_ms": sum(pause for _, pause in gcw.take()) * 1000,
        "messages": changed["notified"],
    }


async def _live(monitor: Any, url: str, snapshot_type: type) -> dict[str, Any]:
    """The run loop for at least ``LIVE_S`` and ``LIVE_SAMPLES`` changes (at most
    ``LIVE_MAX_S``): the longest loop block, and write-to-screen latency (a change's POST to
    the first published snapshot whose counts moved; one not seen within
    ``WRITE_TIMEOUT_S`` counts as that long)."""
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
    timeouts = 0
    started = time.monotonic()
    polls_before = len(last)
    while (
        time.monotonic() - started < LIVE_S or len(latencies) < LIVE_SAMPLES
    ) and time.monotonic() - started < LIVE_MAX_S:
        await asyncio.sleep(0.5)
        seen.clear()
        t0 = time.perf_counter()
        await _change(url, LIVE_FRACTION)
        try:
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                await seen.wait()
        except TimeoutError:
            timeouts += 1
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
        "latency_timeouts": timeouts,
        "live_snapshots": len(last) - polls_before,
    }


def _run_one(
    n: int, mode: str, timeout: float = CHILD_TIMEOUT_S, code: Path | None = None
) -> dict[str, Any]:
    """``measure`` in a child process (its own RSS, its own collector), stopped after
    ``timeout`` seconds with its stand-in (they share a process group): the result is then
    what it had measured by that time, with ``stopped_after_s`` set. ``code``: a directory
    whose ``omniq_console`` the monitor runs instead of this checkout's (a baseline)."""
    path = f"{code}{os.pathsep}{ROOT}" if code is not None else str(ROOT)
    # -P: ``-m`` would put the working directory (this checkout) before PYTHONPATH, and a
    # baseline would measure this checkout's code.
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "benchmarks.changes", "--one", str(n), mode],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": path},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        peak = _peak_rss_mb(proc.pid)  # its high-water mark so far, read before it is stopped
        os.killpg(proc.pid, signal.SIGTERM)
        stdout, stderr = proc.communicate()
        lines = stdout.strip().splitlines()
        partial_result: dict[str, Any] = json.loads(lines[-1]) if lines else {"n": n, "mode": mode}
        partial_result["stopped_after_s"] = timeout
        if peak is not None:
            partial_result["peak_rss_mb"] = max(peak, partial_result.get("peak_rss_mb", 0.0))
        return partial_result
    if proc.returncode != 0:
        raise RuntimeError(f"changes {n} {mode} failed:\n{stderr[-3000:]}")
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return result


def _peak_rss_mb(pid: int) -> float | None:
    """A live process's peak RSS (VmHWM), or None when it cannot be read."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def _per_hour(r: dict[str, Any], interval: float) -> float:
    polls = 3600 / interval
    lists = _median(r["warm"], "lists")
    gets = _median(r["warm"], "gets")
    usd = polls * (lists * CLASS_A_USD + gets * CLASS_B_USD)
    if r.get("feed_messages"):
        usd += (
            polls
            * _median(r["warm"], "messages")
            * r["feed_bytes"]
            / r["feed_messages"]
            * (PUBSUB_USD_PER_BYTE)
        )
    return usd


def _warm_cell(r: dict[str, Any], key: str, fmt: str = "{:.0f}") -> str:
    return fmt.format(_median(r["warm"], key)) if r.get("warm") else "-"


def _latency_cell(r: dict[str, Any]) -> str:
    p95 = r.get("latency_p95_s")
    if p95 is None:
        return "-"
    timeouts = r.get("latency_timeouts", 0)
    out = f"{p95:.2f} (n={r['latency_n']})"
    return f">= {out}, {timeouts} not shown in {WRITE_TIMEOUT_S:g} s" if timeouts else out


def _cold_cell(r: dict[str, Any]) -> str:
    if "cold_s" in r:
        cpu = f" ({r['cold_cpu_s']:.1f} CPU)" if "cold_cpu_s" in r else ""
        return f"{r['cold_s']:.1f}{cpu}"
    if "stopped_after_s" in r:
        if "standin_ready_s" in r:
            return f"> {r['stopped_after_s'] - r['standin_ready_s']:.0f} (stopped)"
        return f"stopped after {r['stopped_after_s']:.0f} s, stand-in still building"
    return "-"


def tables(results: list[dict[str, Any]]) -> list[Table]:
    by: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for r in results:
        by.setdefault((r["n"], r["mode"]), []).append(r)
    sizes = sorted({r["n"] for r in results})
    table = Table(
        "Monitoring by changes: Pub/Sub feed beside listing mode (warm polls at 1% changed)",
        ("tasks", "mode", "cold start s (of which CPU)", "requests/poll",
         "CPU ms/poll (incl. pull decoding)", "of which poll() ms", "of which GC ms",
         "loop block ms (poll)", "live loop block ms",
         "peak RSS MB", "write-to-screen p95 s", "$/hour at 2 s"),
    )  # fmt: skip
    for n in sizes:
        for mode in MODES:
            for r in by.get((n, mode), []):
                requests = _warm_cell(r, "requests")
                if mode == "pubsub" and r.get("warm"):
                    requests += f" (+{_median(r['warm'], 'pubsub_calls'):.0f} Pub/Sub)"
                table.add(
                    f"{n:,}",
                    ("Pub/Sub" if mode == "pubsub" else "listing")
                    + (f" (baseline {r['baseline']})" if "baseline" in r else "")
                    + (" (stopped)" if "stopped_after_s" in r else ""),
                    _cold_cell(r),
                    requests,
                    _warm_cell(r, "cpu_ms"),
                    _warm_cell(r, "poll_cpu_ms"),
                    _warm_cell(r, "gc_ms") if r.get("warm") and "gc_ms" in r["warm"][0] else "-",
                    f"{max(w['block_ms'] for w in r['warm']):.0f}" if r.get("warm") else "-",
                    f"{r['live_block_ms']:.0f}" if "live_block_ms" in r else "-",
                    f"{r['peak_rss_mb']:.0f}" if "peak_rss_mb" in r else "-",
                    _latency_cell(r),
                    f"{_per_hour(r, INTERVAL):.4f}" if r.get("warm") else "-",
                )
    table.notes = [
        "In-memory GCS stand-in in its own process (benchmarks/standin.py) at every size; it "
        "also serves the Pub/Sub pull/acknowledge calls with GCS notifications of each change "
        "(redelivered if not acknowledged within 10 s). "
        f"Warm polls: median of {WARM_POLLS}, each after 1% of the tasks changed; CPU and loop "
        "block counted from the change's POST to the poll's end, so the feed's pulling and "
        "decoding of the change's messages is in them ('of which poll()': the poll alone; 'of "
        "which GC': the collector's passes in that span, with what was alive after the cold "
        "poll frozen, as the console does after its first snapshot). The CPU is measured in "
        "a poll without the loop probe (whose wake-ups cost ~20 ms of CPU a second), the "
        "block in the next, with it. "
        f"Cold start: the first poll (the whole listing into the model). Live: the run loop at "
        f"a {INTERVAL:g} s interval for >= {LIVE_S:g} s and >= {LIVE_SAMPLES} changes of 0.1% "
        f"(listing mode up to {LIVE_LISTING_MAX_TASKS:,} tasks); write-to-screen is a change's "
        "POST to the first snapshot whose counts moved. $/hour: Class A $0.05 and Class B "
        "$0.004 per 10,000, Pub/Sub $40/TiB of messages at the benchmark's change rate, at one "
        "poll per 2 s (listing mode stretches its interval on big buckets, so it polls less "
        "often than that). A run stopped at its time limit shows what it measured by then.",
        "The machine was shared with other work while measuring: CPU and block figures are "
        "upper bounds; request counts are exact.",
    ]
    return [table]


def run(
    sizes: list[int],
    modes: list[str] | None = None,
    timeout: float = CHILD_TIMEOUT_S,
    baseline: str | None = None,
) -> list[Table]:
    """Each size in each mode, a child process each (stopped after ``timeout`` s); with
    ``baseline`` (a git ref), each also with the monitor's code as of that ref, in the row
    beside."""
    results = []
    with contextlib.ExitStack() as stack:
        code = stack.enter_context(checkout(baseline)) if baseline else None
        for n in sizes:
            for mode in modes or MODES:
                runs: list[tuple[str | None, Path | None]] = [(None, None)]
                if code is not None:
                    runs.insert(0, (baseline, code))
                for ref, where in runs:
                    label = f"{n:,} {mode}" + (f" at {ref}" if ref else "")
                    log(f"changes {label}: starting")
                    r = _run_one(n, mode, timeout, where)
                    if ref:
                        r["baseline"] = ref
                    log(f"changes {label}: {json.dumps(r)[:400]}")
                    results.append(r)
    save_raw("changes", results)
    return tables(results)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.changes")
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES))
    parser.add_argument("--modes", default=",".join(MODES), help="listing,pubsub or one of them")
    parser.add_argument(
        "--timeout", type=float, default=CHILD_TIMEOUT_S, help="seconds per size and mode"
    )
    parser.add_argument(
        "--baseline", help="a git ref: each run also with the monitor's code as of that ref"
    )
    parser.add_argument("--one", nargs=2, metavar=("N", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        _report(asyncio.run(measure(int(args.one[0]), args.one[1])))
        return
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    modes = [m for m in args.modes.split(",") if m.strip()]
    if unknown := set(modes) - set(MODES):
        parser.error(f"--modes takes {','.join(MODES)}; unknown: {','.join(sorted(unknown))}")
    print(machine_line())
    for table in run(sizes, modes, args.timeout, args.baseline):
        print()
        print(table.markdown())


if __name__ == "__main__":
    main(sys.argv[1:])
