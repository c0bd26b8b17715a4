"""Write screenshots/*.svg: every view of the console, from fixed, reproducible data.

Run from the repository root: ``python screenshots/make_screenshots.py``. The data is the
test suite's fixed snapshot (``tests/tui_fixtures.py``: pinned times, ids and a frozen
clock), so running it twice writes the same files.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from tui_fixtures import make_app, settle  # noqa: E402

SIZE = (140, 42)
SHOTS: Sequence[tuple[str, Sequence[str], str]] = (
    ("overview", (), "Overview: queues, throughput, health, stuck tasks, events, workers"),
    ("queues", ("2",), "Queues with depth trends"),
    ("tasks", ("3",), "Tasks, filtered in a thread, one bounded page at a time"),
    ("results", ("4",), "Failures grouped by exception type"),
    ("events", ("5",), "Live event tail"),
    ("schedules", ("6",), "Schedules with next-run countdowns"),
    ("workers", ("7",), "Workers and their heartbeats"),
    ("task-detail", ("4", "tab", "enter"), "One task: body, result, traceback, timeline"),
    ("bulk-retry", ("4", "R"), "A bulk retry asks first, naming exactly what will change"),
    ("help", ("question_mark",), "Every key, by view"),
)


async def shoot(name: str, keys: Sequence[str], title: str) -> Path:
    app, _, _ = make_app()
    path = HERE / f"{name}.svg"
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for key in keys:
            await pilot.press(key)
            await settle(pilot)
        path.write_text(app.export_screenshot(title=f"omniq-console: {title}"), encoding="utf-8")
    return path


async def main() -> None:
    for name, keys, title in SHOTS:
        print(await shoot(name, keys, title))


if __name__ == "__main__":
    asyncio.run(main())
