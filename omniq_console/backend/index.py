"""Index fields kept in each object's GCS custom metadata (docs/architecture.md, "Index metadata").

A listing returns every object's metadata, so queue depths, status counts and outcome charts
come from listings alone: about one request per 1,000 objects and no body reads. Each kind has
``*_metadata(model) -> dict[str, str]`` (written with the body) and
``*_index(info) -> Index | None`` (read from a listing). ``None`` means the object carries no
usable index (say, written by another OmniQ backend): the caller reads its body instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import unquote

from ..models import (
    EventType,
    ResultStatus,
    Schedule,
    ScheduleStatus,
    Task,
    TaskEvent,
    TaskResult,
    TaskStatus,
    as_utc,
)
from .layout import Layout
from .objectstore import ObjectInfo

INDEX_VERSION = "1"


def _ts(value: datetime | None) -> str:
    return as_utc(value).isoformat() if value is not None else ""


def _text(value: str, limit: int) -> str:
    """Free text made safe for a metadata value (``%XX``-escaped where needed), at most ``limit``
    characters before escaping.

    GCS returns custom metadata as HTTP headers (``x-goog-meta-*``) on every GET: a control
    character there makes the whole response unparseable, so the object could never be read
    again, and non-ASCII header bytes are not portable. ``%`` and every character that is not
    printable ASCII are percent-encoded (UTF-8); ``_untext`` gives back the exact text.
    """
    return "".join(
        ch
        if ch.isascii() and ch.isprintable() and ch != "%"
        else "".join(f"%{b:02X}" for b in ch.encode("utf-8", "replace"))
        for ch in value[:limit]
    )


METADATA_LIMIT_BYTES = 8 * 1024
"""GCS's limit on an object's custom metadata: UTF-8 bytes of all keys and values together."""
_METADATA_BUDGET = METADATA_LIMIT_BYTES - 512  # room for the fixed fields beside a long list


def metadata_bytes(metadata: Mapping[str, str]) -> int:
    """The size GCS counts for custom metadata: UTF-8 bytes of every key and value."""
    return sum(len(k.encode()) + len(v.encode()) for k, v in metadata.items())


def joined_within(items: Sequence[str], budget: int) -> tuple[str, int]:
    """``items`` escaped and comma-joined in at most ``budget`` bytes, cut at whole items.

    Returns the text and how many items were left out (0 when all fit): a reader can say
    "and N more" instead of showing half an id.
    """
    out: list[str] = []
    used = 0
    for i, item in enumerate(items):
        escaped = _text(item, 200).replace(",", "%2C")
        cost = len(escaped) + (1 if out else 0)
        if used + cost > budget:
            return ",".join(out), len(items) - i
        out.append(escaped)
        used += cost
    return ",".join(out), 0


def split_joined(value: str | None) -> tuple[str, ...]:
    """The items of a ``joined_within`` value."""
    return tuple(_untext(part) for part in (value or "").split(",") if part)


def _untext(value: str | None) -> str:
    return unquote(value) if value else ""


def _parse_ts(value: str | None) -> datetime | None:
    if not value:
        return None
    return as_utc(datetime.fromisoformat(value))


@dataclass(frozen=True, slots=True)
class TaskIndex:
    id: str
    status: TaskStatus
    queue: str
    priority: int
    func: str
    run_at: datetime | None
    expires_at: datetime | None
    created_at: datetime | None
    worker_id: str | None
    lease_expires_at: datetime | None
    retry_count: int


@dataclass(frozen=True, slots=True)
class QueueEntryIndex:
    task_id: str
    queue: str
    priority: int
    run_at: datetime | None
    expires_at: datetime | None
    created_at: datetime | None
    # Hints written by the rare transitions back to pending (retry, release, requeue,
    # operator retry): the state record's generation to compare-and-swap on, and its attempt.
    record_generation: int | None = None
    attempt: int = 0
    # The task's function: a claimer writes the state record without reading the task first
    # (only the winner reads it), so a lost claim costs no GET.
    func: str | None = None


@dataclass(frozen=True, slots=True)
class ResultIndex:
    """A result record's index: the outcome, and the task's state while it has none."""

    task_id: str
    status: ResultStatus
    completed_at: datetime | None
    error_type: str | None
    # None also when an older index did not record it: see ``"expires_at" in info.metadata``.
    expires_at: datetime | None = None
    state: TaskStatus = TaskStatus.COMPLETED
    queue: str | None = None
    func: str | None = None
    attempt: int = 0
    worker_id: str | None = None  # the lease holder while running, else who ran it last
    lease_s: float | None = None
    lease_expires_at: datetime | None = None  # the holder's wall clock: display only
    run_at: datetime | None = None
    retry_count: int = 0
    created_at: datetime | None = None
    started_at: datetime | None = None
    generation: int = 0


@dataclass(frozen=True, slots=True)
class EventIndex:
    id: str
    event_type: EventType
    task_id: str | None
    queue: str | None
    timestamp: datetime | None


@dataclass(frozen=True, slots=True)
class ScheduleIndex:
    id: str
    status: ScheduleStatus
    next_run: datetime | None


# -- tasks ------------------------------------------------------------------------------------


def task_metadata(task: Task) -> dict[str, str]:
    return {
        "omniq_index": INDEX_VERSION,
        "status": task.status.value,
        "queue": _text(task.queue_name, 200),
        "priority": str(task.priority),
        "func": _text(task.func, 200),
        "run_at": _ts(task.run_at),
        "expires_at": _ts(task.expires_at),
        "created_at": _ts(task.created_at),
        "worker_id": _text(task.worker_id or "", 200),
        "lease_expires_at": _ts(task.lease_expires_at),
        "retry_count": str(task.retry_count),
    }


def task_index_of(task: Task) -> TaskIndex:
    return TaskIndex(
        id=task.id,
        status=task.status,
        queue=task.queue_name,
        priority=task.priority,
        func=task.func,
        run_at=task.run_at,
        expires_at=task.expires_at,
        created_at=task.created_at,
        worker_id=task.worker_id,
        lease_expires_at=task.lease_expires_at,
        retry_count=task.retry_count,
    )


def task_index(info: ObjectInfo) -> TaskIndex | None:
    md = info.metadata
    if md.get("omniq_index") != INDEX_VERSION:
        return None
    try:
        return TaskIndex(
            id=Layout.name_of(info.key),
            status=TaskStatus(md["status"]),
            queue=_untext(md["queue"]),
            priority=int(md.get("priority") or 0),
            func=_untext(md.get("func")),
            run_at=_parse_ts(md.get("run_at")),
            expires_at=_parse_ts(md.get("expires_at")),
            created_at=_parse_ts(md.get("created_at")),
            worker_id=_untext(md.get("worker_id")) or None,
            lease_expires_at=_parse_ts(md.get("lease_expires_at")),
            retry_count=int(md.get("retry_count") or 0),
        )
    except (KeyError, ValueError, OverflowError):
        return None


# -- queue entries ----------------------------------------------------------------------------


def queue_entry_metadata(task: Task, record: TaskResult | None = None) -> dict[str, str]:
    """The entry's ranking fields; with ``record`` (a pending-again state record), the hints
    that let a claimer compare-and-swap on it without reading it first."""
    run_at = record.run_at if record is not None and record.run_at else task.run_at
    md = {
        "omniq_index": INDEX_VERSION,
        "priority": str(task.priority),
        "run_at": _ts(run_at),
        "expires_at": _ts(task.expires_at),
        "created_at": _ts(task.created_at),
        "func": _text(task.func, 200),
    }
    if record is not None and record.generation:
        md["record_generation"] = str(record.generation)
        md["attempt"] = str(record.attempt)
    return md


def queue_entry_index(info: ObjectInfo, layout: Layout) -> QueueEntryIndex | None:
    md = info.metadata
    queue = layout.queue_of_entry(info.key)
    if md.get("omniq_index") != INDEX_VERSION or queue is None:
        return None
    try:
        return QueueEntryIndex(
            task_id=Layout.name_of(info.key),
            queue=queue,
            priority=int(md.get("priority") or 0),
            run_at=_parse_ts(md.get("run_at")),
            expires_at=_parse_ts(md.get("expires_at")),
            created_at=_parse_ts(md.get("created_at")),
            record_generation=int(md["record_generation"]) if md.get("record_generation") else None,
            attempt=int(md.get("attempt") or 0),
            func=_untext(md.get("func")) or None,
        )
    except (ValueError, OverflowError):
        return None


# -- results ----------------------------------------------------------------------------------


def result_metadata(result: TaskResult) -> dict[str, str]:
    """The index of a result, which is also the task's state record (docs/architecture.md)."""
    return {
        "omniq_index": INDEX_VERSION,
        "status": result.status.value,
        "state": result.task_status.value,
        "queue": _text(result.queue_name or "", 200),
        "func": _text(result.func or "", 200),
        "attempt": str(result.attempt),
        "worker_id": _text(result.lease_owner or result.worker_id or "", 200),
        "lease_s": f"{result.lease_seconds:g}" if result.lease_seconds else "",
        "lease_expires_at": _ts(result.lease_expires_at),
        "run_at": _ts(result.run_at),
        "retry_count": str(result.retry_count),
        "created_at": _ts(result.created_at),
        "started_at": _ts(result.started_at),
        "completed_at": _ts(result.completed_at),
        "error_type": _text(result.error_type or "", 200),
        "expires_at": _ts(result.expires_at),
    }


def result_index(info: ObjectInfo) -> ResultIndex | None:
    md = info.metadata
    if md.get("omniq_index") != INDEX_VERSION:
        return None
    try:
        status = ResultStatus(md["status"])
        state = TaskStatus(md["state"]) if md.get("state") else _state_of(status, md)
        return ResultIndex(
            task_id=Layout.name_of(info.key),
            status=status,
            completed_at=_parse_ts(md.get("completed_at")),
            error_type=_untext(md.get("error_type")) or None,
            expires_at=_parse_ts(md.get("expires_at")),
            state=state,
            queue=_untext(md.get("queue")) or None,
            func=_untext(md.get("func")) or None,
            attempt=int(md.get("attempt") or 0),
            worker_id=_untext(md.get("worker_id")) or None,
            lease_s=_number_or_none(md.get("lease_s")),
            lease_expires_at=_parse_ts(md.get("lease_expires_at")),
            run_at=_parse_ts(md.get("run_at")),
            retry_count=int(md.get("retry_count") or 0),
            created_at=_parse_ts(md.get("created_at")),
            started_at=_parse_ts(md.get("started_at")),
            generation=info.generation,
        )
    except (KeyError, ValueError, OverflowError):
        return None


def _number_or_none(value: str | None) -> float | None:
    """A number from metadata, or None when it is missing or not one (the reader decides
    what a missing value means)."""
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _state_of(status: ResultStatus, md: Mapping[str, str]) -> TaskStatus:
    """The task status of a record written before records carried ``state``."""
    if status == ResultStatus.PENDING:
        return TaskStatus.RUNNING if md.get("worker_id") else TaskStatus.PENDING
    return TaskResult(task_id="x", status=status).task_status


def result_index_of(result: TaskResult) -> ResultIndex:
    return ResultIndex(
        result.task_id,
        result.status,
        result.completed_at,
        result.error_type,
        result.expires_at,
        state=result.task_status,
        queue=result.queue_name,
        func=result.func,
        attempt=result.attempt,
        worker_id=result.lease_owner or result.worker_id,
        lease_s=result.lease_seconds,
        lease_expires_at=result.lease_expires_at,
        run_at=result.run_at,
        retry_count=result.retry_count,
        created_at=result.created_at,
        started_at=result.started_at,
        generation=result.generation or 0,
    )


# -- events -----------------------------------------------------------------------------------


def event_metadata(event: TaskEvent) -> dict[str, str]:
    return {
        "omniq_index": INDEX_VERSION,
        "type": event.event_type.value,
        "task": _text(event.task_id or "", 200),
        "queue": _text(event.queue_name or "", 200),
        "timestamp": _ts(event.timestamp),
    }


def event_index(info: ObjectInfo) -> EventIndex | None:
    md = info.metadata
    if md.get("omniq_index") != INDEX_VERSION:
        return None
    try:
        return EventIndex(
            id=Layout.name_of(info.key),
            event_type=EventType(md["type"]),
            task_id=_untext(md.get("task")) or None,
            queue=_untext(md.get("queue")) or None,
            timestamp=_parse_ts(md.get("timestamp")),
        )
    except (KeyError, ValueError, OverflowError):
        return None


# -- schedules --------------------------------------------------------------------------------


def schedule_metadata(schedule: Schedule) -> dict[str, str]:
    return {
        "omniq_index": INDEX_VERSION,
        "status": schedule.status.value,
        "next_run": _ts(schedule.next_run),
    }


def schedule_index(info: ObjectInfo) -> ScheduleIndex | None:
    md = info.metadata
    if md.get("omniq_index") != INDEX_VERSION:
        return None
    try:
        return ScheduleIndex(
            id=Layout.name_of(info.key),
            status=ScheduleStatus(md["status"]),
            next_run=_parse_ts(md.get("next_run")),
        )
    except (KeyError, ValueError, OverflowError):
        return None


# -- worker heartbeats ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerIndex:
    """A worker's heartbeat: everything lives in metadata, the body is not needed."""

    id: str
    state: str  # "running" or "stopped"
    last_seen: datetime | None
    started_at: datetime | None
    host: str
    pid: int
    queues: tuple[str, ...]
    running: tuple[str, ...]  # task ids it runs now
    processed: int
    failed: int
    concurrency: int = 0
    running_funcs: tuple[str, ...] = ()  # the function of each running task, same order
    # Items left out of ``queues`` / ``running`` to keep the metadata under GCS's 8 KiB.
    queues_truncated: int = 0
    running_truncated: int = 0


def worker_metadata(worker: WorkerIndex) -> dict[str, str]:
    """A heartbeat's metadata, under GCS's 8 KiB whatever the names: long lists are cut at
    whole items and the number left out is recorded."""
    md = {
        "omniq_index": INDEX_VERSION,
        "state": _text(worker.state, 20),
        "last_seen": _ts(worker.last_seen),
        "started_at": _ts(worker.started_at),
        "host": _text(worker.host, 100),
        "pid": str(worker.pid),
        "processed": str(worker.processed),
        "failed": str(worker.failed),
        "concurrency": str(worker.concurrency),
    }
    budget = _METADATA_BUDGET - metadata_bytes(md)
    queues, queues_cut = joined_within(worker.queues, budget // 3)
    running, running_cut = joined_within(worker.running, budget // 3)
    funcs, _ = joined_within(worker.running_funcs[: len(worker.running) - running_cut], budget // 3)
    md.update(queues=queues, running=running, running_funcs=funcs)
    if queues_cut:
        md["queues_truncated"] = str(queues_cut)
    if running_cut:
        md["running_truncated"] = str(running_cut)
    return md


def worker_index(info: ObjectInfo) -> WorkerIndex | None:
    md = info.metadata
    if md.get("omniq_index") != INDEX_VERSION:
        return None
    try:
        return WorkerIndex(
            id=Layout.name_of(info.key),
            state=md.get("state", "running"),
            last_seen=_parse_ts(md.get("last_seen")),
            started_at=_parse_ts(md.get("started_at")),
            host=_untext(md.get("host")),
            pid=int(md.get("pid") or 0),
            queues=split_joined(md.get("queues")),
            running=split_joined(md.get("running")),
            processed=int(md.get("processed") or 0),
            failed=int(md.get("failed") or 0),
            concurrency=int(md.get("concurrency") or 0),
            running_funcs=split_joined(md.get("running_funcs")),
            queues_truncated=int(md.get("queues_truncated") or 0),
            running_truncated=int(md.get("running_truncated") or 0),
        )
    except ValueError:
        return None


# -- event batches ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EventBatchIndex:
    """One worker's flush of events: what a listing tells without reading the batch."""

    id: str
    count: int
    first_ts: datetime | None
    last_ts: datetime | None
    worker: str | None
    types: tuple[str, ...]
    tasks: tuple[str, ...]
    tasks_truncated: int


def event_batch_metadata(batch_id: str, events: Sequence[TaskEvent]) -> dict[str, str]:
    """The index of an event batch, under GCS's 8 KiB: task ids are cut at whole ids."""
    stamps = [e.timestamp for e in events]
    workers = {e.worker_id for e in events if e.worker_id}
    md = {
        "omniq_index": INDEX_VERSION,
        "batch": "1",
        "count": str(len(events)),
        "first_ts": _ts(min(stamps)) if stamps else "",
        "last_ts": _ts(max(stamps)) if stamps else "",
        "worker": _text(next(iter(workers)), 200) if len(workers) == 1 else "",
        "types": ",".join(sorted({e.event_type.value for e in events})),
    }
    tasks = list(dict.fromkeys(e.task_id for e in events if e.task_id))
    text, cut = joined_within(tasks, _METADATA_BUDGET - metadata_bytes(md))
    md["tasks"] = text
    if cut:
        md["tasks_truncated"] = str(cut)
    return md


def event_batch_index(info: ObjectInfo) -> EventBatchIndex | None:
    md = info.metadata
    if md.get("omniq_index") != INDEX_VERSION or md.get("batch") != "1":
        return None
    try:
        return EventBatchIndex(
            id=Layout.name_of(info.key),
            count=int(md.get("count") or 0),
            first_ts=_parse_ts(md.get("first_ts")),
            last_ts=_parse_ts(md.get("last_ts")),
            worker=_untext(md.get("worker")) or None,
            types=tuple(t for t in (md.get("types") or "").split(",") if t),
            tasks=split_joined(md.get("tasks")),
            tasks_truncated=int(md.get("tasks_truncated") or 0),
        )
    except (ValueError, OverflowError):
        return None


# -- paused queues ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PausedIndex:
    queue: str
    actor: str | None
    at: datetime | None


def paused_metadata(actor: str, at: datetime) -> dict[str, str]:
    return {"omniq_index": INDEX_VERSION, "actor": _text(actor, 200), "at": _ts(at)}


def paused_index(info: ObjectInfo) -> PausedIndex | None:
    md = info.metadata
    try:
        return PausedIndex(
            queue=Layout.name_of(info.key),
            actor=_untext(md.get("actor")) or None,
            at=_parse_ts(md.get("at")),
        )
    except (ValueError, OverflowError):
        return None
