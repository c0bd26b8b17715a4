"""Bulk retry: a preview count, a confirmation naming exactly what will change, and the
operator called with exactly the ids that were confirmed (and the status seen: failed)."""

from __future__ import annotations

import msgspec

from tui_fixtures import (
    demo_snapshot,
    failed_ids,
    make_app,
    newest_first,
    record_notifications,
    run_command,
    settle,
    task_rows,
)

from omniq_console.tui.screens.confirm import ConfirmScreen

SIZE = (160, 48)


async def test_retry_group_confirms_the_count_and_sends_exactly_those_ids() -> None:
    app, source, operator = make_app(views=("results",))
    expected = failed_ids("ValueError")
    assert len(expected) == 6
    async with app.run_test(size=SIZE) as pilot:
        seen = record_notifications(app)
        await settle(pilot)
        await pilot.press("R")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        assert app.screen.question.plain == "Retry 6 failed tasks of ValueError in queue emails?"
        detail = app.screen.detail.plain
        assert expected[0] in detail and "… and 1 more" in detail
        await pilot.press("y")
        await settle(pilot)
        assert operator.calls == [("retry_tasks", (expected,), {"expected_status": "failed"})]
        assert source.poll_requests == 1
        assert ("Retry 6 failed tasks: 6 of 6 done", "information") in seen


async def test_retry_group_of_one_queue_names_the_queue() -> None:
    app, _, operator = make_app(views=("results",))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("down")  # the groups table: TimeoutError
        await settle(pilot)
        await pilot.press("R")
        await settle(pilot)
        assert app.screen.question.plain == "Retry 3 failed tasks of TimeoutError in queue reports?"
        await pilot.press("y")
        await settle(pilot)
        assert operator.calls == [
            ("retry_tasks", (failed_ids("TimeoutError"),), {"expected_status": "failed"})
        ]


async def test_retry_failed_of_the_current_filter() -> None:
    app, _, operator = make_app(views=("tasks",))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.click("#tasks-func")
        await pilot.press(*"send_digest", "enter")
        await settle(pilot)
        view = app.screen.query_one("#view-tasks")
        assert view.filter.func == "send_digest"
        await pilot.press("R")
        await settle(pilot)
        assert app.screen.question.plain == (
            "Retry 5 failed tasks whose function contains 'send_digest' in queue emails?"
        )
        await pilot.press("y")
        await settle(pilot)
        sent = operator.calls[0][1][0]
        assert sent == tuple(
            r.id
            for r in newest_first(task_rows())
            if r.status == "failed" and "send_digest" in r.func
        )


async def test_bulk_stays_bound_to_what_was_confirmed() -> None:
    """A snapshot arriving while the confirmation is open does not change what is sent."""
    app, source, operator = make_app(views=("results",))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("R")
        await settle(pilot)
        more = demo_snapshot(task_rows=(*task_rows(), msgspec.structs.replace(task_rows()[40], id="extra-1")))
        source.push(more)
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
        assert operator.calls[0][1][0] == failed_ids("ValueError")


async def test_palette_offers_the_bulk_retry_and_the_mouse_confirms_it() -> None:
    app, _, operator = make_app(views=("tasks",))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await run_command(pilot, "retry all failed", "Retry all failed tasks of the current")
        assert isinstance(app.screen, ConfirmScreen)
        assert app.screen.question.plain == (
            "Retry 10 failed tasks in queues default, emails, reports?"
        )
        await pilot.click("#confirm-yes")
        await settle(pilot)
        expected = tuple(r.id for r in newest_first(task_rows()) if r.status == "failed")
        assert operator.calls == [("retry_tasks", (expected,), {"expected_status": "failed"})]
