"""Soak: does a long-running worker, monitor or console keep its memory, descriptors and tasks
flat on a bucket that churns?

An emulator holds a bucket that churns at a steady rate: an enqueuer adds no-op tasks
(``--rate`` a second), a cleaner deletes finished tasks and old event batches, so the bucket
stays small while every object name keeps changing. Each watched component runs in a process
of its own (so a figure belongs to one of them) and reports its resident memory (RSS), open
file descriptors and asyncio tasks every ``--sample`` seconds.

- default mode: a worker (concurrency 4) and a Monitor (listing mode, 2 s interval) for
  ``--minutes`` (10); printed at start, after warm-up (the first fifth of the run) and at the
  end, with the verdict "flat within 10% after warm-up" (end no more than 10% above the
  after-warm-up figure);
- ``--console``: the Textual console headless (``build_app`` over a Monitor, ``run_test``)
  over the same churn (a worker running the tasks) for 30 minutes, its RSS printed at 0, 10,
  20 and 30 minutes.

    python -m benchmarks.soak                 # 10 minutes, worker and monitor
    python -m benchmarks.soak --minutes 2     # a quick look
    python -m benchmarks.soak --console       # 30 minutes, the console
    python benchmarks/run.py --only soak      # the default mode, as a table of the run

A child is ``python -m benchmarks.soak --child ROLE --endpoint URL --bucket B``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from omniq_console.backend.errors import StorageError
from omniq_console.backend.gcs import GCSBackend
from omniq_console.models import Task
from omniq_console.runtime.registry import TaskRegistry, submit_task

from .common import ROOT, Table, emulator, log

QUEUE = "soak"
FUNC = "soak:noop"
FLAT_WITHIN = 0.10  # the verdict's tolerance after warm-up
KEEP_FINISHED_S = 20.0  # a finished task stays this long before the cleaner deletes it
KEEP_EVENTS = timedelta(minutes=2)
FIGURES = ("rss_mb", "fds", "tasks")


# -- a child: one component, reporting itself ---------------------------------------------------


def sample(**extra: Any) -> dict[str, Any]:
    """This process's RSS (MB), open descriptors and asyncio tasks, now."""
    rss_kb = 0
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
    return {
        "t": time.monotonic(),
        "rss_mb": rss_kb / 1024,
        "fds": len(os.listdir("/proc/self/fd")),
        "tasks": len(asyncio.all_tasks()),
        **extra,
    }


async def _report(every: float, **extra: Any) -> None:
    while True:
        print(json.dumps(sample(**{k: v() for k, v in extra.items()})), flush=True)
        await asyncio.sleep(every)


async def _child(role: str, endpoint: str, bucket: str, every: float) -> None:
    from omniq_console.monitor.monitor import Monitor
    from omniq_console.runtime import Worker

    async with GCSBackend(bucket, endpoint_url=endpoint) as backend:
        if role == "worker":
            registry = TaskRegistry()
            registry.register(lambda: None, name=FUNC)
            worker = Worker(backend, registry, [QUEUE], concurrency=4, lease_seconds=10)
            runner = asyncio.create_task(worker.run())
            await _report(every, processed=lambda: worker.processed)
            runner.cancel()
        elif role == "monitor":
            monitor = Monitor(backend, interval=2.0)
            polls = asyncio.create_task(monitor.run())
            await _report(every, seen=lambda: monitor.latest is not None)
            polls.cancel()
        else:
            from omniq_console.tui.app import build_app

            app = build_app(Monitor(backend, interval=2.0), bucket=bucket, read_only=True)
            async with app.run_test(headless=True, size=(160, 50)):
                await _report(every)


# -- the parent: emulator, churn, and the figures -----------------------------------------------


@dataclass
class Child:
    """A component in its own process and the samples it printed."""

    role: str
    proc: subprocess.Popen[str]
    samples: list[dict[str, Any]] = field(default_factory=list)

    def read(self) -> None:
        """Collect the samples it prints until it exits (in a thread of its own)."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.samples.append(json.loads(line))

    def at(self, since_start: float) -> dict[str, Any] | None:
        """The first sample taken at least ``since_start`` seconds after the first one."""
        if not self.samples:
            return None
        t0 = self.samples[0]["t"]
        return next((s for s in self.samples if s["t"] - t0 >= since_start), None)

    def most(self, start: float, end: float) -> dict[str, float]:
        """Each figure's highest value over the samples ``start``..``end`` seconds in: a
        window, not one sample, since the task count moves with the tasks in flight."""
        t0 = self.samples[0]["t"]
        window = [s for s in self.samples if start <= s["t"] - t0 <= end] or self.samples[-1:]
        return {name: max(s[name] for s in window) for name in FIGURES}


def _spawn(role: str, endpoint: str, bucket: str, every: float) -> Child:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks.soak",
            "--child",
            role,
            "--endpoint",
            endpoint,
            "--bucket",
            bucket,
            "--sample",
            str(every),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    child = Child(role, proc)
    threading.Thread(target=child.read, name=f"soak-{role}", daemon=True).start()
    return child


async def _churn(backend: GCSBackend, rate: float, stop: asyncio.Event) -> dict[str, int]:
    """Enqueue ``rate`` tasks a second; delete finished tasks and old events. Counts."""
    counts = {"enqueued": 0, "deleted": 0, "errors": 0}
    queue = backend.async_task_storage
    finished_at: dict[str, float] = {}

    async def enqueue() -> None:
        while not stop.is_set():
            try:
                await submit_task(backend, Task(func=FUNC, queue_name=QUEUE))
                counts["enqueued"] += 1
            except StorageError:
                counts["errors"] += 1
            await asyncio.sleep(1 / rate)

    async def clean() -> None:
        while not stop.is_set():
            try:
                now = time.monotonic()
                for task_id, status in (await queue.statuses()).items():
                    if status.is_final:
                        finished_at.setdefault(task_id, now)
                for task_id, at in list(finished_at.items()):
                    if now - at >= KEEP_FINISHED_S:
                        await queue.delete_task(task_id)
                        del finished_at[task_id]
                        counts["deleted"] += 1
                await backend.async_event_storage.cleanup_old_events(KEEP_EVENTS)
            except StorageError:
                counts["errors"] += 1
            await asyncio.sleep(5)

    await asyncio.gather(enqueue(), clean())
    return counts


async def _soak(
    roles: Sequence[str], minutes: float, rate: float, every: float
) -> tuple[list[Child], dict[str, int]]:
    with emulator("memory") as emu:
        bucket = "omniq-soak"
        await asyncio.to_thread(emu.create_bucket, bucket)
        children = [_spawn(role, emu.url, bucket, every) for role in roles]
        stop = asyncio.Event()
        async with GCSBackend(bucket, endpoint_url=emu.url) as backend:
            churn = asyncio.create_task(_churn(backend, rate, stop))
            end = time.monotonic() + minutes * 60
            next_note = 0.0
            try:
                while time.monotonic() < end:
                    await asyncio.sleep(min(every, max(0.0, end - time.monotonic())))
                    for child in children:
                        if child.proc.poll() is not None:
                            raise RuntimeError(f"the {child.role} exited early")
                    elapsed = minutes * 60 - (end - time.monotonic())
                    if elapsed >= next_note:
                        figures = "; ".join(
                            f"{c.role} {c.samples[-1]['rss_mb']:.0f} MB"
                            for c in children
                            if c.samples
                        )
                        log(f"soak: {elapsed / 60:.1f} of {minutes:g} min; {figures}")
                        next_note += 60
            finally:
                stop.set()
                counts = await churn
                for child in children:
                    child.proc.terminate()
                    child.proc.wait(30)
        return children, counts


def _flat(warm: float, last: float) -> bool:
    return last <= warm * (1 + FLAT_WITHIN)


def worker_table(children: list[Child], minutes: float, counts: dict[str, int]) -> Table:
    """Start, after warm-up and end of each component, and the verdict."""
    total_s = minutes * 60
    warmup_s, window_s = total_s / 5, min(60.0, total_s / 10)
    table = Table(
        f"Soak: a worker and a monitor on a churning bucket for {minutes:g} minutes",
        [
            "component",
            "figure",
            "start",
            f"after warm-up ({warmup_s / 60:.1f} min)",
            "end",
            "verdict (flat within 10% after warm-up)",
        ],
    )
    for child in children:
        first = child.samples[0]
        warm = child.most(warmup_s, warmup_s + window_s)
        last = child.most(total_s - window_s, total_s)
        for name in FIGURES:
            table.add(
                child.role,
                name,
                first[name],
                warm[name],
                last[name],
                "flat"
                if _flat(warm[name], last[name])
                else f"GREW {last[name] / warm[name] - 1:+.0%}",
            )
    done = children[0].samples[-1].get("processed", 0) if children else 0
    table.notes.append(
        f"After warm-up and end: the highest sample in the {window_s:g} s after warm-up and in "
        f"the last {window_s:g} s (a sample every 10 s); start: the first sample, once the "
        "component had opened the bucket."
    )
    table.notes.append(
        f"Churn: {counts['enqueued']:,} tasks enqueued, {done:,} run by the worker, "
        f"{counts['deleted']:,} finished tasks deleted, {counts['errors']} storage errors."
    )
    return table


def console_table(child: Child, checkpoints: Sequence[float], counts: dict[str, int]) -> Table:
    """The console's RSS at each checkpoint (minutes)."""
    table = Table(
        f"Soak: the console (headless) on a churning bucket for {checkpoints[-1]:g} minutes",
        ["minute", "RSS (MB)", "open descriptors", "asyncio tasks"],
    )
    for minute in checkpoints:
        at = child.at(minute * 60) or child.samples[-1]
        table.add(minute, at["rss_mb"], at["fds"], at["tasks"])
    table.notes.append(
        f"Churn: {counts['enqueued']:,} tasks enqueued, {counts['deleted']:,} deleted."
    )
    return table


def run(minutes: float = 10.0, *, console: bool = False, rate: float = 5.0) -> list[Table]:
    """The soak of the default mode (or ``console``), as tables."""
    if console:
        checkpoints = [0.0, minutes / 3, 2 * minutes / 3, minutes]
        # A worker runs the tasks (so they finish and are cleaned up); only the console is
        # reported.
        children, counts = asyncio.run(_soak(["console", "worker"], minutes, rate, 10.0))
        return [console_table(children[0], checkpoints, counts)]
    children, counts = asyncio.run(_soak(["worker", "monitor"], minutes, rate, 10.0))
    return [worker_table(children, minutes, counts)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, help="default: 10, or 30 with --console")
    parser.add_argument("--console", action="store_true", help="soak the console instead")
    parser.add_argument("--rate", type=float, default=5.0, help="tasks enqueued a second")
    parser.add_argument("--child", choices=("worker", "monitor", "console"), help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--bucket", help=argparse.SUPPRESS)
    parser.add_argument("--sample", type=float, default=10.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        asyncio.run(_child(args.child, args.endpoint, args.bucket, args.sample))
        return 0
    minutes = args.minutes or (30.0 if args.console else 10.0)
    for table in run(minutes, console=args.console, rate=args.rate):
        print(table.markdown(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
