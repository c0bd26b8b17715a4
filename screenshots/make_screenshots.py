"""Write screenshots/*.svg: every view of the console, on the reproducible demo.

Run from the repository root::

    python screenshots/make_screenshots.py              # the demo fleet (about a minute)
    python screenshots/make_screenshots.py --seed 7     # another workload
    python screenshots/make_screenshots.py --fixtures   # the test suite's fixed snapshot

By default the data is what ``omniq-console demo`` shows: a GCS emulator, a bucket, and the
demo fleet (``omniq_console.demo.fleet``, tasks in ``omniq_console.demo.tasks``) with a fixed seed: minutes of seeded history, then
producers, workers and the scheduler running for a while, plus a burst of reports and a few
delayed tasks so that queues hold a backlog. The real Monitor takes the snapshot with its clock
frozen at that moment; the task detail is ``Monitor.task_detail`` of a real failed task. The
same seed gives the same workload (tasks, arguments, outcomes, failure mix, schedules);
wall-clock times, event ids and which worker ran what differ from run to run, so the SVGs
differ in those details. The emulator is stopped on exit, also after an error.

``--fixtures`` renders ``tests/tui_fixtures.py`` instead (pinned times and ids: identical
files on every run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from textual.app import App

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from tui_fixtures import make_app, settle  # noqa: E402

from omniq_console.backend.gcs import GCSBackend  # noqa: E402
from omniq_console.demo.emulator import Emulator  # noqa: E402
from omniq_console.demo.environment import DEMO_BUCKET, DEMO_PREFIX  # noqa: E402
from omniq_console.demo.fleet import Fleet  # noqa: E402
from omniq_console.demo.tasks import build_report, export_csv, send_email  # noqa: E402
from omniq_console.models import TaskStatus, utcnow  # noqa: E402
from omniq_console.monitor.monitor import Monitor  # noqa: E402
from omniq_console.monitor.snapshot import Snapshot, TaskDetail  # noqa: E402
from omniq_console.runtime.operator import Operator  # noqa: E402
from omniq_console.tui import StaticSource, build_app  # noqa: E402

SIZE = (140, 42)
SHOTS: Sequence[tuple[str, Sequence[str], str, tuple[int, int]]] = (
    ("overview", (), "Overview: queues, outcomes, health, stuck tasks, events, workers", SIZE),
    ("overview-80x24", (), "Overview in an 80x24 terminal: panels stack and scroll", (80, 24)),
    ("queues", ("2",), "Queues: depth, pause state, throughput and latency per window", SIZE),
    ("tasks", ("3",), "Tasks, filtered in a thread, one bounded page at a time", SIZE),
    ("tasks-120", ("3",), "Tasks at 120 columns: status and exception first", (120, 40)),
    ("results", ("4",), "Failures grouped by exception type", SIZE),
    ("events", ("5",), "Live event tail", SIZE),
    ("schedules", ("6",), "Schedules with next-run countdowns", SIZE),
    ("workers", ("7",), "Workers: load, what each runs, heartbeat, the dead flagged", SIZE),
    ("backend", ("8",), "Backend: requests, cost, errors, cache, latency, storage", SIZE),
    ("task-detail", ("4", "tab", "enter"), "One task: body, result, traceback, timeline", SIZE),
    ("bulk-retry", ("4", "R"), "A bulk retry asks first, naming exactly what will change", SIZE),
    ("help", ("question_mark",), "Every key, by view", SIZE),
)

DEFAULT_SEED = 42
# Busier than the interactive demo, so a short run leaves enough failed tasks to group.
SPEED = 1.5
HISTORY_MINUTES = 10
# About the live rate, so the throughput chart does not jump where history meets the run.
HISTORY_PER_MINUTE = 60


class FreezableClock:
    """UTC now while the fleet runs; the moment of the screenshot once ``freeze()`` is called.

    The fleet's workers stamp real time, so the snapshot's clock must be real time too; it
    only stops at the last poll, so every view shows the ages of that one instant.
    """

    def __init__(self) -> None:
        self.frozen: datetime | None = None

    def __call__(self) -> datetime:
        return self.frozen or utcnow()

    def freeze(self) -> datetime:
        self.frozen = utcnow()
        return self.frozen


# -- rendering -------------------------------------------------------------------------------


async def shoot(
    make: Callable[[], App[None]],
    name: str,
    keys: Sequence[str],
    title: str,
    size: tuple[int, int] = SIZE,
) -> Path:
    app = make()
    path = HERE / f"{name}.svg"
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        for key in keys:
            await pilot.press(key)
            await settle(pilot)
        path.write_text(app.export_screenshot(title=f"omniq-console: {title}"), encoding="utf-8")
    return path


async def shoot_all(make: Callable[[], App[None]]) -> None:
    for name, keys, title, size in SHOTS:
        print(await shoot(make, name, keys, title, size))


# -- the demo data ---------------------------------------------------------------------------


async def _burst(fleet: Fleet, seed: int) -> None:
    """A nightly batch of reports arrives at once, and a few emails are held for later.

    Seeded like the fleet, so the backlog is the same on every run with the same seed.
    """
    rng = random.Random(f"{seed}-screenshots")
    for _ in range(14):
        if rng.random() < 0.7:
            await fleet.omniq.enqueue_async(
                build_report,
                name=rng.choice(("sales-daily", "churn", "inventory", "ledger")),
                rows=rng.randrange(1_000, 500_000),
                work_ms=rng.randrange(4_000, 9_000),
            )
        else:
            await fleet.omniq.enqueue_async(
                export_csv,
                dataset=rng.choice(("orders", "customers", "invoices")),
                rows=rng.randrange(1_000, 200_000),
                work_ms=rng.randrange(4_000, 9_000),
            )
    for minutes in (5, 12, 30, 45, 90):
        await fleet.omniq.enqueue_async(
            send_email,
            to=f"user{rng.randrange(10_000, 99_999)}@example.com",
            template="weekly",
            work_ms=100,
            delay=timedelta(minutes=minutes),
        )


async def collect(
    backend: GCSBackend, *, seed: int, run_seconds: float, poll_every: float
) -> tuple[Snapshot, dict[str, TaskDetail]]:
    """Run the seeded fleet on ``backend``, then snapshot it with the real Monitor."""
    start = utcnow().replace(microsecond=0)
    # No janitor during the run: it would delete the seeded history the charts show.
    fleet = Fleet(
        backend, seed=seed, speed=SPEED, clock=lambda: start, cleanup_interval=24 * 3600.0
    )
    await fleet.seed_history(minutes=HISTORY_MINUTES, per_minute=HISTORY_PER_MINUTE)
    clock = FreezableClock()
    monitor = Monitor(backend, clock=clock, interval=poll_every)
    runner = asyncio.create_task(fleet.run())
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + run_seconds
        burst_at = loop.time() + run_seconds * 0.75
        burst_done = False
        while loop.time() < deadline:
            await asyncio.sleep(poll_every)
            if runner.done():
                runner.result()  # the fleet died: say why
            if not burst_done and loop.time() >= burst_at:
                await _burst(fleet, seed)
                burst_done = True
            await monitor.poll(raise_errors=True)  # each poll adds a point to the depth trends
        clock.freeze()
        snapshot = await monitor.poll(raise_errors=True)
        failed = [r.id for r in snapshot.task_rows if r.status == TaskStatus.FAILED.value]
        if not failed:
            raise RuntimeError("the demo produced no failed task: nothing to open in detail")
        details = {tid: await monitor.task_detail(tid) for tid in failed}
    finally:
        await fleet.stop()
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
    return snapshot, details


async def demo(seed: int, run_seconds: float, poll_every: float) -> None:
    emulator = Emulator()
    emulator.start()
    try:
        emulator.create_bucket(DEMO_BUCKET)
        backend = GCSBackend(bucket_name=DEMO_BUCKET, prefix=DEMO_PREFIX, endpoint_url=emulator.url)
        async with backend:
            snapshot, details = await collect(
                backend, seed=seed, run_seconds=run_seconds, poll_every=poll_every
            )
            counts = ", ".join(f"{k} {v}" for k, v in snapshot.tasks.items() if v)
            print(f"snapshot at {snapshot.taken_at:%Y-%m-%d %H:%M:%S}Z: {counts}", file=sys.stderr)
            operator = Operator(backend, actor="screenshots")

            def make() -> App[None]:
                # A real operator, so actions are offered; the screenshots confirm none.
                source = StaticSource(snapshot, details=details)
                # The console's wall clock stops at the snapshot: ages and countdowns are its.
                return build_app(
                    source, operator=operator, clock=lambda: snapshot.taken_at.timestamp()
                )

            await shoot_all(make)
    finally:
        emulator.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--fixtures",
        action="store_true",
        help="render the test suite's fixed snapshot (tests/tui_fixtures.py) instead of the demo",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="the demo fleet's seed")
    parser.add_argument(
        "--run-seconds",
        type=float,
        default=40.0,
        help="how long the fleet runs before the snapshot (default 40)",
    )
    args = parser.parse_args(argv)
    if args.run_seconds < 4:
        parser.error("--run-seconds must be at least 4")
    if args.fixtures:
        asyncio.run(shoot_all(lambda: make_app()[0]))
    else:
        asyncio.run(demo(args.seed, args.run_seconds, poll_every=2.0))


if __name__ == "__main__":
    main()
