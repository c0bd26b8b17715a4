"""Property-based tests (hypothesis): model round-trips, key safety, time-ordered event ids,
and the listing index agreeing with the body it summarizes."""

from __future__ import annotations

import contextlib
import json
import unicodedata
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pydantic
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from omniq_console.backend import lifecycle
from omniq_console.backend.bridge import SyncBridge
from omniq_console.backend.index import (
    event_index,
    event_metadata,
    queue_entry_index,
    queue_entry_metadata,
    result_index,
    result_index_of,
    result_metadata,
    schedule_index,
    schedule_metadata,
    task_index,
    task_index_of,
    task_metadata,
)
from omniq_console.backend.layout import Layout, check_id
from omniq_console.backend.objectstore import ObjectInfo, ObjectStore
from omniq_console.demo.emulator import Emulator
from omniq_console.models import (
    SCHEMA_VERSION,
    EventType,
    OmniQModel,
    ResultStatus,
    Schedule,
    ScheduleStatus,
    ScheduleType,
    Task,
    TaskEvent,
    TaskResult,
    TaskStatus,
    allowed_task_actions,
    as_utc,
    new_event_id,
)

# -- strategies -------------------------------------------------------------------------------

# Text as it may come from a bucket or a user: any code point but lone surrogates (which no
# JSON encoder can write), including terminal escapes and Rich markup.
nasty_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=40) | st.sampled_from(
    ["\x1b[31mred\x1b[0m", "[bold]x[/bold]", "[link=file:///etc/passwd]x[/]", "\x07\x08\r\n\t"]
)
# NaN and infinities are excluded: JSON has no spelling for them (pydantic writes null).
json_scalar = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | nasty_text
)
json_value = st.recursive(
    json_scalar,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(nasty_text, inner, max_size=4),
    max_leaves=12,
)
zones: st.SearchStrategy[Any] = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8)), None]
)
# Naive datetimes (zone None) are taken to be UTC by the models.
moments = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=zones
)
durations = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3650))
positive_durations = st.timedeltas(
    min_value=timedelta(microseconds=1), max_value=timedelta(days=3650)
)
safe_ids = st.text(
    st.characters(
        exclude_categories=["Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"],
        exclude_characters="/\\#[]*?",
    ),
    min_size=1,
    max_size=60,
).filter(lambda s: ".." not in s and s != ".")
prefixes = st.sampled_from(["", "omniq/", "prod/eu/", "a", "team-1/omniq"])

tasks = st.builds(
    Task,
    func=nasty_text.filter(bool),
    args=st.lists(json_value, max_size=4).map(tuple),
    kwargs=st.dictionaries(nasty_text, json_value, max_size=4),
    queue_name=safe_ids,
    priority=st.integers(-(10**6), 10**6),
    run_at=st.none() | moments,
    ttl=st.none() | durations,
    max_retries=st.integers(0, 100),
    retry_delay=durations,
    dependencies=st.lists(safe_ids, max_size=3),
    metadata=st.dictionaries(nasty_text, json_value, max_size=3),
    id=safe_ids,
    status=st.sampled_from(TaskStatus),
    created_at=moments,
    retry_count=st.integers(0, 100),
    worker_id=st.none() | safe_ids,
    lease_expires_at=st.none() | moments,
    started_at=st.none() | moments,
    updated_at=st.none() | moments,
)
results = st.builds(
    TaskResult,
    task_id=safe_ids,
    status=st.sampled_from(ResultStatus),
    result=json_value,
    error=st.none() | nasty_text,
    error_type=st.none() | nasty_text,
    traceback=st.none() | nasty_text,
    created_at=moments,
    started_at=st.none() | moments,
    completed_at=st.none() | moments,
    ttl=st.none() | durations,
    worker_id=st.none() | safe_ids,
    execution_time=st.none() | st.floats(0, 1e9),
    metadata=st.dictionaries(nasty_text, json_value, max_size=3),
)
events = st.builds(
    TaskEvent,
    task_id=st.none() | safe_ids,
    event_type=st.sampled_from(EventType),
    timestamp=moments,
    message=st.none() | nasty_text,
    details=st.dictionaries(nasty_text, json_value, max_size=3),
    worker_id=st.none() | safe_ids,
    queue_name=st.none() | safe_ids,
    schedule_id=st.none() | safe_ids,
    error_type=st.none() | nasty_text,
    error_message=st.none() | nasty_text,
    traceback=st.none() | nasty_text,
    execution_time=st.none() | st.floats(0, 1e9),
    actor=st.none() | nasty_text,
)
cron_expressions = st.sampled_from(
    ["* * * * *", "*/5 * * * *", "0 3 * * 1-5", "15,45 8-18 * * *", "0 0 1 * *", "@hourly"]
) | st.builds(
    lambda m, h, dow: f"{m} {h} * * {dow}",
    st.integers(0, 59),
    st.integers(0, 23),
    st.sampled_from(["*", "0", "1-5", "6,0"]),
)


@st.composite
def schedules(draw: st.DrawFn) -> Schedule:
    kind = draw(st.sampled_from(ScheduleType))
    kw: dict[str, Any] = {
        "schedule_type": kind,
        "func": draw(nasty_text.filter(bool)),
        "id": draw(safe_ids),
        "args": tuple(draw(st.lists(json_value, max_size=3))),
        "kwargs": draw(st.dictionaries(nasty_text, json_value, max_size=3)),
        "queue_name": draw(safe_ids),
        "created_at": draw(
            st.datetimes(
                min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=zones
            )
        ),
        "max_runs": draw(st.none() | st.integers(1, 1000)),
        "ttl": draw(st.none() | durations),
        "status": draw(st.sampled_from([ScheduleStatus.ACTIVE, ScheduleStatus.PAUSED])),
    }
    if kind == ScheduleType.CRON:
        kw["cron_expression"] = draw(cron_expressions)
    elif kind == ScheduleType.INTERVAL:
        kw["interval"] = draw(positive_durations)
    else:
        kw["timestamp"] = draw(moments)
    return Schedule(**kw)


def _round_trip(model: Any) -> None:
    again = type(model).from_json(model.to_json())
    assert again == model
    # Stable: a second trip writes the very same bytes (what compare-and-swap relies on).
    assert again.to_json() == model.to_json()
    for name in type(model).model_fields:
        value = getattr(again, name)
        if isinstance(value, datetime):
            assert value.tzinfo is UTC


# -- model round-trips ------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(tasks)
def test_task_round_trips(task: Task) -> None:
    _round_trip(task)
    if task.ttl is not None:
        assert task.expires_at == as_utc(task.created_at) + task.ttl


@settings(max_examples=150, deadline=None)
@given(results)
def test_result_round_trips(result: TaskResult) -> None:
    _round_trip(result)


@settings(max_examples=150, deadline=None)
@given(events)
def test_event_round_trips(event: TaskEvent) -> None:
    _round_trip(event)
    assert event.id == new_event_id_prefix_ok(event)


def new_event_id_prefix_ok(event: TaskEvent) -> str:
    """An event made without an id gets one whose time part is its own timestamp."""
    ms = int(uuid.UUID(event.id).int >> 80)
    assert ms == int(event.timestamp.timestamp() * 1000)
    return event.id


@settings(max_examples=200, deadline=None)
@given(
    schedules(),
    st.lists(st.sampled_from(["run", "pause", "resume", "cancel"]), max_size=6),
    moments,
)
def test_schedule_round_trips_through_its_life(
    schedule: Schedule, actions: list[str], at: datetime
) -> None:
    _round_trip(schedule)
    now = as_utc(at)
    for action in actions:
        try:
            if action == "run":
                schedule.mark_run(now)
            elif action == "pause":
                schedule.pause()
            elif action == "resume":
                schedule.resume(now)
            else:
                schedule.cancel()
        except ValueError:
            # Pausing or resuming a finished schedule is refused, and changes nothing.
            assert schedule.status in (ScheduleStatus.COMPLETED, ScheduleStatus.CANCELLED)
        _round_trip(schedule)
        now += timedelta(minutes=7)
    if schedule.status == ScheduleStatus.ACTIVE and schedule.max_runs is not None:
        assert schedule.run_count < schedule.max_runs


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([Task, TaskResult, TaskEvent]), st.integers(SCHEMA_VERSION + 1, 10**9))
def test_unknown_schema_version_is_refused_clearly(model: type[OmniQModel], version: int) -> None:
    bodies: dict[type[OmniQModel], dict[str, Any]] = {
        Task: {"func": "f"},
        TaskResult: {"task_id": "t"},
        TaskEvent: {"event_type": "enqueued"},
    }
    body = bodies[model] | {"schema_version": version}
    with pytest.raises(pydantic.ValidationError, match="upgrade omniq-console"):
        model.from_json(json.dumps(body))


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200) | nasty_text.map(str.encode))
def test_garbage_bodies_raise_validation_errors_only(data: bytes) -> None:
    """Whatever bytes a bucket holds, parsing fails with ValidationError, never anything else."""
    for model in (Task, TaskResult, TaskEvent, Schedule):
        with contextlib.suppress(pydantic.ValidationError):
            model.from_json(data)


# -- ids and keys -----------------------------------------------------------------------------


def _is_unsafe_char(ch: str) -> bool:
    return ch in "/\\" or (unicodedata.category(ch)[0] in "CZ" and ch != " ")


@settings(max_examples=500, deadline=None)
@given(st.text(st.characters(exclude_categories=["Cs"]), max_size=60) | safe_ids, prefixes)
@example("..", "omniq/")
@example("a/../b", "omniq/")
@example("", "")
@example("x\x00y", "")
@example("x\u2028y", "")
def test_check_id_accepts_exactly_safe_ids(value: str, prefix: str) -> None:
    layout = Layout(prefix)
    try:
        accepted = check_id(value, "task id")
    except ValueError as exc:
        assert "task id" in str(exc)
        assert (
            not value
            or ".." in value
            or value == "."
            or any(_is_unsafe_char(ch) or ch in "#[]*?" for ch in value)
            or value != value.strip()
            or len(value) > 200
        )
        return
    assert accepted == value and value
    assert ".." not in value and not any(_is_unsafe_char(ch) for ch in value)
    for folder, key in (
        (layout.tasks, layout.task(value)),
        (layout.results, layout.result(value)),
        (layout.schedules, layout.schedule(value)),
        (layout.events, layout.event(value)),
        (layout.workers, layout.worker(value)),
    ):
        assert key.rsplit("/", 1)[0] == folder.rstrip("/")
        assert Layout.name_of(key) == value
    entry = layout.queue_entry(value, value)
    assert layout.queue_of_entry(entry) == value


@settings(max_examples=300, deadline=None)
@given(
    safe_ids,
    st.sampled_from(["/", "..", "\\", "\x00", "\n", "\x1b", "\u2028", "\t", "\x7f"]),
    st.integers(0, 60),
)
def test_check_id_refuses_any_id_with_a_dangerous_part(base: str, bad: str, at: int) -> None:
    value = base[:at] + bad + base[at:]
    with pytest.raises(ValueError):
        check_id(value, "queue name")
    with pytest.raises(ValueError):
        Layout("omniq/").queue(value)


@pytest.mark.parametrize("value", [None, 7, b"abc", "", " x", "x ", ".", "..", "../etc"])
def test_check_id_refuses_non_ids(value: object) -> None:
    with pytest.raises(ValueError):
        check_id(value)


# -- event ids --------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.datetimes(
            min_value=datetime(1970, 1, 2), max_value=datetime(9999, 1, 1), timezones=st.just(UTC)
        ),
        min_size=2,
        max_size=20,
    )
)
def test_event_ids_sort_by_time(moments_: list[datetime]) -> None:
    ms = [int(m.timestamp() * 1000) for m in moments_]
    ids = [new_event_id(m) for m in moments_]
    for i in range(len(ids)):
        check_id(ids[i], "event id")
        assert uuid.UUID(ids[i]).version == 7
        for j in range(len(ids)):
            if ms[i] < ms[j]:
                assert ids[i] < ids[j]


def test_event_ids_made_in_a_row_sort_by_time() -> None:
    # In a row on this process's clock (most within one millisecond: the counter orders them),
    # and two milliseconds apart on the clock the ids are stamped from.
    in_a_row = [new_event_id() for _ in range(5)]
    assert in_a_row == sorted(in_a_row)
    start = datetime.now(UTC) + timedelta(milliseconds=2)
    apart = [new_event_id(start + timedelta(milliseconds=2 * k)) for k in range(5)]
    assert apart == sorted(apart) and in_a_row[-1] < apart[0]


# -- the listing index agrees with the body ---------------------------------------------------


def _info(key: str, metadata: dict[str, str]) -> ObjectInfo:
    return ObjectInfo(key=key, generation=1, size=0, updated=None, metadata=metadata)


@settings(max_examples=100, deadline=None)
@given(tasks, prefixes)
def test_task_index_from_listing_matches_body(task: Task, prefix: str) -> None:
    layout = Layout(prefix)
    assume(not HEADER_BREAKERS & set(task.func))  # covered by the header-safety property
    index = task_index(_info(layout.task(task.id), task_metadata(task)))
    assert index is not None
    expected = task_index_of(task)
    assert index == expected.__class__(**{**_fields(expected), "func": task.func[:200]})
    entry = queue_entry_index(
        _info(layout.queue_entry(task.queue_name, task.id), queue_entry_metadata(task)), layout
    )
    assert entry is not None
    assert (entry.task_id, entry.queue, entry.priority) == (task.id, task.queue_name, task.priority)
    assert (entry.run_at, entry.expires_at) == (task.run_at, task.expires_at)


@settings(max_examples=80, deadline=None)
@given(results, events, schedules())
def test_other_indexes_from_listing_match_bodies(
    result: TaskResult, event: TaskEvent, schedule: Schedule
) -> None:
    layout = Layout("omniq/")
    r = result_index(_info(layout.result(result.task_id), result_metadata(result)))
    expected = result_index_of(result)
    assert r is not None and (r.task_id, r.status, r.completed_at) == (
        expected.task_id,
        expected.status,
        expected.completed_at,
    )
    assert r.error_type == ((result.error_type or "")[:200] or None)
    e = event_index(_info(layout.event(event.id), event_metadata(event)))
    assert e is not None
    assert (e.id, e.event_type, e.task_id, e.queue, e.timestamp) == (
        event.id,
        event.event_type,
        event.task_id,
        event.queue_name,
        event.timestamp,
    )
    s = schedule_index(_info(layout.schedule(schedule.id), schedule_metadata(schedule)))
    assert s is not None and (s.id, s.status, s.next_run) == (
        schedule.id,
        schedule.status,
        schedule.next_run,
    )


# Measured on the emulator: a NUL in a custom-metadata value makes every GET of the object fail
# (aiohttp refuses the x-goog-meta-* response header), CR and LF come back as spaces.
HEADER_BREAKERS = frozenset("\x00\r\n")


@settings(max_examples=120, deadline=None)
@given(tasks, results, nasty_text, nasty_text)
@example(Task(func="mod:f"), TaskResult(task_id="t"), "mod:\x00evil", "Err\r\nX-Injected: 1")
def test_index_metadata_is_always_header_safe(
    task: Task, result: TaskResult, text: str, other: str
) -> None:
    """Metadata travels in HTTP headers on reads: whatever text a task carries (func, worker id,
    error type), the index written beside it must survive a GET unchanged."""
    task = task.model_copy(update={"func": text or "f", "worker_id": other or None})
    result = result.model_copy(update={"error_type": other or None})
    for metadata in (task_metadata(task), result_metadata(result), queue_entry_metadata(task)):
        for name, value in metadata.items():
            assert isinstance(value, str)
            assert not HEADER_BREAKERS & set(value), (name, value)


def _fields(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__slots__}


# -- keys survive the real emulator -----------------------------------------------------------


@pytest.fixture
def bridged_store(bucket: str, emulator: Emulator) -> Iterator[tuple[SyncBridge, ObjectStore]]:
    bridge = SyncBridge("properties")
    bridge.start()
    store = ObjectStore(bucket, endpoint_url=emulator.url)
    bridge.run(store.open())
    try:
        yield bridge, store
    finally:
        bridge.run(store.close())
        bridge.stop()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(safe_ids, st.sampled_from(["", "omniq/", "x/y"]))
def test_accepted_ids_are_stored_and_listed_under_their_own_name(
    bridged_store: tuple[SyncBridge, ObjectStore], task_id: str, prefix: str
) -> None:
    bridge, store = bridged_store
    assume(check_id(task_id) == task_id)
    root = f"p{uuid.uuid4().hex[:8]}/"
    layout = Layout(root + prefix)
    body = Task(func="f", id=task_id).to_json()

    async def go() -> list[ObjectInfo]:
        await store.write(layout.task(task_id), body, if_generation_match=0)
        return await store.list(layout.tasks)

    listed = bridge.run(go(), timeout=30)
    assert [Layout.name_of(o.key) for o in listed] == [task_id]
    assert listed[0].key.rsplit("/", 1)[0] == layout.tasks.rstrip("/")
    got = bridge.run(store.read(layout.task(task_id)), timeout=30)
    assert Task.from_json(got.data).id == task_id


# -- the task state machine (backend/lifecycle.py) ------------------------------------------

ACTIONS = [
    "claim:w1",
    "claim:w2",
    "renew",
    "complete",
    "fail",
    "fail_final",
    "release",
    "requeue",
    "cancel",
    "operator_retry",
    "expire",
]


def _step(
    task: Task, record: TaskResult | None, action: str, now: datetime
) -> lifecycle.Transition | TaskResult:
    owner = record.lease_owner if record is not None else None
    if action.startswith("claim:"):
        worker = action.partition(":")[2]
        return lifecycle.claim(task, record, worker=worker, lease_s=30.0, now=now)
    if action == "cancel":
        return lifecycle.cancel(task, record, actor="ops", now=now)
    if action == "operator_retry":
        return lifecycle.operator_retry(task, record, actor="ops", now=now)
    if action == "expire":
        return lifecycle.expire(task, record, now=now)
    if record is None:
        raise lifecycle.TransitionError(task.id, action, TaskStatus.PENDING, "running")
    worker = owner or "nobody"
    if action == "renew":
        return lifecycle.renew(record, worker=worker, lease_s=30.0, now=now)
    if action == "complete":
        return lifecycle.complete(record, worker=worker, value=1, execution_time=0.1, now=now)
    if action in ("fail", "fail_final"):
        failure = lifecycle.Failure("ValueError", "boom", retryable=action == "fail")
        return lifecycle.fail_or_retry(
            task, record, failure, worker=worker, execution_time=0.1, now=now
        )
    if action == "release":
        return lifecycle.release(record, worker=worker, now=now, reason="stop").record
    return lifecycle.requeue(record, reaper="r", now=now).record


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(ACTIONS), max_size=25),
    st.integers(0, 3),
    st.booleans(),
)
def test_every_walk_of_the_state_machine_keeps_its_invariants(
    actions: list[str], max_retries: int, expirable: bool
) -> None:
    """Whatever order transitions are tried in: each is applied or refused with
    ``TransitionError`` (leaving the record as it was); the status, the lease, the attempt and
    the retry count stay coherent; a record back to pending is due no sooner than a second
    after its write; the index of every record says what its body says."""
    now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    created = now - timedelta(hours=1)
    expires = now + timedelta(minutes=10) if expirable else None
    task = Task(func="m:f", id="walk", max_retries=max_retries, created_at=created)
    task = task.model_copy(update={"expires_at": expires})
    record: TaskResult | None = None
    for action in actions:
        now += timedelta(minutes=1)
        before = lifecycle.status_of(record)
        frozen = None if record is None else record.model_dump_json()
        try:
            outcome = _step(task, record, action, now)
        except lifecycle.TransitionError:
            assert (None if record is None else record.model_dump_json()) == frozen
            if action == "cancel":
                assert "cancel" not in allowed_task_actions(before)
            if action == "operator_retry":
                assert "retry" not in allowed_task_actions(before)
            continue
        new = outcome.record if isinstance(outcome, lifecycle.Transition) else outcome
        if isinstance(outcome, lifecycle.Transition):
            assert outcome.final == new.is_final
        status = lifecycle.status_of(new)
        if action.startswith("claim:"):
            assert before == TaskStatus.PENDING
            assert new.attempt == (record.attempt if record else 0) + 1
            assert status == TaskStatus.RUNNING and new.lease_owner == action.partition(":")[2]
        else:
            assert new.attempt == (record.attempt if record else 0)
        if new.is_final:
            assert new.lease_owner is None and new.lease_expires_at is None
            assert new.completed_at == now and new.run_at is None
        if status == TaskStatus.RUNNING:
            assert new.lease_owner and new.lease_expires_at is not None
        if status == TaskStatus.PENDING:
            assert new.lease_owner is None
            assert new.run_at is not None
            assert new.run_at >= now + timedelta(seconds=lifecycle.NAME_WRITE_GAP_S)
        if action == "operator_retry":
            assert new.retry_count == 0 and new.result is None and new.error is None
        assert 0 <= new.retry_count <= max_retries
        index = result_index(_info(f"omniq/results/{task.id}.json", result_metadata(new)))
        assert index is not None
        assert (index.status, index.state, index.attempt, index.retry_count) == (
            new.status,
            status,
            new.attempt,
            new.retry_count,
        )
        assert index.worker_id == (new.lease_owner or new.worker_id)
        assert index.run_at == new.run_at and index.lease_s == new.lease_seconds
        record = new
        # Once expired it can come back only through an operator's retry, with a new expiry.
        if status == TaskStatus.EXPIRED:
            task = task.model_copy(update={"expires_at": None})
        now += timedelta(seconds=lifecycle.NAME_WRITE_GAP_S)
