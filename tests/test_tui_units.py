"""The console's plain parts: filtering and paging, the event log, formats, thresholds,
messages, the static source, and the keyed table's diffing."""

from __future__ import annotations

import msgspec

import asyncio
from datetime import timedelta

import pytest
from rich.text import Text
from textual.app import App, ComposeResult
from tui_fixtures import (
    ANSI_ERROR,
    TAKEN_AT,
    demo_snapshot,
    make_app,
    newest_first,
    settle,
    task_rows,
)
from waiting import wait_until

from omniq_console.backend.errors import ConflictError
from omniq_console.monitor.groups import UNKNOWN_ERROR as NO_ERROR_TYPE
from omniq_console.monitor.groups import failure_groups
from omniq_console.monitor.snapshot import EventRow, TaskDetail
from omniq_console.runtime.operator import BulkOutcome
from omniq_console.tui import StaticSource, cells
from omniq_console.tui.eventlog import EventFilter, EventLog
from omniq_console.tui.fmt import countdown, duration, sparkline
from omniq_console.tui.operations import describe_bulk, describe_error
from omniq_console.tui.taskfilter import TaskFilter, TaskOrder, page_start, select_tasks
from omniq_console.tui.thresholds import Level, Thresholds
from omniq_console.tui.widgets.keyed_table import KeyedTable


def test_select_tasks_filters_orders_and_pages() -> None:
    rows = task_rows()
    page = select_tasks(rows, TaskFilter(queue="emails", status="failed"), start=0, size=4)
    expected = [r for r in newest_first(rows) if r.queue_name == "emails" and r.status == "failed"]
    assert [r.id for r in page.rows] == [r.id for r in expected[:4]]
    assert (page.start, page.matched, page.total) == (0, 6, len(rows))
    assert page.failed_ids == tuple(r.id for r in expected)
    assert page.failed_queues == ("emails",)
    last = select_tasks(rows, TaskFilter(queue="emails", status="failed"), start=99, size=4)
    assert last.start == 4 and [r.id for r in last.rows] == [r.id for r in expected[4:]]
    assert last.describe() == "showing 5-6 of 6 matching (57 in all)"


def test_an_order_sorts_the_whole_filter_before_paging() -> None:
    rows = task_rows()
    flt = TaskFilter(queue="emails")
    emails = [r for r in newest_first(rows) if r.queue_name == "emails"]
    page = select_tasks(rows, flt, size=3, order=TaskOrder("priority", descending=True))
    # The one priority-9 task leads, then the rest newest first (ties keep that order).
    assert [r.priority for r in page.rows] == [9, 0, 0]
    assert page.rows[1:] == tuple(r for r in emails if r.priority == 0)[:2]
    by_retries = select_tasks(rows, flt, start=3, size=3, order=TaskOrder("retries", False))
    assert [r.retry_count for r in by_retries.rows] == [0, 0, 0] and by_retries.start == 3
    last = select_tasks(rows, flt, start=len(emails) - 1, order=TaskOrder("retries", False))
    assert last.rows[-1].retry_count == 3
    oldest = select_tasks(rows, flt, size=1, order=TaskOrder("created", descending=False))
    assert oldest.rows[0].id == emails[-1].id
    assert TaskOrder().describe("Created") == "newest first"
    assert TaskOrder("retries").describe("Retries") == "sorted by Retries ▼"
    with pytest.raises(ValueError, match="cannot be sorted by 'args'"):
        TaskOrder("args")


def test_text_filter_looks_at_id_function_queue_worker_and_error() -> None:
    rows = task_rows()
    for text, check in (
        ("WORKER-C", lambda r: r.worker_id == "worker-c"),
        ("timeouterror", lambda r: r.error_type == "TimeoutError"),
        (rows[3].id[:8], lambda r: r.id == rows[3].id),
        ("[bold", lambda r: r.func.startswith("[bold")),
    ):
        page = select_tasks(rows, TaskFilter(text=text))
        assert {r.id for r in page.rows} == {r.id for r in rows if check(r)}, text


def test_error_type_filter_and_the_unknown_group() -> None:
    rows = task_rows()
    unknown = msgspec.structs.replace(rows[0], id="no-type", status="failed", error_type=None)
    page = select_tasks((*rows, unknown), TaskFilter(status="failed", error_type=NO_ERROR_TYPE))
    assert [r.id for r in page.rows] == ["no-type"]
    groups = failure_groups((*rows, unknown))
    assert [(g.error_type, g.count) for g in groups] == [
        ("ValueError", 6),
        ("TimeoutError", 3),
        (NO_ERROR_TYPE, 1),
        (ANSI_ERROR, 1),
    ]
    assert failure_groups(rows, queue="reports")[0].queues == ("reports",)


def test_filter_descriptions_name_what_a_bulk_action_takes() -> None:
    flt = TaskFilter(queue="emails", status="failed", error_type="ValueError", func="send")
    assert flt.describe() == (
        "with status failed of ValueError whose function contains 'send' in queue emails"
    )
    assert flt.describe(with_status=False) == (
        "of ValueError whose function contains 'send' in queue emails"
    )
    page = select_tasks(task_rows(), TaskFilter(text="app."))
    assert page.failed_description() == "matching 'app.' in queues emails, reports"
    assert select_tasks(task_rows(), TaskFilter()).failed_description() == (
        "in queues default, emails, reports"
    )
    assert TaskFilter().is_empty and not flt.is_empty


@pytest.mark.parametrize(
    ("start", "matched", "expected"),
    [
        (0, 0, 0),
        (-5, 10, 0),
        (250, 1000, 200),
        (999, 1000, 800),
        (5000, 1000, 800),
    ],
)
def test_page_start_stays_on_a_page_boundary(start: int, matched: int, expected: int) -> None:
    assert page_start(start, matched, 200) == expected


def _event(n: int, kind: str = "enqueued", task: str = "t", queue: str = "q") -> EventRow:
    return EventRow(
        id=f"e{n:04d}",
        timestamp=TAKEN_AT + timedelta(seconds=n),
        event_type=kind,
        task_id=task,
        queue_name=queue,
    )


def test_event_log_merges_by_id_keeps_the_newest_and_filters() -> None:
    log = EventLog(capacity=5)
    assert log.merge([_event(1), _event(2)]) == 2
    assert log.merge([_event(2), _event(3)]) == 1
    assert (
        log.merge(_event(n, "failed" if n % 2 else "completed", f"task-{n}") for n in range(4, 9))
        == 5
    )
    assert [e.id for e in log.newest_first()] == ["e0008", "e0007", "e0006", "e0005", "e0004"]
    assert [e.id for e in log.newest_first(EventFilter(event_type="failed"))] == ["e0007", "e0005"]
    assert [e.id for e in log.newest_first(EventFilter(task="TASK-6"))] == ["e0006"]
    assert log.newest_first(EventFilter(queue="nope")) == []
    with pytest.raises(ValueError):
        EventLog(capacity=0)


def test_formats() -> None:
    assert [duration(s) for s in (None, 0, 59, 65, 3599, 3600, 90061)] == [
        "—",
        "0s",
        "59s",
        "1m 05s",
        "59m 59s",
        "1h 00m",
        "1d 01h",
    ]
    assert countdown(TAKEN_AT + timedelta(seconds=90), TAKEN_AT) == "in 1m 30s"
    assert countdown(TAKEN_AT, TAKEN_AT) == "due now"
    assert countdown(TAKEN_AT - timedelta(minutes=7), TAKEN_AT) == "late 7m 00s"
    assert sparkline([0, 5, 10]) == "▁▅█"
    assert sparkline([0, 0]) == "▁▁"
    assert sparkline([1, 2, 3, 4], width=2) == "▆█"
    assert sparkline([]) == ""


def test_thresholds() -> None:
    t = Thresholds(depth_warning=10, depth_critical=100)
    assert [t.depth(n) for n in (9, 10, 99, 100)] == [
        Level.OK,
        Level.WARNING,
        Level.WARNING,
        Level.CRITICAL,
    ]
    assert t.oldest_age(None) is Level.OK
    assert t.oldest_age(600) is Level.CRITICAL
    assert t.failure_rate(0.06) is Level.WARNING
    with pytest.raises(ValueError, match="depth thresholds"):
        Thresholds(depth_warning=10, depth_critical=5)


def test_bulk_outcome_is_told_with_reasons() -> None:
    outcome = BulkOutcome(
        done=["a", "b"],
        skipped=[("c", "its status changed from failed to pending")],
        failed=[("d", "503 Service Unavailable")],
    )
    message, complete = describe_bulk("Retry 4 failed tasks", outcome)
    assert not complete
    assert message.splitlines() == [
        "Retry 4 failed tasks: 2 of 4 done",
        "1 skipped (changed since you saw them), e.g. c: its status changed from failed to pending",
        "1 failed, e.g. d: 503 Service Unavailable",
    ]
    assert describe_bulk("Retry", BulkOutcome(done=["a"])) == ("Retry: 1 of 1 done", True)
    assert describe_error("Pause", ConflictError("k", 3)) == (
        "Pause: changed since you saw it: refresh and try again"
    )


async def test_static_source_replays_and_records() -> None:
    first, second = demo_snapshot(age_s=1.0), demo_snapshot(age_s=2.0)
    source = StaticSource([first, second], details={"x": TaskDetail(task_id="x")})
    seen: list[float] = []
    unsubscribe = source.subscribe(lambda s: seen.append(s.age_s))
    runner = asyncio.create_task(source.run())

    def woken() -> bool:  # the run loop took the last wake-up (a test double's state)
        return source._wake is not None and not source._wake.is_set()

    await wait_until(lambda: seen, "the first snapshot")
    assert seen == [1.0] and source.latest is first
    source.request_poll()
    await wait_until(lambda: len(seen) == 2, "the first requested snapshot")
    source.request_poll()
    await wait_until(lambda: len(seen) == 3, "the second requested snapshot")
    assert seen == [1.0, 2.0, 2.0] and source.poll_requests == 2
    source.pause()
    source.request_poll()
    await wait_until(woken, "the paused loop woken")
    assert seen == [1.0, 2.0, 2.0]
    unsubscribe()
    source.resume()
    source.request_poll()
    await wait_until(woken, "the loop woken")
    assert seen == [1.0, 2.0, 2.0]
    assert (await source.task_detail("x")).task_id == "x"
    assert (await source.task_detail("y")).task is None
    assert source.detail_requests == ["x", "y"]
    with pytest.raises(ValueError):
        source.set_interval(0)
    runner.cancel()


class _TableApp(App[None]):
    def compose(self) -> ComposeResult:
        yield KeyedTable(
            (("name", "Name"), ("n", "N")),
            lambda item: [Text(item[0]), Text(str(item[1]))],
            id="t",
        )


async def test_keyed_table_touches_only_what_changed() -> None:
    app = _TableApp()
    async with app.run_test() as pilot:
        table = app.query_one(KeyedTable)
        table.sync([("a", ("a", 1)), ("b", ("b", 2)), ("c", ("c", 3))])
        await pilot.pause()
        table.move_cursor(row=1)
        updated: list[tuple[object, object]] = []
        added: list[object] = []
        original_update, original_add = table.update_cell, table.add_row
        table.update_cell = lambda r, c, v, **k: (
            updated.append((r, c)),
            original_update(r, c, v, **k),
        )  # type: ignore[method-assign]
        table.add_row = lambda *cells, **k: (added.append(k["key"]), original_add(*cells, **k))[1]  # type: ignore[method-assign]
        table.sync([("d", ("d", 4)), ("b", ("b", 20)), ("a", ("a", 1))])
        await pilot.pause()
        assert table.keys() == ["d", "b", "a"]
        assert updated == [("b", "n")]  # only the changed cell of the changed row
        assert added == ["d"]
        assert table.selected_key == "b"  # the cursor followed its row
        assert table.render_cell_values("b") == ["b", "20"]
        with pytest.raises(ValueError):
            table.sync([("x", ("x", 1)), ("x", ("x", 2))])


async def test_long_lived_objects_are_frozen_once_and_never_when_headless(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import omniq_console.tui.app as app_module

    calls: list[str] = []
    monkeypatch.setattr(app_module.gc, "collect", lambda *a: calls.append("collect") or 0)
    monkeypatch.setattr(app_module.gc, "freeze", lambda: calls.append("freeze"))
    app, _, _ = make_app()
    async with app.run_test() as pilot:
        await settle(pilot)
        assert calls == []  # headless: the process is shared with other code
        app.freeze_long_lived_objects()
        app.freeze_long_lived_objects()
        # Frozen as they are: a full collection first would block the screen for as long as
        # the one the freeze spares (130-285 ms with 100,000 tasks).
        assert calls == ["freeze"]


def test_intervals_and_plurals_read_as_people_write_them() -> None:
    from omniq_console.tui.fmt import every, plural

    assert [every(s) for s in (3.33295, 2.0, 0.5, 30.0, 120.0)] == [
        "every 3.3 s",
        "every 2 s",
        "every 0.5 s",
        "every 30 s",
        "every 2 min",
    ]
    assert [plural(n, "task") for n in (0, 1, 2, 1500)] == [
        "0 tasks",
        "1 task",
        "2 tasks",
        "1,500 tasks",
    ]


def test_natural_sort_orders_numbers_by_value() -> None:
    from omniq_console.tui.widgets.keyed_table import natural_key

    cells = ["1,480", "20", "3", "b", "A"]
    assert sorted(cells, key=natural_key) == ["3", "20", "1,480", "A", "b"]


def test_tables_show_a_functions_name_without_its_module() -> None:
    # The module prefix is what a narrow column would keep, and it says least.
    assert cells.func_name("omniq_console.demo.tasks:send_email").plain == "send_email"
    assert cells.func_name("app.mail:Mailer.send").plain == "Mailer.send"
    assert cells.func_name("app.mail.send").plain == "send"
    assert cells.func_name("send").plain == "send"


def test_a_worker_holding_thousands_of_tasks_names_a_few_and_counts_the_rest() -> None:
    # At a million tasks a worker held 50,000 stale leases: its cell was 50,000 parts.
    from omniq_console.monitor.snapshot import WorkerRow
    from omniq_console.tui.cells import WORKER_TASKS_SHOWN, worker_tasks

    ids = tuple(f"{n:032x}" for n in range(50_000))
    base = {"id": "w", "state": "running", "alive": True, "last_seen": None, "age_s": None}
    row = WorkerRow(**base, running=ids, running_funcs=("app.jobs:send",) * len(ids))
    text = worker_tasks(row).plain
    assert text.count("send") == WORKER_TASKS_SHOWN
    assert text.endswith(f" +{50_000 - WORKER_TASKS_SHOWN:,} more")
    few = WorkerRow(**base, running=ids[:2], running_funcs=("a:f", "a:g"))
    assert "more" not in worker_tasks(few).plain and worker_tasks(few).plain.count(", ") == 1
