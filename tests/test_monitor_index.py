"""One field table per kind of object (``backend/index.py``): every field a writer puts in an
object's metadata is read back, with the same value, by every reader (the backend's index
records and the monitor's lean rows), and no reader reads a field that no writer writes."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from omniq_console.backend import index
from omniq_console.backend.index import IndexField
from omniq_console.backend.layout import Layout
from omniq_console.backend.objectstore import ObjectInfo
from omniq_console.models import (
    EventType,
    ResultStatus,
    Schedule,
    ScheduleStatus,
    ScheduleType,
    Task,
    TaskEvent,
    TaskResult,
    TaskStatus,
)
from omniq_console.monitor import records

LAYOUT = Layout("omniq/")
texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)
ids = st.from_regex(r"[a-z0-9][a-z0-9-]{0,19}", fullmatch=True)
times = st.one_of(
    st.none(),
    st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
)
counts = st.integers(min_value=0, max_value=10**6)
seconds = st.one_of(st.none(), st.floats(min_value=0.001, max_value=1e6, allow_nan=False))


def _norm(value: Any) -> Any:
    """One form for both readers: times as POSIX seconds, empty as None, enums as text."""
    if value in (None, "", ()):
        return None
    if isinstance(value, datetime):
        return round(value.timestamp(), 5)
    if isinstance(value, float):
        return round(value, 5)
    if isinstance(value, TaskStatus | ResultStatus | ScheduleStatus | EventType):
        return value.value
    return value


def _info(key: str, md: Mapping[str, str]) -> ObjectInfo:
    return ObjectInfo(key, 7, 0, None, dict(md))


def _check(
    table: Sequence[IndexField],
    md: Mapping[str, str],
    written: Mapping[str, Any],
    readers: Mapping[str, Any],
) -> None:
    """Every key in ``md`` is a field of ``table``; every field of ``table`` is in ``md`` (an
    empty value is a written "none"), and each reader's record holds the written value."""
    keys = {f.key for f in table}
    assert set(md) - index.MARKER_KEYS <= keys, f"written but not in the table: {set(md) - keys}"
    assert set(written) == {f.name for f in table}
    for name, record in readers.items():
        assert record is not None, f"{name} could not read what the writer wrote: {md}"
        kept = getattr(record, "__struct_fields__", None) or {f.name for f in table}
        for f in table:
            if f.name not in kept:
                continue  # a field the monitor does not keep (records.TASK_READ)
            shown = _norm(getattr(record, f.name))
            assert shown == _norm(written[f.name]), (name, f.name, written[f.name], shown)


def _rows_match(row: type[Any], lead: int, table: Sequence[IndexField]) -> None:
    # The monitor builds its lean rows positionally from ``field_reader``.
    fields = getattr(row, "__struct_fields__", None) or row._fields  # a struct or a named tuple
    assert fields[lead:] == index.field_names(table)


def test_the_monitors_rows_hold_exactly_the_tables_fields() -> None:
    _rows_match(records.TaskDef, 1, records.TASK_READ)
    _rows_match(records.Entry, 2, index.ENTRY_FIELDS)
    _rows_match(records.StateRecord, 1, index.RESULT_FIELDS)
    _rows_match(records.Heartbeat, 1, index.WORKER_FIELDS)
    _rows_match(records.PausedQueue, 1, index.PAUSED_FIELDS)


def _decode(kind: str) -> Callable[[str, Mapping[str, str]], Any]:
    return records.decoders(LAYOUT)[kind]


@settings(max_examples=60, deadline=None)
@given(
    func=texts.filter(bool),
    queue=ids,
    priority=st.integers(-100, 100),
    run_at=times,
    expires_at=times,
    retry_count=counts,
    worker=st.one_of(st.none(), texts),
    lease=times,
)
def test_task_fields_round_trip(**kw: Any) -> None:
    t = Task(
        func=kw["func"],
        queue_name=kw["queue"],
        priority=kw["priority"],
        run_at=kw["run_at"],
        expires_at=kw["expires_at"],
        retry_count=kw["retry_count"],
        worker_id=kw["worker"],
        lease_expires_at=kw["lease"],
    )
    md = index.task_metadata(t)
    written = {
        "queue": t.queue_name,
        "func": t.func,
        "priority": t.priority,
        "run_at": t.run_at,
        "expires_at": t.expires_at,
        "created_at": t.created_at,
        "status": t.status,
        "worker_id": t.worker_id,
        "lease_expires_at": t.lease_expires_at,
        "retry_count": t.retry_count,
    }
    key = LAYOUT.task(t.id)
    _check(
        index.TASK_FIELDS,
        md,
        written,
        {"backend": index.task_index(_info(key, md)), "monitor": _decode("tasks")(key, md)},
    )


@settings(max_examples=60, deadline=None)
@given(
    status=st.sampled_from(ResultStatus),
    queue=st.one_of(st.none(), ids),
    func=st.one_of(st.none(), texts),
    attempt=counts,
    worker=st.one_of(st.none(), texts),
    lease_s=seconds,
    t=st.tuples(times, times, times, times, times),
    retry_count=counts,
    error_type=st.one_of(st.none(), texts),
    execution_time=seconds,
)
def test_state_record_fields_round_trip(**kw: Any) -> None:
    lease_at, run_at, started, completed, expires = kw["t"]
    r = TaskResult(
        task_id="t-1",
        status=kw["status"],
        queue_name=kw["queue"],
        func=kw["func"],
        attempt=kw["attempt"],
        lease_owner=kw["worker"],
        lease_seconds=kw["lease_s"],
        lease_expires_at=lease_at,
        run_at=run_at,
        retry_count=kw["retry_count"],
        started_at=started,
        completed_at=completed,
        error_type=kw["error_type"],
        expires_at=expires,
        execution_time=kw["execution_time"],
    )
    md = index.result_metadata(r)
    written = {
        "status": r.status,
        "state": r.task_status,
        "queue": r.queue_name,
        "func": r.func,
        "attempt": r.attempt,
        "worker_id": r.lease_owner,
        "lease_s": r.lease_seconds,
        "lease_expires_at": r.lease_expires_at,
        "run_at": r.run_at,
        "retry_count": r.retry_count,
        "created_at": r.created_at,
        "started_at": r.started_at,
        "completed_at": r.completed_at,
        "error_type": r.error_type,
        "expires_at": r.expires_at,
        "execution_time": r.execution_time,
    }
    key = LAYOUT.result(r.task_id)
    _check(
        index.RESULT_FIELDS,
        md,
        written,
        {"backend": index.result_index(_info(key, md)), "monitor": _decode("results")(key, md)},
    )


@settings(max_examples=40, deadline=None)
@given(
    queue=ids,
    priority=st.integers(-100, 100),
    run_at=times,
    expires_at=times,
    func=texts.filter(bool),
    hinted=st.booleans(),
    attempt=st.integers(1, 50),
    generation=st.integers(1, 2**62),
)
def test_queue_entry_fields_round_trip(**kw: Any) -> None:
    t = Task(
        func=kw["func"],
        queue_name=kw["queue"],
        priority=kw["priority"],
        run_at=kw["run_at"],
        expires_at=kw["expires_at"],
    )
    record = None
    if kw["hinted"]:
        record = TaskResult(task_id=t.id, attempt=kw["attempt"])
        record._generation = kw["generation"]
    md = index.queue_entry_metadata(t, record)
    written = {
        "priority": t.priority,
        "run_at": t.run_at,
        "expires_at": t.expires_at,
        "created_at": t.created_at,
        "record_generation": kw["generation"] if record else None,
        "attempt": kw["attempt"] if record else 0,
        "func": t.func,
    }
    key = LAYOUT.queue_entry(t.queue_name, t.id)
    _check(
        index.ENTRY_FIELDS,
        md,
        written,
        {
            "backend": index.queue_entry_index(_info(key, md), LAYOUT),
            "monitor": _decode("queues")(key, md),
        },
    )


@settings(max_examples=40, deadline=None)
@given(
    state=st.sampled_from(("running", "stopped")),
    seen=times,
    started=times,
    host=texts,
    pid=counts,
    queues=st.lists(texts.filter(bool), max_size=4),
    running=st.lists(ids, max_size=4, unique=True),
    processed=counts,
    failed=counts,
    concurrency=st.integers(0, 64),
)
def test_heartbeat_fields_round_trip(**kw: Any) -> None:
    w = index.WorkerIndex(
        id="w-1",
        state=kw["state"],
        last_seen=kw["seen"],
        started_at=kw["started"],
        host=kw["host"],
        pid=kw["pid"],
        queues=tuple(kw["queues"]),
        running=tuple(kw["running"]),
        processed=kw["processed"],
        failed=kw["failed"],
        concurrency=kw["concurrency"],
        running_funcs=tuple(f"f{n}" for n in range(len(kw["running"]))),
    )
    md = index.worker_metadata(w)
    written = {f.name: getattr(w, f.name) for f in index.WORKER_FIELDS}
    key = LAYOUT.worker(w.id)
    _check(
        index.WORKER_FIELDS,
        md,
        written,
        {"backend": index.worker_index(_info(key, md)), "monitor": _decode("workers")(key, md)},
    )


@settings(max_examples=30, deadline=None)
@given(actor=texts.filter(bool), at=times.filter(lambda t: t is not None))
def test_paused_queue_fields_round_trip(actor: str, at: datetime) -> None:
    md = index.paused_metadata(actor, at)
    key = LAYOUT.paused_queue("mail")
    _check(
        index.PAUSED_FIELDS,
        md,
        {"actor": actor, "at": at},
        {"backend": index.paused_index(_info(key, md)), "monitor": _decode("paused")(key, md)},
    )


@settings(max_examples=30, deadline=None)
@given(
    kind=st.sampled_from(EventType),
    task=st.one_of(st.none(), ids),
    queue=st.one_of(st.none(), ids),
    shift=st.integers(0, 10**6),
)
def test_event_fields_round_trip(
    kind: EventType, task: str | None, queue: str | None, shift: int
) -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=shift)
    event = TaskEvent(event_type=kind, task_id=task, queue_name=queue, timestamp=at)
    md = index.event_metadata(event)
    key = LAYOUT.event(event.id)
    written = {"event_type": kind, "task_id": task, "queue": queue, "timestamp": at}
    backend = index.event_index(_info(key, md))
    _check(index.EVENT_FIELDS, md, written, {"backend": backend})
    shown = _decode("events")(key, md)
    assert isinstance(shown, records.EventObject)
    assert (shown.types, shown.tasks, shown.queue) == (
        (kind.value,),
        (task,) if task else (),
        queue,
    )
    assert _norm(shown.first_ts) == _norm(at)


@settings(max_examples=30, deadline=None)
@given(
    tasks=st.lists(ids, min_size=1, max_size=6),
    kinds=st.lists(st.sampled_from(EventType), min_size=1, max_size=6),
    worker=st.one_of(st.none(), ids),
)
def test_event_batch_fields_round_trip(
    tasks: list[str], kinds: list[EventType], worker: str | None
) -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    events = [
        TaskEvent(event_type=k, task_id=t, worker_id=worker, timestamp=base + timedelta(seconds=n))
        for n, (t, k) in enumerate(zip(tasks, kinds * len(tasks), strict=False))
    ]
    md = index.event_batch_metadata("b-1", events)
    written = {
        "count": len(events),
        "first_ts": events[0].timestamp,
        "last_ts": events[-1].timestamp,
        "worker": worker,
        "types": tuple(sorted({e.event_type.value for e in events})),
        "tasks": tuple(dict.fromkeys(e.task_id for e in events if e.task_id)),
        "tasks_truncated": 0,
    }
    key = LAYOUT.event("b-1")
    _check(
        index.EVENT_BATCH_FIELDS, md, written, {"backend": index.event_batch_index(_info(key, md))}
    )
    shown = _decode("events")(key, md)
    assert isinstance(shown, records.EventObject) and shown.batch
    assert (shown.events, shown.tasks, shown.types, shown.worker) == (
        written["count"],
        written["tasks"],
        written["types"],
        worker,
    )


@settings(max_examples=20, deadline=None)
@given(status=st.sampled_from(ScheduleStatus), minutes=st.integers(1, 10**5))
def test_schedule_fields_round_trip(status: ScheduleStatus, minutes: int) -> None:
    next_run = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes)
    s = Schedule(
        schedule_type=ScheduleType.INTERVAL,
        func="f",
        interval=timedelta(minutes=1),
        status=status,
        next_run=next_run,
    )
    md = index.schedule_metadata(s)
    key = LAYOUT.schedules + f"{s.id}.json"
    _check(
        index.SCHEDULE_FIELDS,
        md,
        {"status": status, "next_run": next_run},
        {"backend": index.schedule_index(_info(key, md))},
    )


def test_a_task_index_of_an_unknown_status_is_left_to_the_body_though_status_is_not_kept() -> None:
    key = LAYOUT.task("t1")
    md = {"omniq_index": "1", "queue": "q", "func": "f", "created_at": "2026-01-01T00:00:00+00:00"}
    assert isinstance(_decode("tasks")(key, md), records.TaskDef)  # no status: pending
    assert isinstance(_decode("tasks")(key, {**md, "status": "running"}), records.TaskDef)
    assert _decode("tasks")(key, {**md, "status": "bogus"}) is None
