"""Named records the monitor keeps per object, and their decoders from index metadata.

One decoder per kind of object of ``docs/architecture.md`` ("Layout of a bucket", "Index
metadata"). A decoder takes an object's key and custom metadata (from a listing or from a
change-feed message: both carry the same object resource) and returns its record, an
``UnreadableRow`` (the key alone says the object can never mean anything: outside the layout,
an id the stores refuse) or ``None`` (no index, or one with a value that does not parse: the
body decides, and a bad body is reported with its reason).

Times are kept as float POSIX seconds, not ``datetime``: floats are not tracked by the garbage
collector and take a third of the memory, which matters at a million records. Rows of the
snapshot convert them back.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, NamedTuple

import msgspec

from ..backend.errors import CorruptObjectError
from ..backend.index import (
    ENTRY_FIELDS,
    EVENT_BATCH_FIELDS,
    EVENT_FIELDS,
    INDEX_VERSION,
    PAUSED_FIELDS,
    RESULT_FIELDS,
    TASK_FIELDS,
    WORKER_FIELDS,
    field_reader,
    queue_entry_metadata,
    result_metadata,
    state_of,
    task_metadata,
)
from ..backend.layout import Layout, check_id
from ..backend.listing import TOO_DEEP, parse_model
from ..checks import describe_exception
from ..models import (
    SCHEMA_VERSION,
    EventType,
    ResultStatus,
    Schedule,
    Task,
    TaskEvent,
    TaskResult,
    TaskStatus,
    as_utc,
    new_event_id,
    utcnow,
)
from .snapshot import UnreadableRow

_TASK_STATES = frozenset(s.value for s in TaskStatus)
_RESULT_STATUSES = frozenset(s.value for s in ResultStatus)

# The lean rows below hold, after their id (and queue), exactly the fields of the backend's
# field table of their kind, in its order (``backend/index.py``): a decoder builds a row from
# ``field_reader`` positionally, and a test checks the names line up.
#
# A task's records are frozen msgspec structs that the garbage collector never tracks
# (``gc=False``: they hold only strings, numbers and other such structs, so no cycle): a
# million tasks are millions of records, and named tuples (tuple subclasses, which the
# collector never untracks) made every full collection walk them all.


class TaskDef(msgspec.Struct, frozen=True, gc=False):
    """``tasks/{id}.json``: the definition, the fields of ``TASK_FIELDS`` the monitor uses
    (``TASK_READ``). The others (``status``, ``worker_id``, ``lease_expires_at``,
    ``retry_count``: what the object said when written, which the state record overrides;
    ``expires_at``, which the queue entry carries) are not kept: 40 bytes a task, 40 MB at a
    million."""

    id: str
    queue: str
    func: str
    priority: int
    run_at: float | None
    created_at: float | None


TASK_READ = tuple(f for f in TASK_FIELDS if f.name in TaskDef.__struct_fields__)
"""The fields of a task's index the monitor reads (in ``TaskDef``'s order)."""


class Entry(msgspec.Struct, frozen=True, gc=False):
    """``queues/{queue}/{id}.json`` (``ENTRY_FIELDS``): the task waits (or runs) here."""

    task_id: str
    queue: str
    priority: int
    run_at: float | None
    expires_at: float | None
    created_at: float | None
    record_generation: int | None
    attempt: int
    func: str | None


class StateRecord(msgspec.Struct, frozen=True, gc=False):
    """``results/{id}.json`` (``RESULT_FIELDS``): the task's live state and, once final, its
    outcome."""

    task_id: str
    status: str  # ResultStatus value
    state: str  # TaskStatus value derived from it
    queue: str | None
    func: str | None
    attempt: int
    worker_id: str | None  # the lease holder while running, else who ran it last
    lease_s: float | None
    lease_expires_at: float | None
    run_at: float | None
    retry_count: int
    created_at: float | None
    started_at: float | None
    completed_at: float | None
    error_type: str | None
    expires_at: float | None
    execution_time: float | None


class Heartbeat(NamedTuple):
    """``workers/{worker_id}.json`` (``WORKER_FIELDS``)."""

    id: str
    state: str
    last_seen: float | None
    started_at: float | None
    host: str
    pid: int
    queues: tuple[str, ...]
    running: tuple[str, ...]
    processed: int
    failed: int
    concurrency: int
    running_funcs: tuple[str, ...]
    queues_truncated: int
    running_truncated: int


class EventObject(NamedTuple):
    """``events/{id}.json``: a batch of events (``batch``) or one event (the old form)."""

    id: str
    batch: bool
    events: int
    first_ts: float | None
    last_ts: float | None
    types: tuple[str, ...]
    tasks: tuple[str, ...]
    worker: str | None
    queue: str | None


class PausedQueue(NamedTuple):
    """``paused/{queue}.json`` (``PAUSED_FIELDS``): the queue is paused (by whom, since when)."""

    queue: str
    actor: str | None
    at: float | None


class ScheduleRecord(NamedTuple):
    """``schedules/{id}.json``: always read from its body (rows need most of its fields)."""

    id: str
    schedule: Schedule


Record = TaskDef | Entry | StateRecord | Heartbeat | EventObject | PausedQueue | ScheduleRecord
Decoded = Record | UnreadableRow | None
Decoder = Callable[[str, Mapping[str, str]], Decoded]
IndexReader = Callable[[str, Mapping[str, str]], Decoded]
"""A row built from an object's id and its index metadata (raises on a bad index)."""

KINDS = ("tasks", "queues", "results", "schedules", "workers", "paused", "events")
"""Every prefix of the layout the monitor models (``paused/`` is under the same prefix)."""


def ts(value: str) -> float:
    """An ISO time from metadata as POSIX seconds (``OverflowError`` raises: caller reports)."""
    return as_utc(datetime.fromisoformat(value)).timestamp()


def kind_of(layout: Layout, key: str) -> str | None:
    """Which prefix ``key`` lives under, None outside the layout's prefix."""
    if not key.startswith(layout.prefix):
        return None
    head = key[len(layout.prefix) :].split("/", 1)[0]
    return head if head in KINDS else None


def paused_prefix(layout: Layout) -> str:
    return f"{layout.prefix}paused/"


def folder_of(layout: Layout, kind: str) -> str:
    return paused_prefix(layout) if kind == "paused" else str(getattr(layout, kind))


_PLAIN_ID = re.compile(r"[A-Za-z0-9_.:@+=-]{1,200}")
"""Ids made only of these characters pass ``check_id`` (no separators, wildcards, controls)."""
_REFUSED_HINT = re.compile(r"[\x00-\x1f\x7f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _checked_id(key: str, folder: str, what: str) -> str | UnreadableRow:
    """The id in ``{folder}{id}.json``, or why the stores would never hand this object out."""
    name = key[len(folder) :]
    if not name.endswith(".json") or "/" in name or name == ".json":
        return UnreadableRow(key=key, reason=f"outside the layout (expected {folder}<id>.json)")
    # Not interned: the interpreter's table of a million ids is ~40 MB. The model makes a
    # task's records share one string (``BucketModel.offer``).
    ident = name[:-5]
    if _PLAIN_ID.fullmatch(ident) and ".." not in ident:
        return ident  # the common case, ~50x cheaper than check_id's per-character scan
    try:
        check_id(ident, what)
    except ValueError as exc:
        shown = _REFUSED_HINT.sub("?", ident[:60]) + ("..." if len(ident) > 60 else "")
        return UnreadableRow(key=key, reason=f"{what} {shown!r} refused by the stores: {exc}"[:300])
    return ident


def _indexed(md: Mapping[str, str]) -> bool:
    return md.get("omniq_index") == INDEX_VERSION


def _from_index(
    key: str, md: Mapping[str, str], *, folder: str, what: str, build: IndexReader
) -> Decoded:
    """The row of ``{folder}{id}.json``: its id checked, then ``build(id, metadata)`` from its
    index. An object without an index, or whose index ``build`` cannot read, is left to its
    body (None): the body is reported if it is bad too."""
    ident = _checked_id(key, folder, what)
    if isinstance(ident, UnreadableRow):
        return ident
    if not _indexed(md):
        return None
    try:
        return build(ident, md)
    except Exception:
        return None


def _indexed_decoder(folder: str, what: str, build: IndexReader) -> Decoder:
    """The decoder of the objects of ``folder`` (see ``_from_index``)."""
    return functools.partial(_from_index, folder=folder, what=what, build=build)


def task_decoder(layout: Layout) -> Decoder:
    read = field_reader(TASK_READ, ts)
    status = next(f for f in TASK_FIELDS if f.name == "status")

    def build(ident: str, md: Mapping[str, str]) -> Decoded:
        # Not kept, but checked: an index naming no known status is left to the body.
        if (md.get(status.key) or status.default) not in _TASK_STATES:
            return None
        return TaskDef(ident, *read(md))

    return _indexed_decoder(layout.tasks, "task id", build)


def entry_decoder(layout: Layout) -> Decoder:
    read = field_reader(ENTRY_FIELDS, ts)

    def decode(key: str, md: Mapping[str, str]) -> Decoded:
        queue = layout.queue_of_entry(key)
        if queue is None:
            return UnreadableRow(
                key=key, reason="not a queue entry key (expected queues/<queue>/<id>.json)"
            )
        queue = sys.intern(queue)
        return _from_index(
            key,
            md,
            folder=_queue_folder(layout, queue) or key,
            what="task id",
            build=lambda ident, md: Entry(ident, queue, *read(md)),
        )

    return decode


@functools.lru_cache(maxsize=1024)
def _queue_folder(layout: Layout, queue: str) -> str | None:
    """``queues/{queue}/``, None when the stores refuse the queue's name (checked once per
    name: the check scans every character, and a bucket has a few queues, not a million)."""
    try:
        return layout.queue(queue)
    except ValueError:
        return None


def result_decoder(layout: Layout) -> Decoder:
    read = field_reader(RESULT_FIELDS, ts)

    def build(ident: str, md: Mapping[str, str]) -> Decoded:
        row = StateRecord(ident, *read(md))
        if row.status not in _RESULT_STATUSES:
            return None
        if not row.state:
            return msgspec.structs.replace(row, state=state_of(row.status, row.worker_id))
        return row if row.state in _TASK_STATES else None

    return _indexed_decoder(layout.results, "task id", build)


def worker_decoder(layout: Layout) -> Decoder:
    read = field_reader(WORKER_FIELDS, ts)
    return _indexed_decoder(
        layout.workers, "worker id", lambda ident, md: Heartbeat(ident, *read(md))
    )


def event_decoder(layout: Layout) -> Decoder:
    read_batch = field_reader(EVENT_BATCH_FIELDS, ts)
    read_one = field_reader(EVENT_FIELDS, ts)

    def build(ident: str, md: Mapping[str, str]) -> Decoded:
        if md.get("batch") == "1":
            count, first, last, worker, types, tasks, _ = read_batch(md)
            return EventObject(ident, True, count, first, last, types, tasks, worker, None)
        kind, task, queue, at = read_one(md)
        return EventObject(ident, False, 1, at, at, (kind,), (task,) if task else (), None, queue)

    return _indexed_decoder(layout.events, "event id", build)


def paused_decoder(layout: Layout) -> Decoder:
    folder = paused_prefix(layout)
    read = field_reader(PAUSED_FIELDS, ts)

    def decode(key: str, md: Mapping[str, str]) -> Decoded:
        ident = _checked_id(key, folder, "queue name")
        if isinstance(ident, UnreadableRow):
            return ident
        try:
            # A pause means the object exists; the actor and time are for display.
            return PausedQueue(ident, *read(md))
        except Exception:
            return PausedQueue(queue=ident, actor=None, at=None)

    return decode


def schedule_decoder(layout: Layout) -> Decoder:
    folder = layout.schedules

    def decode(key: str, md: Mapping[str, str]) -> Decoded:
        ident = _checked_id(key, folder, "schedule id")
        return ident if isinstance(ident, UnreadableRow) else None

    return decode


def decoders(layout: Layout) -> dict[str, Decoder]:
    """The metadata decoder of every kind, for ``layout``."""
    return {
        "tasks": task_decoder(layout),
        "queues": entry_decoder(layout),
        "results": result_decoder(layout),
        "schedules": schedule_decoder(layout),
        "workers": worker_decoder(layout),
        "paused": paused_decoder(layout),
        "events": event_decoder(layout),
    }


# -- bodies (objects without index metadata) ------------------------------------------------


def _load(key: str, data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _Bad(key, "not valid JSON") from exc


class _Bad(Exception):
    def __init__(self, key: str, reason: str) -> None:
        super().__init__(reason)
        self.row = UnreadableRow(key=key, reason=reason)


def _model(model: type[Any], key: str, data: bytes) -> Any:
    try:
        return parse_model(model, key, data)
    except CorruptObjectError as exc:
        raise _Bad(key, exc.reason) from exc
    except Exception as exc:  # OverflowError and the like: this object's problem alone
        raise _Bad(key, f"not a valid {model.__name__}: {describe_exception(exc, 200)}") from exc


def parse_body(layout: Layout, kind: str, key: str, data: bytes) -> Record | UnreadableRow:
    """The record of an object read from its body (no index metadata, or a schedule)."""
    try:
        return _parse_body(layout, kind, key, data)
    except _Bad as bad:
        return bad.row
    except Exception as exc:
        return UnreadableRow(key=key, reason=f"{type(exc).__name__}: {describe_exception(exc)}")


def _parse_body(layout: Layout, kind: str, key: str, data: bytes) -> Record | UnreadableRow:
    name = Layout.name_of(key)
    if kind == "schedules":
        return ScheduleRecord(name, _model(Schedule, key, data))
    if kind == "tasks":
        t: Task = _model(Task, key, data)
        if t.id != name:
            return UnreadableRow(key=key, reason=f"its id {t.id!r} does not match its key")
        # Through the writer's own index, so a body means what its metadata would have.
        return _indexed_or_bad(task_decoder(layout)(key, task_metadata(t)), key)
    if kind == "results":
        r: TaskResult = _model(TaskResult, key, data)
        if r.task_id != name:
            return UnreadableRow(
                key=key, reason=f"its task_id {r.task_id!r} does not match its key"
            )
        return _indexed_or_bad(result_decoder(layout)(key, result_metadata(r)), key)
    if kind == "queues":
        queue = layout.queue_of_entry(key) or ""
        doc = _load(key, data)
        if isinstance(doc, dict) and "func" not in doc:
            # This backend's small entry body: ranking fields lived in the lost metadata.
            return Entry(name, queue, 0, None, None, None, None, 0, None)
        task: Task = _model(Task, key, data)
        return _indexed_or_bad(entry_decoder(layout)(key, queue_entry_metadata(task)), key)
    if kind == "workers":
        doc = _load(key, data)
        if not isinstance(doc, dict) or "last_seen" not in doc:
            return UnreadableRow(key=key, reason="not a worker heartbeat: no index metadata")
        fields = {
            str(k): ",".join(map(str, v)) if isinstance(v, list) else ("" if v is None else str(v))
            for k, v in doc.items()
        }
        fields["omniq_index"] = INDEX_VERSION
        decoded = worker_decoder(layout)(key, fields)
        if not isinstance(decoded, Heartbeat):
            return UnreadableRow(key=key, reason="not a worker heartbeat: bad field values")
        return decoded
    if kind == "events":
        events = parse_event_body(key, data)
        if isinstance(events, UnreadableRow):
            return events
        stamps = [e.timestamp.timestamp() for e in events]
        return EventObject(
            name, len(events) != 1 or _is_batch(data), len(events),
            min(stamps, default=None), max(stamps, default=None),
            tuple(dict.fromkeys(e.event_type for e in events)),
            tuple(dict.fromkeys(e.task_id for e in events if e.task_id)), None, None,
        )  # fmt: skip
    return UnreadableRow(key=key, reason="outside the layout")


def _indexed_or_bad(decoded: Decoded, key: str) -> Record | UnreadableRow:
    if decoded is None:
        return UnreadableRow(key=key, reason="its fields do not make a valid index")
    return decoded


def _is_batch(data: bytes) -> bool:
    return b'"events"' in data[:200]


class EventRecord(msgspec.Struct, frozen=True, gc=False):
    """One event of an event object, as the monitor keeps it: what a live-event row, a task's
    timeline and an outcome need (``TaskEvent``'s fields less its details, metadata, traceback
    and run time, which no row shows). ``timestamp`` is in UTC; ``event_type`` is an
    ``EventType`` value."""

    id: str
    timestamp: datetime
    event_type: str
    task_id: str | None
    queue_name: str | None
    schedule_id: str | None
    worker_id: str | None
    actor: str | None
    message: str | None
    error_type: str | None
    error_message: str | None


class _EventIn(msgspec.Struct):
    """A ``TaskEvent`` as stored, typed strictly: JSON strings where it has strings, a JSON
    object for each dict, a JSON number for ``execution_time``. Anything looser that
    ``TaskEvent`` still takes (a number for a timestamp, ``"1"`` for an int) fails here and
    goes to ``TaskEvent`` itself, so the two read every body alike. Its timestamp is kept as
    text: msgspec rounds past microseconds where ``TaskEvent`` truncates."""

    event_type: str
    task_id: str | None = None
    id: str = ""
    timestamp: str | msgspec.UnsetType = msgspec.UNSET
    message: str | None = None
    details: dict[str, Any] = {}
    worker_id: str | None = None
    queue_name: str | None = None
    schedule_id: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    execution_time: float | None = None
    actor: str | None = None
    metadata: dict[str, Any] = {}
    schema_version: int = SCHEMA_VERSION


class _BatchIn(msgspec.Struct):
    events: list[_EventIn]


_BATCH_DECODER = msgspec.json.Decoder(_BatchIn)
_EVENT_DECODER = msgspec.json.Decoder(_EventIn)
_EVENT_TYPES = frozenset(t.value for t in EventType)
_PLAIN_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})?")
"""The ISO form writers use (``datetime.isoformat``, RFC 3339 with at most microseconds), which
``datetime.fromisoformat`` reads to the same instant as ``TaskEvent``; other forms go to it."""


class _Looser(Exception):
    """An event that the strict reading does not take: ``TaskEvent`` decides."""


def _strict_record(event: _EventIn) -> EventRecord:
    """The record of a strictly decoded event (``_Looser`` when ``TaskEvent`` must decide)."""
    if event.event_type not in _EVENT_TYPES or not 1 <= event.schema_version <= SCHEMA_VERSION:
        raise _Looser
    if event.timestamp is msgspec.UNSET:
        at = utcnow()  # as TaskEvent's default
    elif _PLAIN_TIME.fullmatch(event.timestamp):
        try:
            at = as_utc(datetime.fromisoformat(event.timestamp))
        except ValueError:  # a day or an offset out of range
            raise _Looser from None
    else:
        raise _Looser
    return EventRecord(
        event.id or new_event_id(at), at, event.event_type, event.task_id, event.queue_name,
        event.schedule_id, event.worker_id, event.actor, event.message, event.error_type,
        event.error_message,
    )  # fmt: skip


def _record_of(event: TaskEvent) -> EventRecord:
    return EventRecord(
        event.id, event.timestamp, event.event_type.value, event.task_id, event.queue_name,
        event.schedule_id, event.worker_id, event.actor, event.message, event.error_type,
        event.error_message,
    )  # fmt: skip


def parse_event_body(key: str, data: bytes) -> list[EventRecord] | UnreadableRow:
    """The events in an event object: a batch ``{"schema_version":1,"events":[...]}`` or one
    ``TaskEvent``. A batch with some bad events keeps the good ones (and says nothing: the
    batch as a whole is readable); a batch with none is reported, as is a body that is no
    event at all.

    Bodies as workers write them are decoded in one typed pass (msgspec, ~10x cheaper than a
    ``TaskEvent`` validation per event); a body with any event the strict reading does not
    take is read as before, event by event through ``TaskEvent``, so both give the same
    events and the same reports."""
    try:
        try:
            return [_strict_record(e) for e in _BATCH_DECODER.decode(data).events]
        except msgspec.ValidationError:
            return [_strict_record(_EVENT_DECODER.decode(data))]
    except (msgspec.DecodeError, _Looser, RecursionError):
        return _parse_event_body_loosely(key, data)


def _parse_event_body_loosely(key: str, data: bytes) -> list[EventRecord] | UnreadableRow:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return UnreadableRow(key=key, reason="not valid JSON")
    except RecursionError:
        return UnreadableRow(key=key, reason=TOO_DEEP)
    if isinstance(doc, dict) and isinstance(doc.get("events"), list):
        out: list[EventRecord] = []
        for item in doc["events"]:
            try:
                out.append(_record_of(TaskEvent.model_validate(item)))
            except Exception:
                continue
        if doc["events"] and not out:
            return UnreadableRow(key=key, reason="an event batch with no valid event")
        return out
    try:
        return [_record_of(TaskEvent.model_validate(doc))]
    except Exception as exc:
        return UnreadableRow(
            key=key, reason=f"not a valid TaskEvent: {describe_exception(exc, 200)}"
        )
