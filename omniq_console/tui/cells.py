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
    """id, status, exception, queue, function, created, retries, priority, worker.

    Status and exception come first: they are what the operator scans for, and they must
    stay on screen when the ids and names are long.
    """
    return [
        short_id(row.id),
        status(row.status),
        literal(row.error_type, "red", empty=""),
        literal(row.queue_name),
        literal(row.func),
        Text(fmt.short_timestamp(row.created_at), end=""),
        Text(str(row.retry_count), justify="right", end=""),
        Text(str(row.priority), justify="right", end=""),
        literal(row.worker_id, empty=fmt.DASH),
    ]


TASK_COLUMNS = (
    ("id", "Task"),
    ("status", "Status"),
    ("error", "Exception"),
    ("queue", "Queue"),
    ("func", "Function"),
    ("created", "Created (UTC)"),
    ("retries", "Retries"),
    ("priority", "Prio"),
    ("worker", "Worker"),
)


def failure_cells(row: TaskRow) -> list[Text]:
    """id, created, queue, function, retries, worker: a failed task of a known exception."""
    return [
        short_id(row.id),
        Text(fmt.short_timestamp(row.created_at), end=""),
        literal(row.queue_name),
        literal(row.func),
        Text(str(row.retry_count), justify="right", end=""),
        literal(row.worker_id, empty=fmt.DASH),
    ]


FAILURE_COLUMNS = (
    ("id", "Task"),
    ("created", "Created (UTC)"),
    ("queue", "Queue"),
    ("func", "Function"),
    ("retries", "Retries"),
    ("worker", "Worker"),
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


def worker_state(row: WorkerRow) -> Text:
    """The worker's state; a dead one (heartbeat stale while it says it runs) in red."""
    if row.dead:
        return Text(f"{row.state} DEAD", style="bold red", end="")
    if not row.alive:
        return Text(f"{row.state} (silent)", style="bold red", end="")
    return Text(row.state, style="green", end="")


def worker_load(row: WorkerRow) -> Text:
    """``2/4 50%``: tasks running of its slots, and that as utilisation."""
    slots = f"/{row.concurrency}" if row.concurrency else ""
    text = Text(f"{len(row.running)}{slots}", justify="right", end="")
    if row.utilisation is not None:
        level = Level.WARNING if row.utilisation >= 1 else Level.OK
        text.append(f" {row.utilisation * 100:.0f}%", style=level.style or "dim")
    return text


def worker_tasks(row: WorkerRow) -> Text:
    """What it runs: ``send_email 0193ab12…, build_report 0193ab99…`` (function, short id)."""
    if not row.running:
        return Text("idle", style="dim", end="")
    parts: list[Text] = []
    for i, task in enumerate(row.running):
        func = row.running_funcs[i] if i < len(row.running_funcs) else ""
        part = Text(end="")
        if func:
            # ``app.mail.send`` and ``fleet:send`` both show as ``send``: the id says which.
            part.append_text(literal(func.replace(":", ".").rsplit(".", 1)[-1]))
            part.append(" ")
        part.append_text(short_id(task))
        parts.append(part)
    return Text(", ", end="").join(parts)


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


WORKER_COLUMNS = (
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
)


def worker_summary_cells(row: WorkerRow) -> list[Text]:
    """id, state, load, heartbeat: the overview's short form of :func:`worker_cells`."""
    return [literal(row.id, "bold"), worker_state(row), worker_load(row), heartbeat(row)]


WORKER_SUMMARY_COLUMNS = (
    ("id", "Worker"),
    ("state", "State"),
    ("load", "Running"),
    ("seen", "Heartbeat"),
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
