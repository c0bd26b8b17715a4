"""The notebook pieces outside a kernel: frames, failure groups, the panel's HTML, the dashboard
on this test's event loop, and the served console's process lifecycle (emulator, no mocks)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import psutil
import pytest

from omniq_console import OmniQ
from omniq_console.backend.gcs import GCSBackend, RetryPolicy
from omniq_console.demo.emulator import free_port
from omniq_console.monitor.frames import FRAMES, NOTEBOOK_INSTALL_HINT
from omniq_console.monitor.snapshot import (
    EventRow,
    QueueStats,
    RequestFigures,
    ResultMinute,
    ScheduleRow,
    Snapshot,
    TaskRow,
    WorkerRow,
)
from omniq_console.notebook import NotebookConsole, dashboard, snapshot_frames
from omniq_console.notebook.groups import failure_groups
from omniq_console.notebook.render import dashboard_html
from omniq_console.notebook.widget import MONITOR_TASK_PREFIX
from omniq_console.runtime import Operator

TAKEN = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)


def row(task_id: str, status: str, queue: str = "emails", error: str | None = None) -> TaskRow:
    return TaskRow(task_id, queue, "app:send", status, 0, TAKEN.timestamp(), None, 0, None, error)


def sample(**changes: Any) -> Snapshot:
    fields: dict[str, Any] = {
        "bucket": "bkt",
        "prefix": "omniq/",
        "taken_at": TAKEN,
        "queues": (
            QueueStats(name="emails", pending=12, delayed=3, depth_trend=(4, 9, 15)),
            QueueStats(name="<b>reports</b>", pending=0, paused=True),
        ),
        "results_per_minute": (
            ResultMinute(minute=TAKEN - timedelta(minutes=1), success=5, error=2),
            ResultMinute(minute=TAKEN, success=7, cancelled=1),
        ),
        "events": (
            EventRow(
                id="e1",
                timestamp=TAKEN,
                event_type="failed",
                task_id="t1",
                queue_name="emails",
                message="<script>alert(1)</script>",
            ),
        ),
        "schedules": (
            ScheduleRow(id="nightly", func="app:report", schedule_type="cron", status="active"),
        ),
        "workers": (WorkerRow(id="w1", state="running", alive=True, last_seen=TAKEN, age_s=1.0),),
        "task_rows": (
            row("t1", "failed", error="ValueError"),
            row("t2", "failed", error="ValueError"),
            row("t3", "failed", "payments", "KeyError"),
            row("t4", "failed", "payments"),
            row("t5", "pending"),
        ),
        "requests": RequestFigures(total=40, requests_per_minute=30.0, cost_per_hour_usd=0.009),
    }
    fields.update(changes)
    return Snapshot(**fields)


# -- failure groups and frames -----------------------------------------------------------------


def test_failure_groups_are_by_type_and_queue_with_their_ids_largest_first() -> None:
    groups = failure_groups(sample().task_rows)
    assert [(g.error_type, g.queue, g.task_ids) for g in groups] == [
        ("ValueError", "emails", ("t1", "t2")),
        ("(unknown)", "payments", ("t4",)),
        ("KeyError", "payments", ("t3",)),
    ]
    assert groups[0].question() == "Retry 2 failed tasks of ValueError in queue emails?"
    assert groups[2].question() == "Retry 1 failed task of KeyError in queue payments?"


def test_frames_hold_every_table_with_typed_columns() -> None:
    snap = sample()
    frames = snap.to_frames()
    assert tuple(frames) == FRAMES
    assert frames["queues"].loc["emails", "pending"] == 12
    assert bool(frames["queues"].loc["<b>reports</b>", "paused"]) is True
    tasks = frames["tasks"]
    assert list(tasks.index) == ["t1", "t2", "t3", "t4", "t5"]
    assert str(tasks["created_at"].dtype).startswith("datetime64") and "UTC" in str(
        tasks["created_at"].dtype
    )
    assert (tasks.status == "failed").sum() == 4
    assert frames["results"]["success"].sum() == 12
    groups = frames["failure_groups"]
    assert groups.iloc[0].to_dict() == {
        "error_type": "ValueError",
        "queue": "emails",
        "count": 2,
        "task_ids": ("t1", "t2"),
    }
    assert frames["events"].iloc[0]["message"] == "<script>alert(1)</script>"
    assert list(frames["schedules"].index) == ["nightly"]
    assert list(frames["workers"].index) == ["w1"]


def test_frames_of_an_empty_bucket_have_their_columns() -> None:
    frames = snapshot_frames(Snapshot(bucket="b", prefix="", taken_at=TAKEN))
    assert all(frame.empty for frame in frames.values())
    assert {"status", "queue_name", "error_type"} <= set(frames["tasks"].columns)
    assert {"pending", "delayed", "running"} <= set(frames["queues"].columns)
    assert list(frames["failure_groups"].columns) == ["error_type", "queue", "count", "task_ids"]


def test_without_pandas_frames_say_what_to_install() -> None:
    code = (
        "import sys; sys.modules['pandas'] = None\n"
        "from datetime import datetime, UTC\n"
        "from omniq_console.monitor.snapshot import Snapshot\n"
        "import omniq_console.notebook\n"  # importing the package must not need pandas
        "try:\n"
        "    Snapshot(bucket='b', prefix='', taken_at=datetime.now(UTC)).to_frames()\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert NOTEBOOK_INSTALL_HINT in out.stdout, out.stderr


def test_without_textual_serve_console_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['textual_serve'] = None\n"
        "from omniq_console.notebook import console\n"
        "try:\n"
        "    console('some-bucket')\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'omniq-console[serve]'" in out.stdout, out.stderr


# -- the panel -----------------------------------------------------------------------------------


def test_panel_shows_every_section_and_untrusted_text_literally() -> None:
    snap = sample()
    page = dashboard_html(snap, failure_groups(snap.task_rows))
    for expected in (
        "gs://bkt/omniq/",
        "LIVE",
        "30 req/min, $0.0090/h",
        "Queues",
        "emails",
        "PAUSED",
        "<polyline",  # the depth trend
        "&#9650; +11",
        "Outcomes per minute",
        "<rect",  # the outcome chart
        "Failure groups",
        "ValueError",
        "Schedules",
        "nightly",
        "Workers",
        "Recent events",
    ):
        assert expected in page, expected
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<b>reports</b>" not in page and "&lt;b&gt;reports&lt;/b&gt;" in page


def test_panel_says_stale_connecting_stopped_and_when_no_rate_is_known_yet() -> None:
    stale = dashboard_html(sample(stale=True, age_s=42.0, error="endpoint down"), ())
    assert "STALE" in stale and "endpoint down" in stale and "42s old" in stale
    assert "STOPPED" in dashboard_html(sample(), (), running=False)
    connecting = dashboard_html(sample(connecting=True, attempt=3), ())
    assert "connecting to gs://bkt/omniq/ (attempt 3)" in connecting
    fresh = dashboard_html(sample(requests=RequestFigures(total=6)), ())
    assert "6 requests (rate after a minute of polling)" in fresh


# -- the dashboard on this test's loop ------------------------------------------------------------


def monitor_tasks() -> list[asyncio.Task[Any]]:
    return [
        t
        for t in asyncio.all_tasks()
        if t.get_name().startswith(MONITOR_TASK_PREFIX) and not t.done()
    ]


def test_dashboard_needs_a_running_loop() -> None:
    # A plain (sync) test has no running loop, like a script outside Jupyter.
    with pytest.raises(RuntimeError, match="make it in a Jupyter cell"):
        dashboard("some-bucket")


async def test_dashboard_follows_the_bucket_and_close_stops_its_monitor(
    backend: GCSBackend,
) -> None:
    omniq = OmniQ(backend)
    await omniq.enqueue_async("app:send", 1, queue="emails")
    board = dashboard(backend, interval=0.5, key="test:follow")
    try:
        snap = await board.wait_for(lambda s: bool(s.queues), within=20, what="the queue")
        assert [q.name for q in snap.queues] == ["emails"]
        assert board.state()["queues"]["emails"]["pending"] == 1
        assert board.state()["actions"] is True and len(monitor_tasks()) == 1
        await omniq.enqueue_async("app:send", 2, queue="emails")
        await board.wait_for(lambda s: s.queues[0].pending == 2, within=10, what="the second task")
        with pytest.raises(TimeoutError, match=r"waited 0\.2s for a third task on gs://"):
            await board.wait_for(
                lambda s: s.queues[0].pending == 3, within=0.2, what="a third task"
            )
    finally:
        board.close()
    await board.wait_closed()
    assert board.closed and not monitor_tasks()
    assert "STOPPED" in board.panel.value and board.state()["running"] is False
    assert backend.is_open  # the caller's own open is left alone
    with pytest.raises(RuntimeError, match="stopped"):
        await board.wait_for(lambda s: False, within=5)


async def test_a_dashboard_of_a_read_only_backend_offers_no_action(bucket: str) -> None:
    board = dashboard(GCSBackend(bucket, access="read_only"), interval=0.5, key="test:ro")
    try:
        await board.wait_for(within=20, what="the first snapshot")
        assert board.operator is None and board.state()["actions"] is False
        assert board.widget.children == (board.panel,)
    finally:
        board.close()
    await board.wait_closed()


async def test_a_dashboard_of_a_missing_bucket_says_so(gcs_env: object) -> None:
    board = dashboard("no-such-bucket-for-the-notebook", interval=0.5, key="test:missing")
    await board.wait_closed()
    assert "cannot open gs://no-such-bucket-for-the-notebook/" in (board.error or "")
    assert board.error is not None and board.error in board.panel.value.replace("&#x27;", "'")
    board.close()


# -- the served console --------------------------------------------------------------------------


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_console_serves_with_its_token_and_close_leaves_no_process(bucket: str) -> None:
    served = NotebookConsole(bucket, height=400, key="test:console")
    try:
        assert served.url.startswith("http://127.0.0.1:") and "?token=" in served.url
        assert _status(served.url) == 200
        assert _status(served.url.split("?")[0]) == 403
        group = [psutil.Process(served.pid), *psutil.Process(served.pid).children(recursive=True)]
    finally:
        served.close()
    _, alive = psutil.wait_procs(group, timeout=10)
    assert not alive, f"still running after close(): {alive}"
    assert served.closed


def test_console_of_a_missing_bucket_raises_the_servers_message(gcs_env: object) -> None:
    with pytest.raises(RuntimeError, match="omniq-console serve exited with code"):
        NotebookConsole("no-such-bucket-for-the-console", key="test:console-missing")


async def test_an_unreachable_bucket_is_retried_and_said(bucket: str) -> None:
    unreachable = GCSBackend(
        bucket,
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        retry=RetryPolicy(attempts=1, request_timeout=2.0),
    )
    board = dashboard(unreachable, interval=0.1, key="test:unreachable")
    second = asyncio.Event()

    def announced(change: dict[str, Any]) -> None:
        if "(attempt 2)" in change["new"]:
            second.set()

    board.panel.observe(announced, names="value")
    try:
        async with asyncio.timeout(30):
            await second.wait()  # the second attempt to reach the bucket, announced
        assert f"connecting to gs://{bucket}/omniq/" in board.panel.value
        assert board.error and not board.closed and board.snapshot is None
    finally:
        board.close()
    await board.wait_closed()


async def _failed(omniq: OmniQ, n: int) -> None:
    """``n`` tasks of queue payments, failed by a real worker with ValueError."""

    @omniq.task(name="payments.charge", queue="payments", max_retries=0)
    def charge(amount: int) -> None:
        raise ValueError(f"card declined: {amount}")

    ids = [await omniq.enqueue_async(charge, i) for i in range(n)]
    worker = omniq.worker(["payments"], poll_interval=0.1)
    running = asyncio.ensure_future(worker.run())
    for task_id in ids:
        await omniq.get_result_async(task_id, timeout=60)
    worker.stop()
    await running


async def test_actions_refused_or_declined_change_nothing_and_say_so(backend: GCSBackend) -> None:
    omniq = OmniQ(backend)
    await _failed(omniq, 2)
    await omniq.schedule_async("app:report", interval=3600, schedule_id="nightly")
    # A long interval: the dashboard does not see the other operator's change below.
    board = dashboard(backend, interval=60, actor="analyst@test", key="test:refused")
    try:
        await board.wait_for(lambda s: bool(s.schedules and board.groups), within=20)
        board.schedule_select.value = "nightly"
        await Operator(backend, "someone@else").pause_schedule("nightly")
        seen = board.snapshots
        board.pause_button.click()  # bound to the version on screen, which is gone
        await board.wait_for(lambda s: board.snapshots > seen, within=20, what="the re-poll")
        assert board.last_action is not None
        assert board.last_action.startswith("pause schedule nightly failed:")
        assert "color:#cf222e" in board.action_status.value

        # The re-poll shows it paused: Resume is offered, and Run now still is.
        assert board.pause_button.disabled and not board.resume_button.disabled
        board.trigger_button.click()
        ran = await board.wait_for(
            lambda s: any(q.name == "default" and q.pending + q.delayed == 1 for q in s.queues),
            within=20,
            what="the triggered run in queue default",
        )
        assert ran.schedules[0].status == "paused"
        assert (board.last_action or "").startswith("Schedule nightly ran now: task ")

        board.group_select.value = board.groups[0].key
        board.retry_button.click()
        assert board.confirm_box.layout.display == "flex"
        assert "Retry 2 failed tasks of ValueError in queue payments?" in board.confirm_text.value
        board.confirm_no.click()
        assert board.confirm_box.layout.display == "none"
        assert board.last_action == "Retry of ValueError in payments cancelled: nothing changed."
        snap = await board.refresh()
        assert snap.tasks["failed"] == 2 and board.groups[0].count == 2
    finally:
        board.close()
    await board.wait_closed()
