"""Task actions from the console, against a recording operator and fixed snapshots.

Each action must reach the operator with the id the operator saw and the status seen (so a
task that moved on is refused), destructive ones only after an explicit yes in a
confirmation naming the task.
"""

from __future__ import annotations

import pytest
from tui_fixtures import LIGHT, make_app, record_notifications, search_tasks, settle, task_id

from omniq_console.tui.screens.confirm import ConfirmScreen
from omniq_console.tui.screens.detail import TaskDetailScreen

SIZE = (160, 48)


async def test_retry_one_task_binds_the_status_seen_and_polls() -> None:
    app, source, operator = make_app(views=("tasks",))
    async with app.run_test(size=SIZE) as pilot:
        seen = record_notifications(app)
        await settle(pilot)
        await search_tasks(pilot, task_id(41))
        await pilot.press("r")
        await settle(pilot)
        assert operator.calls == [("retry_task", (task_id(41),), {"expected_status": "failed"})]
        assert source.poll_requests == 1
        assert (f"Task {task_id(41)} is pending again.", "information") in seen


@pytest.mark.parametrize(
    ("key", "method", "verb"), [("c", "cancel_task", "Cancel"), ("d", "delete_task", "Delete")]
)
async def test_destructive_task_actions_ask_first(key: str, method: str, verb: str) -> None:
    app, source, operator = make_app(views=("tasks",))
    target = task_id(21)  # running, in emails
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await search_tasks(pilot, target)
        await pilot.press(key)
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        question = app.screen.question.plain
        assert question == (
            f"{verb} task {target} (app.mail.send_digest in queue emails, running)?"
        )
        assert operator.calls == []
        await pilot.press("n")
        await settle(pilot)
        assert not isinstance(app.screen, ConfirmScreen)
        assert operator.calls == [] and source.poll_requests == 0
        await pilot.press(key)
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
        assert operator.calls == [(method, (target,), {"expected_status": "running"})]
        assert source.poll_requests == 1


async def test_enter_on_the_safe_default_does_not_delete() -> None:
    app, _, operator = make_app(views=("tasks",))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await search_tasks(pilot, task_id(21))
        await pilot.press("d")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert not isinstance(app.screen, ConfirmScreen)
        assert operator.calls == []


async def test_detail_screen_actions_use_the_fresh_body() -> None:
    app, _, operator = make_app(views=LIGHT)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.open_task(task_id(41))
        await settle(pilot)
        assert isinstance(app.screen, TaskDetailScreen)
        await pilot.press("d")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await settle(pilot)
        assert operator.calls == [("delete_task", (task_id(41),), {"expected_status": "failed"})]
        assert isinstance(app.screen, TaskDetailScreen)
