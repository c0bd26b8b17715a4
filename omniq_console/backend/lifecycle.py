"""The task state machine: every transition of a task, as one pure function each.

A task's status lives in its state record (``results/{id}.json``, a ``TaskResult``; see
docs/architecture.md, "Task status is derived from which objects exist"). Each function here
takes the task's definition and its current record (None when there is none), refuses a state it
is not allowed from (``TransitionError``), and returns a ``Transition``: the new record, the event
it records, and whether the task is final (its queue entry goes). Nothing here touches storage:
``backend/queue.py`` writes the records in the order docs/architecture.md gives. Times come from
the caller (``now``), so the clock is injected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ..checks import check_seconds
from ..models import (
    EventType,
    ResultStatus,
    Task,
    TaskEvent,
    TaskResult,
    TaskStatus,
    add_time,
    as_utc,
)

NAME_WRITE_GAP_S = 1.05
"""GCS takes about one mutation of an object name per second: a writer waits this long after
its own last write of a name before it writes that name again (docs/architecture.md, "GCS's
per-name limit")."""

MIN_LEASE_S = 3.0
"""The shortest lease: renewals every third of it must stay at least a second apart."""
MAX_LEASE_S = 86_400.0
"""The longest lease (a day): a longer one would pin a dead worker's task for good."""


def check_lease(value: object, name: str = "lease_seconds") -> float:
    """A lease length in seconds, at least ``MIN_LEASE_S``, or ``ValueError`` naming ``name``."""
    seconds = check_seconds(name, value)
    if seconds < MIN_LEASE_S:
        raise ValueError(
            f"{name} must be at least {MIN_LEASE_S:g} seconds (renewals every third of it stay "
            f"a second apart, GCS's per-name limit), not {value!r}"
        )
    if seconds > MAX_LEASE_S:
        raise ValueError(f"{name} must be at most {MAX_LEASE_S:g} seconds, not {value!r}")
    return seconds


def lease_or(value: float | None, default: float) -> float:
    """A lease length read from the bucket, or ``default`` when it is missing or out of
    range: a record must neither have its lease stolen at first sight nor pinned forever."""
    try:
        return check_lease(value)
    except ValueError:
        return default


class TransitionError(ValueError):
    """The transition is not allowed from the task's current state."""

    def __init__(self, task_id: str, action: str, status: TaskStatus, allowed: str) -> None:
        self.task_id = task_id
        self.status = status
        super().__init__(
            f"cannot {action} task {task_id}: it is {status.value} (only {allowed} tasks can)"
        )


@dataclass(frozen=True, slots=True)
class Transition:
    """A task's next state record, and what to record about the change."""

    record: TaskResult
    event: EventType
    message: str
    final: bool = False
    details: dict[str, Any] = field(default_factory=dict)


def status_of(record: TaskResult | None) -> TaskStatus:
    """The status of a task whose state record is ``record`` (None: never claimed)."""
    return TaskStatus.PENDING if record is None else record.task_status


def _refuse(task_id: str, action: str, record: TaskResult | None, allowed: str) -> TransitionError:
    return TransitionError(task_id, action, status_of(record), allowed)


def _changed(record: TaskResult, **changes: Any) -> TaskResult:
    """A copy of ``record`` with ``changes`` set in one update.

    The values are this module's own, of the fields' types (the caller's times, worker id,
    counts): an assignment validated field by field re-ran the model's validators over every
    field each time, about 5 µs a field and 16 fields a task on the claim path. Times are
    made UTC, as those validators would.
    """
    rec = record.model_copy(deep=True)
    for name, value in changes.items():
        if isinstance(value, datetime):
            changes[name] = as_utc(value)
    rec.__dict__.update(changes)
    rec.__pydantic_fields_set__.update(changes)
    return rec


def _base(task: Task, record: TaskResult | None, now: datetime, **changes: Any) -> TaskResult:
    """The fields every record of ``task`` carries, continued from ``record``, with
    ``changes``."""
    if record is None:
        record = TaskResult(
            task_id=task.id,
            status=ResultStatus.PENDING,
            created_at=now,
            queue_name=task.queue_name,
            func=task.func,
        )
    return _changed(record, **changes)


def _pending_again(record: TaskResult, run_at: datetime, **changes: Any) -> TaskResult:
    """A copy of ``record`` with ``changes``, pending again from ``run_at``: no lease, no
    lease holder."""
    return _changed(
        record,
        status=ResultStatus.PENDING,
        lease_owner=None,
        lease_seconds=None,
        lease_expires_at=None,
        run_at=run_at,
        **changes,
    )


def _not_before(now: datetime, run_at: datetime | None = None) -> datetime:
    """A pending-again record's ``run_at``: the next claim rewrites the record, so not within
    a second of this write."""
    soonest = add_time(now, timedelta(seconds=NAME_WRITE_GAP_S))
    return soonest if run_at is None or run_at < soonest else run_at


# -- claims -------------------------------------------------------------------------------------


def claim(
    task: Task, record: TaskResult | None, *, worker: str, lease_s: float, now: datetime
) -> Transition:
    """A worker takes a pending task: attempt ``attempt + 1`` runs under its lease."""
    if record is not None and (record.is_final or record.lease_owner):
        raise _refuse(task.id, "claim", record, "pending")
    if record is not None and record.run_at is not None and record.run_at > now:
        raise TransitionError(task.id, "claim", TaskStatus.PENDING, "ready (run_at passed)")
    rec = _base(
        task,
        record,
        now,
        attempt=(record.attempt if record is not None else 0) + 1,
        lease_owner=worker,
        worker_id=worker,
        lease_seconds=float(lease_s),
        lease_expires_at=add_time(now, timedelta(seconds=lease_s)),
        started_at=now,
        run_at=None,
    )
    return Transition(rec, EventType.DEQUEUED, f"claimed by {worker} (attempt {rec.attempt})")


def renew(record: TaskResult, *, worker: str, lease_s: float, now: datetime) -> TaskResult:
    """The lease holder extends its lease."""
    if record.is_final or record.lease_owner != worker:
        raise _refuse(record.task_id, "renew the lease of", record, "running (own)")
    return _changed(
        record,
        lease_seconds=float(lease_s),
        lease_expires_at=add_time(now, timedelta(seconds=lease_s)),
    )


def requeue(record: TaskResult, *, reaper: str, now: datetime) -> Transition:
    """A dead lease: the task goes back to pending (its attempt stays counted)."""
    if record.is_final or not record.lease_owner:
        raise _refuse(record.task_id, "requeue", record, "running")
    owner = record.lease_owner
    rec = _pending_again(record, _not_before(now))
    return Transition(
        rec,
        EventType.LEASE_EXPIRED,
        f"lease of {owner} expired; returned to its queue by {reaper}",
        details={"reaper": reaper, "previous_owner": owner, "attempt": record.attempt},
    )


def release(record: TaskResult, *, worker: str, now: datetime, reason: str) -> Transition:
    """The lease holder hands the task back unfinished (say, on shutdown)."""
    if record.is_final or record.lease_owner != worker:
        raise _refuse(record.task_id, "release", record, "running (own)")
    rec = _pending_again(record, _not_before(now))
    return Transition(
        rec,
        EventType.ENQUEUED,
        f"released by {worker}: {reason}",
        details={"reason": "released", "released_by": worker},
    )


# -- outcomes of the lease holder --------------------------------------------------------------


def _check_holder(record: TaskResult, worker: str, action: str) -> None:
    """``TransitionError`` unless ``worker`` holds the lease of a running ``record``."""
    if record.is_final or record.lease_owner != worker:
        raise _refuse(record.task_id, action, record, "running (own)")


def _own_outcome(record: TaskResult, worker: str, action: str, **changes: Any) -> TaskResult:
    """A copy of the holder's ``record`` with ``changes``, its lease ended."""
    _check_holder(record, worker, action)
    return _changed(record, lease_owner=None, lease_expires_at=None, run_at=None, **changes)


def complete(
    record: TaskResult,
    *,
    worker: str,
    value: Any,
    execution_time: float,
    now: datetime,
) -> Transition:
    """The lease holder's success."""
    rec = _own_outcome(
        record,
        worker,
        "complete",
        status=ResultStatus.SUCCESS,
        result=value,
        error=None,
        error_type=None,
        traceback=None,
        completed_at=now,
        execution_time=float(execution_time),
    )
    return Transition(
        rec,
        EventType.COMPLETED,
        f"completed in {execution_time:.3f} s",
        final=True,
        details={"attempt": rec.attempt},
    )


@dataclass(frozen=True, slots=True)
class Failure:
    """What went wrong in one attempt."""

    error_type: str
    message: str
    traceback: str | None = None
    retryable: bool = True


def fail_or_retry(
    task: Task,
    record: TaskResult,
    failure: Failure,
    *,
    worker: str,
    execution_time: float,
    now: datetime,
) -> Transition:
    """The lease holder's failure: a retry later while retries are left, else FAILED."""
    _check_holder(record, worker, "fail")
    outcome: dict[str, Any] = {
        "error": failure.message,
        "error_type": failure.error_type,
        "traceback": failure.traceback,
        "execution_time": float(execution_time),
    }
    if failure.retryable and record.retry_count < task.max_retries:
        delay = task.retry_delay.total_seconds() * 2**record.retry_count
        rec = _pending_again(
            record,
            _not_before(now, add_time(now, timedelta(seconds=delay))),
            retry_count=record.retry_count + 1,
            **outcome,
        )
        assert rec.run_at is not None
        return Transition(
            rec,
            EventType.RETRY,
            f"attempt {rec.retry_count} of {task.max_retries} in {delay:g} s after "
            f"{failure.error_type}",
            details={
                "retry_count": rec.retry_count,
                "max_retries": task.max_retries,
                "delay_s": delay,
                "run_at": rec.run_at.isoformat(),
            },
        )
    rec = _changed(
        record,
        status=ResultStatus.ERROR,
        lease_owner=None,
        lease_expires_at=None,
        run_at=None,
        completed_at=now,
        **outcome,
    )
    return Transition(
        rec,
        EventType.FAILED,
        f"{failure.error_type}: {failure.message}"[:500],
        final=True,
        details={"retry_count": record.retry_count, "retryable": failure.retryable},
    )


# -- operator and housekeeping -----------------------------------------------------------------


def cancelled_by(actor: str) -> str:
    """The ``error`` of a record cancelled by ``actor`` (how an operator recognises its own)."""
    return f"cancelled by {actor}"


def cancel(task: Task, record: TaskResult | None, *, actor: str, now: datetime) -> Transition:
    """An operator cancels a pending or running task; a running one's worker is fenced out."""
    if record is not None and record.is_final:
        raise _refuse(task.id, "cancel", record, "pending or running")
    previous = status_of(record)
    rec = _base(
        task,
        record,
        now,
        status=ResultStatus.CANCELLED,
        lease_owner=None,
        lease_expires_at=None,
        run_at=None,
        error=cancelled_by(actor),
        error_type="Cancelled",
        completed_at=now,
    )
    return Transition(
        rec,
        EventType.CANCELLED,
        f"cancelled by {actor} (was {previous.value})",
        final=True,
        details={"previous_status": previous.value, "actor": actor},
    )


DELETING = "Deleting"
"""``error_type`` of the cancelled record a delete writes as its fence (``delete_fence``): the
task is about to be gone, so it is no outcome and monitors count none for it."""


def delete_fence(task: Task, record: TaskResult | None, *, now: datetime) -> Transition:
    """The cancelled record a delete writes before it deletes anything, so that no claim,
    renewal or outcome lands meanwhile; marked ``DELETING``, never counted as an outcome."""
    transition = cancel(task, record, actor="delete", now=now)
    transition.record.error_type = DELETING
    return transition


def operator_retry(
    task: Task, record: TaskResult | None, *, actor: str, now: datetime
) -> Transition:
    """An operator puts a finished task back in its queue; its retry count starts from 0."""
    if record is None or not record.is_final:
        raise _refuse(task.id, "retry", record, "completed, failed, cancelled or expired")
    previous = status_of(record)
    rec = _pending_again(
        record,
        _not_before(now),
        retry_count=0,
        result=None,
        error=None,
        error_type=None,
        traceback=None,
        completed_at=None,
        execution_time=None,
        worker_id=None,
        started_at=None,
    )
    return Transition(
        rec,
        EventType.ENQUEUED,
        f"retried by {actor} (was {previous.value})",
        details={"reason": "operator_retry", "previous_status": previous.value, "actor": actor},
    )


def expire(task: Task, record: TaskResult | None, *, now: datetime) -> Transition:
    """A task that waited past its ``expires_at`` without running."""
    if record is not None and (record.is_final or record.lease_owner):
        raise _refuse(task.id, "expire", record, "pending")
    if not task.is_expired(now):
        raise TransitionError(task.id, "expire", TaskStatus.PENDING, "past their expires_at")
    rec = _base(
        task,
        record,
        now,
        status=ResultStatus.EXPIRED,
        run_at=None,
        error="expired before it ran",
        error_type="Expired",
        completed_at=now,
    )
    return Transition(rec, EventType.EXPIRED, "expired before it ran", final=True)


def event_of(
    transition: Transition,
    *,
    at: datetime,
    worker_id: str | None = None,
    actor: str | None = None,
    **fields: Any,
) -> TaskEvent:
    """The event that records ``transition``: the one way every applier (worker, reaper,
    operator) writes it, so that a task's timeline holds every change of its status.

    ``fields`` adds what only the applier knows (a run's ``execution_time``, its error).
    """
    record = transition.record
    return TaskEvent(
        task_id=record.task_id,
        event_type=transition.event,
        timestamp=at,
        message=transition.message,
        details=dict(transition.details),
        worker_id=worker_id,
        queue_name=record.queue_name,
        actor=actor,
        **fields,
    )


def overlay(task: Task, record: TaskResult | None) -> Task:
    """``task`` (its definition) with status and claim fields from its state record."""
    view = task.model_copy(deep=True)
    view._generation = task.generation
    view._record = record
    if record is None:
        return view
    view.__dict__.update(
        status=record.task_status,
        # While it waits, nobody runs it; once final, who ran it last.
        worker_id=record.lease_owner or (record.worker_id if record.is_final else None),
        lease_expires_at=record.lease_expires_at,
        started_at=record.started_at,
        retry_count=record.retry_count,
        run_at=record.run_at if record.run_at is not None else task.run_at,
        updated_at=record.completed_at or record.started_at or task.updated_at,
    )
    return view
