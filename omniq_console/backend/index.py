"""Index fields kept in each object's GCS custom metadata (docs/architecture.md, "Index metadata").

A listing returns every object's metadata, so queue depths, status counts and outcome charts
come from listings alone: about one request per 1,000 objects and no body reads. Each kind has
``*_metadata(model) -> dict[str, str]`` (written with the body) and
``*_index(info) -> Index | None`` (read from a listing). ``None`` means the object carries no
usable index (say, written by another OmniQ backend): the caller reads its body instead.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, TypeVar
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
T = TypeVar("T")


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


# -- the field tables ---------------------------------------------------------------------------
#
# One table per kind of object: which metadata key holds which field, and how it is coded. The
# writers below encode from it, the backend's index records (``task_index``...) and the
# monitor's lean rows (``monitor/records.py``) decode with it: a field cannot be written under
# one name and read under another, and a field nobody writes cannot be read.

TEXT = "text"  # free text, "" when absent
OPT = "opt"  # free text, None when absent or empty
INT = "int"  # 0 when absent
OPT_INT = "opt_int"  # None when absent
FLOAT = "float"  # None when absent or not a number
TIME = "time"  # an ISO time; the reader decides its type (datetime, or POSIX seconds)
LIST = "list"  # items escaped one by one and comma-joined (``joined_within``)
RAW = "raw"  # plain ASCII written as is (enum values, flags)


@dataclass(frozen=True, slots=True)
class IndexField:
    """One field of an object's index: its record attribute, its metadata key, its coding."""

    name: str
    key: str
    kind: str
    required: bool = False
    default: str = ""


def _f(name: str, kind: str, *, key: str | None = None, required: bool = False) -> IndexField:
    return IndexField(name, key or name, kind, required)


TASK_FIELDS: tuple[IndexField, ...] = (
    _f("queue", TEXT, required=True),
    _f("func", TEXT),
    _f("priority", INT),
    _f("run_at", TIME),
    _f("expires_at", TIME),
    _f("created_at", TIME),
    IndexField("status", "status", RAW, default=TaskStatus.PENDING.value),
    _f("worker_id", OPT),
    _f("lease_expires_at", TIME),
    _f("retry_count", INT),
)
"""``tasks/{id}.json``. ``status``, ``worker_id``, ``lease_expires_at`` and ``retry_count`` are
what the definition said when it was written; the live values are the state record's."""

ENTRY_FIELDS: tuple[IndexField, ...] = (
    _f("priority", INT),
    _f("run_at", TIME),
    _f("expires_at", TIME),
    _f("created_at", TIME),
    _f("record_generation", OPT_INT),
    _f("attempt", INT),
    _f("func", OPT),
)
"""``queues/{queue}/{id}.json``: ranking fields, and the hints of a task pending again."""

RESULT_FIELDS: tuple[IndexField, ...] = (
    _f("status", RAW, required=True),
    _f("state", RAW),
    _f("queue", OPT),
    _f("func", OPT),
    _f("attempt", INT),
    _f("worker_id", OPT),
    _f("lease_s", FLOAT),
    _f("lease_expires_at", TIME),
    _f("run_at", TIME),
    _f("retry_count", INT),
    _f("created_at", TIME),
    _f("started_at", TIME),
    _f("completed_at", TIME),
    _f("error_type", OPT),
    _f("expires_at", TIME),
    _f("execution_time", FLOAT),
)
"""``results/{id}.json``: the task's state record and, once final, its outcome."""

EVENT_FIELDS: tuple[IndexField, ...] = (
    IndexField("event_type", "type", RAW, required=True),
    IndexField("task_id", "task", OPT),
    IndexField("queue", "queue", OPT),
    IndexField("timestamp", "timestamp", TIME),
)
"""``events/{id}.json`` holding one event (``log_event``)."""

EVENT_BATCH_FIELDS: tuple[IndexField, ...] = (
    IndexField("count", "count", INT),
    IndexField("first_ts", "first_ts", TIME),
    IndexField("last_ts", "last_ts", TIME),
    IndexField("worker", "worker", OPT),
    IndexField("types", "types", LIST),
    IndexField("tasks", "tasks", LIST),
    IndexField("tasks_truncated", "tasks_truncated", INT),
)
"""``events/{batch_id}.json`` holding a worker's flush (``batch=1``)."""

SCHEDULE_FIELDS: tuple[IndexField, ...] = (
    _f("status", RAW, required=True),
    _f("next_run", TIME),
)

WORKER_FIELDS: tuple[IndexField, ...] = (
    IndexField("state", "state", TEXT, default="running"),
    _f("last_seen", TIME),
    _f("started_at", TIME),
    _f("host", TEXT),
    _f("pid", INT),
    _f("queues", LIST),
    _f("running", LIST),
    _f("processed", INT),
    _f("failed", INT),
    _f("concurrency", INT),
    _f("running_funcs", LIST),
    _f("queues_truncated", INT),
    _f("running_truncated", INT),
)
"""``workers/{id}.json``: a heartbeat, all in metadata."""

PAUSED_FIELDS: tuple[IndexField, ...] = (_f("actor", OPT), _f("at", TIME))
"""``paused/{queue}.json``: who paused the queue, and when."""

MARKER_KEYS = frozenset({"omniq_index", "batch"})
"""Keys that say what an index is, not fields of it."""


def field_names(table: Sequence[IndexField]) -> tuple[str, ...]:
    return tuple(f.name for f in table)


def field_reader(
    table: Sequence[IndexField], time: Callable[[str], T]
) -> Callable[[Mapping[str, str]], list[Any]]:
    """A function giving the values of ``table``'s fields in a metadata mapping, in table
    order; times through ``time``. Built once per table (a decoder runs per listed object).
    Text values are interned: a queue, a function, a status, a worker or an error type is the
    same few strings across a million records, one copy each instead of one per record.

    It raises ``KeyError`` when a required field is missing, ``ValueError``/``OverflowError``
    when a value does not parse: the caller then reads the body instead.
    """
    parsers: dict[str, Callable[[str], Any]] = {
        TEXT: _untext_value,
        OPT: _untext_value,
        RAW: sys.intern,
        INT: int,
        OPT_INT: int,
        TIME: time,
        FLOAT: _number_or_none,
        LIST: split_joined,
    }
    steps: list[tuple[str, Callable[[str], Any], bool, Any]] = []
    for f in table:
        parse = parsers.get(f.kind, str)
        empty: Any = {INT: 0, TEXT: "", LIST: ()}.get(f.kind)
        if f.default and f.kind in (TEXT, RAW):
            empty = f.default
        steps.append((f.key, parse, f.required, empty))

    def read(md: Mapping[str, str]) -> list[Any]:
        out: list[Any] = []
        append = out.append
        get = md.get
        for key, parse, required, empty in steps:
            value = get(key)
            if not value:
                if required:
                    raise KeyError(key)
                append(empty)
            else:
                append(parse(value))
        return out

    return read


def _untext_value(value: str) -> str:
    return sys.intern(unquote(value) if "%" in value else value)


def _number_or_none(value: str) -> float | None:
    """A number from metadata, or None when it is not one: a bad lease length or run time
    leaves the rest of the index usable (the reader decides what a missing value means)."""
    try:
        return float(value)
    except ValueError:
        return None


def write_fields(table: Sequence[IndexField], values: Mapping[str, Any]) -> dict[str, str]:
    """``values`` (by field name) as metadata, coded per ``table``; None and 0 of an optional
    number are left empty (or out, for ``OPT_INT``)."""
    md = {"omniq_index": INDEX_VERSION}
    for f in table:
        value = values.get(f.name)
        kind = f.kind
        if kind in (TEXT, OPT):
            md[f.key] = _text(value or "", 200)
        elif kind == INT:
            md[f.key] = str(value or 0)
        elif kind == OPT_INT:
            if value:
                md[f.key] = str(value)
        elif kind == FLOAT:
            md[f.key] = repr(float(value)) if value else ""
        elif kind == TIME:
            md[f.key] = _ts(value)
        elif kind == LIST:
            md[f.key], _ = joined_within(tuple(value or ()), _METADATA_BUDGET)
        else:
            md[f.key] = str(value.value if isinstance(value, Enum) else value or "")
    return md


def _parse_dt(value: str) -> datetime:
    return as_utc(datetime.fromisoformat(value))


_READERS: dict[int, tuple[tuple[str, ...], Callable[[Mapping[str, str]], list[Any]]]] = {}


def _read(table: Sequence[IndexField], md: Mapping[str, str]) -> dict[str, Any]:
    """``md`` read with ``table`` into a dict by field name (times as datetimes)."""
    names_and_read = _READERS.get(id(table))
    if names_and_read is None:
        names_and_read = _READERS[id(table)] = (
            field_names(table),
            field_reader(table, _parse_dt),
        )
    names, read = names_and_read
    return dict(zip(names, read(md), strict=True))


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
    execution_time: float | None = None  # seconds the function ran (the holder measured it)


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
    return write_fields(TASK_FIELDS, _task_values(task))


def _task_values(task: Task) -> dict[str, Any]:
    return {
        "status": task.status,
        "queue": task.queue_name,
        "priority": task.priority,
        "func": task.func,
        "run_at": task.run_at,
        "expires_at": task.expires_at,
        "created_at": task.created_at,
        "worker_id": task.worker_id,
        "lease_expires_at": task.lease_expires_at,
        "retry_count": task.retry_count,
    }


def task_index_of(task: Task) -> TaskIndex:
    values = _task_values(task)
    values["status"] = task.status
    return TaskIndex(id=task.id, **values)


def task_index(info: ObjectInfo) -> TaskIndex | None:
    md = info.metadata
    if md.get("omniq_index") != INDEX_VERSION:
        return None
    try:
        values = _read(TASK_FIELDS, md)
        values["status"] = TaskStatus(values["status"])
        return TaskIndex(id=Layout.name_of(info.key), **values)
    except (KeyError, ValueError, OverflowError):
        return None


# -- queue entries ----------------------------------------------------------------------------


def queue_entry_metadata(task: Task, record: TaskResult | None = None) -> dict[str, str]:
    """The entry's ranking fields; with ``record`` (a pending-again state record), the hints
    that let a claimer compare-and-swap on it without reading it first."""
    run_at = record.run_at if record is not None and record.run_at else task.run_at
    hinted = record is not None and bool(record.generation)
    return write_fields(
        ENTRY_FIELDS,
        {
            "priority": task.priority,
            "run_at": run_at,
            "expires_at": task.expires_at,
            "created_at": task.created_at,
            "func": task.func,
            "record_generation": record.generation if hinted and record else None,
            "attempt": record.attempt if hinted and record else 0,
        },
    )


def queue_entry_index(info: ObjectInfo, layout: Layout) -> QueueEntryIndex | None:
    md = info.metadata
    queue = layout.queue_of_entry(info.key)
    if md.get("omniq_index") != INDEX_VERSION or queue is None:
        return None
    try:
        return QueueEntryIndex(
            task_id=Layout.name_of(info.key), queue=queue, **_read(ENTRY_FIELDS, md)
        )
    except (KeyError, ValueError, OverflowError):
        return None


# -- results ----------------------------------------------------------------------------------


def _result_values(result: TaskResult) -> dict[str, Any]:
    return {
        "status": result.status,
        "state": result.task_status,
        "queue": result.queue_name,
        "func": result.func,
        "attempt": result.attempt,
        "worker_id": result.lease_owner or result.worker_id,
        "lease_s": result.lease_seconds,
        "lease_expires_at": result.lease_expires_at,
        "run_at": result.run_at,
        "retry_count": result.retry_count,
        "created_at": result.created_at,
        "started_at": result.started_at,
        "completed_at": result.completed_at,
        "error_type": result.error_type,
        "expires_at": result.expires_at,
        "execution_time": result.execution_time,
    }


def result_metadata(result: TaskResult) -> dict[str, str]:
    """The index of a result, which is also the task's state record (docs/architecture.md)."""
    return write_fields(RESULT_FIELDS, _result_values(result))


def result_index(info: ObjectInfo) -> ResultIndex | None:
    md = info.metadata
    if md.get("omniq_index") != INDEX_VERSION:
        return None
    try:
        values = _read(RESULT_FIELDS, md)
        status = values["status"] = ResultStatus(values["status"])
        state = values["state"]
        values["state"] = TaskStatus(
            state if state else state_of(status.value, values["worker_id"])
        )
        return ResultIndex(task_id=Layout.name_of(info.key), generation=info.generation, **values)
    except (KeyError, ValueError, OverflowError):
        return None


_STATE_OF_STATUS = {
    ResultStatus.SUCCESS.value: TaskStatus.COMPLETED.value,
    ResultStatus.ERROR.value: TaskStatus.FAILED.value,
    ResultStatus.CANCELLED.value: TaskStatus.CANCELLED.value,
    ResultStatus.EXPIRED.value: TaskStatus.EXPIRED.value,
}


def state_of(status: str, worker_id: str | None) -> str:
    """The task state a result record means when it does not say (records written before
    they carried ``state``): a pending record with a worker is running."""
    if status == ResultStatus.PENDING.value:
        return TaskStatus.RUNNING.value if worker_id else TaskStatus.PENDING.value
    return _STATE_OF_STATUS[status]


def result_index_of(result: TaskResult) -> ResultIndex:
    values = _result_values(result)
    return ResultIndex(task_id=result.task_id, generation=result.generation or 0, **values)


# -- events -----------------------------------------------------------------------------------


def event_metadata(event: TaskEvent) -> dict[str, str]:
    return write_fields(
        EVENT_FIELDS,
        {
            "event_type": event.event_type,
            "task_id": event.task_id,
            "queue": event.queue_name,
            "timestamp": event.timestamp,
        },
    )


def event_index(info: ObjectInfo) -> EventIndex | None:
    md = info.metadata
    if md.get("omniq_index") != INDEX_VERSION:
        return None
    try:
        values = _read(EVENT_FIELDS, md)
        values["event_type"] = EventType(values["event_type"])
        return EventIndex(id=Layout.name_of(info.key), **values)
    except (KeyError, ValueError, OverflowError):
        return None


# -- schedules --------------------------------------------------------------------------------


def schedule_metadata(schedule: Schedule) -> dict[str, str]:
    return write_fields(SCHEDULE_FIELDS, {"status": schedule.status, "next_run": schedule.next_run})


def schedule_index(info: ObjectInfo) -> ScheduleIndex | None:
    md = info.metadata
    if md.get("omniq_index") != INDEX_VERSION:
        return None
    try:
        values = _read(SCHEDULE_FIELDS, md)
        values["status"] = ScheduleStatus(values["status"])
        return ScheduleIndex(id=Layout.name_of(info.key), **values)
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
        return WorkerIndex(id=Layout.name_of(info.key), **_read(WORKER_FIELDS, md))
    except (KeyError, ValueError, OverflowError):
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
        return EventBatchIndex(id=Layout.name_of(info.key), **_read(EVENT_BATCH_FIELDS, md))
    except (KeyError, ValueError, OverflowError):
        return None


# -- paused queues ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PausedIndex:
    queue: str
    actor: str | None
    at: datetime | None


def paused_metadata(actor: str, at: datetime) -> dict[str, str]:
    return write_fields(PAUSED_FIELDS, {"actor": actor, "at": at})


def paused_index(info: ObjectInfo) -> PausedIndex | None:
    try:
        return PausedIndex(queue=Layout.name_of(info.key), **_read(PAUSED_FIELDS, info.metadata))
    except (KeyError, ValueError, OverflowError):
        return None
