"""Since when, who is busy with what, who touched it (issue 24, items 6-8), in one app boot:
failure groups that tell a new failure from a steady one, a worker's drill-in, finished
tasks naming their worker, and who paused a schedule or queue and when."""

from __future__ import annotations

from datetime import timedelta

import msgspec

from textual.widgets.data_table import ColumnKey
from tui_fixtures import TAKEN_AT, demo_snapshot, make_app, schedules, settle, task_id, task_rows

from omniq_console.models import Task, TaskStatus
from omniq_console.monitor.groups import TREND_MINUTES, failure_groups
from omniq_console.monitor.snapshot import TaskDetail, TaskRow
from omniq_console.notebook.groups import failure_groups as notebook_groups
from omniq_console.notebook.render import dashboard_html
from omniq_console.tui import StaticSource
from omniq_console.tui.screens.detail import TaskDetailScreen
from omniq_console.tui.screens.worker import WorkerScreen


def failed(n: int, error: str, minutes_ago: float, queue: str = "emails") -> TaskRow:
    at = (TAKEN_AT - timedelta(minutes=minutes_ago)).timestamp()
    return TaskRow(
        task_id(n), queue, "app.mail.send_digest", TaskStatus.FAILED.value, 0,
        at - 5, None, 1, "worker-b", error, at - 2, at,
    )  # fmt: skip


def finished(n: int, minutes_ago: float) -> TaskRow:
    at = (TAKEN_AT - timedelta(minutes=minutes_ago)).timestamp()
    return TaskRow(
        task_id(n), "emails", "app.mail.send_welcome", TaskStatus.COMPLETED.value, 0,
        at - 9, None, 0, "worker-a", None, at - 3, at,
    )  # fmt: skip


# A deploy 4 minutes ago: KeyError since then. ConnectionError every 5 minutes for a day.
NEW = tuple(failed(500 + i, "KeyError", minutes) for i, minutes in enumerate((0.5, 1.5, 3.9)))
STEADY = tuple(failed(600 + i, "ConnectionError", 2 + i * 5, "reports") for i in range(288))
DONE = (finished(900, 1), finished(901, 3))


def snapshot():
    rows = list(task_rows())
    for i, row in enumerate(rows):
        if row.id in (task_id(21), task_id(22)):
            rows[i] = msgspec.structs.replace(row, started_ts=TAKEN_AT.timestamp() - 40 - i)
    paused = [
        s.model_copy(update={"paused_by": "bob", "paused_at": TAKEN_AT - timedelta(hours=2)})
        if s.status == "paused"
        else s
        for s in schedules()
    ]
    return demo_snapshot(task_rows=(*rows, *NEW, *STEADY, *DONE), schedules=tuple(paused))


def test_failure_groups_say_since_when_and_how_often() -> None:
    groups = {g.error_type: g for g in failure_groups(snapshot().task_rows, now=TAKEN_AT)}
    new, steady = groups["KeyError"], groups["ConnectionError"]
    assert new.is_new and not steady.is_new
    assert new.first_seen == TAKEN_AT - timedelta(minutes=3.9)
    assert new.last_seen == TAKEN_AT - timedelta(minutes=0.5)
    assert TAKEN_AT - steady.first_seen > timedelta(hours=23)
    assert len(new.per_minute) == len(steady.per_minute) == TREND_MINUTES
    assert sum(new.per_minute) == 3 and not any(new.per_minute[:-4])
    assert sum(steady.per_minute) == 6 and steady.per_minute[-3] == 1
    assert steady.task_ids == tuple(sorted(r.id for r in STEADY))
    # Grouped by queue (the notebook's retry unit), each group holds its queue's ids only.
    by_queue = failure_groups(snapshot().task_rows, by_queue=True, now=TAKEN_AT)
    values = [g for g in by_queue if g.error_type == "ValueError"]
    assert [(g.queue, g.count) for g in values] == [("emails", 6)]
    assert values[0].question() == "Retry 6 failed tasks of ValueError in queue emails?"
    # The notebook's dashboard shows the same groups, with since when.
    snap = snapshot()
    page = dashboard_html(snap, notebook_groups(snap.task_rows))
    assert "first seen" in page and "last seen" in page and ">NEW</b>" in page


async def test_since_when_who_is_busy_and_who_touched_it() -> None:
    body = Task(
        id=task_id(21),
        func="app.mail.send_digest",
        queue_name="emails",
        status=TaskStatus.RUNNING,
        args=("ann@example.com",),
        kwargs={"week": 9},
    )
    detail = TaskDetail(task_id=task_id(21), task=body)
    source = StaticSource(snapshot(), details={task_id(21): detail})
    app, _, _ = make_app(source, views=("results", "tasks", "schedules", "workers"))
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        # Since when: the new group is marked and its bars are all in the last minutes.
        await pilot.press("4")
        await settle(pilot)
        groups = app.screen.query_one("#results-groups")
        new, steady = (
            groups.render_cell_values("KeyError"),
            groups.render_cell_values("ConnectionError"),
        )
        assert new[2].startswith("NEW ") and new[2].endswith("3m 54s ago")
        assert not steady[2].startswith("NEW") and steady[2].endswith("ago")
        assert steady[2].startswith("23h") or steady[2].startswith("1d")
        assert set(new[4][:-4]) == {"·"} and set(steady[4][:-4]) != {"·"}

        # Finished tasks name their worker in the Tasks and Results lists.
        failures = app.screen.query_one("#results-failures")
        worker_column = [k for k, _ in failures._column_spec].index("worker")
        assert failures.render_cell_values(failures.keys()[0])[worker_column] != "—"
        await pilot.press("3")
        await settle(pilot)
        tasks = app.screen.query_one("#tasks-table")
        assert tasks.render_cell_values(task_id(900))[8] == "worker-a"

        # Who touched it: the paused schedule and queue say who paused them and when.
        await pilot.press("6")
        await settle(pilot)
        table = app.screen.query_one("#schedules-table")
        assert table.render_cell_values("warmup-cache")[5] == "bob, 2h 00m ago"
        assert table.render_cell_values("nightly-report")[5] == ""
        assert "warmup-cache paused by bob, 2h 00m ago" in (
            app.screen.query_one("#schedules-info").content.plain
        )
        assert table.columns[ColumnKey("paused")].width >= len("bob, 2h 00m ago")

        # Who is busy with what: enter on a worker opens what it runs and just finished.
        await pilot.press("7")
        await settle(pilot)
        workers = app.screen.query_one("#workers-table")
        assert workers.selected_key == "worker-a"
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, WorkerScreen)
        running = app.screen.query_one("#worker-running")
        assert running.keys() == [task_id(22), task_id(21)]  # the longest running first
        first = running.render_cell_values(task_id(21))
        assert first[1] == "send_digest"  # the module is in the detail
        assert first[2] == "('ann@example.com',) {'week': 9}"
        assert (first[4], first[5]) == ("14:29:00", "1m 00s")
        assert running.render_cell_values(task_id(22))[2] == "—"  # its body is gone
        finished_table = app.screen.query_one("#worker-finished")
        assert finished_table.keys()[:2] == [task_id(900), task_id(901)]
        assert finished_table.render_cell_values(task_id(900))[3] == "1m 00s ago"
        assert "worker-a" in app.screen.query_one("#worker-heading").content.plain
        finished_table.focus()
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, TaskDetailScreen) and app.screen.task_id == task_id(900)
        await pilot.press("escape")
        await settle(pilot)
        await pilot.press("escape")
        await settle(pilot)
        assert not isinstance(app.screen, WorkerScreen)
