"""Issue 14 in the console: what the operator sees at each size, the actions offered only where
they apply, queue controls, bulk actions, throughput, search across bodies, sort and copy.

Every test drives the real app through Pilot on fixed snapshots (``tui_fixtures``); the
operator is a recording stand-in, so each asserts what the console asked the bucket to do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import timedelta

from textual.pilot import Pilot
from textual.widgets import DataTable
from tui_fixtures import (
    TAKEN_AT,
    _row,
    big_snapshot,
    demo_snapshot,
    failed_ids,
    failed_task_detail,
    make_app,
    newest_first,
    record_notifications,
    screen_text,
    settle,
    stale_snapshot,
    task_id,
    task_rows,
)

from omniq_console.models import Task, TaskStatus
from omniq_console.monitor.snapshot import RequestFigures
from omniq_console.runtime.operator import StateChanged
from omniq_console.tui import ConsoleApp, StaticSource
from omniq_console.tui.screens.confirm import ConfirmScreen
from omniq_console.tui.screens.help import HelpScreen
from omniq_console.tui.taskfilter import TaskFilter
from omniq_console.tui.views.tasks import TasksView
from omniq_console.tui.widgets.status_bar import StatusBar

WIDE = (160, 48)


def offered(app: ConsoleApp) -> set[str]:
    """Actions the footer offers now (those whose check_action says yes)."""
    return {b.binding.action for b in app.screen.active_bindings.values() if b.enabled}


def palette(app: ConsoleApp) -> list[str]:
    return [c.title for c in app.get_system_commands(app.screen)]


def status_line(app: ConsoleApp) -> str:
    return app.screen.query_one(StatusBar).content.plain


async def select_task(app: ConsoleApp, pilot: object, n: int) -> None:
    table = app.screen.query_one("#tasks-table", DataTable)
    table.move_cursor(row=table.get_row_index(task_id(n)))
    await settle(pilot)  # type: ignore[arg-type]


# Seen on screen


async def test_workers_show_load_what_they_run_and_the_dead_within_160_columns() -> None:
    app, _, _ = make_app(views=("workers",))
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        table = app.screen.query_one("#workers-table")
        a = table.render_cell_values("worker-a")
        assert a[:6] == ["worker-a", "busy", "3s ago", "2/4 50%", "1,520", "6"]
        assert a[6] == f"send_digest {task_id(21)[:8]}…, send_digest {task_id(22)[:8]}…"
        assert table.render_cell_values("worker-c")[1] == "busy DEAD"
        info = app.screen.query_one("#workers-info").content.plain
        assert "3 workers · 1 dead" in info and "4 tasks running in 7 slots" in info
        text = screen_text(app)
        for header in ("Heartbeat", "Running/slots", "Done", "Failed", "Running (function"):
            assert header in text, f"{header} left the screen at 160 columns"


async def test_key_columns_stay_whole_at_120_columns() -> None:
    app, _, _ = make_app(views=("tasks", "results"))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        app.screen.query_one(TasksView).set_filter(TaskFilter(status="failed"))
        await settle(pilot)
        text = screen_text(app)
        assert "Exception" in text and "TimeoutError" in text and "Created (UTC)" in text
        assert "03-02 14:13:00" in text  # the newest failure's creation time, whole
        await pilot.press("4")
        await settle(pilot)
        assert "Failed (UTC)" in screen_text(app)  # a failure lists when it failed


async def test_stale_banner_wraps_its_error_at_whole_words_at_80_columns() -> None:
    error = "BackendUnavailableError: timed out talking to storage.googleapis.com after 3 tries"
    stale = demo_snapshot(stale=True, taken_at=TAKEN_AT - timedelta(seconds=47), error=error)
    app, _, _ = make_app(StaticSource(stale), views=("backend",))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        lines = screen_text(app).splitlines()
        words = set(" ".join(lines[:3]).split())
        for word in error.split():
            assert word in words, f"{word!r} was cut"


async def test_overview_at_80x24_keeps_events_and_workers_reachable() -> None:
    app, _, _ = make_app(views=("overview",))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        for panel in ("#ov-stuck", "#ov-overdue", "#ov-events", "#ov-workers"):
            widget = app.screen.query_one(panel)
            assert widget.size.height >= 4, f"{panel} collapsed to {widget.size.height} rows"
        workers = app.screen.query_one("#ov-workers")
        workers.focus()
        workers.scroll_visible(animate=False)
        await settle(pilot)
        assert "worker-a" in screen_text(app)


async def test_outcome_chart_and_failure_rate_say_what_they_cover() -> None:
    app, _, _ = make_app(views=("overview", "results"))
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        chart = app.screen.query_one("#ov-chart")
        assert chart.border_title == (
            "Outcomes per minute, last 15 min (UTC, from results and events)"
        )
        assert app.screen.query_one("#ov-health").border_title == (
            "Health · failure rate over 15m 00s"
        )
        await pilot.press("4")
        await settle(pilot)
        outcomes = app.screen.query_one("#results-outcomes").content.plain
        assert "failure rate (last 15m 00s) 7.3%" in outcomes


async def test_status_bar_shows_no_live_cost_while_paused_nor_a_rate_without_a_window() -> None:
    app, source, _ = make_app(views=("backend",))
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        assert "● data" in status_line(app) and "150 req/min" in status_line(app)
        await pilot.press("P")
        await settle(pilot)
        line = status_line(app)
        assert "●" not in line and "req/min" not in line and "$" not in line
        assert "polling paused" in line
        await pilot.press("P")
        source.push(
            demo_snapshot(
                requests=RequestFigures(total=3, requests_per_minute=None), changes="pubsub"
            )
        )
        await settle(pilot)
        line = status_line(app)
        assert "req/min" not in line and "$" not in line
        assert "changes: Pub/Sub" in line


async def test_connecting_is_shown_from_the_first_frame_with_the_attempt() -> None:
    first = demo_snapshot(connecting=True, attempt=2, error="timed out", task_rows=(), tasks={})
    app, _, _ = make_app(StaticSource(first), bucket="nope", views=("backend",))
    async with app.run_test(size=WIDE) as pilot:
        assert "connecting to gs://nope" in status_line(app)
        await settle(pilot)
        line, error = status_line(app).split("\n")
        assert "connecting to gs://nope/omniq/ (attempt 2)…" in line
        assert error.strip() == "timed out"


async def test_interval_and_counts_read_as_people_write_them() -> None:
    rows = task_rows()[:1]
    app, _, _ = make_app(
        StaticSource(demo_snapshot(poll_interval_s=3.33295, task_rows=rows, tasks={"pending": 1})),
        views=("backend",),
    )
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        line = status_line(app)
        assert "every 3.3 s" in line and "│ 1 task" in line and "1 tasks" not in line


async def test_newest_first_tasks_stay_at_the_top_and_page_two_does_not_slide() -> None:
    source = StaticSource(demo_snapshot())
    app, _, _ = make_app(source, views=("tasks",))
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        table = app.screen.query_one("#tasks-table")
        newer = _row(900, "emails", "app.mail.send_welcome", TaskStatus.PENDING, age_s=-5)
        source.push(demo_snapshot(task_rows=(newer, *task_rows())))
        await settle(pilot)
        assert table.keys()[0] == newer.id and table.cursor_row == 0
        assert table.selected_key == newer.id
    big = big_snapshot(1000)
    source = StaticSource(big)
    app, _, _ = make_app(source, views=("tasks",))
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        await pilot.press("right_square_bracket")
        await settle(pilot)
        view = app.screen.query_one(TasksView)
        first = view.page.rows[0].id if view.page else None
        arriving = tuple(
            _row(5000 + i, "emails", "app.jobs.new", TaskStatus.PENDING, age_s=-1 - i)
            for i in range(30)
        )
        source.push(demo_snapshot(task_rows=arriving + big.task_rows))
        await settle(pilot)
        assert view.page is not None and view.page.rows[0].id == first


async def test_text_search_finds_errors_at_once_and_arguments_in_the_background() -> None:
    detail = failed_task_detail()
    source = StaticSource(demo_snapshot(), details={task_id(41): detail})
    app, _, _ = make_app(source, views=("tasks",))
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        table = app.screen.query_one("#tasks-table")
        # An event's error message, already in the snapshot: no body read needed.
        await pilot.press("slash", *"bad address", "enter")
        await settle(pilot)
        assert task_id(4) in table.keys()  # noqa: SIM118 (a table's keys, not a dict's)
        await pilot.press("x")
        await settle(pilot)
        # Arguments live in bodies: read in the background, then matched.
        await pilot.press("slash", *"ann@example", "enter")
        await settle(pilot)
        assert table.keys() == [task_id(41)]
        assert task_id(41) in source.body_requests


class GatedSource(StaticSource):
    """Each body read waits for a pass the test gives: the scan is caught while it runs."""

    def __init__(self) -> None:
        super().__init__(demo_snapshot())
        self.passes = asyncio.Semaphore(0)

    async def task_bodies(self, task_ids: Sequence[str]) -> dict[str, Task | None]:
        await self.passes.acquire()
        return await super().task_bodies(task_ids)


async def until(pilot: Pilot[None], what: str, condition: Callable[[], bool]) -> None:
    for _ in range(200):
        if condition():
            return
        await pilot.pause()
    raise AssertionError(f"timed out waiting for {what}")


async def test_the_body_scan_shows_progress_and_a_count_and_stops_on_its_key() -> None:
    source = GatedSource()
    app, _, _ = make_app(source, views=("tasks",))
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        view = app.screen.query_one(TasksView)
        await pilot.press("slash", *"nothing-matches", "enter")
        await until(pilot, "the body scan to start", lambda: view.scanning)
        assert view.query_one("#tasks-scan").display
        assert "stop_scan" in offered(app)
        source.passes.release()  # one slice of 50 bodies, then the scan waits again
        await until(
            pilot,
            "the first slice to be counted",
            lambda: "50 of 57 read" in str(view.query_one("#tasks-scan-info").content),
        )
        assert view.scanning
        await pilot.press("s")
        await until(pilot, "the scan to stop", lambda: not view.scanning)
        await settle(pilot)
        assert not view.query_one("#tasks-scan").display
        assert "stop_scan" not in offered(app)


# Actions offered only where they apply


async def test_actions_follow_the_selected_tasks_state_in_footer_help_and_palette() -> None:
    app, _, _ = make_app(views=("tasks",))
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        await select_task(app, pilot, 41)  # failed
        assert {"retry", "delete"} <= offered(app) and "cancel" not in offered(app)
        titles = palette(app)
        assert "Retry selected task" in titles and "Cancel selected task" not in titles
        await pilot.press("c")
        await settle(pilot)
        assert not isinstance(app.screen, ConfirmScreen)  # nothing asked, nothing refused
        await pilot.press("question_mark")
        await settle(pilot)
        assert isinstance(app.screen, HelpScreen)
        help_text = app.screen.query_one("#help-text").content.plain
        tasks_part = help_text.split("Tasks view (shown now)")[1].split("\nTask detail")[0]
        assert "Retry" in tasks_part and "  c " not in tasks_part
        await pilot.press("escape")
        await select_task(app, pilot, 1)  # pending
        assert "cancel" in offered(app) and "retry" not in offered(app)
        assert "Cancel selected task" in palette(app)


async def test_run_now_on_a_paused_schedule_asks_first() -> None:
    app, _, operator = make_app(views=("schedules",))
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        table = app.screen.query_one("#schedules-table")
        table.move_cursor(row=table.get_row_index("warmup-cache"))
        await settle(pilot)
        assert "pause" not in offered(app) and "resume" in offered(app)
        await pilot.press("t")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        assert "is paused. Run it once now anyway?" in app.screen.question.plain
        assert operator.calls == []
        await pilot.press("y")
        await settle(pilot)
        assert operator.calls == [("trigger_schedule", ("warmup-cache",), {})]


async def test_a_task_that_moved_on_is_told_and_the_action_for_its_state_offered() -> None:
    app, _, operator = make_app(views=("tasks",))
    operator.fail["cancel_task"] = StateChanged(
        task_id(1), "running", ("cancel", "delete"), f"task {task_id(1)} is now running on w-1"
    )
    async with app.run_test(size=WIDE) as pilot:
        seen = record_notifications(app)
        await settle(pilot)
        await select_task(app, pilot, 1)
        await pilot.press("c")
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
        assert any("is now running on w-1" in message for message, _ in seen)
        assert isinstance(app.screen, ConfirmScreen)
        assert "Cancel it now, as it is (running)?" in app.screen.question.plain
        del operator.fail["cancel_task"]
        await pilot.press("y")
        await settle(pilot)
        assert operator.calls[-1] == (
            "cancel_task",
            (task_id(1),),
            {"expected_status": "running"},
        )


# Queue controls, bulk actions, throughput


async def test_queue_pause_resume_and_purge_of_the_exact_pending_ids() -> None:
    app, _, operator = make_app(views=("overview", "queues"))
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        assert "(paused)" in app.screen.query_one("#ov-queues").render_cell_values("reports")[0]
        await pilot.press("2")
        await settle(pilot)
        table = app.screen.query_one("#queues-table")
        assert "1 paused" in app.screen.query_one("#queues-summary").content.plain
        table.move_cursor(row=table.get_row_index("emails"))
        await settle(pilot)
        assert "pause_queue" in offered(app) and "resume_queue" not in offered(app)
        await pilot.press("p")
        await settle(pilot)
        table.move_cursor(row=table.get_row_index("reports"))
        await settle(pilot)
        assert "resume_queue" in offered(app) and "pause_queue" not in offered(app)
        await pilot.press("u")
        await settle(pilot)
        table.move_cursor(row=table.get_row_index("emails"))
        await settle(pilot)
        await pilot.press("X")
        await settle(pilot)
        pending = tuple(
            r.id for r in task_rows() if r.queue_name == "emails" and r.status == "pending"
        )
        assert isinstance(app.screen, ConfirmScreen)
        assert app.screen.question.plain == (f"Purge {len(pending)} tasks pending in queue emails?")
        await pilot.press("y")
        await settle(pilot)
        assert [c[0] for c in operator.calls] == ["pause_queue", "resume_queue", "purge_queue"]
        assert operator.calls[0][1] == ("emails",) and operator.calls[1][1] == ("reports",)
        assert operator.calls[2][1] == ("emails", pending)


async def test_bulk_cancel_and_delete_are_bound_to_the_ids_counted() -> None:
    app, source, operator = make_app(views=("tasks", "results"))
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        await pilot.press("C")
        await settle(pilot)
        cancellable = tuple(
            r.id for r in newest_first(task_rows()) if r.status in ("pending", "running")
        )
        assert isinstance(app.screen, ConfirmScreen)
        assert app.screen.question.plain.startswith(f"Cancel {len(cancellable)} tasks")
        # A new snapshot while the question is open changes nothing that is sent.
        source.push(demo_snapshot(task_rows=task_rows()[:3]))
        await pilot.press("y")
        await settle(pilot)
        assert operator.calls[-1] == ("cancel_tasks", (cancellable,), {"expected_status": None})
        await pilot.press("4")
        await settle(pilot)
        source.push(demo_snapshot())
        await settle(pilot)
        await pilot.press("D")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        assert "Delete 6 tasks failed of ValueError" in app.screen.question.plain
        await pilot.press("y")
        await settle(pilot)
        assert operator.calls[-1][0] == "delete_tasks"
        assert operator.calls[-1][1] == (failed_ids("ValueError"),)


async def test_throughput_per_queue_over_the_window_picked_says_what_the_bucket_covers() -> None:
    app, _, _ = make_app(views=("queues",))
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        table = app.screen.query_one("#throughput-table")
        assert table.render_cell_values("emails")[:6] == [
            "emails",
            "120",
            "6",
            "8.0",
            "1.20s",
            "3.60s",
        ]
        line = app.screen.query_one("#queues-window")
        assert "last 15m" in line.content.plain and "holds only" not in line.content.plain
        assert app.screen.query_one("#throughput-chart").display
        await pilot.press("w", "w")
        await settle(pilot)
        assert "last 6h · the bucket holds only the last 2h 30m of it" in line.content.plain
        assert table.render_cell_values("emails")[1] == "1,200"


# Sort and copy


async def test_any_table_sorts_by_a_column_by_key_and_by_header_click() -> None:
    app, _, _ = make_app(views=("workers",))
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        table = app.screen.query_one("#workers-table")
        table.sort_by("processed")
        await settle(pilot)
        assert table.keys() == ["worker-c", "worker-b", "worker-a"]  # 210, 1,388, 1,520
        await pilot.press("o")  # the next column: failed
        await settle(pilot)
        assert table.sorted_by == ("failed", False)
        assert table.keys() == ["worker-b", "worker-c", "worker-a"]
        await pilot.click("#workers-table", offset=(2, 0))  # the Worker header
        await settle(pilot)
        assert table.sorted_by == ("id", False)
        await pilot.click("#workers-table", offset=(2, 0))
        await settle(pilot)
        assert table.sorted_by == ("id", True)
        assert table.keys() == ["worker-c", "worker-b", "worker-a"]


async def test_copy_a_task_id_and_a_traceback_to_the_clipboard() -> None:
    app, _, _ = make_app(views=("tasks",))
    async with app.run_test(size=WIDE) as pilot:
        seen = record_notifications(app)
        await settle(pilot)
        await select_task(app, pilot, 41)
        assert "copy_id" in offered(app)
        await pilot.press("y")
        assert app.clipboard == task_id(41)
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("Y")
        await settle(pilot)
        traceback = failed_task_detail().result.traceback  # type: ignore[union-attr]
        assert app.clipboard == traceback
        assert any(m.startswith("Copied the traceback (4 lines)") for m, _ in seen)


# How the TUI is built


async def test_each_view_offers_its_own_palette_commands() -> None:
    app, _, _ = make_app(views=("queues", "events"))
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        assert "Pause selected queue" in palette(app)
        await pilot.press("5")
        await settle(pilot)
        titles = palette(app)
        assert "Pause event tail" in titles and "Pause selected queue" not in titles


async def test_only_the_visible_view_draws_a_snapshot() -> None:
    source = StaticSource(demo_snapshot())
    app, _, _ = make_app(source, views=("overview", "workers"))
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        workers = app.screen.query_one("#workers-table")
        assert workers.keys() == []  # never shown yet: never drawn
        fewer = demo_snapshot(workers=demo_snapshot().workers[:1], taken_at=TAKEN_AT)
        source.push(fewer)
        await settle(pilot)
        assert workers.keys() == []
        await pilot.press("7")
        await settle(pilot)
        assert workers.keys() == ["worker-a"]
        assert app.screen.query_one("#ov-workers").keys() == ["worker-a"]


async def test_a_stale_snapshot_then_a_fresh_one_turn_the_bar_back() -> None:
    source = StaticSource([stale_snapshot(), demo_snapshot(taken_at=TAKEN_AT + timedelta(1))])
    app, _, _ = make_app(source, views=("backend",))
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        assert app.screen.query_one(StatusBar).has_class("-stale")
        await pilot.press("ctrl+r")
        await settle(pilot)
        assert not app.screen.query_one(StatusBar).has_class("-stale")
