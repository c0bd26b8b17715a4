"""What an operator can do to a bucket: the console's actions, as plain async calls.

Every action reads the object, checks the change makes sense, and writes it back with a
compare-and-swap on the generation it read: a concurrent change (a worker finishing the task,
another operator) raises ``ConflictError`` and nothing is written. Actions can also be bound to
what the operator saw: ``generation=`` (schedules) or ``expected_status=`` (tasks) make the
action fail, unchanged, when the object moved on since. A task whose worker only renewed its
lease meanwhile is written again; a running task's worker may renew as often as GCS takes a
write of its record, so a cancel or delete that loses to a renewal also asks the worker to
cancel the run itself at its next renewal (``backend.queue.CancelRequest``).

Each action is audited as an ``operator_action`` event naming the actor, the action and the
target, written *before* the change: a change never stands without its audit, even when
storage fails between two writes of an action. If the change then provably did not happen (a
lost compare-and-swap), the audit is withdrawn; after any other failure it stays, as the record
of an attempt whose outcome storage could not confirm.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..backend import lifecycle
from ..backend.errors import ConflictError, CorruptObjectError, ObjectNotFoundError, StorageError
from ..backend.layout import check_id
from ..gathering import bounded_gather
from ..models import (
    EventType,
    Schedule,
    ScheduleStatus,
    Task,
    TaskEvent,
    TaskStatus,
    allowed_task_actions,
    utcnow,
)
from .registry import TaskOptions, submit_task

if TYPE_CHECKING:
    # Annotations only: the queue module pulls the object store (aiohttp) in, which the
    # console's first frame must not wait for.
    from ..backend.gcs import GCSBackend
    from ..backend.queue import CancelRequest

_BULK_CONCURRENCY = 16
_SWAP_WITHIN_S = 30.0
"""How long an action keeps trying on a task that only renewed its lease meanwhile. A holder
asked to cancel does so at its next renewal (every third of its lease: 10 s by default)."""

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

    @property
    def complete(self) -> bool:
        """True when everything asked for was done (nothing skipped, nothing failed)."""
        return not (self.skipped or self.failed)

    def summary(self, action: str, separator: str = "\n") -> str:
        """What ``action`` did, for the operator: how many of the ids were done, then how many
        were skipped and failed, each with one example and its reason (one line each, joined
        by ``separator``)."""
        lines = [f"{action}: {len(self.done):,} of {self.total:,} done"]
        if self.skipped:
            task_id, why = self.skipped[0]
            lines.append(
                f"{len(self.skipped):,} skipped (changed since you saw them), e.g. {task_id}: {why}"
            )
        if self.failed:
            task_id, why = self.failed[0]
            lines.append(f"{len(self.failed):,} failed, e.g. {task_id}: {why}")
        return separator.join(lines)


def _status(value: TaskStatus | str, what: str = "expected_status") -> TaskStatus:
    try:
        return TaskStatus(value)
    except ValueError:
        known = ", ".join(s.value for s in TaskStatus)
        raise ValueError(f"{what} {value!r} is not a task status ({known})") from None


class StateChanged(ConflictError, ValueError):
    """A single-task action met a task that moved on since the operator saw it.

    ``now_status`` is its status after a re-read ("" when it is gone) and ``allowed`` the
    actions that apply to it now: the console says what the task is now and offers those.
    """

    def __init__(self, task_id: str, now_status: str, allowed: tuple[str, ...], message: str):
        super().__init__(f"tasks/{task_id}.json", None, message)
        self.task_id = task_id
        self.now_status = now_status
        self.allowed = allowed
        self.args = (message,)

    def __str__(self) -> str:
        return str(self.args[0])

    @classmethod
    def of(cls, task: Task | None, why: str | None, *, task_id: str = "") -> StateChanged:
        """The error for ``task`` as re-read (None: gone), with ``why`` or a default message."""
        if task is None:
            return cls(task_id, "", (), why or f"task {task_id} no longer exists")
        status = task.status.value
        where = (
            f" on worker {task.worker_id}"
            if task.status == TaskStatus.RUNNING and task.worker_id
            else ""
        )
        message = why or f"task {task.id} is now {status}{where}"
        return cls(task.id, status, allowed_task_actions(status), message)


class Operator:
    """Operator actions on one backend, audited under ``actor`` (a user or host name)."""

    def __init__(self, backend: GCSBackend, actor: str) -> None:
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
        await self._count_run(schedule)
        return task_id

    async def _count_run(self, schedule: Schedule) -> None:
        """Record a triggered run on the schedule (last run, run count); its plan is kept."""
        for _ in range(3):
            schedule.last_run = utcnow()
            schedule.run_count += 1
            self._stamp(schedule, "trigger_schedule")
            try:
                await self.backend.async_schedule_storage.update_schedule(schedule)
                return
            except ConflictError:
                schedule = await self._schedule(schedule.id, None)  # fired meanwhile: again
        logger.warning("run of schedule %s not counted: it kept changing", schedule.id)

    # -- tasks -------------------------------------------------------------------------------

    async def retry_task(
        self, task_id: str, *, expected_status: TaskStatus | str | None = None
    ) -> Task:
        """Put a finished (failed, cancelled, expired or completed) task back in its queue.

        Its retry count starts again from 0 and its old outcome is replaced by a pending
        record (so that ``get_result`` waits for the new run). A task with a TTL gets a fresh
        expiry.
        """
        task = await self._task(task_id, expected_status)
        if "retry" not in allowed_task_actions(task.status):
            raise StateChanged.of(
                task, f"task {task_id} is {task.status.value}; only finished tasks can be retried"
            )

        async def retried(task: Task) -> Task:
            now = utcnow()
            expires_at = task.expires_at
            if task.ttl is not None:
                expires_at = now + task.ttl
            elif task.expires_at is not None and task.expires_at <= now:
                expires_at = None
            if expires_at != task.expires_at:
                # A fresh expiry is a definition change (compare-and-swap on the task).
                again = task.model_copy(deep=True)
                again._generation = task.generation
                again._record = task.record
                again.expires_at = expires_at
                task = await self.backend.async_task_storage.update_task(again)
            transition = lifecycle.operator_retry(task, task.record, actor=self.actor, now=now)
            return await self._apply(task, transition)

        return await self._transition_task("retry_task", task, retried)

    async def cancel_task(
        self, task_id: str, *, expected_status: TaskStatus | str | None = None
    ) -> Task:
        """Cancel a pending or running task; a running one's worker is fenced out (its
        outcome can no longer land) and stops at its next lease renewal."""
        task = await self._task(task_id, expected_status)
        if "cancel" not in allowed_task_actions(task.status):
            raise StateChanged.of(
                task,
                f"task {task_id} is {task.status.value}; only pending "
                "or running tasks can be cancelled",
            )

        def cancelled(task: Task) -> Awaitable[Task]:
            transition = lifecycle.cancel(task, task.record, actor=self.actor, now=utcnow())
            return self._apply(task, transition)

        async def by_its_holder(task: Task) -> Task:
            return task  # cancelled as asked; the holder wrote its event

        return await self._transition_task("cancel_task", task, cancelled, by_its_holder)

    async def _transition_task(
        self,
        action: str,
        task: Task,
        change: Callable[[Task], Awaitable[Task]],
        once_cancelled: Callable[[Task], Awaitable[Task]] | None = None,
    ) -> Task:
        """``change`` written on ``task`` through ``_swap``, audited as ``action`` with the
        status the operator saw."""
        async with self._audited(
            action,
            task.id,
            task_id=task.id,
            queue_name=task.queue_name,
            extra={"previous_status": task.status.value},
        ):
            return await self._swap(task, change, once_cancelled=once_cancelled)

    async def delete_task(
        self, task_id: str, *, expected_status: TaskStatus | str | None = None
    ) -> bool:
        """Delete a task, its queue entry and its result; False when none of them existed.

        Fenced on what this call read (the status checked against ``expected_status``):
        ``StateChanged`` and nothing deleted when a worker or another operator changed the
        task since. The task's events stay: they are the audit trail.
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
            # On the generations this read saw: a task that moved on since (a worker claimed
            # or finished it) is not deleted; the operator is told what it is now. A running
            # task whose holder only renewed is tried again, and its holder asked to cancel
            # (the cancelled record is then the fence).
            if task is None:
                try:
                    await self.backend.async_task_storage.delete_task(task_id)
                except ConflictError:
                    now = await self.backend.async_task_storage.get_task(task_id)
                    raise StateChanged.of(now, None, task_id=task_id) from None
            else:

                async def fenced_delete(seen: Task) -> Task:
                    await self.backend.async_task_storage.delete_task(task_id, seen=seen)
                    return seen

                await self._swap(task, fenced_delete, once_cancelled=fenced_delete)
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
        return await self._bulk("retry_tasks", task_ids, expected_status, "retry", self.retry_task)

    async def cancel_tasks(
        self,
        task_ids: Sequence[str],
        expected_status: TaskStatus | str | Mapping[str, TaskStatus | str] | None = None,
    ) -> BulkOutcome:
        """Cancel exactly ``task_ids``, skipping any that moved on (see ``retry_tasks``)."""
        return await self._bulk(
            "cancel_tasks", task_ids, expected_status, "cancel", self.cancel_task
        )

    async def delete_tasks(
        self,
        task_ids: Sequence[str],
        expected_status: TaskStatus | str | Mapping[str, TaskStatus | str] | None = None,
    ) -> BulkOutcome:
        """Delete exactly ``task_ids``, skipping any that moved on (see ``retry_tasks``)."""

        async def delete(task_id: str, *, expected_status: TaskStatus | str | None) -> bool:
            if not await self.delete_task(task_id, expected_status=expected_status):
                raise ObjectNotFoundError(self.backend.layout.task(task_id), "task")
            return True

        return await self._bulk("delete_tasks", task_ids, expected_status, "delete", delete)

    # -- queues ------------------------------------------------------------------------------

    async def pause_queue(self, queue: str) -> None:
        """Stop workers on every machine claiming from ``queue`` (within one claim cycle).

        The state lives in the bucket (``paused/{queue}.json``). ``ValueError`` when paused
        already.
        """
        check_id(queue, "queue name")
        async with self._audited("pause_queue", queue, queue_name=queue):
            if not await self.backend.async_task_storage.pause_queue(queue, actor=self.actor):
                raise ValueError(f"queue {queue} is already paused")

    async def resume_queue(self, queue: str) -> None:
        """Let workers claim from ``queue`` again. ``ValueError`` when it was not paused."""
        check_id(queue, "queue name")
        async with self._audited("resume_queue", queue, queue_name=queue):
            if not await self.backend.async_task_storage.resume_queue(queue):
                raise ValueError(f"queue {queue} is not paused")

    async def purge_queue(self, queue: str, task_ids: Sequence[str]) -> BulkOutcome:
        """Delete exactly ``task_ids`` (the pending tasks the operator counted) from ``queue``.

        An id that is no longer pending, or not in this queue, is skipped with the reason.
        """
        check_id(queue, "queue name")

        async def purge(task_id: str, *, expected_status: TaskStatus | str | None) -> bool:
            task = await self._task(task_id, expected_status)
            if task.queue_name != queue:
                raise ValueError(f"it is in queue {task.queue_name}, not {queue}")
            return await self.delete_task(task_id, expected_status=TaskStatus.PENDING)

        return await self._bulk(
            "purge_queue",
            task_ids,
            TaskStatus.PENDING,
            "delete",
            purge,
            target=queue,
        )

    async def _bulk(
        self,
        action: str,
        task_ids: Sequence[str],
        expected_status: TaskStatus | str | Mapping[str, TaskStatus | str] | None,
        verb: str,
        one_action: Callable[..., Awaitable[object]],
        *,
        target: str | None = None,
    ) -> BulkOutcome:
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
        results = await bounded_gather(
            ids, lambda i: self._one(i, expected[i], verb, one_action), limit=_BULK_CONCURRENCY
        )
        outcome = BulkOutcome()
        for task_id, (kind, why) in zip(ids, results, strict=True):
            if kind == "done":
                outcome.done.append(task_id)
            elif kind == "skipped":
                outcome.skipped.append((task_id, why or ""))
            else:
                outcome.failed.append((task_id, why or ""))
        if outcome.total:
            # A summary of what the single actions (each audited) added up to.
            await self.backend.async_event_storage.log_event(
                self._event(
                    action,
                    target or f"{len(ids)} tasks",
                    queue_name=target,
                    extra={
                        "done": len(outcome.done),
                        "skipped": len(outcome.skipped),
                        "failed": len(outcome.failed),
                    },
                )
            )
        return outcome

    async def _one(
        self,
        task_id: str,
        expected: TaskStatus | None,
        verb: str,
        action: Callable[..., Awaitable[object]],
    ) -> tuple[str, str | None]:
        try:
            task = await self.backend.async_task_storage.get_task(task_id)
        except StorageError as exc:
            return "failed", str(exc)
        if task is None:
            return "skipped", "the task no longer exists"
        if expected is not None and task.status != expected:
            return "skipped", f"its status changed from {expected.value} to {task.status.value}"
        if verb not in allowed_task_actions(task.status):
            return "skipped", f"it is {task.status.value}, which this action does not apply to"
        try:
            await action(task_id, expected_status=task.status)
        except ConflictError:
            return "skipped", "it was changed by someone else meanwhile"
        except ObjectNotFoundError:
            return "skipped", "the task no longer exists"
        except ValueError as exc:
            return "skipped", str(exc)
        except StorageError as exc:
            return "failed", str(exc)
        return "done", None

    async def _apply(self, task: Task, transition: lifecycle.Transition) -> Task:
        """Apply ``transition`` to ``task`` (compare-and-swap on its record), then write the
        transition's event beside the ``operator_action`` audit: whoever applies a transition
        writes its event, so the task's timeline is complete."""
        applied = await self.backend.async_task_storage.apply(task, transition)
        event = lifecycle.event_of(transition, at=utcnow(), actor=self.actor)
        try:
            await self.backend.async_event_storage.log_event(event)
        except StorageError as exc:
            # The change stands (its audit was written first); only its timeline entry is lost.
            logger.warning("%s event of task %s not written: %s", transition.event, task.id, exc)
        return applied

    async def _swap(
        self,
        task: Task,
        write: Callable[[Task], Awaitable[Task]],
        *,
        once_cancelled: Callable[[Task], Awaitable[Task]] | None = None,
    ) -> Task:
        """``write(task)``; when it loses its compare-and-swap, re-read: a task whose status
        is unchanged (its worker only renewed its lease) is written again, one that moved on
        raises ``StateChanged`` saying what it is now.

        A holder may renew as often as GCS takes a write of one name (every second with a 3 s
        lease), so each swap can lose to the next renewal. With ``once_cancelled``, a running
        task's holder is also asked to cancel the run itself at its next renewal (a
        ``CancelRequest``); once the re-read shows that cancel, ``once_cancelled(task as it
        is now)`` finishes the action. A holder's own outcome that lands first wins (the task
        moved on). Bounded by ``_SWAP_WITHIN_S``; the request is withdrawn at the end.
        """
        queue = self.backend.async_task_storage
        deadline = time.monotonic() + _SWAP_WITHIN_S
        request: CancelRequest | None = None
        try:
            while True:
                try:
                    return await write(task)
                except ConflictError:
                    now = await queue.get_task(task.id)
                if (
                    once_cancelled is not None
                    and request is not None
                    and now is not None
                    and request.honoured_in(now.record)
                ):
                    return await once_cancelled(now)
                if now is None or now.status != task.status:
                    raise StateChanged.of(now, None, task_id=task.id)
                task = now
                if time.monotonic() >= deadline:
                    raise StateChanged.of(task, f"task {task.id} kept changing; try again")
                held = task.record
                # Asked once per run (a run that changed hands is asked anew).
                ask = once_cancelled is not None and task.status == TaskStatus.RUNNING
                if ask and held and (request is None or not request.names(held)):
                    request = await queue.request_cancel(task, actor=self.actor)
        finally:
            if request is not None:
                await queue.withdraw_request(request)

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
            raise StateChanged.of(
                task, f"task {task.id} is {task.status.value} now, not {expected.value} as shown"
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
                # On the generation written: a withdraw retried after a lost answer never
                # removes anything but this audit.
                if event.generation is not None:
                    key = self.backend.layout.event(event.id)
                    await self.backend.store.delete(key, if_generation_match=event.generation)
            except (StorageError, OSError) as exc:
                logger.warning("audit of a failed %s on %s not withdrawn: %s", action, target, exc)
            raise
