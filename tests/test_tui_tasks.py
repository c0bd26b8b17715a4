"""The tasks view: filters, a bounded page of a big snapshot, updates by key."""

from __future__ import annotations

import msgspec

from textual.widgets import Select
from tui_fixtures import (
    big_snapshot,
    demo_snapshot,
    make_app,
    newest_first,
    settle,
    task_id,
    task_rows,
)

from omniq_console.tui import StaticSource
from omniq_console.tui.taskfilter import PAGE_SIZE

SIZE = (160, 48)


def shown(app) -> list[str]:
    return app.screen.query_one("#tasks-table").keys()


def info(app) -> str:
    return app.screen.query_one("#tasks-info").content.plain


async def test_filters_by_queue_status_function_and_text() -> None:
    app, _, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("3")
        await settle(pilot)
        assert shown(app) == [r.id for r in newest_first(task_rows())]
        view = app.screen.query_one("#view-tasks")
        app.screen.query_one("#tasks-queue", Select).value = "reports"
        await settle(pilot)
        app.screen.query_one("#tasks-status", Select).value = "failed"
        await settle(pilot)
        expected = [
            r.id
            for r in newest_first(task_rows())
            if r.queue_name == "reports" and r.status == "failed"
        ]
        assert len(expected) == 3 and shown(app) == expected
        assert info(app).startswith("showing 1-3 of 3 matching (57 in all)")
        await pilot.press("x")  # clear
        await settle(pilot)
        assert len(shown(app)) == len(task_rows())
        await pilot.click("#tasks-func")
        await pilot.press(*"DIGEST")  # case-insensitive; waits for a pause in typing
        await pilot.pause(0.3)
        await settle(pilot)
        assert shown(app) and all("send_digest" in view.table.item(k).func for k in shown(app))
        await pilot.press("escape", "x", "slash", *"worker-c", "enter")
        await settle(pilot)
        assert set(shown(app)) == {r.id for r in task_rows() if r.worker_id == "worker-c"}


async def test_a_new_snapshot_updates_rows_in_place() -> None:
    source = StaticSource(demo_snapshot())
    app, _, _ = make_app(source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("3", "down", "down")
        await settle(pilot)
        table = app.screen.query_one("#tasks-table")
        cursor_on = table.selected_key
        rows = list(task_rows())
        index = next(i for i, r in enumerate(rows) if r.id == cursor_on)
        rows[index] = msgspec.structs.replace(rows[index], status="running", worker_id="worker-z")
        gone = rows.pop(0)
        new = msgspec.structs.replace(
            rows[0], id="brand-new", created_ts=rows[0].created_at.replace(year=2027).timestamp()
        )
        rows.append(new)
        source.push(demo_snapshot(task_rows=tuple(rows)))
        await settle(pilot)
        assert gone.id not in shown(app)
        assert shown(app)[0] == "brand-new"  # newest first
        assert table.selected_key == cursor_on  # the cursor stays on its task
        cells = table.render_cell_values(cursor_on)
        assert cells[1] == "running" and cells[8] == "worker-z"


async def test_a_big_snapshot_is_shown_one_page_at_a_time() -> None:
    big = big_snapshot(100_000)
    app, _, _ = make_app(StaticSource(big))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("3")
        await settle(pilot)
        assert len(shown(app)) == PAGE_SIZE
        assert info(app).startswith(f"showing 1-{PAGE_SIZE} of 100,000 · page 1/500")
        assert shown(app)[0] == task_id(0)  # the newest
        await pilot.press("right_square_bracket")
        await settle(pilot)
        assert info(app).startswith(f"showing {PAGE_SIZE + 1}-{2 * PAGE_SIZE} of 100,000")
        assert shown(app)[0] == task_id(PAGE_SIZE)
        await pilot.press("left_square_bracket", "left_square_bracket")
        await settle(pilot)
        assert shown(app)[0] == task_id(0)
        app.screen.query_one("#tasks-queue", Select).value = "reports"
        app.screen.query_one("#tasks-status", Select).value = "failed"
        await settle(pilot)
        view = app.screen.query_one("#view-tasks")
        # i % 3 == 1 (reports) and i % 4 == 2 (failed): one task in 12.
        assert view.page.matched == len(range(10, 100_000, 12))
        assert len(view.page.failed_ids) == view.page.matched
        assert all(view.table.item(k).queue_name == "reports" for k in shown(app))


async def test_hidden_views_filter_only_when_shown() -> None:
    source = StaticSource(demo_snapshot())
    app, _, _ = make_app(source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        view = app.screen.query_one("#view-tasks")
        assert view.page is None  # never shown: nothing filtered yet
        await pilot.press("3")
        await settle(pilot)
        assert view.page is not None and view.page.total == len(task_rows())
        await pilot.press("1")
        source.push(demo_snapshot(task_rows=task_rows()[:5]))
        await settle(pilot)
        assert view.page.total == len(task_rows())  # not refiltered while hidden
        await pilot.press("3")
        await settle(pilot)
        assert view.page.total == 5
