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
- ``--console``: the console the CLI runs (``python -m omniq_console``, ``run_console`` and
  ``build_app``) in a 160x48 tmux terminal, idle on Overview, given a Pub/Sub feed of the
  bucket's changes (a subscription of its own, as the demo's console), on the demo fleet
  (``demo/fleet.py``: producer, three workers, scheduler, janitor) for 30 minutes; its RSS at
  0, 10, 20 and 30 minutes and the growth from 10 to 30 (flat within 10%). ``--tasks N``
  (500): the fleet keeps about N tasks in the bucket, its retention set to N over its rate and
  N finished tasks written at start with their ends spread over that retention. The change
  mode and staleness the status bar shows are sampled too (the console may give up the feed
  by itself). ``--trace DIR``: the console under tracemalloc, snapshots at 1/6 and 1/2 of the
  run, what grew between them printed at the end.

    python -m benchmarks.soak                 # 10 minutes, worker and monitor
    python -m benchmarks.soak --minutes 2     # a quick look
    python -m benchmarks.soak --console --tasks 10000   # 30 minutes, the console, 10,000 tasks
    python benchmarks/run.py --only soak      # the default mode, as a table of the run

A child is ``python -m benchmarks.soak --child ROLE --endpoint URL --bucket B``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

from omniq_console.backend import lifecycle
from omniq_console.backend.errors import StorageError
from omniq_console.backend.gcs import GCSBackend
from omniq_console.backend.index import task_metadata
from omniq_console.cli import DEMO_REFRESH
from omniq_console.demo.emulator import Emulator, PubSubEmulator
from omniq_console.demo.fleet import Fleet
from omniq_console.demo.tasks import build_report, charge_card, resize_image, send_email
from omniq_console.demo.workload import QUEUES as FLEET_QUEUES
from omniq_console.models import Task, utcnow
from omniq_console.runtime.registry import TaskRegistry, submit_task, task_name

from .common import ROOT, Table, emulator, log
from .seed import run_jobs

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
        else:
            monitor = Monitor(backend, interval=2.0)
            polls = asyncio.create_task(monitor.run())
            await _report(every, seen=lambda: monitor.latest is not None)
            polls.cancel()


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


# -- the console: the CLI's console in a terminal, on the demo fleet --------------------------

PREFIX = "omniq/"
TOPIC = "omniq-soak-changes"
CONSOLE_SIZE = (160, 48)
FIRST_DATA_S = 300.0  # the console must show the bucket's data within this (loaded, traced)
TRACE_AT = (1 / 6, 1 / 2)  # with --trace: the console's dumps (minutes 5 and 15 of 30)
TRACE_FRAMES = 6
BALLAST_CONCURRENCY = 64
FAILED_SHARE = 0.15  # of the ballast; about the fleet's own share
BALLAST_FUNCS = (charge_card, send_email, resize_image, build_report)


def fleet_rate(speed: float) -> float:
    """Tasks a second the demo fleet's producer enqueues at ``speed``."""
    return speed * sum(q.rate for q in FLEET_QUEUES)


def keep_for(tasks: int, speed: float) -> timedelta:
    """The retention that keeps about ``tasks`` finished tasks in the bucket: what the fleet
    adds in that time is what its janitor deletes."""
    return timedelta(seconds=tasks / fleet_rate(speed))


async def ballast(backend: GCSBackend, tasks: int, keep: timedelta) -> int:
    """Write ``tasks`` finished tasks whose ends are spread evenly over the last ``keep``, as
    the fleet's workers leave them (a definition and a state record each): the janitor then
    deletes them at the rate the fleet adds new ones, so the bucket holds about ``tasks``
    from the first minute, not after ``keep``. Returns how many were written."""
    store, layout = backend.store, backend.layout
    results = backend.async_result_storage
    rng = random.Random(7)
    now = utcnow()

    async def one(i: int) -> None:
        func = BALLAST_FUNCS[i % len(BALLAST_FUNCS)]
        ended = now - keep * ((i + 0.5) / tasks)
        task = Task(
            func=task_name(func),
            queue_name=FLEET_QUEUES[i % len(FLEET_QUEUES)].name,
            created_at=ended - timedelta(seconds=2),
        )
        await store.write(
            layout.task(task.id),
            task.to_json(),
            metadata=task_metadata(task),
            if_generation_match=0,
        )
        worker = f"soak-ballast-{i % 3}"
        started = ended - timedelta(seconds=rng.uniform(0.05, 1.5))
        record = lifecycle.claim(task, None, worker=worker, lease_s=30, now=started).record
        seconds = (ended - started).total_seconds()
        if rng.random() < FAILED_SHARE:
            failure = lifecycle.Failure("ValueError", "ValueError: soak ballast", retryable=False)
            record = lifecycle.fail_or_retry(
                task, record, failure, worker=worker, execution_time=seconds, now=ended
            ).record
        else:
            record = lifecycle.complete(
                record, worker=worker, value={"ok": True}, execution_time=seconds, now=ended
            ).record
        await results.set(record)

    return await run_jobs(
        (partial(one, i) for i in range(tasks)),
        concurrency=BALLAST_CONCURRENCY,
        total=tasks,
        label="ballast",
        progress=log,
    )


async def _fleet_child(endpoint: str, bucket: str, keep: timedelta, speed: float) -> None:
    """The demo fleet, its retention ``keep`` for every finished task (so the bucket holds
    about ``keep`` times its rate), until terminated."""
    backend = GCSBackend(bucket, PREFIX, endpoint_url=endpoint)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with backend:
        fleet = Fleet(backend, seed=42, speed=speed, retention=keep, failed_retention=keep)
        await fleet.seed_history()
        runner = asyncio.create_task(fleet.run())
        await stop.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(fleet.stop(), 10)
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


class Terminal:
    """A tmux server of our own (its own socket) running one command in a pane."""

    def __init__(self, command: list[str], env: dict[str, str], size: tuple[int, int]) -> None:
        self.socket = f"omniq-soak-{os.getpid()}"
        line = shlex.join(["exec", "env", *(f"{k}={v}" for k, v in env.items()), *command])
        width, height = (str(n) for n in size)
        # remain-on-exit: a console that ends early leaves its last words on the screen.
        self._tmux(
            "start-server", ";", "set-option", "-g", "remain-on-exit", "on", ";",
            "new-session", "-d", "-s", "soak", "-x", width, "-y", height, line,
        )  # fmt: skip
        self.pid = int(self._tmux("display-message", "-p", "-t", "soak", "#{pane_pid}"))

    def _tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, *args], check=True, capture_output=True, text=True
        )
        return done.stdout.strip()

    def screen(self) -> str:
        """What the pane shows now."""
        return self._tmux("capture-pane", "-p", "-t", "soak")

    def alive(self) -> bool:
        return self._tmux("display-message", "-p", "-t", "soak", "#{pane_dead}") != "1"

    def close(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._tmux("kill-server")


def process_sample(pid: int) -> dict[str, Any]:
    """Another process's RSS (MB) and open descriptors, now."""
    rss_kb = 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
    return {
        "t": time.monotonic(),
        "rss_mb": rss_kb / 1024,
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


@dataclass
class ConsoleSoak:
    """What one console soak saw: the console's samples and the bucket's task counts."""

    tasks: int
    minutes: float
    feed: str
    samples: list[dict[str, Any]] = field(default_factory=list)
    bucket_tasks: list[tuple[float, int]] = field(default_factory=list)  # (t, tasks)
    ballast: int = 0
    keep: timedelta = timedelta(0)
    screen: str = ""  # the console's screen at the end

    def at(self, minute: float) -> dict[str, Any]:
        """The first sample at least ``minute`` minutes after the first (or the last)."""
        t0 = self.samples[0]["t"]
        return next((s for s in self.samples if s["t"] - t0 >= minute * 60 - 1), self.samples[-1])

    def tasks_at(self, minute: float) -> int:
        t0 = self.samples[0]["t"]
        return next(
            (n for t, n in self.bucket_tasks if t - t0 >= minute * 60 - 30),
            self.bucket_tasks[-1][1] if self.bucket_tasks else 0,
        )

    def changes(self) -> str:
        """How the console followed the bucket over the run, from its status bar: one mode
        throughout, or each mode's share of the samples."""
        shares = Counter(s["changes"] for s in self.samples)
        if len(shares) == 1:
            return f"{next(iter(shares))} throughout"
        first = {s["changes"]: s["t"] - self.samples[0]["t"] for s in reversed(self.samples)}
        return ", ".join(
            f"{mode} {n / len(self.samples):.0%} of the samples (first at "
            f"{first[mode] / 60:.1f} min)"
            for mode, n in shares.most_common()
        )

    def stale_share(self) -> float:
        """The share of samples whose status bar said the data was stale."""
        return sum(1 for s in self.samples if s.get("stale")) / len(self.samples)


def changes_shown(screen: str) -> str:
    """The change mode the status bar names (``changes: Pub/Sub`` or ``changes: listing``)."""
    found = re.search(r"changes: (\S+)", screen)
    return found.group(1) if found else "?"


async def _count_tasks(backend: GCSBackend) -> int:
    return len(await backend.store.list(backend.layout.tasks))


def _start_fleet(
    endpoint: str, bucket: str, keep: timedelta, speed: float
) -> subprocess.Popen[bytes]:
    """The fleet child (``_fleet_child``), started."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks.soak",
            "--child",
            "fleet",
            "--endpoint",
            endpoint,
            "--bucket",
            bucket,
            "--keep",
            str(keep.total_seconds()),
            "--speed",
            str(speed),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def console_soak(
    minutes: float, tasks: int, speed: float, every: float, trace: Path | None = None
) -> ConsoleSoak:
    """The console the CLI runs (``omniq-console``, in a tmux terminal, idle on Overview,
    following the Pub/Sub feed as the demo's does) on the demo fleet keeping about ``tasks``
    tasks in the bucket, for ``minutes``; its RSS every ``every`` seconds. With ``trace``
    (a folder), the console runs under tracemalloc and dumps a snapshot there at each of
    ``TRACE_AT`` (fractions of the run)."""
    keep = keep_for(tasks, speed)
    bucket = "omniq-soak"
    pubsub = PubSubEmulator(project="omniq-soak")
    tmp = tempfile.TemporaryDirectory(prefix="omniq-soak-", dir=_tmpfs())
    procs: list[subprocess.Popen[bytes]] = []
    terminal: Terminal | None = None
    try:
        await asyncio.to_thread(pubsub.start)
        topic = await asyncio.to_thread(pubsub.create_topic, TOPIC)
        emu = Emulator(storage="filesystem", root=Path(tmp.name), pubsub=pubsub, topic=TOPIC)
        await asyncio.to_thread(emu.start)
        try:
            await asyncio.to_thread(emu.create_bucket, bucket)
            soak = ConsoleSoak(tasks, minutes, f"Pub/Sub ({topic})", keep=keep)
            env = {
                "PYTHONPATH": str(ROOT),
                "STORAGE_EMULATOR_HOST": emu.url,
                "PUBSUB_EMULATOR_HOST": pubsub.host_port,
                "OMNIQ_BUCKET": bucket,
                "OMNIQ_PREFIX": PREFIX,
                "OMNIQ_TOPIC": topic,
                "TERM": "xterm-256color",
            }
            console = ["--refresh", str(DEMO_REFRESH)]
            if trace is None:
                command = [sys.executable, "-m", "omniq_console", *console]
            else:
                command = [
                    sys.executable, "-m", "benchmarks.soak", "--child", "traced-console",
                    "--trace", str(trace), "--", *console,
                ]  # fmt: skip
            # Started on the empty bucket: the emulator's filesystem backend reads every
            # object's metadata for any listing, and at 10,000 tasks the console's start-up
            # probe (2 s) would give up on a loaded machine. The tasks then arrive through
            # the feed, as they would while an operator watches.
            terminal = Terminal(command, env, CONSOLE_SIZE)
            await _until_shown(terminal, "Overview")
            async with GCSBackend(bucket, PREFIX, endpoint_url=emu.url) as backend:
                soak.ballast = await ballast(backend, tasks, keep)
                procs.append(_start_fleet(emu.url, bucket, keep, speed))
                await _until_shown(terminal, FLEET_QUEUES[0].name)
                await _watch(soak, terminal, backend, procs[0], minutes, every, trace=trace)
        finally:
            if terminal is not None:
                terminal.close()
            for proc in procs:
                proc.terminate()
                await asyncio.to_thread(proc.wait, 30)
            emu.stop()
    finally:
        pubsub.stop()
        tmp.cleanup()
    return soak


async def _until_shown(terminal: Terminal, text: str) -> None:
    """Wait until the console shows ``text`` (at most ``FIRST_DATA_S``)."""
    deadline = time.monotonic() + FIRST_DATA_S
    while text not in terminal.screen():
        if time.monotonic() > deadline or not terminal.alive():
            raise RuntimeError(
                f"the console never showed {text!r}; its screen:\n{terminal.screen()}"
            )
        await asyncio.sleep(0.5)


async def _watch(
    soak: ConsoleSoak,
    terminal: Terminal,
    backend: GCSBackend,
    fleet: subprocess.Popen[bytes],
    minutes: float,
    every: float,
    *,
    trace: Path | None,
) -> None:
    started = time.monotonic()
    end = started + minutes * 60
    next_count = next_note = started
    dumps = [started + at * minutes * 60 for at in TRACE_AT] if trace is not None else []
    while True:
        if not terminal.alive():
            raise RuntimeError(f"the console exited early; its screen:\n{terminal.screen()}")
        if fleet.poll() is not None:
            raise RuntimeError("the fleet exited early")
        now = time.monotonic()
        sampled = process_sample(terminal.pid)
        screen = terminal.screen()
        sampled["changes"] = changes_shown(screen)
        # The status bar's first line says STALE while the data shown is old (polls failing).
        sampled["stale"] = "STALE" in screen.partition("\n")[0]
        soak.samples.append(sampled)
        if now >= next_count:
            with contextlib.suppress(StorageError):
                soak.bucket_tasks.append((now, await _count_tasks(backend)))
            next_count += 60
        if now >= next_note:
            count = soak.bucket_tasks[-1][1] if soak.bucket_tasks else 0
            log(
                f"soak {soak.tasks:,}: {(now - started) / 60:.1f} of {minutes:g} min; "
                f"console {soak.samples[-1]['rss_mb']:.0f} MB; bucket {count:,} tasks"
            )
            next_note += 60
        if dumps and now >= dumps[0]:
            dumps.pop(0)
            os.kill(terminal.pid, signal.SIGUSR1)
        if now >= end:
            soak.screen = terminal.screen()
            return
        await asyncio.sleep(min(every, max(0.0, end - time.monotonic())))


def _traced_console(trace: Path, argv: list[str]) -> None:
    """``omniq-console argv`` under tracemalloc: SIGUSR1 dumps a snapshot (``N.snap``) and
    the live objects by type (``N.types.json``) into ``trace``."""
    import gc
    import tracemalloc
    from itertools import count

    from omniq_console import cli

    # Traced, it starts several times slower: give its start-up probe the time (only here).
    cli.PROBE_DEADLINE = cli.PROBE_REQUEST_TIMEOUT = 60.0
    tracemalloc.start(TRACE_FRAMES)
    dumped = count()

    def dump(signum: int, frame: object) -> None:
        n = next(dumped)
        tracemalloc.take_snapshot().dump(str(trace / f"{n}.snap"))
        types = Counter(type(o).__qualname__ for o in gc.get_objects())
        (trace / f"{n}.types.json").write_text(json.dumps(dict(types.most_common(200))))
        # What a full collection would free now (it is done last, after the snapshot, and
        # changes what the next dump finds: the report says so).
        before = process_sample(os.getpid())["rss_mb"]
        counts, stats = gc.get_count(), gc.get_stats()
        freed = gc.collect()
        gc_line = {
            "count": counts,
            "stats": stats,
            "threshold": gc.get_threshold(),
            "frozen": gc.get_freeze_count(),
            "freed_by_full_collection": freed,
            "rss_before_mb": before,
            "rss_after_mb": process_sample(os.getpid())["rss_mb"],
        }
        (trace / f"{n}.gc.json").write_text(json.dumps(gc_line))

    signal.signal(signal.SIGUSR1, dump)
    cli.main(argv)


def trace_report(trace: Path, top: int = 25) -> str:
    """What grew between the first two dumps of a traced soak: the lines that allocated
    most, and the object types that multiplied."""
    import tracemalloc

    first = tracemalloc.Snapshot.load(str(trace / "0.snap"))
    second = tracemalloc.Snapshot.load(str(trace / "1.snap"))
    lines = [f"tracemalloc: what grew between the dumps (top {top}, by size)"]
    for stat in second.compare_to(first, "traceback")[:top]:
        lines.append(f"{stat.size_diff / 1024:+10.0f} KiB {stat.count_diff:+8d} blocks")
        lines.extend(f"    {frame}" for frame in stat.traceback.format()[-2 * TRACE_FRAMES :])
    before = json.loads((trace / "0.types.json").read_text())
    after = json.loads((trace / "1.types.json").read_text())
    grew = sorted(after, key=lambda name: before.get(name, 0) - after[name])[:top]
    lines.append("live objects by type (first dump -> second)")
    lines.extend(f"  {name}: {before.get(name, 0):,} -> {after[name]:,}" for name in grew)
    for n in (0, 1):
        lines.append(
            f"gc at dump {n} (then a full collection): {(trace / f'{n}.gc.json').read_text()}"
        )
    return "\n".join(lines)


def _tmpfs() -> str | None:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


def growth(soak: ConsoleSoak, start: float, end: float) -> float:
    """RSS at ``end`` minutes over RSS at ``start`` minutes, minus one."""
    return float(soak.at(end)["rss_mb"] / soak.at(start)["rss_mb"] - 1)


def console_table(soaks: Sequence[ConsoleSoak]) -> Table:
    """RSS at start, a third, two thirds and the end of each soak, and the growth over the
    last two thirds (the verdict: flat within 10%)."""
    minutes = soaks[0].minutes
    marks = [0.0, minutes / 3, 2 * minutes / 3, minutes]
    table = Table(
        f"Soak: the console (omniq-console in a {CONSOLE_SIZE[0]}x{CONSOLE_SIZE[1]} terminal, "
        f"idle on Overview) on the demo fleet for {minutes:g} minutes",
        [
            "tasks in the bucket",
            *(f"RSS at {m:g} min (MB)" for m in marks),
            f"growth {marks[1]:g}→{marks[3]:g} min",
            "verdict (flat within 10%)",
        ],
    )
    for soak in soaks:
        grew = growth(soak, marks[1], marks[3])
        counts = "/".join(f"{soak.tasks_at(m):,}" for m in marks)
        table.add(
            f"~{soak.tasks:,} ({counts})",
            *(soak.at(m)["rss_mb"] for m in marks),
            f"{grew:+.1%}",
            "flat" if grew <= FLAT_WITHIN else "GREW",
        )
    table.notes.append(
        "Tasks in the bucket: the target, then the count listed at each mark. The console is "
        f"given the feed {soaks[0].feed} (a subscription of its own), as in the demo; refresh "
        f"{DEMO_REFRESH:g} s (the demo's)."
    )
    for soak in soaks:
        table.notes.append(
            f"~{soak.tasks:,} tasks: changes followed by {soak.changes()} (the console's status "
            f"bar), data stale in {soak.stale_share():.0%} of the samples; {soak.ballast:,} "
            "finished tasks written at start with "
            f"ends spread over the retention ({soak.keep.total_seconds() / 60:.1f} min for "
            "every finished task), then the demo fleet (seed 42) enqueues, runs, fails, "
            "retries and deletes past that retention."
        )
    return table


def run(
    minutes: float = 10.0,
    *,
    console: bool = False,
    rate: float = 5.0,
    tasks: int = 500,
    speed: float = 1.0,
) -> list[Table]:
    """The soak of the default mode (or ``console``, on about ``tasks`` tasks), as tables."""
    if console:
        return [console_table([asyncio.run(console_soak(minutes, tasks, speed, 10.0))])]
    children, counts = asyncio.run(_soak(["worker", "monitor"], minutes, rate, 10.0))
    return [worker_table(children, minutes, counts)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, help="default: 10, or 30 with --console")
    parser.add_argument("--console", action="store_true", help="soak the console instead")
    parser.add_argument(
        "--rate", type=float, default=5.0, help="default mode: tasks enqueued a second"
    )
    parser.add_argument(
        "--tasks",
        type=int,
        default=500,
        help="--console: the fleet keeps about this many tasks in the bucket (default 500)",
    )
    parser.add_argument(
        "--speed", type=float, default=1.0, help="--console: the demo fleet's speed (default 1)"
    )
    parser.add_argument(
        "--trace",
        type=Path,
        metavar="DIR",
        help="--console: run it under tracemalloc, dump snapshots into DIR at 1/6 and 1/2 of "
        "the run and print what grew between them (slows the console down)",
    )
    parser.add_argument("console_args", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument(
        "--child",
        choices=("worker", "monitor", "fleet", "traced-console"),
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--bucket", help=argparse.SUPPRESS)
    parser.add_argument("--sample", type=float, default=10.0, help=argparse.SUPPRESS)
    parser.add_argument("--keep", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tasks <= 0 or args.speed <= 0:
        parser.error("--tasks and --speed must be positive")
    if args.child == "traced-console":
        _traced_console(args.trace, args.console_args)
        return 0
    if args.child == "fleet":
        keep = timedelta(seconds=args.keep)
        asyncio.run(_fleet_child(args.endpoint, args.bucket, keep, args.speed))
        return 0
    if args.child:
        asyncio.run(_child(args.child, args.endpoint, args.bucket, args.sample))
        return 0
    minutes = args.minutes or (30.0 if args.console else 10.0)
    if args.console:
        if args.trace is not None:
            args.trace.mkdir(parents=True, exist_ok=True)
        soak = asyncio.run(console_soak(minutes, args.tasks, args.speed, 10.0, args.trace))
        log(f"the console's screen at the end:\n{soak.screen}")
        if args.trace is not None:
            log(trace_report(args.trace))
        tables = [console_table([soak])]
    else:
        tables = run(minutes, rate=args.rate)
    for table in tables:
        print(table.markdown(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
