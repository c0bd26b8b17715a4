"""Queue controls from the console, end to end on the emulator: the keys of the Queues view
pause and resume a queue in the bucket (``paused/{queue}.json``) and purge exactly the pending
tasks the confirmation counted; the next poll shows each change.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from textual.pilot import Pilot
from tui_fixtures import settle

from omniq_console.backend.gcs import GCSBackend
from omniq_console.models import Task
from omniq_console.monitor.monitor import Monitor
from omniq_console.monitor.snapshot import QueueStats
from omniq_console.runtime import Operator
from omniq_console.tui import build_app
from omniq_console.tui.screens.confirm import ConfirmScreen

SIZE = (160, 48)


@pytest.fixture
async def backend(bucket: str) -> AsyncIterator[GCSBackend]:
    async with GCSBackend(bucket) as b:
        yield b


async def until(pilot: Pilot[None], what: str, condition: Callable[[], bool]) -> None:
    """Let the app run until ``condition`` holds; fail saying ``what`` was awaited."""
    for _ in range(400):
        if condition():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def queue_of(monitor: Monitor, name: str) -> QueueStats | None:
    snapshot = monitor.latest
    if snapshot is None:
        return None
    return next((q for q in snapshot.queues if q.name == name), None)


async def test_pause_resume_and_purge_a_queue_from_the_console(backend: GCSBackend) -> None:
    tasks = [Task(func="app.jobs:send", queue_name="emails") for _ in range(3)]
    for task in tasks:
        await backend.async_task_storage.enqueue(task)
    # A long interval: polls happen at start and after each action.
    monitor = Monitor(backend, interval=60.0, poll_timeout=10.0)
    app = build_app(
        monitor,
        operator=Operator(backend, "alice@ops"),
        bucket=backend.bucket_name,
        views=("queues",),
    )
    async with app.run_test(size=SIZE) as pilot:
        await until(
            pilot,
            "the three pending tasks",
            lambda: (q := queue_of(monitor, "emails")) is not None and q.pending == 3,
        )
        await settle(pilot)
        await pilot.press("p")
        await settle(pilot)
        await until(
            pilot,
            "the queue to show paused",
            lambda: (q := queue_of(monitor, "emails")) is not None and q.paused,
        )
        table = app.screen.query_one("#queues-table")
        await until(
            pilot,
            "the row to say paused",
            lambda: "(paused)" in table.render_cell_values("emails")[0],
        )
        await pilot.press("u")
        await settle(pilot)
        await until(
            pilot,
            "the queue to show resumed",
            lambda: (q := queue_of(monitor, "emails")) is not None and not q.paused,
        )
        await pilot.press("X")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        assert app.screen.question.plain == "Purge 3 tasks pending in queue emails?"
        await pilot.press("y")
        await settle(pilot)
        await until(
            pilot,
            "the purged queue to be empty",
            lambda: (q := queue_of(monitor, "emails")) is None or q.pending == 0,
        )
    for task in tasks:
        assert await backend.async_task_storage.get_task(task.id) is None
