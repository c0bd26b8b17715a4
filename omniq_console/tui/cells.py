"""How each kind of row looks in a table: cells as ``Text``, bucket strings kept literal."""

from __future__ import annotations

from datetime import datetime

from rich.text import Text

from ..monitor.snapshot import EventRow, QueueStats, ScheduleRow, StuckTask, TaskRow, WorkerRow
from . import fmt
from .taskfilter import FailureGroup
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
    return [
        literal(q.name, "bold"),
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


def queue_detail_cells(q: QueueStats, thresholds: Thresholds) -> list[Text]:
    """The queues view's row: :func:`queue_cells` plus claimed and expired entries."""
    base = queue_cells(q, thresholds, trend_width=40)
    expired = number(q.expired, Level.WARNING if q.expired else Level.OK)
    return [*base[:4], number(q.claimed), expired, *base[4:]]


QUEUE_DETAIL_COLUMNS = (
    ("name", "Queue"),
    ("pending", "Pending"),
    ("delayed", "Delayed"),
    ("running", "Running"),
    ("claimed", "Claimed"),
    ("expired", "Expired"),
    ("oldest", "Oldest pending"),
    ("trend", "Depth trend (pending + delayed, one bar per poll)"),
)


def task_cells(row: TaskRow) -> list[Text]:
    """id, queue, function, status, priority, created, retries, worker, exception."""
    return [
        literal(row.id),
        literal(row.queue_name),
        literal(row.func),
        status(row.status),
        Text(str(row.priority), justify="right", end=""),
        Text(fmt.timestamp(row.created_at), end=""),
        Text(str(row.retry_count), justify="right", end=""),
        literal(row.worker_id, empty=fmt.DASH),
        literal(row.error_type, "red", empty=""),
    ]


TASK_COLUMNS = (
    ("id", "Task"),
    ("queue", "Queue"),
    ("func", "Function"),
    ("status", "Status"),
    ("priority", "Prio"),
    ("created", "Created (UTC)"),
    ("retries", "Retries"),
    ("worker", "Worker"),
    ("error", "Exception"),
)


def failure_cells(row: TaskRow) -> list[Text]:
    """id, queue, function, created, retries, worker: a failed task of a known exception."""
    full = task_cells(row)
    return [full[0], full[1], full[2], full[5], full[6], full[7]]


FAILURE_COLUMNS = tuple(c for c in TASK_COLUMNS if c[0] not in ("status", "priority", "error"))


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


EVENT_COLUMNS = (
    ("time", "Time (UTC)"),
    ("type", "Event"),
    ("task", "Task / schedule"),
    ("queue", "Queue"),
    ("who", "Worker / actor"),
    ("what", "Message"),
)


def schedule_spec(row: ScheduleRow) -> str:
    if row.cron_expression:
        return row.cron_expression
    if row.interval_s is not None:
        return f"every {fmt.duration(row.interval_s)}"
    return "once"


def schedule_cells(row: ScheduleRow, now: datetime) -> list[Text]:
    """id, function, type/spec, queue, status, next run, last run, runs."""
    state = status(row.status)
    if row.overdue:
        state.append(" overdue", style="bold red")
    runs = f"{row.run_count}" + (f"/{row.max_runs}" if row.max_runs else "")
    next_run = fmt.countdown(row.next_run, now) if row.status == "active" else fmt.DASH
    return [
        literal(row.id),
        literal(row.func),
        literal(schedule_spec(row)),
        literal(row.queue_name),
        state,
        Text(next_run, style="bold red" if row.overdue else "", end=""),
        Text(fmt.ago(row.last_run, now), end=""),
        Text(runs, justify="right", end=""),
    ]


SCHEDULE_COLUMNS = (
    ("id", "Schedule"),
    ("func", "Function"),
    ("spec", "When"),
    ("queue", "Queue"),
    ("status", "Status"),
    ("next", "Next run"),
    ("last", "Last run"),
    ("runs", "Runs"),
)


def worker_cells(row: WorkerRow) -> list[Text]:
    """id, state, host, pid, queues, running, processed, failed, last seen."""
    alive = Text(row.state if row.alive else f"{row.state} (silent)", end="")
    alive.stylize("green" if row.alive else "bold red")
    return [
        literal(row.id, "bold"),
        alive,
        literal(row.host),
        Text(str(row.pid) if row.pid else fmt.DASH, justify="right", end=""),
        literal(", ".join(row.queues)),
        literal(", ".join(row.running) if row.running else "idle", "" if row.running else "dim"),
        number(row.processed),
        number(row.failed, Level.WARNING if row.failed else Level.OK),
        Text(f"{fmt.duration(row.age_s)} ago" if row.age_s is not None else fmt.DASH, end=""),
    ]


WORKER_COLUMNS = (
    ("id", "Worker"),
    ("state", "State"),
    ("host", "Host"),
    ("pid", "PID"),
    ("queues", "Queues"),
    ("running", "Running"),
    ("processed", "Done"),
    ("failed", "Failed"),
    ("seen", "Last seen"),
)


def worker_summary_cells(row: WorkerRow) -> list[Text]:
    """id, state, running, last seen: the overview's short form of :func:`worker_cells`."""
    full = worker_cells(row)
    running = Text(", ").join(short_id(t) for t in row.running) if row.running else full[5]
    return [full[0], full[1], running, full[8]]


WORKER_SUMMARY_COLUMNS = (
    ("id", "Worker"),
    ("state", "State"),
    ("running", "Running"),
    ("seen", "Seen"),
)


def stuck_cells(row: StuckTask) -> list[Text]:
    """task, queue, function, worker, lease expired for."""
    return [
        short_id(row.id),
        literal(row.queue_name),
        literal(row.func),
        literal(row.worker_id, empty=fmt.DASH),
        Text(fmt.duration(row.overdue_s), style="bold red", justify="right", end=""),
    ]


STUCK_COLUMNS = (
    ("id", "Task"),
    ("queue", "Queue"),
    ("func", "Function"),
    ("worker", "Worker"),
    ("overdue", "Lease lost"),
)


def group_cells(group: FailureGroup) -> list[Text]:
    """exception type, count, queues."""
    return [
        literal(group.error_type, "bold red"),
        number(group.count),
        literal(", ".join(group.queues)),
    ]


GROUP_COLUMNS = (("type", "Exception"), ("count", "Failed"), ("queues", "Queues"))
