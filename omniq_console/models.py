"""OmniQ's data models: tasks, results, lifecycle events and schedules.

Field names follow OmniQ's so that buckets and code written for OmniQ read the same. Every
datetime is timezone-aware UTC (a naive datetime is taken to be UTC). Every body written to the
bucket carries ``schema_version`` so that a later version of this package can read it, and an
object written by a newer, unknown version is refused rather than misread.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable
from copy import deepcopy
from datetime import UTC, date, datetime, timedelta
from enum import Enum, StrEnum
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from .clock import utcnow as utcnow

SCHEMA_VERSION = 1
"""Version of the JSON bodies this package writes (and the newest it can read)."""


def as_utc(value: datetime) -> datetime:
    """A datetime in UTC; a naive one is taken to be UTC already.

    ``ValueError`` (not ``OverflowError``) when the instant has no UTC form: a valid ISO date
    such as ``0001-01-01T00:00:00+01:00`` is out of range once converted. Every decoder already
    turns ``ValueError`` into a report about the one object that carried it.
    """
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"date {value.isoformat()} is out of range in UTC") from None


def add_time(value: datetime, delta: timedelta) -> datetime:
    """``value + delta``, with ``ValueError`` instead of ``OverflowError`` past year 9999."""
    try:
        return value + delta
    except OverflowError:
        raise ValueError(f"{value.isoformat()} + {delta} is out of range") from None


def new_id() -> str:
    """A random id for tasks and schedules."""
    return str(uuid.uuid4())


_id_lock = threading.Lock()
_last_id: tuple[int, int] = (0, 0)  # (ms, counter) of the newest id made by this process


def new_event_id(at: datetime | None = None) -> str:
    """A UUIDv7-style id whose string form sorts by creation time.

    Event and batch keys are tailed with ``startOffset``, so ids sort lexicographically in the
    order they were made: millisecond time, then a 12-bit counter that makes ids from one
    process strictly increasing even within one millisecond (or when ``at`` goes back a
    little), then random bits.
    """
    global _last_id
    ms = int((at.timestamp() if at is not None else time.time()) * 1000) & ((1 << 48) - 1)
    with _id_lock:
        last_ms, counter = _last_id
        if ms <= last_ms and last_ms - ms < 10_000:
            # Same millisecond, or a clock that stepped back a little: keep counting up.
            ms, counter = (last_ms, counter + 1) if counter < 0xFFF else (last_ms + 1, 0)
        else:
            counter = int.from_bytes(os.urandom(1), "big")  # room to count up within the ms
        _last_id = (ms, counter)
    rand_b = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | rand_b
    return str(uuid.UUID(int=value))


class TaskStatus(StrEnum):
    """A task's status: ``pending`` and ``running`` are live, the others final.

    This is the one place that says which is which (``is_final``) and what an operator may do
    in each (``allowed_task_actions``); every other part of the package asks these.
    """

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def is_final(self) -> bool:
        """True once nothing runs any more (completed, failed, cancelled, expired): only an
        operator's retry starts the task again."""
        return self in _FINAL_TASK_STATUSES


_FINAL_TASK_STATUSES = frozenset(
    {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.EXPIRED}
)


def allowed_task_actions(status: TaskStatus | str) -> tuple[str, ...]:
    """The operator actions (of ``retry``, ``cancel``, ``delete``) a task in ``status`` allows.

    A live task can be cancelled, a final one retried; any task can be deleted, also one whose
    status this version does not know (written by a newer one): deleting is often the remedy.
    """
    try:
        final = TaskStatus(status).is_final
    except ValueError:
        return ("delete",)
    return ("retry", "delete") if final else ("cancel", "delete")


class ResultStatus(StrEnum):
    """The status of a task's state record: ``pending`` until the task has an outcome."""

    PENDING = "pending"
    SUCCESS = "success"
    ERROR = "error"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def is_final(self) -> bool:
        """True for an outcome (success, error, cancelled, expired): the task's status is
        final exactly when its record's is."""
        return self is not ResultStatus.PENDING


_TASK_STATUS_OF_OUTCOME = {
    ResultStatus.SUCCESS: TaskStatus.COMPLETED,
    ResultStatus.ERROR: TaskStatus.FAILED,
    ResultStatus.CANCELLED: TaskStatus.CANCELLED,
    ResultStatus.EXPIRED: TaskStatus.EXPIRED,
}


class EventType(StrEnum):
    ENQUEUED = "enqueued"
    DEQUEUED = "dequeued"
    EXECUTING = "executing"
    COMPLETED = "completed"
    FAILED = "failed"
    RETRY = "retry"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    SCHEDULE_PAUSED = "schedule_paused"
    SCHEDULE_RESUMED = "schedule_resumed"
    # Beyond OmniQ's set: what the runtime and the console need to say.
    SCHEDULE_FIRED = "schedule_fired"
    LEASE_EXPIRED = "lease_expired"
    OPERATOR_ACTION = "operator_action"


class ScheduleType(StrEnum):
    CRON = "cron"
    INTERVAL = "interval"
    TIMESTAMP = "timestamp"


class ScheduleStatus(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


_SHARED_TYPES = frozenset({str, int, float, bool, type(None), datetime, date, timedelta, bytes})


def _copy_values(values: dict[str, Any], memo: dict[int, Any]) -> dict[str, Any]:
    """``values`` with immutable values shared and the others deep-copied."""
    return {
        key: value
        if type(value) in _SHARED_TYPES or isinstance(value, Enum)
        else deepcopy(value, memo)
        for key, value in values.items()
    }


_FACTORIES: dict[type, tuple[tuple[str, Callable[[], Any]], ...]] = {}


def _plain_factories(cls: type[BaseModel]) -> tuple[tuple[str, Callable[[], Any]], ...]:
    """The fields of ``cls`` whose default is a factory taking no argument (cached)."""
    found = _FACTORIES.get(cls)
    if found is None:
        found = tuple(
            (name, field.default_factory)  # type: ignore[misc]
            for name, field in cls.__pydantic_fields__.items()
            if field.default_factory is not None and not field.default_factory_takes_validated_data
        )
        _FACTORIES[cls] = found
    return found


class OmniQModel(BaseModel):
    """Base of the stored models: UTC datetimes, seconds for durations, a schema version."""

    model_config = ConfigDict(
        ser_json_timedelta="float",
        validate_assignment=True,
        # Validators are built on first use, not at import: the console draws its first frame
        # without validating a stored object (building them, with the snapshot's, was ~2% of
        # the instructions to it: callgrind).
        defer_build=True,
        extra="ignore",
    )

    schema_version: int = SCHEMA_VERSION
    # The GCS generation this object was read at (set by the stores): the compare-and-swap
    # of an update is conditioned on it, so a concurrent change is detected, never lost.
    _generation: int | None = PrivateAttr(default=None)

    @property
    def generation(self) -> int | None:
        """The GCS generation this object was read or written at, None when never stored."""
        return self._generation

    # The claim path copies and builds these models several times a task; pydantic's generic
    # versions cost about ten times what these do (a deepcopy call per datetime and string,
    # and an ``inspect.signature`` per default factory per model_construct).

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> Self:
        """A deep copy that shares immutable values (strings, numbers, datetimes, enums)."""
        if memo is None:
            memo = {}
        cls = type(self)
        copied = cls.__new__(cls)
        memo[id(self)] = copied
        setattr_ = object.__setattr__
        setattr_(copied, "__dict__", _copy_values(self.__dict__, memo))
        extra = self.__pydantic_extra__
        setattr_(copied, "__pydantic_extra__", None if extra is None else deepcopy(extra, memo))
        setattr_(copied, "__pydantic_fields_set__", set(self.__pydantic_fields_set__))
        private = getattr(self, "__pydantic_private__", None)
        setattr_(
            copied, "__pydantic_private__", None if private is None else _copy_values(private, memo)
        )
        return copied

    @classmethod
    def model_construct(cls, _fields_set: set[str] | None = None, **values: Any) -> Self:
        """Build without validation (pydantic's ``model_construct``), calling the default
        factories directly: they take no argument, so pydantic's per-call inspection of
        their signatures is pure cost."""
        if _fields_set is None:
            _fields_set = set(values)
        for name, factory in _plain_factories(cls):
            if name not in values:
                values[name] = factory()
        return super().model_construct(_fields_set, **values)

    @field_validator("schema_version")
    @classmethod
    def _known_schema(cls, value: int) -> int:
        if value > SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {value} is newer than this omniq-console understands "
                f"({SCHEMA_VERSION}); upgrade omniq-console"
            )
        if value < 1:
            raise ValueError(f"schema_version {value} is not valid")
        return value

    @model_validator(mode="after")
    def _utc_datetimes(self) -> Self:
        for name in type(self).model_fields:
            value = self.__dict__.get(name)
            if isinstance(value, datetime) and value.tzinfo is not UTC:
                self.__dict__[name] = as_utc(value)
        return self

    def to_json(self) -> bytes:
        """The JSON body stored in the bucket."""
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> Self:
        """Parse a stored body; raises ``pydantic.ValidationError`` on bad input."""
        return cls.model_validate_json(data)


class Task(OmniQModel):
    """A unit of work waiting in, or taken from, a queue."""

    func: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = Field(default_factory=dict)
    queue_name: str = "default"
    priority: int = 0
    run_at: datetime | None = None
    ttl: timedelta | None = None
    expires_at: datetime | None = None
    max_retries: int = 3
    retry_delay: timedelta = timedelta(seconds=1)
    dependencies: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    id: str = Field(default_factory=new_id)
    status: TaskStatus = TaskStatus.PENDING
    created_at: datetime = Field(default_factory=utcnow)
    retry_count: int = 0
    # Claim state: who runs the task and until when its lease holds. Stored in the task's
    # state record (results/{id}.json) and overlaid here by ``get_task``.
    worker_id: str | None = None
    lease_expires_at: datetime | None = None
    started_at: datetime | None = None
    updated_at: datetime | None = None
    # The state record this view was derived from: its generation (None: no record yet) is
    # what the next transition compare-and-swaps on.
    _record: TaskResult | None = PrivateAttr(default=None)

    @property
    def record(self) -> TaskResult | None:
        """The state record (``results/{id}.json``) this task's status was read from."""
        return self._record

    @model_validator(mode="after")
    def _derive_expiry(self) -> Self:
        if self.ttl is not None and self.expires_at is None:
            self.__dict__["expires_at"] = add_time(as_utc(self.created_at), self.ttl)
        return self

    @field_validator("max_retries", "retry_count")
    @classmethod
    def _not_negative(cls, value: int) -> int:
        if value < 0:
            raise ValueError("must not be negative")
        return value

    def is_expired(self, now: datetime | None = None) -> bool:
        """True when the task's ``expires_at`` has passed."""
        return self.expires_at is not None and self.expires_at <= (now or utcnow())

    def is_ready(self, now: datetime | None = None) -> bool:
        """True when the task may run now: not delayed and not expired."""
        now = now or utcnow()
        return (self.run_at is None or self.run_at <= now) and not self.is_expired(now)

    def lease_expired(self, now: datetime | None = None) -> bool:
        """True for a running task whose worker stopped renewing its lease."""
        return (
            self.status == TaskStatus.RUNNING
            and self.lease_expires_at is not None
            and self.lease_expires_at <= (now or utcnow())
        )


class TaskResult(OmniQModel):
    """The outcome of one task."""

    task_id: str
    status: ResultStatus = ResultStatus.PENDING
    result: Any = None
    error: str | None = None
    error_type: str | None = None
    traceback: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    completed_at: datetime | None = None
    ttl: timedelta | None = None
    expires_at: datetime | None = None
    worker_id: str | None = None
    execution_time: float | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    # The task's state record (docs/architecture.md, "Task status is derived from which objects
    # exist"): while ``status`` is pending, ``lease_owner`` says who runs attempt ``attempt``,
    # or, when None, the task waits (until ``run_at``) for its next claim.
    attempt: int = 0
    lease_owner: str | None = None
    lease_seconds: float | None = None
    lease_expires_at: datetime | None = None
    run_at: datetime | None = None
    retry_count: int = 0
    queue_name: str | None = None
    func: str | None = None

    @property
    def task_status(self) -> TaskStatus:
        """The status of the task this record belongs to."""
        if self.status == ResultStatus.PENDING:
            return TaskStatus.RUNNING if self.lease_owner else TaskStatus.PENDING
        return _TASK_STATUS_OF_OUTCOME[self.status]

    @property
    def is_final(self) -> bool:
        """True once the task has an outcome (success, error, cancelled, expired)."""
        return self.status.is_final

    @model_validator(mode="after")
    def _derive_expiry(self) -> Self:
        if self.ttl is not None and self.expires_at is None:
            base = self.completed_at or self.created_at
            self.__dict__["expires_at"] = add_time(as_utc(base), self.ttl)
        return self

    def is_expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or utcnow())


class TaskEvent(OmniQModel):
    """One lifecycle event; ids sort by time so the event store can be tailed."""

    task_id: str | None = None
    event_type: EventType
    id: str = ""
    timestamp: datetime = Field(default_factory=utcnow)
    message: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    worker_id: str | None = None
    queue_name: str | None = None
    schedule_id: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    execution_time: float | None = None
    actor: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _time_ordered_id(self) -> Self:
        if not self.id:
            self.__dict__["id"] = new_event_id(self.timestamp)
        return self


class EventBatch(OmniQModel):
    """The body of ``events/{batch_id}.json``: the events one worker flushed at once."""

    events: list[TaskEvent] = Field(default_factory=list)


class Schedule(OmniQModel):
    """A recurring (cron, interval) or one-time (timestamp) source of tasks."""

    schedule_type: ScheduleType
    func: str
    id: str = Field(default_factory=new_id)
    cron_expression: str | None = None
    interval: timedelta | None = None
    timestamp: datetime | None = None
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = Field(default_factory=dict)
    queue_name: str = "default"
    status: ScheduleStatus = ScheduleStatus.ACTIVE
    created_at: datetime = Field(default_factory=utcnow)
    last_run: datetime | None = None
    next_run: datetime | None = None
    max_runs: int | None = None
    run_count: int = 0
    ttl: timedelta | None = None
    expires_at: datetime | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_and_plan(self) -> Self:
        if self.schedule_type == ScheduleType.CRON:
            # Imported when a cron schedule is read: not on the way to the console's first frame.
            from croniter import croniter

            if not self.cron_expression or not croniter.is_valid(self.cron_expression):
                raise ValueError(f"invalid cron expression: {self.cron_expression!r}")
        elif self.schedule_type == ScheduleType.INTERVAL:
            if self.interval is None or self.interval <= timedelta(0):
                raise ValueError("an interval schedule needs a positive interval")
        elif self.timestamp is None:
            raise ValueError("a timestamp schedule needs a timestamp")
        if self.max_runs is not None and self.max_runs < 1:
            raise ValueError("max_runs must be at least 1")
        if self.ttl is not None and self.expires_at is None:
            self.__dict__["expires_at"] = add_time(as_utc(self.created_at), self.ttl)
        if self.next_run is None and self.status == ScheduleStatus.ACTIVE and self.run_count == 0:
            self.__dict__["next_run"] = self._first_run()
        return self

    def _first_run(self) -> datetime:
        if self.schedule_type == ScheduleType.TIMESTAMP:
            assert self.timestamp is not None
            return as_utc(self.timestamp)
        return self.compute_next_run(as_utc(self.created_at))

    def compute_next_run(self, after: datetime) -> datetime:
        """The first due time strictly after ``after`` (recurring schedules)."""
        after = as_utc(after)
        if self.schedule_type == ScheduleType.CRON:
            from croniter import croniter

            assert self.cron_expression is not None
            return as_utc(croniter(self.cron_expression, after).get_next(datetime))
        if self.schedule_type == ScheduleType.INTERVAL:
            assert self.interval is not None
            return after + self.interval
        assert self.timestamp is not None
        return as_utc(self.timestamp)

    def is_expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or utcnow())

    def is_due(self, now: datetime | None = None) -> bool:
        """True for an active schedule whose next run has come (and that has not expired)."""
        now = now or utcnow()
        return (
            self.status == ScheduleStatus.ACTIVE
            and self.next_run is not None
            and self.next_run <= now
            and not self.is_expired(now)
        )

    def pause(self) -> None:
        """Stop firing until resumed; a finished schedule cannot be paused."""
        if self.status in (ScheduleStatus.COMPLETED, ScheduleStatus.CANCELLED):
            raise ValueError(f"schedule {self.id} is {self.status.value} and cannot be paused")
        self.status = ScheduleStatus.PAUSED

    def resume(self, now: datetime | None = None) -> None:
        """Fire again; the next run is planned from now, so missed runs are not replayed."""
        if self.status in (ScheduleStatus.COMPLETED, ScheduleStatus.CANCELLED):
            raise ValueError(f"schedule {self.id} is {self.status.value} and cannot be resumed")
        now = now or utcnow()
        self.status = ScheduleStatus.ACTIVE
        if self.schedule_type == ScheduleType.TIMESTAMP:
            self.next_run = as_utc(self.timestamp) if self.timestamp else now
        else:
            self.next_run = self.compute_next_run(now)

    def mark_run(self, at: datetime | None = None) -> None:
        """Record a run at ``at``; plan the next one, or complete the schedule.

        Runs missed while nobody was firing are skipped: the next run is the first due time
        after ``at``, so a scheduler that was down for an hour fires once, not sixty times.
        """
        at = as_utc(at or utcnow())
        self.last_run = at
        self.run_count += 1
        if self.schedule_type == ScheduleType.TIMESTAMP or (
            self.max_runs is not None and self.run_count >= self.max_runs
        ):
            self.status = ScheduleStatus.COMPLETED
            self.next_run = None
            return
        base = self.next_run or at
        nxt = self.compute_next_run(base)
        if nxt <= at:
            nxt = self.compute_next_run(at)
        self.next_run = nxt

    def cancel(self) -> None:
        self.status = ScheduleStatus.CANCELLED
        self.next_run = None
