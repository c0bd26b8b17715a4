"""Index fields kept in each object's GCS custom metadata (DESIGN decision 2).

A listing returns every object's metadata, so queue depths, status counts and outcome charts
come from listings alone: about one request per 1,000 objects and no body reads. Each kind has
``*_metadata(model) -> dict[str, str]`` (written with the body) and
``*_index(info) -> Index | None`` (read from a listing). ``None`` means the object carries no
usable index (say, written by another OmniQ backend): the caller reads its body instead.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    # A claim in progress: the worker that won the entry, until when (see backend/queue.py).
    lease_owner: str | None
    lease_expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class ResultIndex:
    task_id: str
    status: ResultStatus
    completed_at: datetime | None
    error_type: str | None
    # None also when an older index did not record it: see ``"expires_at" in info.metadata``.
    expires_at: datetime | None = None


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
    except (KeyError, ValueError):
        return None


# -- queue entries ----------------------------------------------------------------------------


def queue_entry_metadata(
    task: Task, lease_owner: str | None = None, lease_expires_at: datetime | None = None
) -> dict[str, str]:
    return {
        "omniq_index": INDEX_VERSION,
        "priority": str(task.priority),
        "run_at": _ts(task.run_at),
        "expires_at": _ts(task.expires_at),
        "created_at": _ts(task.created_at),
        "lease_owner": _text(lease_owner or "", 200),
        "lease_expires_at": _ts(lease_expires_at),
    }


def claimed_entry_metadata(
    metadata: Mapping[str, str], lease_owner: str | None, lease_expires_at: datetime | None
) -> dict[str, str]:
    """A listed queue entry's metadata with its claim set (or cleared, with ``None``)."""
    return {
        **metadata,
        "lease_owner": _text(lease_owner or "", 200),
        "lease_expires_at": _ts(lease_expires_at),
    }


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
            lease_owner=_untext(md.get("lease_owner")) or None,
            lease_expires_at=_parse_ts(md.get("lease_expires_at")),
        )
    except ValueError:
        return None


# -- results ----------------------------------------------------------------------------------


def result_metadata(result: TaskResult) -> dict[str, str]:
    return {
        "omniq_index": INDEX_VERSION,
        "status": result.status.value,
        "completed_at": _ts(result.completed_at),
        "error_type": _text(result.error_type or "", 200),
        "expires_at": _ts(result.expires_at),
    }


def result_index(info: ObjectInfo) -> ResultIndex | None:
    md = info.metadata
    if md.get("omniq_index") != INDEX_VERSION:
        return None
    try:
        return ResultIndex(
            task_id=Layout.name_of(info.key),
            status=ResultStatus(md["status"]),
            completed_at=_parse_ts(md.get("completed_at")),
            error_type=_untext(md.get("error_type")) or None,
            expires_at=_parse_ts(md.get("expires_at")),
        )
    except (KeyError, ValueError):
        return None


def result_index_of(result: TaskResult) -> ResultIndex:
    return ResultIndex(
        result.task_id, result.status, result.completed_at, result.error_type, result.expires_at
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
    except (KeyError, ValueError):
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
    except (KeyError, ValueError):
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


def worker_metadata(worker: WorkerIndex) -> dict[str, str]:
    return {
        "omniq_index": INDEX_VERSION,
        "state": worker.state,
        "last_seen": _ts(worker.last_seen),
        "started_at": _ts(worker.started_at),
        "host": _text(worker.host, 100),
        "pid": str(worker.pid),
        "queues": _text(",".join(worker.queues), 1000),
        "running": _text(",".join(worker.running), 2000),
        "processed": str(worker.processed),
        "failed": str(worker.failed),
    }


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
            queues=tuple(q for q in _untext(md.get("queues")).split(",") if q),
            running=tuple(t for t in _untext(md.get("running")).split(",") if t),
            processed=int(md.get("processed") or 0),
            failed=int(md.get("failed") or 0),
        )
    except ValueError:
        return None
