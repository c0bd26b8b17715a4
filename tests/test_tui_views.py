"""What the views show: thresholds, countdowns that tick, the event tail, workers."""

from __future__ import annotations

from datetime import timedelta

from textual.widgets import Select
from tui_fixtures import TAKEN_AT, demo_snapshot, events, make_app, settle, task_id

from omniq_console.monitor.snapshot import EventRow
from omniq_console.tui import StaticSource, build_app
from omniq_console.tui.views.schedules import SchedulesView
from omniq_console.tui.widgets.status_bar import StatusBar

SIZE = (160, 48)


def styles_of(table, key: str) -> list[str]:
    return [
        str(cell.spans[0].style) if cell.spans else str(cell.style) for cell in table.row_cells(key)
    ]


async def test_thresholds_colour_what_needs_attention() -> None:
    app, _, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        queues = app.screen.query_one("#ov-queues")
        reports, emails, default = (styles_of(queues, q) for q in ("reports", "emails", "default"))
        assert "red" in reports[1] and "red" in reports[4]  # 1,500 deep, oldest 15 min
        assert "yellow" in emails[4] and "red" not in emails[1]  # oldest 2m 26s
        assert "red" not in default[1] and "yellow" not in default[1]
        assert queues.render_cell_values("reports")[1:5] == ["1,480", "20", "1", "15m 00s"]
        health = app.screen.query_one("#ov-health").content
        # 7.3% failures: above the 5% warning, below the 20% critical line.
        assert any(
            cell.plain == "7.3%" and "yellow" in str(cell.style)
            for row in health.columns[1].cells
            for cell in [row]
        )
        assert app.screen.query_one("#ov-stuck").has_class("-alert")
        assert app.screen.query_one("#ov-stuck").keys() == [task_id(24)]
        assert app.screen.query_one("#ov-overdue").keys() == ["purge-hourly"]


async def test_countdowns_and_data_age_follow_the_clock_between_polls() -> None:
    now = [TAKEN_AT.timestamp()]  # the console clock is a wall clock
    app = build_app(StaticSource(demo_snapshot()), clock=lambda: now[0])
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("6")
        await settle(pilot)
        table = app.screen.query_one("#schedules-table")
        assert table.render_cell_values("digest-every-5m")[2] == "in 4m 30s"
        now[0] += 30
        # What each widget's own one-second timer does, without waiting a second for it.
        app.screen.query_one(SchedulesView).tick()
        app.screen.query_one(StatusBar).redraw()
        await settle(pilot)
        assert table.render_cell_values("digest-every-5m")[2] == "in 4m 00s"
        assert table.render_cell_values("digest-every-5m")[3] == "1m 00s ago"
        assert table.render_cell_values("purge-hourly")[2] == "late 7m 30s"
        assert "data 30s old" in app.screen.query_one(StatusBar).content.plain


async def test_event_tail_pauses_collects_and_filters() -> None:
    source = StaticSource(demo_snapshot())
    app, _, _ = make_app(source)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("5")
        await settle(pilot)
        table = app.screen.query_one("#events-table")
        info = app.screen.query_one("#events-info")
        assert table.keys() == [e.id for e in events()]
        await pilot.press("space")
        newer = EventRow(
            id="0195a000-ffff-7000-8000-000000000000",
            timestamp=TAKEN_AT + timedelta(seconds=1),
            event_type="failed",
            task_id=task_id(7),
            queue_name="emails",
            error_type="KeyError",
            error_message="'x'",
        )
        source.push(demo_snapshot(events=(newer, *events())))
        await settle(pilot)
        assert newer.id not in table.keys()  # noqa: SIM118 (a table's keys)
        assert "TAIL PAUSED" in info.content.plain and "1 new event waiting" in info.content.plain
        await pilot.press("space")
        await settle(pilot)
        assert table.keys()[0] == newer.id
        assert table.cursor_row == 0  # a live tail stays at its top
        app.screen.query_one("#events-type", Select).value = "failed"
        await settle(pilot)
        assert table.keys() == [e.id for e in (newer, *events()) if e.event_type == "failed"]
        await pilot.press("x", "slash", *"emails")
        await settle(pilot)
        assert table.keys() == []  # "emails" is no task id
        await pilot.press("escape", "x")
        await settle(pilot)
        assert len(table.keys()) == len(events()) + 1


async def test_workers_and_queues_views() -> None:
    app, _, _ = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("7")
        await settle(pilot)
        workers = app.screen.query_one("#workers-table")
        assert workers.keys() == ["worker-a", "worker-b", "worker-c"]
        assert workers.render_cell_values("worker-c")[1] == "busy DEAD"
        assert "1 dead" in app.screen.query_one("#workers-info").content.plain
        await pilot.press("2")
        await settle(pilot)
        queues = app.screen.query_one("#queues-table")
        reports = queues.render_cell_values("reports")
        assert reports[:8] == [
            "reports (paused)",
            "1,480",
            "20",
            "1",
            "1",
            "2",
            "15m 00s",
            "alice, 5m 00s ago",
        ]
        assert reports[8].endswith("█")  # the depth trend, rising to its latest value
        assert "yellow" in styles_of(queues, "reports")[5]  # expired entries wait for cleanup
        assert app.screen.query_one("#queues-summary").content.plain == (
            "3 queues · 1,517 waiting · 4 running · 1 paused · reports by alice, 5m 00s ago"
        )
