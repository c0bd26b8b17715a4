"""The console wired to the real thing: Monitor, Operator and GCSBackend on the emulator.

Keys pressed in the console must change the bucket (and audit who did it), the next poll
must show the change, and a change made behind the console's back must come back as
"changed since you saw it", with nothing written.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import pytest
from protocol_helpers import task_in, tasks_in
from textual.pilot import Pilot
from tui_fixtures import record_notifications, search_tasks, settle

from omniq_console.backend.gcs import GCSBackend
from omniq_console.models import (
    EventType,
    Schedule,
    ScheduleStatus,
    ScheduleType,
    Task,
    TaskStatus,
)
from omniq_console.monitor.monitor import Monitor
from omniq_console.runtime import Operator
from omniq_console.tui import ConsoleApp, build_app
from omniq_console.tui.screens.confirm import ConfirmScreen
from omniq_console.tui.widgets.keyed_table import KeyedTable

SIZE = (160, 48)
ACTOR = "alice@ops"


@pytest.fixture
async def backend(bucket: str) -> AsyncIterator[GCSBackend]:
    async with GCSBackend(bucket) as b:
        yield b


async def until(pilot: Pilot[None], predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for the console"
        await pilot.pause(0.05)


def console(backend: GCSBackend, view: str) -> tuple[ConsoleApp, Monitor]:
    """The console showing only ``view``, on a monitor of ``backend``."""
    # A long interval: polls happen at start and when an action (or a test) asks for one.
    monitor = Monitor(backend, interval=60.0, poll_timeout=10.0)
    app = build_app(
        monitor,
        operator=Operator(backend, ACTOR),
        bucket=backend.bucket_name,
        prefix=backend.prefix,
        views=(view,),
    )
    return app, monitor


async def audits(backend: GCSBackend) -> list[tuple[str | None, dict[str, object]]]:
    events = await backend.async_event_storage.get_events(event_type=EventType.OPERATOR_ACTION)
    return [(e.actor, e.details) for e in events]


async def test_retry_and_delete_from_the_console_change_the_bucket(backend: GCSBackend) -> None:
    failed = await task_in(
        backend, TaskStatus.FAILED, queue="emails", func="app.jobs:send", error_type="ValueError"
    )
    doomed = Task(func="app.jobs:old", queue_name="emails")
    await backend.async_task_storage.enqueue(doomed)
    app, monitor = console(backend, "tasks")
    async with app.run_test(size=SIZE) as pilot:
        await until(
            pilot, lambda: monitor.latest is not None and len(monitor.latest.task_rows) == 2
        )
        await settle(pilot)
        await search_tasks(pilot, failed.id)
        polls_before = monitor.latest
        await pilot.press("r")
        await until(pilot, lambda: monitor.latest is not polls_before)
        stored = await backend.async_task_storage.get_task(failed.id)
        assert stored is not None and stored.status == TaskStatus.PENDING
        table = app.screen.query_one("#tasks-table", KeyedTable)
        # Whichever column shows it: the row says pending now, failed no more.
        await until(pilot, lambda: "pending" in table.render_cell_values(failed.id))
        assert "failed" not in table.render_cell_values(failed.id)

        await pilot.press("x")
        await search_tasks(pilot, doomed.id)
        await pilot.press("d")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await until(pilot, lambda: doomed.id not in table.keys())  # noqa: SIM118
        assert await backend.async_task_storage.get_task(doomed.id) is None
    actions = [
        (actor, details["action"], details["target"]) for actor, details in await audits(backend)
    ]
    assert (ACTOR, "retry_task", failed.id) in actions
    assert (ACTOR, "delete_task", doomed.id) in actions


async def test_bulk_retry_of_a_group_retries_exactly_those_tasks(backend: GCSBackend) -> None:
    failed = [TaskStatus.FAILED] * 3
    value_errors = await tasks_in(
        backend, failed, queue="emails", func="app.jobs:send", error_type="ValueError"
    )
    other = await task_in(
        backend, TaskStatus.FAILED, queue="emails", func="app.jobs:send", error_type="KeyError"
    )
    app, monitor = console(backend, "results")
    async with app.run_test(size=SIZE) as pilot:
        await until(
            pilot, lambda: monitor.latest is not None and len(monitor.latest.task_rows) == 4
        )
        await settle(pilot)
        await until(
            pilot, lambda: app.screen.query_one("#results-groups", KeyedTable).row_count == 2
        )
        groups = app.screen.query_one("#results-groups", KeyedTable)
        while groups.selected_key != "ValueError":
            await pilot.press("down")
        await settle(pilot)
        await pilot.press("R")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        assert app.screen.question.plain == "Retry 3 failed tasks of ValueError in queue emails?"
        await pilot.press("y")
        await until(
            pilot,
            lambda: (
                monitor.latest is not None
                and sum(r.status == "pending" for r in monitor.latest.task_rows) == 3
            ),
        )
    for task in value_errors:
        stored = await backend.async_task_storage.get_task(task.id)
        assert stored is not None and stored.status == TaskStatus.PENDING
    untouched = await backend.async_task_storage.get_task(other.id)
    assert untouched is not None and untouched.status == TaskStatus.FAILED


async def test_a_schedule_changed_behind_the_console_is_refused(backend: GCSBackend) -> None:
    schedule = Schedule(
        schedule_type=ScheduleType.INTERVAL,
        func="app.jobs:tick",
        interval=timedelta(minutes=5),
        id="tick-5m",
        queue_name="emails",
    )
    await backend.async_schedule_storage.save_schedule(schedule)
    app, monitor = console(backend, "schedules")
    async with app.run_test(size=SIZE) as pilot:
        seen = record_notifications(app)
        await until(
            pilot, lambda: monitor.latest is not None and len(monitor.latest.schedules) == 1
        )
        await settle(pilot)
        await pilot.press("p")
        await until(pilot, lambda: any("is paused" in m for m, _ in seen))
        stored = await backend.async_schedule_storage.get_schedule("tick-5m")
        assert stored is not None and stored.status == ScheduleStatus.PAUSED
        table = app.screen.query_one("#schedules-table", KeyedTable)
        await until(pilot, lambda: "paused" in table.render_cell_values("tick-5m"))

        # Someone else resumes it; the console has not polled since, so it shows "paused".
        await backend.async_schedule_storage.resume_schedule("tick-5m")
        behind = await backend.async_schedule_storage.get_schedule("tick-5m")
        assert behind is not None
        await pilot.press("u")
        await until(pilot, lambda: any(sev == "error" for _, sev in seen))
        assert (
            "Resume schedule tick-5m: changed since you saw it: refresh and try again",
            "error",
        ) in seen
        after = await backend.async_schedule_storage.get_schedule("tick-5m")
        assert after is not None and after.generation == behind.generation  # nothing written
