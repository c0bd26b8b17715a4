"""Fixed, deterministic data for the console's tests and screenshots.

Everything is pinned: times are relative to ``TAKEN_AT``, ids are made from counters, and
the app gets a frozen clock, so SVG snapshots are the same on every run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from textual.app import App
from textual.pilot import Pilot

from omniq_console.models import (
    EventType,
    ResultStatus,
    Task,
    TaskResult,
    TaskStatus,
)
from omniq_console.monitor.snapshot import (
    EventRow,
    PrefixUsage,
    QueueStats,
    QueueWindow,
    RequestFigures,
    ResultMinute,
    ScheduleRow,
    Snapshot,
    StuckTask,
    TaskDetail,
    TaskRow,
    UnreadableRow,
    WorkerRow,
)
from omniq_console.runtime.operator import BulkOutcome
from omniq_console.tui import ConsoleApp, StaticSource, build_app

TAKEN_AT = datetime(2026, 3, 2, 14, 30, 0, tzinfo=UTC)
MARKUP_FUNC = "[bold red]x[/]"
ANSI_ERROR = "Boom\x1b[31m"
QUEUES = ("emails", "reports", "default")


def frozen_clock() -> float:
    """The console's wall clock, stopped at ``TAKEN_AT``: the demo snapshot is 0 s old and
    countdowns stay as in the snapshot."""
    return TAKEN_AT.timestamp()


def task_id(n: int) -> str:
    """A uuid-shaped id whose first 8 characters appear in no other fixture id."""
    return f"{n:08x}-7d1e-4c2a-9b3f-{0xA00000000000 + n * 7919:012x}"


def event_id(n: int) -> str:
    # Ids sort by time, as UUIDv7 ids do: a bigger n is a newer event.
    return f"0195a000-{n:04x}-7000-8000-{n:012x}"


def _row(
    n: int,
    queue: str,
    func: str,
    status: TaskStatus,
    *,
    age_s: float,
    error_type: str | None = None,
    worker: str | None = None,
    retries: int = 0,
    priority: int = 0,
) -> TaskRow:
    return TaskRow(
        id=task_id(n),
        queue_name=queue,
        func=func,
        status=status.value,
        priority=priority,
        created_ts=(TAKEN_AT - timedelta(seconds=age_s)).timestamp(),
        run_ts=None,
        retry_count=retries,
        worker_id=worker,
        error_type=error_type,
    )


def task_rows() -> tuple[TaskRow, ...]:
    """60 tasks: every status, failures of three exception types, one hostile name."""
    rows: list[TaskRow] = []
    n = 0

    def add(*args: object, **kwargs: object) -> None:
        nonlocal n
        n += 1
        rows.append(_row(n, *args, **kwargs))  # type: ignore[arg-type]

    for i in range(14):
        add("emails", "app.mail.send_welcome", TaskStatus.PENDING, age_s=20 + i * 9)
    for i in range(6):
        add("reports", "app.reports.build_monthly", TaskStatus.PENDING, age_s=300 + i * 120)
    for i, worker in enumerate(("worker-a", "worker-a", "worker-b")):
        add("emails", "app.mail.send_digest", TaskStatus.RUNNING, age_s=40 + i, worker=worker)
    add("reports", "app.reports.build_monthly", TaskStatus.RUNNING, age_s=700, worker="worker-c")
    for i in range(16):
        add("emails", "app.mail.send_welcome", TaskStatus.COMPLETED, age_s=200 + i * 30)
    for i in range(5):
        add(
            "emails",
            "app.mail.send_digest",
            TaskStatus.FAILED,
            age_s=400 + i * 50,
            error_type="ValueError",
            retries=3,
            worker="worker-a",
        )
    for i in range(3):
        add(
            "reports",
            "app.reports.build_monthly",
            TaskStatus.FAILED,
            age_s=900 + i * 60,
            error_type="TimeoutError",
            retries=3,
            worker="worker-c",
        )
    add("emails", "app.mail.send_welcome", TaskStatus.FAILED, age_s=1000, error_type="ValueError")
    add("default", MARKUP_FUNC, TaskStatus.FAILED, age_s=1200, error_type=ANSI_ERROR)
    for i in range(3):
        add("default", "app.cleanup.purge", TaskStatus.CANCELLED, age_s=1500 + i)
    for i in range(3):
        add("default", "app.cleanup.purge", TaskStatus.EXPIRED, age_s=2000 + i)
    add("emails", "app.mail.send_welcome", TaskStatus.PENDING, age_s=5, priority=9)
    return tuple(rows)


def _status_counts(rows: Sequence[TaskRow]) -> dict[str, int]:
    counts = {s.value: 0 for s in TaskStatus}
    for row in rows:
        counts[row.status] += 1
    return counts


def events() -> tuple[EventRow, ...]:
    """Twenty events, newest first, with hostile text in one message."""
    kinds = [
        (EventType.ENQUEUED, "emails", None, None),
        (EventType.DEQUEUED, "emails", "worker-a", None),
        (EventType.EXECUTING, "emails", "worker-a", None),
        (EventType.COMPLETED, "emails", "worker-a", None),
        (EventType.FAILED, "emails", "worker-a", ("ValueError", "bad address [b]x[/b]")),
    ]
    out: list[EventRow] = []
    for n in range(1, 20):
        kind, queue, worker, error = kinds[n % len(kinds)]
        out.append(
            EventRow(
                id=event_id(n),
                timestamp=TAKEN_AT - timedelta(seconds=200 - n * 10),
                event_type=kind.value,
                task_id=task_id(n),
                queue_name=queue,
                worker_id=worker,
                message=None if error else f"{kind.value} {task_id(n)[:8]}",
                error_type=error[0] if error else None,
                error_message=error[1] if error else None,
            )
        )
    out.append(
        EventRow(
            id=event_id(20),
            timestamp=TAKEN_AT - timedelta(seconds=2),
            event_type=EventType.OPERATOR_ACTION.value,
            task_id=task_id(44),
            queue_name="default",
            actor="alice",
            message="retry by [bold]alice[/bold]",
        )
    )
    return tuple(reversed(out))


def schedules() -> tuple[ScheduleRow, ...]:
    return (
        ScheduleRow(
            id="nightly-report",
            func="app.reports.build_monthly",
            schedule_type="cron",
            status="active",
            queue_name="reports",
            cron_expression="0 2 * * *",
            next_run=TAKEN_AT + timedelta(hours=11, minutes=30),
            last_run=TAKEN_AT - timedelta(hours=12, minutes=30),
            run_count=41,
        ),
        ScheduleRow(
            id="digest-every-5m",
            func="app.mail.send_digest",
            schedule_type="interval",
            status="active",
            queue_name="emails",
            interval_s=300,
            next_run=TAKEN_AT + timedelta(minutes=4, seconds=30),
            last_run=TAKEN_AT - timedelta(seconds=30),
            run_count=1203,
        ),
        ScheduleRow(
            id="purge-hourly",
            func="app.cleanup.purge",
            schedule_type="interval",
            status="active",
            queue_name="default",
            interval_s=3600,
            next_run=TAKEN_AT - timedelta(minutes=7),
            last_run=TAKEN_AT - timedelta(minutes=67),
            run_count=88,
            overdue=True,
        ),
        ScheduleRow(
            id="warmup-cache",
            func="app.cache.warm",
            schedule_type="cron",
            status="paused",
            queue_name="default",
            cron_expression="*/15 * * * *",
            next_run=None,
            last_run=TAKEN_AT - timedelta(hours=3),
            run_count=12,
        ),
        ScheduleRow(
            id="launch-mail",
            func="app.mail.announce",
            schedule_type="timestamp",
            status="completed",
            queue_name="emails",
            next_run=None,
            last_run=TAKEN_AT - timedelta(days=2),
            run_count=1,
            max_runs=1,
        ),
    )


def workers() -> tuple[WorkerRow, ...]:
    return (
        WorkerRow(
            id="worker-a",
            state="busy",
            alive=True,
            last_seen=TAKEN_AT - timedelta(seconds=3),
            age_s=3,
            host="node-1",
            pid=4121,
            queues=("emails",),
            running=(task_id(21), task_id(22)),
            processed=1520,
            failed=6,
            concurrency=4,
            utilisation=0.5,
            running_funcs=("app.mail.send_digest", "app.mail.send_digest"),
        ),
        WorkerRow(
            id="worker-b",
            state="busy",
            alive=True,
            last_seen=TAKEN_AT - timedelta(seconds=1),
            age_s=1,
            host="node-2",
            pid=977,
            queues=("emails", "default"),
            running=(task_id(23),),
            processed=1388,
            failed=0,
            concurrency=1,
            utilisation=1.0,
            running_funcs=("app.mail.send_digest",),
        ),
        WorkerRow(
            id="worker-c",
            state="busy",
            alive=False,
            last_seen=TAKEN_AT - timedelta(seconds=95),
            age_s=95,
            host="node-3",
            pid=31337,
            queues=("reports",),
            running=(task_id(24),),
            processed=210,
            failed=3,
            concurrency=2,
            utilisation=0.5,
            running_funcs=("app.reports.build_monthly",),
            dead=True,
        ),
    )


def results_per_minute() -> tuple[ResultMinute, ...]:
    base = TAKEN_AT.replace(second=0) - timedelta(minutes=14)
    pattern = [
        (12, 0),
        (15, 1),
        (11, 0),
        (18, 2),
        (20, 1),
        (16, 0),
        (14, 3),
        (22, 1),
        (19, 0),
        (25, 4),
        (21, 2),
        (17, 1),
        (23, 0),
        (26, 5),
        (9, 1),
    ]
    return tuple(
        ResultMinute(
            minute=base + timedelta(minutes=i),
            success=ok,
            error=err,
            cancelled=1 if i == 6 else 0,
            expired=1 if i == 11 else 0,
        )
        for i, (ok, err) in enumerate(pattern)
    )


def throughput(
    per_15m: int, failed_15m: int, *, wait: float, run: float, covered_6h: float
) -> tuple[QueueWindow, ...]:
    """Windows of 15 min, 1 h and 6 h; the bucket holds only ``covered_6h`` of the last."""
    out: list[QueueWindow] = []
    for name, window_s, scale in (("15m", 900.0, 1), ("1h", 3600.0, 4), ("6h", 21600.0, 10)):
        covered = min(window_s, covered_6h)
        done = per_15m * scale
        out.append(
            QueueWindow(
                window=name,
                window_s=window_s,
                completed=done,
                failed=failed_15m * scale,
                per_minute=done / (covered / 60),
                wait_p50_s=wait,
                wait_p95_s=wait * 3,
                run_p50_s=run,
                run_p95_s=run * 4,
                covered_s=covered,
            )
        )
    return tuple(out)


def demo_snapshot(**changes: object) -> Snapshot:
    """The standard fixed snapshot; ``changes`` override any field."""
    rows = task_rows()
    data: dict[str, object] = dict(
        bucket="acme-jobs",
        prefix="omniq/",
        taken_at=TAKEN_AT,
        age_s=0.4,
        poll_interval_s=2.0,
        queues=(
            QueueStats(
                name="emails",
                pending=15,
                delayed=2,
                running=3,
                oldest_pending_age_s=146,
                depth_trend=(4, 6, 9, 12, 11, 14, 15, 17, 16, 17),
                throughput=throughput(120, 6, wait=1.2, run=0.4, covered_6h=2.5 * 3600),
            ),
            QueueStats(
                name="reports",
                pending=1480,
                delayed=20,
                running=1,
                claimed=1,
                expired=2,
                oldest_pending_age_s=900,
                depth_trend=(300, 420, 610, 800, 950, 1100, 1250, 1390, 1460, 1500),
                paused=True,
                paused_by="alice",
                paused_at=TAKEN_AT - timedelta(minutes=5),
                throughput=throughput(8, 3, wait=640.0, run=31.0, covered_6h=2.5 * 3600),
            ),
            QueueStats(name="default", depth_trend=(0, 0, 1, 0, 0, 0, 0, 0, 0, 0)),
        ),
        tasks=_status_counts(rows),
        results={"pending": 0, "success": 268, "error": 21, "cancelled": 1, "expired": 1},
        results_per_minute=results_per_minute(),
        failures_by_type={"ValueError": 6, "TimeoutError": 3, ANSI_ERROR: 1},
        failure_rate=21 / 289,
        outcome_window_s=900.0,
        outcome_source="results+events",
        events=events(),
        schedules=schedules(),
        stuck=(
            StuckTask(
                id=task_id(24),
                queue_name="reports",
                func="app.reports.build_monthly",
                worker_id="worker-c",
                lease_expires_at=TAKEN_AT - timedelta(seconds=65),
                overdue_s=65,
            ),
        ),
        workers=workers(),
        unreadable=(UnreadableRow(key="omniq/tasks/broken.json", reason="not valid JSON"),),
        requests=RequestFigures(
            total=4210,
            by_kind={"list": 3900, "get": 310},
            last_poll_requests=5,
            last_poll_ms=84.0,
            mean_latency_ms=16.8,
            requests_per_minute=150.0,
            cost_per_hour_usd=0.0452,
            errors=4,
            retries=4,
            latency_p50_ms={"list": 14.0, "get": 9.0},
            latency_p95_ms={"list": 48.0, "get": 31.0},
            errors_by_status={"429": 3, "5xx": 1},
            cache_hits=290,
            cache_misses=20,
        ),
        storage=(
            PrefixUsage(prefix="tasks/", objects=57, bytes=41_300),
            PrefixUsage(prefix="results/", objects=291, bytes=1_268_000),
            PrefixUsage(prefix="events/", objects=1_204, bytes=3_410_000),
        ),
        task_rows=rows,
    )
    data.update(changes)
    return Snapshot(**data)  # type: ignore[arg-type]


def stale_snapshot() -> Snapshot:
    """The last good data, 47 s old, after polls started failing (the monitor keeps the
    last good snapshot's ``taken_at``)."""
    return demo_snapshot(
        stale=True,
        taken_at=TAKEN_AT - timedelta(seconds=47),
        age_s=47.0,
        error="BackendUnavailableError: timed out",
    )


def failed_task_detail(n: int = 41) -> TaskDetail:
    """Detail of one failed task (ValueError in emails), with its traceback and timeline."""
    row = next(r for r in task_rows() if r.id == task_id(n))
    task = Task(
        id=row.id,
        func=row.func,
        queue_name=row.queue_name,
        status=TaskStatus(row.status),
        args=("ann@example.com",),
        kwargs={"template": "[i]digest[/i]"},
        created_at=row.created_at,
        retry_count=row.retry_count,
        worker_id=row.worker_id,
    )
    result = TaskResult(
        task_id=row.id,
        status=ResultStatus.ERROR,
        error_type="ValueError",
        error="bad address [b]ann[/b] \x1b[31m",
        created_at=row.created_at,
        completed_at=TAKEN_AT - timedelta(seconds=300),
        execution_time=0.125,
        worker_id=row.worker_id,
        # The state record carries the claim fields the screen derives the task from.
        attempt=row.retry_count + 1,
        retry_count=row.retry_count,
        traceback=(
            "Traceback (most recent call last):\n"
            '  File "app/mail.py", line 42, in send_digest\n'
            "    validate(address)\n"
            "ValueError: bad address [b]ann[/b]"
        ),
    )
    timeline = tuple(
        EventRow(
            id=event_id(100 + i),
            timestamp=row.created_at + timedelta(seconds=i * 5),  # type: ignore[operator]
            event_type=kind,
            task_id=row.id,
            queue_name=row.queue_name,
            worker_id=row.worker_id if kind != "enqueued" else None,
            error_type="ValueError" if kind == "failed" else None,
            error_message="bad address [b]ann[/b]" if kind == "failed" else None,
        )
        for i, kind in enumerate(("enqueued", "dequeued", "executing", "failed"))
    )
    return TaskDetail(task_id=row.id, task=task, result=result, events=timeline)


def big_snapshot(n: int = 100_000) -> Snapshot:
    """``n`` tasks over three queues: what a busy bucket looks like to the console."""
    statuses = (TaskStatus.PENDING, TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.RUNNING)
    rows = tuple(
        TaskRow(
            id=task_id(i),
            queue_name=QUEUES[i % 3],
            func=f"app.jobs.job_{i % 17}",
            status=statuses[i % 4].value,
            priority=i % 5,
            created_ts=TAKEN_AT.timestamp() - i,
            run_ts=None,
            retry_count=0,
            worker_id=None,
            error_type="ValueError" if i % 4 == 2 else None,
        )
        for i in range(n)
    )
    return demo_snapshot(task_rows=rows, tasks=_status_counts(rows))


@dataclass
class RecordingOperator:
    """Stands in for ``runtime.operator.Operator`` in UI tests: records calls, can fail.

    ``calls`` holds ``(method, positional args, keyword args)``; ``fail`` maps a method name
    to the exception it raises.
    """

    calls: list[tuple[str, tuple[object, ...], dict[str, object]]] = field(default_factory=list)
    fail: dict[str, BaseException] = field(default_factory=dict)

    def _call(self, name: str, *args: object, **kwargs: object) -> None:
        self.calls.append((name, args, kwargs))
        if name in self.fail:
            raise self.fail[name]

    async def pause_schedule(self, schedule_id: str, *, generation: int | None = None) -> object:
        self._call("pause_schedule", schedule_id, generation=generation)
        return None

    async def resume_schedule(self, schedule_id: str, *, generation: int | None = None) -> object:
        self._call("resume_schedule", schedule_id, generation=generation)
        return None

    async def trigger_schedule(self, schedule_id: str) -> str:
        self._call("trigger_schedule", schedule_id)
        return "new-task-1"

    async def retry_task(self, task_id: str, *, expected_status: str | None = None) -> object:
        self._call("retry_task", task_id, expected_status=expected_status)
        return None

    async def cancel_task(self, task_id: str, *, expected_status: str | None = None) -> object:
        self._call("cancel_task", task_id, expected_status=expected_status)
        return None

    async def delete_task(self, task_id: str, *, expected_status: str | None = None) -> bool:
        self._call("delete_task", task_id, expected_status=expected_status)
        return True

    async def retry_tasks(
        self, task_ids: Sequence[str], expected_status: str | None = None
    ) -> BulkOutcome:
        self._call("retry_tasks", tuple(task_ids), expected_status=expected_status)
        return BulkOutcome(done=list(task_ids))

    async def cancel_tasks(
        self, task_ids: Sequence[str], expected_status: str | None = None
    ) -> BulkOutcome:
        self._call("cancel_tasks", tuple(task_ids), expected_status=expected_status)
        return BulkOutcome(done=list(task_ids))

    async def delete_tasks(
        self, task_ids: Sequence[str], expected_status: str | None = None
    ) -> BulkOutcome:
        self._call("delete_tasks", tuple(task_ids), expected_status=expected_status)
        return BulkOutcome(done=list(task_ids))

    async def pause_queue(self, queue: str) -> None:
        self._call("pause_queue", queue)

    async def resume_queue(self, queue: str) -> None:
        self._call("resume_queue", queue)

    async def purge_queue(self, queue: str, task_ids: Sequence[str]) -> BulkOutcome:
        self._call("purge_queue", queue, tuple(task_ids))
        return BulkOutcome(done=list(task_ids))


# Helpers for Pilot tests.

BACKGROUND_GROUPS = frozenset({"monitor"})


async def settle(pilot: Pilot[None], timeout_s: float = 10.0) -> None:
    """Wait until the app's short-lived workers (filters, detail loads, actions, scans) are
    done and what they posted has been handled; fail, naming them, if they are not done
    within ``timeout_s``. The source's own ``run()`` never ends: it is not waited for."""
    app = pilot.app
    await pilot.pause()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        busy = [w for w in app.workers if w.is_running and w.group not in BACKGROUND_GROUPS]
        if not busy:
            break
        remaining = deadline - loop.time()
        if remaining <= 0:
            names = ", ".join(f"{w.group}/{w.description or w.name}" for w in busy)
            raise AssertionError(f"settle: workers still running after {timeout_s} s: {names}")
        try:
            await asyncio.wait_for(app.workers.wait_for_complete(busy), remaining)
        except TimeoutError:
            continue
        await pilot.pause()
    # What the finished workers posted (a page, a notification) is handled in these rounds.
    await pilot.pause()
    await pilot.pause()


def screen_text(app: App[None]) -> str:
    """What the terminal shows now, as plain text, one line per row."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def toasts(app: App[None]) -> list[str]:
    """The text of the toasts on the current screen (needs ``run_test(notifications=True)``)."""
    from textual.widgets._toast import Toast  # Textual exports no public name for it

    return [str(t.render()) for t in app.screen.query(Toast)]


async def until_toast(pilot: Pilot[None], words: str, timeout_s: float = 10.0) -> None:
    """Wait until a toast on the current screen says ``words`` (its lines joined); fail after
    ``timeout_s``. A toast wraps its text, so words are compared, not lines."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not any(words in " ".join(t.split()) for t in toasts(pilot.app)):
        assert loop.time() < deadline, f"no toast saying {words!r}: {toasts(pilot.app)}"
        await pilot.pause(0.05)


def record_notifications(app: App[None]) -> list[tuple[str, str]]:
    """Capture ``(message, severity)`` of every notification the app raises from now on."""
    seen: list[tuple[str, str]] = []
    original = app.notify

    def notify(message: str, *, severity: str = "information", **kwargs: Any) -> None:
        seen.append((message, severity))
        original(message, severity=severity, **kwargs)  # type: ignore[arg-type]

    app.notify = notify  # type: ignore[method-assign]
    return seen


LIGHT = ("backend",)
"""The cheapest view to boot, for tests of what is not a view (status bar, detail, dialogs)."""


def make_app(
    source: StaticSource | None = None,
    *,
    operator: RecordingOperator | None = None,
    **kwargs: Any,
) -> tuple[ConsoleApp, StaticSource, RecordingOperator]:
    """The console on the demo snapshot (or ``source``) with a recording operator and a
    frozen clock; ``kwargs`` go to ``build_app`` (``views=LIGHT``, ``read_only=True``, ...)."""
    source = source or StaticSource(demo_snapshot(), details={task_id(41): failed_task_detail()})
    operator = operator or RecordingOperator()
    kwargs.setdefault("clock", frozen_clock)
    app = build_app(source, operator=operator, **kwargs)
    return app, source, operator


async def search_tasks(pilot: Pilot[None], text: str) -> None:
    """Type ``text`` into the tasks view's search box, then go back to the table.

    Fixture task ids differ in their first 8 characters: typing those is enough.
    """
    await pilot.press("slash", *text[:8], "enter")
    await settle(pilot)


def newest_first(rows: Sequence[TaskRow]) -> list[TaskRow]:
    """Rows in the order the console lists them."""
    return sorted(rows, key=lambda r: (r.created_at, r.id), reverse=True)


def failed_ids(error_type: str, queue: str | None = None) -> tuple[str, ...]:
    """Ids of the fixture's failed tasks of one exception type, as the console lists them."""
    return tuple(
        r.id
        for r in newest_first(task_rows())
        if r.status == "failed"
        and r.error_type == error_type
        and (queue is None or r.queue_name == queue)
    )


async def run_command(pilot: Pilot[None], search: str, title: str) -> None:
    """Open the command palette, search, and run the command named ``title``.

    The palette searches in the background: wait until that command is the highlighted one.
    """
    from textual.command import CommandList

    await pilot.press("ctrl+p", *search)
    for _ in range(200):
        await pilot.pause(0.02)
        found = pilot.app.screen.query(CommandList)
        if found and found.first().highlighted_option is not None:
            prompt = found.first().highlighted_option.prompt
            if title in str(getattr(prompt, "plain", prompt)):
                break
    else:
        raise AssertionError(f"the palette offered no {title!r} for {search!r}")
    await pilot.press("enter")
    await settle(pilot)
