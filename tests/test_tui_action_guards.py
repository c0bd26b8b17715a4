"""Schedules actions, failures told in words, and a console that offers no actions.

A schedule action carries the generation the operator saw; a failure comes back as a
sentence (a conflict says to refresh and try again); read-only or operator-less consoles
show no action key and refuse every action.
"""

from __future__ import annotations

import pytest
from textual.widgets import TabbedContent
from tui_fixtures import (
    LIGHT,
    RecordingOperator,
    demo_snapshot,
    failed_task_detail,
    frozen_clock,
    make_app,
    record_notifications,
    screen_text,
    settle,
    task_id,
    until_toast,
)

from omniq_console.backend.errors import ConflictError, ObjectNotFoundError, ReadOnlyError
from omniq_console.tui import StaticSource, build_app
from omniq_console.tui.screens.confirm import ConfirmScreen

SIZE = (160, 48)


async def test_schedule_actions_send_the_generation_seen() -> None:
    snap = demo_snapshot()
    schedules = tuple(
        s.model_copy(update={"generation": 1000 + i}) for i, s in enumerate(snap.schedules)
    )
    operator = RecordingOperator()
    source = StaticSource(demo_snapshot(schedules=schedules))
    app = build_app(source, operator=operator, clock=frozen_clock, views=("schedules",))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        # First row: the overdue purge-hourly (active schedules sort by next run).
        await pilot.press("p")
        await settle(pilot)
        await pilot.press("t")
        await settle(pilot)
        await pilot.press("ctrl+end")  # the paused warmup-cache
        await pilot.press("u")
        await settle(pilot)
        by_id = {s.id: s.generation for s in schedules}
        assert operator.calls == [
            ("pause_schedule", ("purge-hourly",), {"generation": by_id["purge-hourly"]}),
            ("trigger_schedule", ("purge-hourly",), {}),
            ("resume_schedule", ("warmup-cache",), {"generation": by_id["warmup-cache"]}),
        ]
        assert source.poll_requests == 3


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            ConflictError("omniq/tasks/x.json", 7),
            "Retry task {id}: changed since you saw it: refresh and try again",
        ),
        (
            ObjectNotFoundError("omniq/tasks/x.json", "task"),
            "Retry task {id}: it no longer exists (task not found: omniq/tasks/x.json)",
        ),
        (
            ReadOnlyError("write", "omniq/tasks/x.json"),
            "Retry task {id}: not permitted (refused write of omniq/tasks/x.json: the "
            "backend is read-only)",
        ),
        (PermissionError("403 Forbidden"), "Retry task {id}: not permitted (403 Forbidden)"),
        (ValueError("task x is running"), "Retry task {id}: task x is running"),
        (TimeoutError("slow"), "Retry task {id} failed: TimeoutError: slow"),
    ],
)
async def test_failures_are_told_in_plain_words(error: Exception, expected: str) -> None:
    app, source, _ = make_app(operator=RecordingOperator(fail={"retry_task": error}), views=LIGHT)
    async with app.run_test(size=SIZE) as pilot:
        seen = record_notifications(app)
        await settle(pilot)
        app.actions.task_action("retry", task_id(41))
        await settle(pilot)
        assert (expected.format(id=task_id(41)), "error") in seen
        # The operator sees the current state next: a poll follows a failure too.
        assert source.poll_requests == 1
        assert app.is_running


async def test_conflict_message_is_on_screen() -> None:
    error = ConflictError("omniq/schedules/purge-hourly.json", 3)
    app, _, _ = make_app(
        operator=RecordingOperator(fail={"pause_schedule": error}), views=("schedules",)
    )
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await settle(pilot)
        await pilot.press("p")
        await settle(pilot)
        await until_toast(
            pilot, "Pause schedule purge-hourly: changed since you saw it: refresh and try again"
        )


@pytest.mark.parametrize("mode", ["read_only", "no_operator"])
async def test_without_actions_no_action_key_is_offered_or_obeyed(mode: str) -> None:
    operator = RecordingOperator()
    source = StaticSource(demo_snapshot(), details={task_id(41): failed_task_detail()})
    views = ("tasks", "results", "schedules")
    if mode == "read_only":
        app = build_app(source, operator=operator, read_only=True, clock=frozen_clock, views=views)
    else:
        app = build_app(source, clock=frozen_clock, views=views)
    action_names = {
        "retry",
        "cancel",
        "delete",
        "retry_all",
        "retry_group",
        "pause",
        "resume",
        "trigger",
    }
    async with app.run_test(size=SIZE) as pilot:
        seen = record_notifications(app)
        await settle(pilot)
        for view_key, keys in (("3", "rcdR"), ("4", "rR"), ("6", "put")):
            await pilot.press(view_key)
            await settle(pilot)
            shown = {b.binding.action for b in app.screen.active_bindings.values()}
            assert not shown & action_names
            await pilot.press(*keys)
            await settle(pilot)
            assert not isinstance(app.screen, ConfirmScreen)
        assert app.screen.query_one(TabbedContent).active == "schedules"
        # The palette and the views refuse too, should anything call them.
        app.actions.task_action("retry", task_id(41))
        app.actions.retry_failed([task_id(41)], "of ValueError")
        await settle(pilot)
        assert operator.calls == []
        assert any("No actions" in message for message, _ in seen)
        app.open_task(task_id(41))
        await settle(pilot)
        shown = {b.binding.action for b in app.screen.active_bindings.values()}
        assert not shown & action_names
        assert "Retry" not in screen_text(app).splitlines()[-1]
