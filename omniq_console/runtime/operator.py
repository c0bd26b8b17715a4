"""What an operator can do to a bucket: the console's actions, as plain async calls.

Every action reads the object, checks the change makes sense, and writes it back with a
compare-and-swap on the generation it read: a concurrent change (a worker finishing the task,
another operator) raises ``ConflictError`` and nothing is written. Actions can also be bound to
what the operator saw: ``generation=`` (schedules) or ``expected_status=`` (tasks) make the
action fail, unchanged, when the object moved on since.

Each action is audited as an ``operator_action`` event naming the actor, the action and the
target, written *before* the change: a change never stands without its audit, even when
storage fails between two writes of an action. If the change then provably did not happen (a
lost compare-and-swap), the audit is withdrawn; after any other failure it stays, as the record
of an attempt whose outcome storage could not confirm.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..backend.errors import ConflictError, CorruptObjectError, ObjectNotFoundError, StorageError
from ..backend.layout import check_id
from ..models import (
    EventType,
    ResultStatus,
    Schedule,
    ScheduleStatus,
    Task,
    TaskEvent,
    TaskResult,
    TaskStatus,
    utcnow,
)
from .registry import TaskOptions, submit_task

RETRYABLE = frozenset({TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.EXPIRED})
CANCELLABLE = frozenset({TaskStatus.PENDING, TaskStatus.RUNNING})
_BULK_CONCURRENCY = 16

logger = logging.getLogger(__name__)


@dataclass
class BulkOutcome:
    """What a bulk action did, id by id: every id given is in exactly one list."""

    done: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (id, why)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (id, error)

    @property
    def total(self) -> int:
        return len(self.done) + len(self.skipped) + len(self.failed)


def _status(value: TaskStatus | str, what: str = "expected_status") -> TaskStatus:
    try:
        return TaskStatus(value)
    except ValueError:
        known = ", ".join(s.value for s in TaskStatus)
        raise ValueError(f"{what} {value!r} is not a task status ({known})") from None


class Operator:
    """Operator actions on one backend, audited under ``actor`` (a user or host name)."""

    def __init__(self, backend: Any, actor: str) -> None:
        if not isinstance(actor, str) or not actor.strip():
            raise ValueError("actor must name who acts (a non-empty string)")
        self.backend = backend
        self.actor = actor.strip()[:200]

    # -- schedules ---------------------------------------------------------------------------

    async def pause_schedule(self, schedule_id: str, *, generation: int | None = None) -> Schedule:
        """Pause an active schedule. ``ValueError`` if it is completed or cancelled."""
        schedule = await self._schedule(schedule_id, generation)
        if schedule.status == ScheduleStatus.PAUSED:
            raise ValueError(f"schedule {schedule_id} is already paused")
        schedule.pause()
        self._stamp(schedule, "pause_schedule")
        async with self._audited(
            "pause_schedule", schedule_id, schedule_id=schedule_id, queue_name=schedule.queue_name
        ):
            saved = await self.backend.async_schedule_storage.update_schedule(schedule)
        return saved

    async def resume_schedule(self, schedule_id: str, *, generation: int | None = None) -> Schedule:
        """Resume a paused schedule; its next run is planned from now (missed runs skipped)."""
        schedule = await self._schedule(schedule_id, generation)
        if schedule.status == ScheduleStatus.ACTIVE:
            raise ValueError(f"schedule {schedule_id} is already active")
        schedule.resume(utcnow())
        self._stamp(schedule, "resume_schedule")
        next_run = schedule.next_run.isoformat() if schedule.next_run else None
        async with self._audited(
            "resume_schedule",
            schedule_id,
            schedule_id=schedule_id,
            queue_name=schedule.queue_name,
            extra={"next_run": next_run},
        ):
            saved = await self.backend.async_schedule_storage.update_schedule(schedule)
        return saved

    async def trigger_schedule(self, schedule_id: str) -> str:
        """Enqueue one run of the schedule now (the schedule itself is not changed)."""
        schedule = await self._schedule(schedule_id, None)
        if schedule.status == ScheduleStatus.CANCELLED:
            raise ValueError(f"schedule {schedule_id} is cancelled and cannot be triggered")
        options = TaskOptions.from_metadata(schedule.queue_name, schedule.metadata)
        task = options.build_task(
            schedule.func,
            schedule.args,
            schedule.kwargs,
            metadata={"schedule_id": schedule.id, "triggered_by": self.actor},
        )
        async with self._audited(
            "trigger_schedule",
            schedule_id,
            task_id=task.id,
            schedule_id=schedule_id,
            queue_name=schedule.queue_name,
            extra={"task_id": task.id},
        ):
            task_id = await submit_task(
                self.backend,
                task,
                schedule_id=schedule.id,
                actor=self.actor,
                message=f"triggered by {self.actor}",
            )
        return task_id

    # -- tasks -------------------------------------------------------------------------------

    async def retry_task(
        self, task_id: str, *, expected_status: TaskStatus | str | None = None
    ) -> Task:
        """Put a failed, cancelled or expired task back in its queue as PENDING.

        Its retry count starts again from 0 and its old result is removed (so that
        ``get_result`` waits for the new run). A task with a TTL gets a fresh expiry.
        """
        task = await self._task(task_id, expected_status)
        if task.status not in RETRYABLE:
            raise ValueError(
                f"task {task_id} is {task.status.value}; only failed, cancelled or expired "
                "tasks can be retried"
            )
        previous = task.status
        now = utcnow()
        task.status = TaskStatus.PENDING
        task.retry_count = 0
        task.run_at = None
        task.worker_id = None
        task.lease_expires_at = None
        task.started_at = None
        task.updated_at = now
        if task.ttl is not None:
            task.expires_at = now + task.ttl
        elif task.expires_at is not None and task.expires_at <= now:
            task.expires_at = None
        try:
            old_result = await self.backend.async_result_storage.get(task_id)
            unreadable_result = False
        except CorruptObjectError:
            old_result, unreadable_result = None, True
        async with self._audited(
            "retry_task",
            task_id,
            task_id=task_id,
            queue_name=task.queue_name,
            extra={"previous_status": previous.value},
        ):
            saved = await self.backend.async_task_storage.update_task(task)
        # The old result goes after the swap, and only at the generation read above: a result
        # a fast worker already wrote for the new run is kept (GCS honours the delete
        # precondition; the emulator ignores it).
        if old_result is not None and old_result.generation is not None:
            try:
                await self.backend.store.delete(
                    self.backend.layout.result(task_id),
                    if_generation_match=old_result.generation,
                )
            except ConflictError:
                pass  # the new run's result: keep it
        elif unreadable_result:
            await self.backend.async_result_storage.delete(task_id)
        return saved

    async def cancel_task(
        self, task_id: str, *, expected_status: TaskStatus | str | None = None
    ) -> Task:
        """Cancel a pending or running task; a running one's worker drops its outcome."""
        task = await self._task(task_id, expected_status)
        if task.status not in CANCELLABLE:
            raise ValueError(
                f"task {task_id} is {task.status.value}; only pending or running tasks can be "
                "cancelled"
            )
        previous = task.status
        now = utcnow()
        task.status = TaskStatus.CANCELLED
        task.lease_expires_at = None
        task.updated_at = now
        async with self._audited(
            "cancel_task",
            task_id,
            task_id=task_id,
            queue_name=task.queue_name,
            extra={"previous_status": previous.value},
        ):
            saved = await self.backend.async_task_storage.update_task(task)
        # A result, so that whoever waits on get_result learns the task will not run.
        await self.backend.async_result_storage.set(
            TaskResult(
                task_id=task_id,
                status=ResultStatus.CANCELLED,
                error=f"cancelled by {self.actor}",
                error_type="Cancelled",
                completed_at=now,
                worker_id=task.worker_id,
            )
        )
        return saved

    async def delete_task(
        self, task_id: str, *, expected_status: TaskStatus | str | None = None
    ) -> bool:
        """Delete a task, its queue entry and its result; False when none of them existed.

        The task's events stay: they are the audit trail.
        """
        check_id(task_id, "task id")
        expected = _status(expected_status) if expected_status is not None else None
        # An unreadable task or result can still be deleted: that is often the remedy.
        corrupt: list[str] = []
        try:
            task = await self.backend.async_task_storage.get_task(task_id)
        except CorruptObjectError as exc:
            task, corrupt = None, [*corrupt, exc.reason]
        if expected is not None:
            if task is None:
                raise ObjectNotFoundError(self.backend.layout.task(task_id), "readable task")
            self._check_status(task, expected)
        try:
            result = await self.backend.async_result_storage.get(task_id)
        except CorruptObjectError as exc:
            result, corrupt = None, [*corrupt, exc.reason]
        if task is None and result is None and not corrupt:
            return False
        async with self._audited(
            "delete_task",
            task_id,
            task_id=task_id,
            queue_name=task.queue_name if task else None,
            extra={"previous_status": task.status.value if task else None, "unreadable": corrupt},
        ):
            await self.backend.async_task_storage.delete_task(task_id)
            await self.backend.async_result_storage.delete(task_id)
        return True

    async def retry_tasks(
        self,
        task_ids: Sequence[str],
        expected_status: TaskStatus | str | Mapping[str, TaskStatus | str] | None = None,
    ) -> BulkOutcome:
        """Retry exactly ``task_ids`` (what the operator saw), skipping any that moved on.

        ``expected_status`` is the status the operator saw: one for all ids, or one per id.
        A task whose status differs now, that vanished, or that changes during the retry is
        skipped with the reason; nothing outside ``task_ids`` is touched. Every id is checked
        before anything is written: one bad id raises ``ValueError`` and nothing changes.
        """
        if isinstance(task_ids, str):
            raise ValueError("task_ids must be a sequence of ids, not one string")
        ids = list(dict.fromkeys(task_ids))
        for task_id in ids:
            check_id(task_id, "task id")
        expected: dict[str, TaskStatus | None]
        if isinstance(expected_status, Mapping):
            expected = {
                i: _status(expected_status[i]) if i in expected_status else None for i in ids
            }
        else:
            single = _status(expected_status) if expected_status is not None else None
            expected = dict.fromkeys(ids, single)
        outcome = BulkOutcome()
        results: dict[str, tuple[str, str | None]] = {}
        gate = asyncio.Semaphore(_BULK_CONCURRENCY)

        async def one(task_id: str) -> None:
            async with gate:
                results[task_id] = await self._retry_one(task_id, expected[task_id])

        await asyncio.gather(*(one(i) for i in ids))
        for task_id in ids:
            kind, why = results[task_id]
            if kind == "done":
                outcome.done.append(task_id)
            elif kind == "skipped":
                outcome.skipped.append((task_id, why or ""))
            else:
                outcome.failed.append((task_id, why or ""))
        if outcome.total:
            # A summary of what the single retries (each audited) added up to.
            await self.backend.async_event_storage.log_event(
                self._event(
                    "retry_tasks",
                    f"{len(ids)} tasks",
                    extra={
                        "done": len(outcome.done),
                        "skipped": len(outcome.skipped),
                        "failed": len(outcome.failed),
                    },
                )
            )
        return outcome

    async def _retry_one(self, task_id: str, expected: TaskStatus | None) -> tuple[str, str | None]:
        try:
            task = await self.backend.async_task_storage.get_task(task_id)
        except StorageError as exc:
            return "failed", str(exc)
        if task is None:
            return "skipped", "the task no longer exists"
        if expected is not None and task.status != expected:
            return "skipped", f"its status changed from {expected.value} to {task.status.value}"
        if task.status not in RETRYABLE:
            return "skipped", f"it is {task.status.value}, which cannot be retried"
        try:
            await self.retry_task(task_id, expected_status=task.status)
        except ConflictError:
            return "skipped", "it was changed by someone else during the retry"
        except ObjectNotFoundError:
            return "skipped", "the task no longer exists"
        except ValueError as exc:
            return "skipped", str(exc)
        except StorageError as exc:
            return "failed", str(exc)
        return "done", None

    # -- helpers -----------------------------------------------------------------------------

    async def _schedule(self, schedule_id: str, generation: int | None) -> Schedule:
        check_id(schedule_id, "schedule id")
        schedule = await self.backend.async_schedule_storage.get_schedule(schedule_id)
        if schedule is None:
            raise ObjectNotFoundError(self.backend.layout.schedule(schedule_id), "schedule")
        if generation is not None and schedule.generation != generation:
            raise ConflictError(
                self.backend.layout.schedule(schedule_id),
                generation,
                f"schedule {schedule_id} changed since it was shown; refresh and try again",
            )
        return schedule

    async def _task(self, task_id: str, expected_status: TaskStatus | str | None) -> Task:
        check_id(task_id, "task id")
        expected = _status(expected_status) if expected_status is not None else None
        task = await self.backend.async_task_storage.get_task(task_id)
        if task is None:
            raise ObjectNotFoundError(self.backend.layout.task(task_id), "task")
        if expected is not None:
            self._check_status(task, expected)
        return task

    def _stamp(self, schedule: Schedule, action: str) -> None:
        # Who changed it last, kept in the object too; the time makes our bytes unique, which
        # ObjectStore relies on to tell its own write from a concurrent one after a 412.
        schedule.metadata = {
            **schedule.metadata,
            "last_operator_action": {
                "actor": self.actor,
                "action": action,
                "at": utcnow().isoformat(),
            },
        }

    def _check_status(self, task: Task, expected: TaskStatus) -> None:
        if task.status != expected:
            raise ConflictError(
                self.backend.layout.task(task.id),
                task.generation,
                f"task {task.id} is {task.status.value} now, not {expected.value} as shown; "
                "refresh and try again",
            )

    def _event(
        self,
        action: str,
        target: str,
        *,
        task_id: str | None = None,
        schedule_id: str | None = None,
        queue_name: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> TaskEvent:
        details: dict[str, Any] = {"action": action, "target": target}
        details.update(extra or {})
        return TaskEvent(
            task_id=task_id,
            event_type=EventType.OPERATOR_ACTION,
            schedule_id=schedule_id,
            queue_name=queue_name,
            actor=self.actor,
            message=f"{self.actor}: {action.replace('_', ' ')} {target}",
            details=details,
        )

    @contextlib.asynccontextmanager
    async def _audited(self, action: str, target: str, **fields: Any) -> AsyncIterator[None]:
        """Write the audit event, then run the change (the ``async with`` body)."""
        event = self._event(action, target, **fields)
        await self.backend.async_event_storage.log_event(event)
        try:
            yield
        except (ConflictError, ObjectNotFoundError, ValueError):
            # Nothing was written (a lost compare-and-swap, a vanished object): no action to
            # account for. Best effort: an audit that stays records an attempt, never a lie
            # about a change that is in the bucket without one.
            try:
                await self.backend.store.delete(self.backend.layout.event(event.id))
            except (StorageError, OSError) as exc:
                logger.warning("audit of a failed %s on %s not withdrawn: %s", action, target, exc)
            raise
