"""What an operator sees at 80x24, 120x40 and 160x48 (issue 24, items 1-3): the first
screen of the overview, which columns are whole, and sorting of the whole filter.

One app boot per terminal size; each test mounts and walks only the views it checks (the
first, the overview, is what an operator sees first); view keys keep their numbers.
"""

from __future__ import annotations

from textual.widgets.data_table import ColumnKey
from tui_fixtures import big_snapshot, make_app, screen_text, settle, task_id

from omniq_console.tui import StaticSource
from omniq_console.tui.columns import FittedTable, Width, plan_widths


def whole(table: FittedTable, *keys: str) -> None:
    """Each column ``key`` is as wide as its widest cell and its header (none is cut)."""
    natural = dict(zip([k for k, _ in table._column_spec], table.natural_widths(), strict=True))
    for key in keys:
        width = table.columns[ColumnKey(key)].width
        assert width >= natural[key] > 0, (table.id, key, width, natural[key])


def visible(table: FittedTable, *keys: str) -> None:
    """Each column ``key`` is on screen (not hidden, not past the right edge)."""
    x = 0
    for column in table.ordered_columns:
        right = x + column.get_render_width(table)
        if column.key.value in keys:
            assert column.width > 0 and right <= table.size.width, (table.id, column.key.value)
        x = right


def test_plan_widths_keeps_key_columns_cuts_text_then_drops() -> None:
    key, text, fill, extra = Width(), Width(cut=4), Width(cut=5, fill=True), Width(drop=1)
    # Room for all: natural widths, the fill column takes the rest.
    assert plan_widths([key, text, fill], [6, 10, 8], 40) == [6, 10, 18]
    # Short of room: the text column is cut, the key column is not.
    assert plan_widths([key, text, fill], [6, 10, 8], 23) == [6, 6, 5]
    # Shorter still: the droppable column goes (its padding stays), the rest is cut.
    assert plan_widths([key, text, extra], [6, 10, 7], 16) == [6, 4, 0]


async def test_at_80x24_the_first_screens_show_what_an_operator_decides_by() -> None:
    app, _, _ = make_app(views=("overview", "events", "schedules"))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        first = screen_text(app)
        # Every queue's depth and oldest age, the failure rate, stuck and overdue counts.
        for text in ("emails", "15", "2m 26s", "reports", "1,480", "15m 00s", "default"):
            assert text in first, text
        for text in ("failures 7.3%", "1 stuck", "1 overdue", "workers 2/3 alive"):
            assert text in first, text
        assert "Live events" not in first
        view = app.screen.query_one("#view-overview")
        await pilot.press("pagedown")
        await settle(pilot)
        assert view.scroll_y > 0
        for _ in range(4):  # the tail is the sixth panel down
            if "Live events" in screen_text(app):
                break
            await pilot.press("pagedown")
            await settle(pilot)
        assert "Live events" in screen_text(app)
        await pilot.press(*["pageup"] * 6)
        await settle(pilot)
        assert view.scroll_y == 0

        await pilot.press("6")
        await settle(pilot)
        schedules = app.screen.query_one("#schedules-table", FittedTable)
        whole(schedules, "status", "next", "last", "runs")
        visible(schedules, "id", "status", "next", "last", "runs", "paused")
        text = screen_text(app)
        assert "paused" in text and "late 7m 00s" in text and "1203" in text

        await pilot.press("5")
        await settle(pilot)
        events = app.screen.query_one("#events-table", FittedTable)
        visible(events, "time", "type", "what")
        assert events.columns[ColumnKey("what")].width >= 24
        assert "ValueError: bad address" in screen_text(app)


async def test_at_120x40_key_columns_are_whole() -> None:
    app, _, _ = make_app(views=("overview", "tasks"))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        tail = app.screen.query_one("#ov-events", FittedTable)
        visible(tail, "time", "type", "who", "what")
        whole(tail, "time", "type")
        assert tail.columns[ColumnKey("what")].width >= 16
        stuck = app.screen.query_one("#ov-stuck", FittedTable)
        whole(stuck, "id", "overdue")
        visible(stuck, "id", "overdue", "worker")
        overdue = app.screen.query_one("#ov-overdue", FittedTable)
        whole(overdue, "late")
        visible(overdue, "id", "late")
        text = screen_text(app)
        for cut in ("Work ", "Next ru ", "from results a…"):
            assert cut not in text, cut

        await pilot.press("3")
        await settle(pilot)
        tasks = app.screen.query_one("#tasks-table", FittedTable)
        whole(tasks, "id", "status", "created", "retries", "priority", "worker")
        visible(tasks, *(key for key, _ in tasks._column_spec))


async def test_at_160x48_the_throughput_table_is_whole_and_sorting_marks_its_column() -> None:
    app, _, _ = make_app(views=("overview", "queues"))
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)
        throughput = app.screen.query_one("#throughput-table", FittedTable)
        whole(throughput, *(key for key, _ in throughput._column_spec))
        visible(throughput, *(key for key, _ in throughput._column_spec))
        queues = app.screen.query_one("#queues-table", FittedTable)
        for column in ("oldest", "pending"):
            queues.sort_by(column, descending=True)
            await settle(pilot)
            label = queues.columns[ColumnKey(column)].label.plain
            assert label.endswith(" ▼")
            whole(queues, column)  # the marker is drawn, not cut
        assert queues.keys()[0] == "reports"


async def test_sorting_sorts_the_whole_filter_and_says_so() -> None:
    app, _, _ = make_app(StaticSource(big_snapshot(5_000)), views=("tasks",))
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        await pilot.press("3")
        await settle(pilot)
        view = app.screen.query_one("#view-tasks")
        info = app.screen.query_one("#tasks-info")
        assert "newest first" in info.content.plain
        assert view.table.columns[ColumnKey("created")].label.plain.endswith("▼")
        # What a click on the Prio header does.
        view.table.sort_by("priority", descending=True)
        await settle(pilot)
        shown = [view.table.item(k) for k in view.table.keys()]  # noqa: SIM118 (a table's keys)
        # priority = i % 5: every row of the first page has the top priority (a sort of the
        # 200 newest rows would show 40 of them), newest first among equals.
        assert len(shown) == 200 and {r.priority for r in shown} == {4}
        assert shown[0].id == task_id(4)
        assert "sorted by Prio ▼" in info.content.plain
        assert view.table.columns[ColumnKey("priority")].label.plain == "Prio ▼"
        whole(view.table, "priority", "created", "retries")
        view.table.sort_by("priority", descending=False)
        await settle(pilot)
        assert {view.table.item(k).priority for k in view.table.keys()} == {0}  # noqa: SIM118
        assert "sorted by Prio ▲" in info.content.plain
        await pilot.press("right_square_bracket")
        await settle(pilot)
        assert view.page.start == 200 and view.page.order.column == "priority"
