"""How each kind of row looks in a table: cells as ``Text``, bucket strings kept literal."""

from __future__ import annotations

from datetime import datetime
from functools import partial

from rich.text import Text

from ..monitor.groups import TREND_MINUTES, FailureGroup, failed_at
from ..monitor.snapshot import EventRow, QueueStats, ScheduleRow, StuckTask, TaskRow, WorkerRow
from . import fmt
from .columns import TableSpec, Width
from .text import literal
from .thresholds import Level, Thresholds

STATUS_STYLES = {
    "pending": "cyan",
    "running": "bold blue",
    "completed": "green",
    "success": "green",
    "failed": "bold red",
    "error": "bold red",
    "cancelled": "yellow",
    "expired": "dim",
    "active": "green",
    "paused": "bold yellow",
}
EVENT_STYLES = {
    "enqueued": "cyan",
    "dequeued": "blue",
    "executing": "blue",
    "completed": "green",
    "failed": "bold red",
    "retry": "yellow",
    "cancelled": "yellow",
    "expired": "dim",
    "lease_expired": "bold red",
    "schedule_fired": "magenta",
    "schedule_paused": "bold yellow",
    "schedule_resumed": "green",
    "operator_action": "bold magenta",
}


def short_id(value: str | None, keep: int = 8) -> Text:
    """The start of a long id (uuids differ in their first characters), literal."""
    if value is not None and len(value) > keep + 4:
        return Text.assemble(literal(value[:keep]), ("…", "dim"))
    return literal(value, empty="")


def status(value: str | None) -> Text:
    """A status word in its colour (the word itself may come from the bucket: literal)."""
    return literal(value, STATUS_STYLES.get(value or "", ""))


def number(value: int, level: Level = Level.OK) -> Text:
    return Text(fmt.count(value), style=level.style, justify="right", end="")


def queue_cells(q: QueueStats, thresholds: Thresholds, trend_width: int = 16) -> list[Text]:
    """name, pending, delayed, running, oldest pending, trend."""
    depth_level = thresholds.depth(q.pending + q.delayed)
    name = literal(q.name, "bold")
    if q.paused:
        name.append(" (paused)", style="bold yellow")
    return [
        name,
        number(q.pending, depth_level),
        number(q.delayed),
        number(q.running),
        Text(
            fmt.duration(q.oldest_pending_age_s),
            style=thresholds.oldest_age(q.oldest_pending_age_s).style,
            justify="right",
            end="",
        ),
        Text(fmt.sparkline(q.depth_trend, trend_width), style=depth_level.style or "cyan", end=""),
    ]


def paused_by(who: str | None, when: datetime | None, now: datetime) -> Text:
    """Who paused it and how long ago: ``alice, 5m 00s ago`` (``—`` when not known)."""
    if who is None and when is None:
        return Text(fmt.DASH, style="dim", end="")
    text = literal(who or "someone", "bold yellow")
    if when is not None:
        text.append(f", {fmt.ago(when, now)}")
    return text


def queue_detail_cells(q: QueueStats, thresholds: Thresholds, now: datetime) -> list[Text]:
    """The queues view's row: :func:`queue_cells` plus claimed and expired entries, and who
    paused the queue and when."""
    base = queue_cells(q, thresholds, trend_width=40)
    expired = number(q.expired, Level.WARNING if q.expired else Level.OK)
    paused = paused_by(q.paused_by, q.paused_at, now) if q.paused else Text(end="")
    return [*base[:4], number(q.claimed), expired, base[4], paused, base[5]]


def queue_detail_table(thresholds: Thresholds) -> TableSpec[tuple[QueueStats, datetime]]:
    """The queues view's table of (queue, now): :func:`queue_detail_cells`."""
    return TableSpec(
        lambda item: queue_detail_cells(item[0], thresholds, item[1]),
        columns=(
            ("name", "Queue"),
            ("pending", "Pending"),
            ("delayed", "Delayed"),
            ("running", "Running"),
            ("claimed", "Claimed"),
            ("expired", "Expired"),
            ("oldest", "Oldest pending"),
            ("paused", "Paused by"),
            ("trend", "Depth trend (one bar per poll)"),
        ),
        widths={
            "name": Width(cut=8),
            "paused": Width(cut=8),
            # Cut, a trend would lose its newest bars: it goes whole or not at all.
            "trend": Width(drop=1),
        },
    )


def queue_table(thresholds: Thresholds) -> TableSpec[QueueStats]:
    """The overview's table of queues: :func:`queue_cells`."""
    return TableSpec(
        lambda q: queue_cells(q, thresholds),
        columns=(
            ("name", "Queue"),
            ("pending", "Pending"),
            ("delayed", "Delayed"),
            ("running", "Running"),
            ("oldest", "Oldest"),
            ("trend", "Depth trend"),
        ),
        widths={"name": Width(cut=8), "trend": Width(drop=1)},
    )


def func_name(func: str, style: str = "") -> Text:
    """A task function as the tables show it: its qualified name without the module
    (``omniq_console.demo.tasks:send_email`` -> ``send_email``), since the module prefix is
    what a narrow column would keep and it says least. The detail shows the whole name."""
    short = func.rsplit(":", 1)[-1] if ":" in func else func.rsplit(".", 1)[-1]
    return literal(short, style)


def task_cells(row: TaskRow) -> list[Text]:
    """id, status, exception, queue, function, created, retries, priority, worker.

    Status and exception come first: they are what the operator scans for, and they must
    stay on screen when the ids and names are long.
    """
    return [
        short_id(row.id),
        status(row.status),
        literal(row.error_type, "red", empty=""),
        literal(row.queue_name),
        func_name(row.func),
        Text(fmt.short_timestamp(row.created_at), end=""),
        Text(str(row.retry_count), justify="right", end=""),
        Text(str(row.priority), justify="right", end=""),
        literal(row.worker_id, empty=fmt.DASH),
    ]


TASK_TABLE = TableSpec(
    task_cells,
    columns=(
        ("id", "Task"),
        ("status", "Status"),
        ("error", "Exception"),
        ("queue", "Queue"),
        ("func", "Function"),
        ("created", "Created (UTC)"),
        ("retries", "Retries"),
        ("priority", "Prio"),
        ("worker", "Worker"),
    ),
    # At 80 columns Prio, Retries and Worker give way; from 120 every column is whole.
    widths={
        "error": Width(cut=9, most=32),
        "queue": Width(cut=6),
        "func": Width(cut=10),
        "worker": Width(cut=8, drop=1),
        "retries": Width(drop=2),
        "priority": Width(drop=3),
    },
)


def failure_cells(row: TaskRow) -> list[Text]:
    """id, failed at, queue, function, retries, worker: a failed task of a known exception."""
    return [
        short_id(row.id),
        Text(fmt.short_timestamp(failed_at(row)), end=""),
        literal(row.queue_name),
        func_name(row.func),
        Text(str(row.retry_count), justify="right", end=""),
        literal(row.worker_id, empty=fmt.DASH),
    ]


FAILURE_TABLE = TableSpec(
    failure_cells,
    columns=(
        ("id", "Task"),
        ("failed", "Failed (UTC)"),
        ("queue", "Queue"),
        ("func", "Function"),
        ("retries", "Retries"),
        ("worker", "Worker"),
    ),
    widths={"queue": Width(cut=6), "func": Width(cut=10), "worker": Width(cut=8)},
)


def event_cells(event: EventRow, *, short: bool = False) -> list[Text]:
    """time, type, task, queue, who, what (``short``: task ids cut to their start)."""
    who = event.actor or event.worker_id
    what = Text(end="")
    if event.error_type:
        what.append_text(literal(event.error_type, "red"))
        what.append(": ")
        what.append_text(literal(event.error_message))
    else:
        what.append_text(literal(event.message))
    return [
        Text(fmt.clock_time(event.timestamp), style="dim", end=""),
        literal(event.event_type, EVENT_STYLES.get(event.event_type, "")),
        short_id(event.task_id)
        if short and event.task_id
        else literal(event.task_id or event.schedule_id, empty=""),
        literal(event.queue_name, empty=""),
        literal(who, empty=""),
        what,
    ]


EVENT_TABLE = TableSpec(
    event_cells,
    columns=(
        ("time", "Time (UTC)"),
        ("type", "Event"),
        ("task", "Task / schedule"),
        ("queue", "Queue"),
        ("who", "Who"),
        ("what", "Message"),
    ),
    # The message fills what is left; at 80 columns the queue gives way to it.
    widths={
        "task": Width(cut=9),
        "queue": Width(cut=6, drop=2),
        "who": Width(cut=6, drop=1),
        "what": Width(cut=24, fill=True),
    },
)
# The overview's live tail: its border title says the times are UTC; a narrow panel keeps
# time, event, who and the message, and gives up the queue, then the task.
TAIL_TABLE = TableSpec(
    partial(event_cells, short=True),
    columns=(
        ("time", "Time"),
        ("type", "Event"),
        ("task", "Task"),
        ("queue", "Queue"),
        ("who", "Who"),
        ("what", "Message"),
    ),
    widths={
        "task": Width(cut=9, drop=1),
        "queue": Width(cut=6, drop=2),
        "who": Width(cut=6),
        "what": Width(cut=16, fill=True),
    },
)


def schedule_spec(row: ScheduleRow) -> str:
    if row.cron_expression:
        return row.cron_expression
    if row.interval_s is not None:
        return f"every {fmt.duration(row.interval_s)}"
    return "once"


def schedule_cells(item: tuple[ScheduleRow, datetime]) -> list[Text]:
    """id, status, next run, last run, runs, paused by, function, type/spec, queue of a
    schedule as at ``now``.

    What tells a paused or late schedule comes first: at 80 columns it stays on screen.
    """
    row, now = item
    state = status(row.status)
    if row.overdue:
        state.append(" overdue", style="bold red")
    runs = f"{row.run_count}" + (f"/{row.max_runs}" if row.max_runs else "")
    next_run = fmt.countdown(row.next_run, now) if row.status == "active" else fmt.DASH
    paused = (
        paused_by(row.paused_by, row.paused_at, now) if row.status == "paused" else Text(end="")
    )
    return [
        literal(row.id),
        state,
        Text(next_run, style="bold red" if row.overdue else "", end=""),
        Text(fmt.ago(row.last_run, now), end=""),
        Text(runs, justify="right", end=""),
        paused,
        func_name(row.func),
        literal(schedule_spec(row)),
        literal(row.queue_name),
    ]


SCHEDULE_TABLE = TableSpec(
    schedule_cells,
    columns=(
        ("id", "Schedule"),
        ("status", "Status"),
        ("next", "Next run"),
        ("last", "Last run"),
        ("runs", "Runs"),
        ("paused", "Paused by"),
        ("func", "Function"),
        ("spec", "When"),
        ("queue", "Queue"),
    ),
    widths={
        "id": Width(cut=10),
        "paused": Width(cut=9),
        "func": Width(cut=8, drop=1),
        "spec": Width(cut=6, drop=2),
        "queue": Width(cut=6, drop=3),
    },
)


def worker_state(row: WorkerRow) -> Text:
    """The worker's state; a dead one (heartbeat stale while it says it runs) in red."""
    if row.dead:
        return Text(f"{row.state} DEAD", style="bold red", end="")
    if not row.alive:
        return Text(f"{row.state} (silent)", style="bold red", end="")
    return Text(row.state, style="green", end="")


def worker_load(row: WorkerRow) -> Text:
    """``2/4 50%``: functions running of its slots, and that as utilisation; ``+1`` more
    tasks whose functions ended and whose outcomes are being written (``finishing``)."""
    slots = f"/{row.concurrency}" if row.concurrency else ""
    text = Text(f"{row.busy}{slots}", justify="right", end="")
    if row.utilisation is not None:
        level = Level.WARNING if row.utilisation >= 1 else Level.OK
        text.append(f" {row.utilisation * 100:.0f}%", style=level.style or "dim")
    if row.finishing:
        text.append(f" +{row.finishing}", style="dim")
    return text


WORKER_TASKS_SHOWN = 8
"""Running tasks named in a worker's row; the rest are counted (the worker's screen lists them
all). A worker holding tens of thousands of stale leases made a cell of as many parts."""


def worker_tasks(row: WorkerRow) -> Text:
    """What it runs: ``send_email 0193ab12…, build_report 0193ab99…`` (function, short id),
    the first ``WORKER_TASKS_SHOWN`` and ``+N more``."""
    if not row.running:
        return Text("idle", style="dim", end="")
    parts: list[Text] = []
    for i, task in enumerate(row.running[:WORKER_TASKS_SHOWN]):
        func = row.running_funcs[i] if i < len(row.running_funcs) else ""
        part = Text(end="")
        if func:
            part.append_text(func_name(func))
            part.append(" ")
        part.append_text(short_id(task))
        parts.append(part)
    text = Text(", ", end="").join(parts)
    if (more := len(row.running) - WORKER_TASKS_SHOWN) > 0:
        text.append(f" +{more:,} more", style="dim")
    return text


def heartbeat(row: WorkerRow) -> Text:
    """Age of the last heartbeat, red when the worker is silent or dead."""
    if row.age_s is None:
        return Text(fmt.DASH, end="")
    return Text(
        f"{fmt.duration(row.age_s)} ago",
        style="bold red" if row.dead or not row.alive else "",
        justify="right",
        end="",
    )


def worker_cells(row: WorkerRow) -> list[Text]:
    """id, state, heartbeat, load, done, failed, running tasks, queues, host, pid.

    The short, key columns first and the long list of what it runs after them, so a busy
    worker never pushes its heartbeat or counts off screen.
    """
    return [
        literal(row.id, "bold"),
        worker_state(row),
        heartbeat(row),
        worker_load(row),
        number(row.processed),
        number(row.failed, Level.WARNING if row.failed else Level.OK),
        worker_tasks(row),
        literal(", ".join(row.queues)),
        literal(row.host),
        Text(str(row.pid) if row.pid else fmt.DASH, justify="right", end=""),
    ]


WORKER_TABLE = TableSpec(
    worker_cells,
    columns=(
        ("id", "Worker"),
        ("state", "State"),
        ("seen", "Heartbeat"),
        ("load", "Running/slots"),
        ("processed", "Done"),
        ("failed", "Failed"),
        ("running", "Running (function, task)"),
        ("queues", "Queues"),
        ("host", "Host"),
        ("pid", "PID"),
    ),
    widths={
        "id": Width(cut=8),
        "running": Width(cut=12, fill=True),
        "queues": Width(cut=6, drop=1),
        "host": Width(cut=6, drop=2),
        "pid": Width(drop=3),
    },
)


def worker_summary_cells(row: WorkerRow) -> list[Text]:
    """id, state, load, heartbeat: the overview's short form of :func:`worker_cells`."""
    return [literal(row.id, "bold"), worker_state(row), worker_load(row), heartbeat(row)]


WORKER_SUMMARY_TABLE = TableSpec(
    worker_summary_cells,
    columns=(
        ("id", "Worker"),
        ("state", "State"),
        ("load", "Running"),
        ("seen", "Heartbeat"),
    ),
    widths={"id": Width(cut=8)},
)


def stuck_cells(row: StuckTask) -> list[Text]:
    """task, lease lost for, worker, function, queue."""
    return [
        short_id(row.id),
        Text(fmt.duration(row.overdue_s), style="bold red", justify="right", end=""),
        literal(row.worker_id, empty=fmt.DASH),
        func_name(row.func),
        literal(row.queue_name),
    ]


STUCK_TABLE = TableSpec(
    stuck_cells,
    columns=(
        ("id", "Task"),
        ("overdue", "Lease lost"),
        ("worker", "Worker"),
        ("func", "Function"),
        ("queue", "Queue"),
    ),
    widths={
        "worker": Width(cut=8),
        "func": Width(cut=8, drop=1),
        "queue": Width(cut=6, drop=2),
    },
)


def overdue_cells(item: tuple[ScheduleRow, datetime]) -> list[Text]:
    """schedule, how late, function: the overview's overdue schedules."""
    row, now = item
    return [
        literal(row.id),
        Text(fmt.countdown(row.next_run, now), style="bold red", end=""),
        func_name(row.func),
    ]


OVERDUE_TABLE = TableSpec(
    overdue_cells,
    columns=(("id", "Schedule"), ("late", "Next run"), ("func", "Function")),
    widths={"id": Width(cut=8), "func": Width(cut=8, drop=1)},
)


def failure_trend(values: tuple[int, ...]) -> Text:
    """Failures per minute as bars, the newest right; a minute without one is a dim dot."""
    bars = fmt.sparkline(values)
    text = Text(end="")
    for value, bar in zip(values, bars, strict=True):
        text.append("·" if value == 0 else bar, style="dim" if value == 0 else "red")
    return text


def seen(when: datetime | None, now: datetime | None) -> Text:
    """``4m 00s ago`` (UTC time when there is no ``now`` to count from)."""
    if when is None:
        return Text(fmt.DASH, style="dim", end="")
    if now is None:
        return Text(fmt.short_timestamp(when), end="")
    return Text(fmt.ago(when, now), justify="right", end="")


def group_cells(group: FailureGroup) -> list[Text]:
    """exception type, count, first seen (``new`` when recent), last seen, trend, queues."""
    first = seen(group.first_seen, group.now)
    if group.is_new:
        first = Text.assemble(("NEW ", "bold black on yellow"), first, end="")
    return [
        literal(group.error_type, "bold red"),
        number(group.count),
        first,
        seen(group.last_seen, group.now),
        failure_trend(group.per_minute),
        literal(", ".join(group.queues)),
    ]


GROUP_TABLE = TableSpec(
    group_cells,
    columns=(
        ("type", "Exception"),
        ("count", "Failed"),
        ("first", "First seen"),
        ("last", "Last seen"),
        ("trend", f"Per minute, last {TREND_MINUTES} min"),
        ("queues", "Queues"),
    ),
    widths={
        "type": Width(cut=8),
        "trend": Width(drop=1),
        "queues": Width(cut=6, drop=2),
    },
)
