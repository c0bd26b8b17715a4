"""From listings to a Snapshot's parts: pure functions, no I/O, safe to run in a thread.

The monitor lists the bucket's prefixes, then hands the listings here twice:

1. ``decode_listing`` turns each listed object into its index (from custom metadata) or an
   ``UnreadableRow``, reusing the previous poll's answer for every key whose generation did not
   change (a memo), and names the objects whose body must be read (no usable index and a new
   generation). The ``parse_*_body`` functions turn those bodies into the same index types.
2. ``aggregate`` computes queue depths, status counts, outcome charts, schedules, stuck tasks,
   workers and unreadable objects from the memos.

Nothing here mutates its inputs: a poll that is cancelled halfway (its time limit) leaves the
monitor's state as it was, and a thread still finishing a cancelled poll's work cannot race
the next poll.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from ..backend.errors import CorruptObjectError
from ..backend.index import (
    INDEX_VERSION,
    EventIndex,
    QueueEntryIndex,
    ResultIndex,
    TaskIndex,
    WorkerIndex,
    queue_entry_index,
    result_index,
    result_index_of,
    task_index,
    task_index_of,
    worker_index,
)
from ..backend.layout import Layout
from ..backend.listing import parse_model
from ..backend.objectstore import ObjectInfo
from ..models import (
    OmniQModel,
    ResultStatus,
    Schedule,
    ScheduleStatus,
    Task,
    TaskEvent,
    TaskResult,
    TaskStatus,
    as_utc,
)
from .snapshot import (
    EventRow,
    QueueStats,
    ResultMinute,
    ScheduleRow,
    StuckTask,
    TaskRow,
    UnreadableRow,
    WorkerRow,
)

T = TypeVar("T")
M = TypeVar("M", bound=OmniQModel)

TREND_LENGTH = 30
"""Depth samples kept per queue for its trend line (one per poll)."""
RESULT_MINUTES = 30
"""Minutes covered by ``results_per_minute``."""
FAILURE_WINDOW = timedelta(minutes=5)
"""Window over which ``failure_rate`` is computed."""

Memo = dict[str, tuple[int, Any]]
"""key -> (generation, what that generation of the object says): an index, a model, or an
``UnreadableRow``. Reused as long as the listing shows the same generation."""

RowCache = tuple[dict[str, Any], dict[str, TaskRow]]
"""(facts by task id, row by task id) of the last rows built."""


# Memo values for the big prefixes are plain tuples of atomic values (str, int, datetime,
# None). CPython's garbage collector stops tracking such tuples (exact tuples only: not
# NamedTuples), so 100,000 remembered tasks add almost nothing to the full collections that
# would otherwise pause the console's event loop for hundreds of milliseconds. Fields:
#   TaskFacts:   (id, status, queue, priority, func, run_at, expires_at, created_at,
#                 worker_id, lease_expires_at, retry_count)   status as a plain string
#   EntryFacts:  (task_id, queue, priority, run_at, expires_at, created_at, lease_owner,
#                 lease_expires_at)
#   ResultFacts: (task_id, status, completed_at, error_type)   status as a plain string
TaskFacts = tuple[
    str, str, str, int, str, datetime | None, datetime | None, datetime | None, str | None,
    datetime | None, int,
]  # fmt: skip
EntryFacts = tuple[
    str, str, int, datetime | None, datetime | None, datetime | None, str | None, datetime | None
]
ResultFacts = tuple[str, str, datetime | None, str | None]


def task_facts(i: TaskIndex) -> TaskFacts:
    return (
        i.id, i.status.value, i.queue, i.priority, i.func, i.run_at, i.expires_at,
        i.created_at, i.worker_id, i.lease_expires_at, i.retry_count,
    )  # fmt: skip


def entry_facts(i: QueueEntryIndex) -> EntryFacts:
    return (
        i.task_id, i.queue, i.priority, i.run_at, i.expires_at, i.created_at, i.lease_owner,
        i.lease_expires_at,
    )  # fmt: skip


def result_facts(i: ResultIndex) -> ResultFacts:
    return (i.task_id, i.status.value, i.completed_at, i.error_type)


@dataclass(frozen=True, slots=True)
class Decoded:
    """A listing (or one key range of it), decoded: the new memo, the objects whose body must
    be read, and whether anything differs from the previous memo (added, changed, gone)."""

    memo: Memo
    need_body: list[ObjectInfo]
    changed: bool
    reused: int = 0


def _is_folder_marker(info: ObjectInfo) -> bool:
    # Consoles and `gsutil` create zero-byte "dir/" objects; they are not part of the layout.
    return info.key.endswith("/")


def decode_listing(
    infos: Iterable[ObjectInfo],
    decode: Callable[[ObjectInfo], Any],
    previous: Mapping[str, tuple[int, Any]],
) -> Decoded:
    """Decode a listing, reusing ``previous`` answers for unchanged generations.

    ``decode`` returns the object's index, an ``UnreadableRow`` (the key alone says it is bad),
    or ``None`` (no usable index: its body must be read). Only ``previous.get`` is used, never
    iteration, so a concurrent insert into ``previous`` cannot break this. ``changed`` assumes
    ``infos`` is the whole listing; for key ranges, see ``merge_decoded``.
    """
    memo: Memo = {}
    need_body: list[ObjectInfo] = []
    reused = 0
    for info in infos:
        if _is_folder_marker(info):
            continue
        known = previous.get(info.key)
        if known is not None and known[0] == info.generation:
            memo[info.key] = known
            reused += 1
            continue
        value = decode(info)
        if value is None:
            need_body.append(info)
        else:
            memo[info.key] = (info.generation, value)
    changed = reused != len(memo) or bool(need_body) or reused != len(previous)
    return Decoded(memo, need_body, changed, reused)


def merge_decoded(parts: Sequence[Decoded], previous_size: int) -> Decoded:
    """Join the decoded key ranges of one listing, in key order."""
    if len(parts) == 1:
        return parts[0]
    memo: Memo = {}
    need_body: list[ObjectInfo] = []
    reused = 0
    for part in parts:
        memo.update(part.memo)
        need_body.extend(part.need_body)
        reused += part.reused
    changed = reused != len(memo) or bool(need_body) or reused != previous_size
    return Decoded(memo, need_body, changed, reused)


# -- decoders from metadata ------------------------------------------------------------------


def entry_decoder(layout: Layout) -> Callable[[ObjectInfo], EntryFacts | UnreadableRow | None]:
    """The queue-entry decoder for ``layout``: a key outside ``queues/<queue>/<id>.json`` is
    unreadable whatever its body says, since the queue name lives in the key."""

    def decode(info: ObjectInfo) -> EntryFacts | UnreadableRow | None:
        if layout.queue_of_entry(info.key) is None:
            return UnreadableRow(
                key=info.key, reason="not a queue entry key (expected queues/<queue>/<id>.json)"
            )
        index = queue_entry_index(info, layout)
        return entry_facts(index) if index is not None else None

    return decode


def task_decoder(info: ObjectInfo) -> TaskFacts | None:
    index = task_index(info)
    return task_facts(index) if index is not None else None


def result_decoder(info: ObjectInfo) -> ResultFacts | None:
    index = result_index(info)
    return result_facts(index) if index is not None else None


def schedule_decoder(info: ObjectInfo) -> None:
    """Schedules are always read from their body (the rows need func, type, last run, ...);
    the memo keeps them until their generation changes."""


DECODERS: dict[str, Callable[[ObjectInfo], Any]] = {
    "tasks": task_decoder,
    "results": result_decoder,
    "schedules": schedule_decoder,
    "workers": worker_index,
}
"""Metadata decoders by prefix name (queue entries need the layout: ``entry_decoder``)."""


# -- decoders from bodies -------------------------------------------------------------------


def _parse(model: type[M], key: str, data: bytes) -> M | UnreadableRow:
    try:
        return parse_model(model, key, data)
    except CorruptObjectError as exc:
        return UnreadableRow(key=key, reason=exc.reason)


def parse_task_body(key: str, data: bytes) -> TaskFacts | UnreadableRow:
    task = _parse(Task, key, data)
    return task if isinstance(task, UnreadableRow) else task_facts(task_index_of(task))


def entry_body_parser(layout: Layout) -> Callable[[str, bytes], EntryFacts | UnreadableRow]:
    """A queue entry without index metadata: this backend's small body (task id, queue, claim),
    or a whole task as other OmniQ backends store it."""

    def parse(key: str, data: bytes) -> EntryFacts | UnreadableRow:
        queue = layout.queue_of_entry(key)
        assert queue is not None  # entry_decoder refused such keys before any read
        task_id = Layout.name_of(key)
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return UnreadableRow(key=key, reason="not valid JSON")
        if isinstance(doc, dict) and "task_id" in doc and "func" not in doc:
            if doc["task_id"] != task_id:
                return UnreadableRow(
                    key=key, reason=f"its task_id {doc['task_id']!r} does not match its key"
                )
            try:
                lease = doc.get("lease_expires_at") or None
                lease_at = as_utc(datetime.fromisoformat(lease)) if lease else None
            except (TypeError, ValueError):
                return UnreadableRow(key=key, reason="not a valid queue entry: lease_expires_at")
            # Ranking fields live only in the metadata this entry lost: it counts as pending.
            return (task_id, queue, 0, None, None, None, doc.get("lease_owner") or None, lease_at)
        task = _parse(Task, key, data)
        if isinstance(task, UnreadableRow):
            return task
        return (
            task_id,
            queue,
            task.priority,
            task.run_at,
            task.expires_at,
            task.created_at,
            None,
            None,
        )

    return parse


def parse_result_body(key: str, data: bytes) -> ResultFacts | UnreadableRow:
    result = _parse(TaskResult, key, data)
    return result if isinstance(result, UnreadableRow) else result_facts(result_index_of(result))


def parse_schedule_body(key: str, data: bytes) -> Schedule | UnreadableRow:
    return _parse(Schedule, key, data)


def parse_event_body(key: str, data: bytes) -> TaskEvent | UnreadableRow:
    return _parse(TaskEvent, key, data)


def parse_worker_body(key: str, data: bytes) -> WorkerIndex | UnreadableRow:
    """A heartbeat body: a JSON object with the heartbeat's metadata fields."""
    try:
        doc = json.loads(data)
    except ValueError:
        return UnreadableRow(key=key, reason="not valid JSON")
    if not isinstance(doc, dict) or "last_seen" not in doc:
        return UnreadableRow(key=key, reason="not a worker heartbeat: no index metadata")
    fields = {
        str(k): ",".join(map(str, v)) if isinstance(v, list) else ("" if v is None else str(v))
        for k, v in doc.items()
    }
    fields["omniq_index"] = INDEX_VERSION
    # The same decoder as for metadata, so both forms are read by one set of rules.
    index = worker_index(ObjectInfo(key, 0, len(data), None, fields))
    if index is None:
        return UnreadableRow(key=key, reason="not a worker heartbeat: bad field values")
    return index


BODY_PARSERS: dict[str, Callable[[str, bytes], Any]] = {
    "tasks": parse_task_body,
    "results": parse_result_body,
    "schedules": parse_schedule_body,
    "workers": parse_worker_body,
}
"""Body parsers by prefix name (queue entries need the layout: ``entry_body_parser``)."""


# -- events ---------------------------------------------------------------------------------

_UUID7_HEAD = re.compile(r"^([0-9a-f]{8})-([0-9a-f]{4})-7")


def event_id_ms(event_id: str) -> int | None:
    """The millisecond timestamp in a UUIDv7-style event id, None for other ids."""
    match = _UUID7_HEAD.match(event_id)
    if match is None:
        return None
    return int(match.group(1) + match.group(2), 16)


def event_key_at(events_prefix: str, ms: int) -> str:
    """The smallest event key written at or after ``ms`` (a listing's ``startOffset``)."""
    head = f"{max(0, ms) & ((1 << 48) - 1):012x}"
    return f"{events_prefix}{head[:8]}-{head[8:]}"


def event_row(
    key: str,
    index: EventIndex | None,
    body: TaskEvent | None,
    fallback_time: datetime | None,
) -> EventRow | None:
    """An event's row: type, task, queue and time from the index, the rest from the body.

    None when there is neither (the caller reports the object as unreadable).
    """
    if index is None and body is None:
        return None
    event_id = Layout.name_of(key)
    timestamp = (index.timestamp if index else None) or (body.timestamp if body else None)
    if timestamp is None:
        ms = event_id_ms(event_id)
        timestamp = (
            datetime.fromtimestamp(ms / 1000, UTC)
            if ms is not None
            else fallback_time or datetime.fromtimestamp(0, UTC)
        )
    return EventRow(
        id=event_id,
        timestamp=timestamp,
        event_type=(index.event_type if index else body.event_type).value,  # type: ignore[union-attr]
        task_id=index.task_id if index else body.task_id,  # type: ignore[union-attr]
        queue_name=index.queue if index else body.queue_name,  # type: ignore[union-attr]
        schedule_id=body.schedule_id if body else None,
        worker_id=body.worker_id if body else None,
        actor=body.actor if body else None,
        message=body.message if body else None,
        error_type=body.error_type if body else None,
        error_message=body.error_message if body else None,
    )


# -- aggregation ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Thresholds:
    """What counts as overdue, dead or stuck."""

    overdue_grace: timedelta = timedelta(seconds=60)
    worker_timeout: timedelta = timedelta(seconds=30)


@dataclass(slots=True)
class Aggregate:
    """The parts of a Snapshot computed from the listings."""

    queues: tuple[QueueStats, ...] = ()
    tasks: dict[str, int] = field(default_factory=dict)
    results: dict[str, int] = field(default_factory=dict)
    results_per_minute: tuple[ResultMinute, ...] = ()
    failures_by_type: dict[str, int] = field(default_factory=dict)
    failure_rate: float = 0.0
    schedules: tuple[ScheduleRow, ...] = ()
    stuck: tuple[StuckTask, ...] = ()
    workers: tuple[WorkerRow, ...] = ()
    unreadable: tuple[UnreadableRow, ...] = ()
    task_rows: tuple[TaskRow, ...] = ()
    trends: dict[str, tuple[int, ...]] = field(default_factory=dict)
    row_cache: RowCache = field(default_factory=lambda: ({}, {}))


def _values(memo: Mapping[str, tuple[int, Any]], kind: type[T]) -> list[T]:
    return [v for _, v in memo.values() if isinstance(v, kind)]


def _floor_minute(value: datetime) -> datetime:
    return value.replace(second=0, microsecond=0)


def aggregate(
    *,
    now: datetime,
    tasks: Mapping[str, tuple[int, Any]],
    entries: Mapping[str, tuple[int, Any]],
    results: Mapping[str, tuple[int, Any]],
    schedules: Mapping[str, tuple[int, Any]],
    workers: Mapping[str, tuple[int, Any]],
    trends: Mapping[str, tuple[int, ...]],
    thresholds: Thresholds = Thresholds(),
    task_rows: bool = True,
    previous_rows: tuple[TaskRow, ...] | None = None,
    previous_cache: RowCache | None = None,
    extra_unreadable: Iterable[UnreadableRow] = (),
) -> Aggregate:
    """Compute a snapshot's parts at ``now`` from decoded listings (memos).

    ``previous_rows``: the last poll's ``task_rows``, to reuse when neither tasks nor results
    changed (rows hold no time-dependent field). ``previous_cache``: the last poll's
    ``row_cache``, so that only tasks that changed get a new row.
    """
    task_list: list[TaskFacts] = _values(tasks, tuple)
    entry_list: list[EntryFacts] = _values(entries, tuple)
    result_list: list[ResultFacts] = _values(results, tuple)

    # Tasks: counts, running per queue, stuck leases.
    task_counts = {s.value: 0 for s in TaskStatus}
    running_by_queue: dict[str, int] = {}
    queue_names: set[str] = set()
    stuck: list[StuckTask] = []
    running = TaskStatus.RUNNING.value
    for tid, status, tqueue, _, func, _, _, _, worker, lease, _ in task_list:
        task_counts[status] += 1
        queue_names.add(tqueue)
        if status == running:
            running_by_queue[tqueue] = running_by_queue.get(tqueue, 0) + 1
            if lease is not None and lease < now:
                stuck.append(
                    StuckTask(
                        id=tid,
                        queue_name=tqueue,
                        func=func,
                        worker_id=worker,
                        lease_expires_at=lease,
                        overdue_s=(now - lease).total_seconds(),
                    )
                )
    stuck.sort(key=lambda s: (-s.overdue_s, s.id))

    # Queue entries: what waits, what is delayed, since when.
    pending: dict[str, int] = {}
    delayed: dict[str, int] = {}
    expired: dict[str, int] = {}
    claimed: dict[str, int] = {}
    oldest: dict[str, datetime] = {}
    for _, q, _, run_at, expires_at, created_at, owner, claim_until in entry_list:
        queue_names.add(q)
        if expires_at is not None and expires_at <= now:
            expired[q] = expired.get(q, 0) + 1
        elif run_at is not None and run_at > now:
            delayed[q] = delayed.get(q, 0) + 1
        elif owner and claim_until is not None and claim_until > now:
            # A worker won this entry and is turning it into a running task.
            claimed[q] = claimed.get(q, 0) + 1
        else:
            pending[q] = pending.get(q, 0) + 1
            # A delayed task has been waiting since its run_at, not since it was enqueued.
            since = max((d for d in (created_at, run_at) if d is not None), default=None)
            if since is not None and (q not in oldest or since < oldest[q]):
                oldest[q] = since

    new_trends: dict[str, tuple[int, ...]] = {}
    queues: list[QueueStats] = []
    for q in sorted(queue_names):
        depth = pending.get(q, 0) + delayed.get(q, 0)
        trend = (*trends.get(q, ()), depth)[-TREND_LENGTH:]
        new_trends[q] = trend
        since = oldest.get(q)
        queues.append(
            QueueStats(
                name=q,
                pending=pending.get(q, 0),
                delayed=delayed.get(q, 0),
                running=running_by_queue.get(q, 0),
                oldest_pending_age_s=max(0.0, (now - since).total_seconds()) if since else None,
                depth_trend=trend,
                expired=expired.get(q, 0),
                claimed=claimed.get(q, 0),
            )
        )

    # Results: counts, per-minute outcomes, failures.
    result_counts = {s.value: 0 for s in ResultStatus}
    first_minute = _floor_minute(now) - timedelta(minutes=RESULT_MINUTES - 1)
    minutes: dict[datetime, dict[str, int]] = {
        first_minute + timedelta(minutes=i): {} for i in range(RESULT_MINUTES)
    }
    failures_by_type: dict[str, int] = {}
    error_type_of: dict[str, str | None] = {}
    recent_ok = recent_err = 0
    window_start = now - FAILURE_WINDOW
    error = ResultStatus.ERROR.value
    success = ResultStatus.SUCCESS.value
    pending_result = ResultStatus.PENDING.value
    for task_id, rstatus, done, error_type in result_list:
        result_counts[rstatus] += 1
        error_type_of[task_id] = error_type
        if rstatus == error:
            name = error_type or "unknown"
            failures_by_type[name] = failures_by_type.get(name, 0) + 1
        if done is None or rstatus == pending_result:
            continue
        bucket = minutes.get(_floor_minute(done))
        if bucket is not None:
            bucket[rstatus] = bucket.get(rstatus, 0) + 1
        if window_start <= done <= now:
            if rstatus == error:
                recent_err += 1
            elif rstatus == success:
                recent_ok += 1
    per_minute = tuple(ResultMinute(minute=m, **counts) for m, counts in minutes.items())
    failure_rate = recent_err / (recent_ok + recent_err) if recent_ok + recent_err else 0.0

    # Schedules.
    schedule_rows = [
        schedule_row(key, s, gen, now, thresholds.overdue_grace)
        for key, (gen, s) in schedules.items()
        if isinstance(s, Schedule)
    ]
    schedule_rows.sort(key=lambda r: (r.next_run is None, r.next_run or now, r.id))

    # Workers.
    worker_rows = [
        worker_row(w, now, thresholds.worker_timeout) for w in _values(workers, WorkerIndex)
    ]
    worker_rows.sort(key=lambda w: w.id)

    unreadable = [
        v
        for memo in (tasks, entries, results, schedules, workers)
        for _, v in memo.values()
        if isinstance(v, UnreadableRow)
    ]
    unreadable.extend(extra_unreadable)
    unreadable.sort(key=lambda u: u.key)

    rows: tuple[TaskRow, ...] = ()
    row_cache: RowCache = ({}, {})
    if previous_rows is not None:
        rows = previous_rows
        row_cache = previous_cache or row_cache
    elif task_rows:
        rows, row_cache = _task_rows(task_list, error_type_of, previous_cache)

    return Aggregate(
        queues=tuple(queues),
        tasks=task_counts,
        results=result_counts,
        results_per_minute=per_minute,
        failures_by_type=dict(sorted(failures_by_type.items(), key=lambda kv: (-kv[1], kv[0]))),
        failure_rate=failure_rate,
        schedules=tuple(schedule_rows),
        stuck=tuple(stuck),
        workers=tuple(worker_rows),
        unreadable=tuple(unreadable),
        task_rows=rows,
        trends=new_trends,
        row_cache=row_cache,
    )


_EPOCH = datetime.fromtimestamp(0, UTC)


def _task_rows(
    task_list: Sequence[TaskFacts],
    error_type_of: Mapping[str, str | None],
    previous: RowCache | None,
) -> tuple[tuple[TaskRow, ...], RowCache]:
    """One row per task, newest first. A task whose facts are the very tuple it had last time
    (its generation did not change) and whose error type is the same keeps its row object:
    100,000 new rows per poll would otherwise feed the garbage collector 100,000 tracked
    objects each time, and its collections pause the event loop."""
    old_facts, old_rows = previous or ({}, {})
    facts_by_id: dict[str, Any] = {}
    rows_by_id: dict[str, TaskRow] = {}
    for t in task_list:
        tid = t[0]
        error_type = error_type_of.get(tid)
        row = old_rows.get(tid)
        if row is None or old_facts.get(tid) is not t or row.error_type != error_type:
            row = TaskRow(tid, t[2], t[4], t[1], t[3], t[7], t[5], t[10], t[8], error_type)
        facts_by_id[tid] = t
        rows_by_id[tid] = row
    rows = tuple(sorted(rows_by_id.values(), key=_newest_first))
    return rows, (facts_by_id, rows_by_id)


def _newest_first(row: TaskRow) -> float:
    # A float key keeps the sort itself fast (it holds the GIL); ties keep listing (id) order.
    return -(row.created_at or _EPOCH).timestamp()


def schedule_row(
    key: str, s: Schedule, generation: int, now: datetime, grace: timedelta
) -> ScheduleRow:
    """A schedule's row; overdue when active and its next run is more than ``grace`` past.

    The id is the key's: actions on the row address that object, whatever its body claims.
    """
    return ScheduleRow(
        id=Layout.name_of(key),
        func=s.func,
        schedule_type=s.schedule_type.value,
        status=s.status.value,
        queue_name=s.queue_name,
        cron_expression=s.cron_expression,
        interval_s=s.interval.total_seconds() if s.interval is not None else None,
        next_run=s.next_run,
        last_run=s.last_run,
        run_count=s.run_count,
        max_runs=s.max_runs,
        overdue=(
            s.status == ScheduleStatus.ACTIVE
            and s.next_run is not None
            and s.next_run < now - grace
        ),
        generation=generation,
    )


def worker_row(w: WorkerIndex, now: datetime, timeout: timedelta) -> WorkerRow:
    """A worker's row; alive when it says it runs and its heartbeat is recent."""
    age = (now - w.last_seen).total_seconds() if w.last_seen is not None else None
    return WorkerRow(
        id=w.id,
        state=w.state,
        alive=w.state == "running" and age is not None and age <= timeout.total_seconds(),
        last_seen=w.last_seen,
        age_s=age,
        host=w.host,
        pid=w.pid,
        queues=w.queues,
        running=w.running,
        processed=w.processed,
        failed=w.failed,
    )


__all__ = [
    "BODY_PARSERS",
    "DECODERS",
    "Aggregate",
    "Decoded",
    "EntryFacts",
    "Memo",
    "ResultFacts",
    "RowCache",
    "TaskFacts",
    "Thresholds",
    "aggregate",
    "decode_listing",
    "entry_body_parser",
    "entry_decoder",
    "event_id_ms",
    "event_key_at",
    "event_row",
    "merge_decoded",
    "parse_event_body",
    "schedule_row",
    "worker_row",
]
