"""The oracle, run longer than CI does, and the monitor's memory on a churning bucket.

``python -m benchmarks.oracle --steps 2000 --seeds 3``: the random fleet of ``tests/oracle.py``
on a fresh emulator bucket per seed, the Monitor's snapshot compared with the ground truth after
every step (listing mode; ``--feed`` adds the change-feed mode on the Pub/Sub emulator). Prints
the first mismatch of a seed (step, field, expected, shown) or that none was found, and the
steps per second.

``python -m benchmarks.oracle --memory 5``: the same fleet churning (the bucket stays small:
retention deletes final tasks) while one Monitor polls it after every step, for that many
minutes of wall time; prints the process's RSS each minute and, with ``--trace``, the allocation
sites that grew most between the first minute and the last (tracemalloc).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

from .common import ROOT, emulator, log, machine_line

sys.path.insert(0, str(ROOT / "tests"))

from oracle import Fleet, ground_truth, monitor_for, run_oracle
from pubsub_fixtures import QUIET_PULL_S

from omniq_console.backend.gcs import GCSBackend
from omniq_console.clock import FakeClock


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _monitor_mb() -> float:
    """Live memory allocated by the monitor's own code (``omniq_console/monitor``)."""
    where = tracemalloc.Filter(True, "*omniq_console/monitor/*", all_frames=True)
    snapshot = tracemalloc.take_snapshot().filter_traces([where])
    return sum(stat.size for stat in snapshot.statistics("filename")) / 2**20


async def _oracle(emu: Any, seed: int, steps: int, subscription: str | None) -> None:
    bucket = f"oracle-{uuid.uuid4().hex[:12]}"
    emu.create_bucket(bucket)
    async with GCSBackend(bucket, endpoint_url=emu.url) as backend:
        clock = FakeClock()
        # Pulls follow each other quickly, as in the tests: each step waits for a pull.
        monitor = monitor_for(
            backend, clock, subscription=subscription, pubsub_quiet_s=QUIET_PULL_S
        )
        started = time.perf_counter()
        try:
            found = await run_oracle(
                backend,
                seed=seed,
                steps=steps,
                monitor=monitor,
                clock=clock,
                settle_s=15.0 if subscription else 0.0,
                # As in CI: in feed mode every change through the feed, none mended by listing.
                reconcile=subscription is None,
            )
            fell_back = subscription is not None and monitor.feed_error is not None
        finally:
            await monitor.aclose()
        took = time.perf_counter() - started
    mode = "feed" if subscription else "listing"
    if fell_back:
        log(f"seed {seed} ({mode}): the feed FELL BACK to listing: {monitor.feed_error}")
    if found:
        log(f"seed {seed} ({mode}): MISMATCH after {took:.0f} s")
        for mismatch in found[:20]:
            log(f"  {mismatch}")
    else:
        log(f"seed {seed} ({mode}): {steps} steps, no mismatch, {steps / took:.1f} steps/s")


async def _watch(bucket: str, endpoint: str, minutes: float) -> None:
    """A Monitor alone in this process, polling every second: its RSS each minute."""
    from omniq_console.monitor import Monitor

    async with GCSBackend(bucket, endpoint_url=endpoint) as backend:
        monitor = Monitor(backend, interval=1.0)
        runner = asyncio.create_task(monitor.run())
        began = time.monotonic()
        try:
            for minute in range(int(minutes) + 1):
                await asyncio.sleep(max(0.0, began + 60 * minute - time.monotonic()))
                gc.collect()
                snap = monitor.latest
                tasks = len(snap.task_rows) if snap is not None else 0
                log(f"monitor alone, minute {minute}: RSS {_rss_mb():7.1f} MB, {tasks} tasks")
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)


async def _memory(
    emu: Any, minutes: float, trace: bool, tasks: int, code: str | None = None
) -> None:
    bucket = f"soak-{uuid.uuid4().hex[:12]}"
    emu.create_bucket(bucket)
    # The monitor's own RSS, apart from the fleet's: a child process watching the bucket,
    # running the omniq_console found in ``code`` when given (a checkout of another commit,
    # for a before/after), this one otherwise.
    cwd = ROOT
    env = dict(os.environ)
    if code is not None:
        cwd = Path(tempfile.mkdtemp(prefix="omniq-watch-"))
        (cwd / "benchmarks").symlink_to(ROOT / "benchmarks")
        env["PYTHONPATH"] = code
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.oracle", "--watch", bucket, "--endpoint", emu.url,
        "--memory", str(minutes), cwd=cwd, env=env,
    )  # fmt: skip
    async with GCSBackend(bucket, endpoint_url=emu.url) as backend:
        clock = FakeClock()
        fleet = Fleet(backend, 1, clock, max_tasks=tasks)
        monitor = monitor_for(backend, clock)
        await fleet.start(workers=3)
        began = time.monotonic()
        next_mark = began
        first: tracemalloc.Snapshot | None = None
        marks: list[tuple[float, float, int, int]] = []
        steps = 0
        while True:
            await fleet.step()
            steps += 1
            if steps % 5 == 1:  # the fleet picks its targets (retention, retries) from it
                fleet.truth = await ground_truth(backend, clock.now(), fleet.touched)
            snap = await monitor.poll(raise_errors=True)
            now = time.monotonic()
            if now >= next_mark:
                gc.collect()
                elapsed = (now - began) / 60
                marks.append((elapsed, _rss_mb(), len(snap.task_rows), steps))
                owned = f", monitor-owned {_monitor_mb():.2f} MB" if trace else ""
                log(
                    f"minute {elapsed:4.1f}: RSS {marks[-1][1]:7.1f} MB{owned}, "
                    f"{len(snap.task_rows)} tasks in the bucket, {steps} steps"
                )
                if trace and first is None and elapsed >= 1:
                    first = tracemalloc.take_snapshot()
                next_mark += 60
                if elapsed >= minutes:
                    break
        if first is not None:
            top = tracemalloc.take_snapshot().compare_to(first, "lineno")[:15]
            log("grew most since minute 1:")
            for stat in top:
                log(f"  {stat}")
        if len(marks) >= 3:
            base = marks[1][1]
            log(f"RSS from minute 1 to the end: {base:.1f} -> {marks[-1][1]:.1f} MB")
    await child.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seeds", type=int, default=3, help="how many seeds (from --seed)")
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--feed", action="store_true", help="also the change-feed mode")
    parser.add_argument("--memory", type=float, default=0.0, help="minutes of churn instead")
    parser.add_argument("--trace", action="store_true", help="tracemalloc during --memory")
    parser.add_argument("--tasks", type=int, default=150, help="bucket size during --memory")
    parser.add_argument("--watch", help="(internal) watch this bucket with a lone Monitor")
    parser.add_argument("--endpoint", help="(internal) the emulator of --watch")
    parser.add_argument("--code", help="--memory: measure the omniq_console in this directory")
    args = parser.parse_args()
    if args.watch:
        asyncio.run(_watch(args.watch, args.endpoint, args.memory))
        return
    log(machine_line())
    if args.trace:
        tracemalloc.start(5)
    with emulator() as emu:
        if args.memory:
            asyncio.run(_memory(emu, args.memory, args.trace, args.tasks, args.code))
            return
        for seed in range(args.seed, args.seed + args.seeds):
            asyncio.run(_oracle(emu, seed, args.steps, None))
    if args.feed:
        _feed(args)


def _feed(args: argparse.Namespace) -> None:
    from omniq_console.demo.emulator import Emulator, PubSubEmulator

    pubsub = PubSubEmulator()
    pubsub.start()
    try:
        pubsub.create_topic("gcs-changes")
        with Emulator(pubsub=pubsub, topic="gcs-changes") as emu:
            os.environ["PUBSUB_EMULATOR_HOST"] = pubsub.host_port
            for seed in range(args.seed, args.seed + args.seeds):
                name = f"sub-{uuid.uuid4().hex[:12]}"
                path = pubsub.create_subscription(name, "gcs-changes")
                asyncio.run(_oracle(emu, seed, args.steps, path))
    finally:
        pubsub.stop()


if __name__ == "__main__":
    main()
