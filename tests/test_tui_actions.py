"""Task actions from the console, against a recording operator and fixed snapshots.

Each action must reach the operator with the id the operator saw and the status seen (so a
task that moved on is refused), destructive ones only after an explicit yes in a
confirmation naming the task.
"""

from __future__ import annotations

import pytest
from tui_fixtures import (
    LIGHT,
    TAKEN_AT,
    demo_snapshot,
    make_app,
    record_notifications,
    screen_text,
    search_tasks,
    settle,
    task_id,
)

from omniq_console.models import ResultStatus, Task, TaskResult, TaskStatus
from omniq_console.monitor.snapshot import TaskDetail
from omniq_console.tui import StaticSource
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


def definition_pending_record_failed() -> TaskDetail:
    """A failed task as the bucket holds it: the definition still says pending (as written at
    enqueue), the state record says failed on its third attempt, on worker-a."""
    task = Task(
        id=task_id(41),
        func="app.mail.send_digest",
        queue_name="emails",
        max_retries=2,
        created_at=TAKEN_AT,
    )
    record = TaskResult(
        task_id=task.id,
        status=ResultStatus.ERROR,
        error_type="ValueError",
        error="bad address",
        created_at=TAKEN_AT,
        completed_at=TAKEN_AT,
        worker_id="worker-a",
        attempt=3,
        retry_count=2,
    )
    return TaskDetail(task_id=task.id, task=task, result=record)


async def test_detail_shows_the_derived_status_and_r_retries_a_failed_task() -> None:
    detail = definition_pending_record_failed()
    assert detail.task is not None and detail.task.status == TaskStatus.PENDING
    source = StaticSource(demo_snapshot(), details={detail.task_id: detail})
    app, _, operator = make_app(source, views=LIGHT)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.open_task(detail.task_id)
        await settle(pilot)
        fields = app.screen.query_one("#detail-task").content
        lines = [" ".join(line.split()) for line in screen_text(app).splitlines()]
        assert any("Status failed" in line for line in lines), fields
        assert any("Retries 2 of 2" in line for line in lines)
        assert any("Attempt 3" in line for line in lines)
        assert any("Worker worker-a" in line for line in lines)
        assert not any("Status pending" in line for line in lines)
        keys = {b.binding.action for b in app.screen.active_bindings.values()}
        assert {"retry", "delete"} <= keys and "cancel" not in keys
        await pilot.press("c")
        await settle(pilot)
        assert operator.calls == []
        await pilot.press("r")
        await settle(pilot)
        assert operator.calls == [("retry_task", (task_id(41),), {"expected_status": "failed"})]
