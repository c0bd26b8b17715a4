"""Memory: peak RSS of the console process holding a snapshot of ``n`` tasks.

A child process (``python -m benchmarks.memory --child N``) starts the console headless on a
``StaticSource`` and notes its RSS: the baseline, the same process before any snapshot. It then
builds the snapshot in memory (what the monitor hands over), posts it, waits for the Overview,
opens the Tasks view (first page of all tasks) and the Results view, posts the next snapshot
(1% changed: for a moment both are alive, as on every poll) and reports the peak (VmHWM) and
the current RSS.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from .common import ROOT, Table, log, verdict
from .ui import as_the_cli_runs, freeze_like_the_app

TARGET_MB = 250.0
SIZE = (160, 50)


def _rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / 2**20


def _peak_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a
    child of a big parent would report the parent's peak."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _child(n: int) -> dict[str, float]:
    from omniq_console.tui.app import build_app
    from omniq_console.tui.source import StaticSource

    source = StaticSource()
    app = build_app(source, bucket="bench", prefix="omniq/", read_only=True)
    out: dict[str, float] = {}
    with as_the_cli_runs():
        return await _child_steps(app, source, n, out)


async def _child_steps(app: Any, source: Any, n: int, out: dict[str, float]) -> dict[str, float]:
    from omniq_console.tui.views.tasks import TasksView

    from .bigsnapshot import build

    async def until(condition: object, what: str) -> None:
        deadline = time.monotonic() + 120
        while not condition():  # type: ignore[operator]
            if time.monotonic() > deadline:
                raise TimeoutError(what)
            await asyncio.sleep(0.01)

    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await asyncio.sleep(0.5)
        out["baseline_rss"] = _rss_mb()
        out["baseline_peak"] = _peak_mb()
        # In a list, so that dropping it later really drops the process's last reference.
        held = [build(n)]
        out["with_snapshot_built_rss"] = _rss_mb()
        source.push(held[0])
        await until(lambda: app.snapshot is held[0], "first snapshot")
        await pilot.pause()
        freeze_like_the_app(app)
        await pilot.press("3")
        tasks = app.screen_stack[0].query_one(TasksView)
        await until(lambda: tasks.page is not None and tasks.table.row_count > 0, "tasks page")
        await pilot.press("4")
        await pilot.pause()
        await asyncio.sleep(0.5)
        await pilot.press("3")
        await pilot.pause()
        second = build(n, changed=0.01)
        shown = tasks.page
        source.push(second)
        await until(lambda: app.snapshot is second and tasks.page is not shown, "second snapshot")
        held.clear()
        await pilot.pause()
        await asyncio.sleep(0.5)
        out["holding_rss"] = _rss_mb()
        out["peak"] = _peak_mb()
    return out


async def _live_child(url: str, polls_wanted: int = 3) -> dict[str, float]:
    """The console as it runs for real: a Monitor in the process polling the stand-in."""
    from omniq_console.backend.gcs import GCSBackend
    from omniq_console.monitor.monitor import Monitor
    from omniq_console.tui.app import build_app

    out: dict[str, float] = {}
    backend = GCSBackend("standin", endpoint_url=url, token="anon")
    async with backend:
        monitor = Monitor(backend, interval=2.0, poll_timeout=120.0)
        polls = 0

        def count(_: object) -> None:
            nonlocal polls
            polls += 1

        monitor.subscribe(count)
        monitor.pause()  # the baseline is taken before the first poll
        app = build_app(monitor, bucket="standin", prefix="omniq/", read_only=True)
        with as_the_cli_runs():
            return await _live_steps(app, monitor, lambda: polls, polls_wanted, out)


async def _live_steps(
    app: Any,
    monitor: Any,
    polls: Callable[[], int],
    polls_wanted: int,
    out: dict[str, float],
) -> dict[str, float]:
    from omniq_console.tui.views.tasks import TasksView

    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        await asyncio.sleep(0.5)
        out["baseline_rss"] = _rss_mb()
        out["baseline_peak"] = _peak_mb()
        monitor.resume()
        monitor.request_poll()
        deadline = time.monotonic() + 300
        while app.snapshot is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await pilot.pause()
        freeze_like_the_app(app)
        await pilot.press("3")
        tasks = app.screen_stack[0].query_one(TasksView)
        while (polls() < polls_wanted or tasks.page is None) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if polls() < polls_wanted:
            raise TimeoutError(f"only {polls()} polls in 300 s")
        await pilot.pause()
        await asyncio.sleep(0.5)
        out["holding_rss"] = _rss_mb()
        out["peak"] = _peak_mb()
        out["polls"] = polls()
    return out


def child_main(argv: list[str]) -> int:
    if "--live" in argv:
        out = asyncio.run(_live_child(argv[argv.index("--live") + 1]))
    else:
        out = asyncio.run(_child(int(argv[argv.index("--child") + 1])))
    print(json.dumps(out), flush=True)
    return 0


def measure(n: int, live_url: str | None = None) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    extra = ["--live", live_url] if live_url else []
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory", "--child", str(n), *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"memory child failed ({done.returncode}): {done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def run(n: int, *, live: bool = True) -> list[Table]:
    figures = measure(n)
    log(f"memory: {figures}")
    live_figures: dict[str, float] | None = None
    if live:
        from .standin import server

        with server(n) as url:
            live_figures = measure(n, url)
        log(f"memory (live): {live_figures}")
    table = Table(
        f"Memory: the console process holding a snapshot of {n:,} tasks (RSS, MB)",
        ["state", "RSS (MB)", "peak RSS so far (MB)", "target < 250 MB"],
    )
    table.add("baseline: the same process, console up, before any snapshot",
              round(figures["baseline_rss"]), round(figures["baseline_peak"]), "")  # fmt: skip
    table.add(
        f"snapshot of {n:,} tasks built in the process (not yet shown)",
        round(figures["with_snapshot_built_rss"]),
        None,
        "",
    )
    table.add(
        "after: shown, Tasks and Results views opened, next snapshot (1% changed) shown",
        round(figures["holding_rss"]),
        round(figures["peak"]),
        verdict(figures["peak"], TARGET_MB, unit=" MB"),
    )
    if live_figures is not None:
        table.add(
            "live baseline: console + Monitor, before the first poll",
            round(live_figures["baseline_rss"]),
            round(live_figures["baseline_peak"]),
            "",
        )
        table.add(
            f"live: after {live_figures['polls']:.0f} polls of {n:,} tasks, Tasks view open",
            round(live_figures["holding_rss"]),
            round(live_figures["peak"]),
            verdict(live_figures["peak"], TARGET_MB, unit=" MB"),
        )
    table.notes.append(
        "Peak RSS is the process's high-water mark (VmHWM). Static rows: the snapshot posted "
        f"through a StaticSource ({figures['holding_rss'] - figures['baseline_rss']:.0f} MB over "
        "the baseline while held). Both with the CLI's collector settings and the app's freeze "
        "after the first snapshot. Live rows: the console as it runs for real, with the Monitor "
        "in its process (listings parsed, one index per object kept between polls, the snapshot "
        "built) polling the in-memory GCS stand-in (another process, not counted)."
    )
    return [table]


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
