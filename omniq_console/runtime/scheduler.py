"""The scheduler: turns due schedules into tasks, exactly once per due time.

Several schedulers may run against one bucket (one per app instance, say). For each due
schedule each of them does, in this order:

1. plan the run on a copy of the schedule (``mark_run``: run count, last and next run, or
   COMPLETED after ``max_runs``);
2. compare-and-swap that copy (``update_schedule`` on the generation it read). Exactly one
   scheduler wins the swap for a given due time; the others get ``ConflictError`` and skip;
3. only the winner enqueues the task. Its id is derived from the schedule id and the due time
   (uuid5) and the enqueue is create-only, so a retried or repeated enqueue of the same run
   can never produce a second task.

An enqueue that fails after the swap was won is retried on the next ticks (the id is
deterministic, so a retry can never make a second task). A scheduler *killed* between its swap
(2) and its enqueue (3) loses that one run: at most once per due time, never twice. The schedule
itself goes on at its next due time.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from ..backend.errors import ConflictError, ObjectNotFoundError, StorageError
from ..models import (
    EventType,
    Schedule,
    ScheduleStatus,
    Task,
    TaskEvent,
    as_utc,
    utcnow,
)
from ..stopping import StopSignal
from .registry import TaskOptions, submit_task

logger = logging.getLogger(__name__)

# Fixed forever: task ids of scheduled runs are derived from it, so that every scheduler
# process, of any version, derives the same id for the same run.
RUN_ID_NAMESPACE = uuid.UUID("6f1c1f8e-4c5e-5d8a-9a57-0d7b3f0c2a11")


def run_task_id(schedule_id: str, due: datetime) -> str:
    """The id of the task a schedule fires for its run due at ``due``."""
    return str(uuid.uuid5(RUN_ID_NAMESPACE, f"{schedule_id}@{as_utc(due).isoformat()}"))


class Scheduler:
    """Fires due schedules of a backend into their queues.

    ``await scheduler.tick()`` fires what is due now and returns the ids of the tasks this
    scheduler enqueued; ``await scheduler.run()`` ticks every ``interval`` seconds until
    ``stop()``.
    """

    def __init__(
        self,
        backend: Any,
        *,
        interval: float = 1.0,
        scheduler_id: str | None = None,
        clock: Callable[[], datetime] = utcnow,
        expiry_sweep_interval: float = 30.0,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.backend = backend
        self.interval = float(interval)
        self.scheduler_id = scheduler_id or f"scheduler-{uuid.uuid4().hex[:8]}"
        self.clock = clock
        self.expiry_sweep_interval = float(expiry_sweep_interval)
        self.fired = 0
        self.conflicts = 0
        self._stop = StopSignal()
        self._last_sweep: float | None = None
        # Runs whose swap this scheduler won but whose enqueue failed: retried each tick.
        self._owed: dict[str, tuple[Schedule, Task, datetime]] = {}
        # (schedule id, reason) already logged: a broken schedule is reported once, not per tick.
        self._reported: set[tuple[str, str]] = set()

    def stop(self) -> None:
        """Return from ``run()`` after the current tick (safe from a signal handler)."""
        self._stop.set()

    async def run(self) -> None:
        """Tick every ``interval`` seconds until ``stop()``; a failing tick is logged, not fatal."""
        self._stop.bind()
        while not self._stop.is_set():
            try:
                await self.tick()
            except (StorageError, OSError) as exc:
                logger.warning("%s: tick failed: %s", self.scheduler_id, exc)
            await self._stop.wait(self.interval)

    async def tick(self, now: datetime | None = None) -> list[str]:
        """Fire every schedule due at ``now``; returns the task ids this scheduler enqueued."""
        now = as_utc(now) if now is not None else self.clock()
        store = self.backend.async_schedule_storage
        clock = time.monotonic()
        if self._last_sweep is None or clock - self._last_sweep >= self.expiry_sweep_interval:
            self._last_sweep = clock
            await self.sweep_expired(now)
        fired: list[str] = [t for t in [await self._enqueue_owed(i) for i in list(self._owed)] if t]
        ready: list[Schedule] = list(await store.get_ready_schedules(now))
        for schedule in ready:
            try:
                task_id = await self._fire(schedule, now)
            except ValueError as exc:
                # A schedule that cannot plan its next run (a cron that never fires, a date
                # out of range): reported once, and the other schedules go on.
                self._report_once(schedule.id, str(exc))
                continue
            except StorageError as exc:
                logger.warning("%s: schedule %s not fired: %s", self.scheduler_id, schedule.id, exc)
                continue
            if task_id is not None:
                fired.append(task_id)
        return fired

    def _report_once(self, schedule_id: str, reason: str) -> None:
        if (schedule_id, reason) not in self._reported:
            self._reported.add((schedule_id, reason))
            logger.warning("%s: schedule %s not fired: %s", self.scheduler_id, schedule_id, reason)

    async def _fire(self, schedule: Schedule, now: datetime) -> str | None:
        if schedule.status != ScheduleStatus.ACTIVE or schedule.next_run is None:
            return None
        if schedule.next_run > now:
            return None
        if schedule.is_expired(now):
            await self._complete_expired(schedule)
            return None
        due = schedule.next_run
        planned = schedule.model_copy(deep=True)
        planned.mark_run(now)
        fire = self._stamp(planned)
        if not await self._swap(planned):
            return None
        options = TaskOptions.from_metadata(schedule.queue_name, schedule.metadata)
        task = options.build_task(
            schedule.func,
            schedule.args,
            schedule.kwargs,
            task_id=run_task_id(schedule.id, due),
            metadata={"schedule_id": schedule.id, "due": due.isoformat(), "fire": fire},
            now=now,
        )
        self._owed[task.id] = (planned, task, due)
        return await self._enqueue_owed(task.id)

    async def _enqueue_owed(self, run_id: str) -> str | None:
        """Enqueue a run whose swap we won; kept for the next tick when storage fails."""
        planned, task, due = self._owed[run_id]
        schedule = planned
        try:
            task_id = await submit_task(
                self.backend,
                task,
                schedule_id=schedule.id,
                message=f"fired by schedule {schedule.id} (due {due.isoformat()})",
            )
        except ConflictError:
            # The run's task exists already (create-only): it was enqueued once, and only once.
            del self._owed[run_id]
            logger.info(
                "%s: run %s of %s was enqueued already", self.scheduler_id, task.id, schedule.id
            )
            return None
        except StorageError as exc:
            logger.warning(
                "%s: run %s of %s not enqueued yet (retried next tick): %s",
                self.scheduler_id,
                task.id,
                schedule.id,
                exc,
            )
            return None
        del self._owed[run_id]
        self.fired += 1
        self._log_schedule(
            planned,
            EventType.SCHEDULE_FIRED,
            f"fired run {planned.run_count} (due {due.isoformat()})",
            task_id=task_id,
            details={
                "due": due.isoformat(),
                "run_count": planned.run_count,
                "next_run": planned.next_run.isoformat() if planned.next_run else None,
                "scheduler": self.scheduler_id,
            },
        )
        return task_id

    async def sweep_expired(self, now: datetime | None = None) -> list[str]:
        """Complete active schedules whose ``ttl`` ran out; returns their ids.

        Expired schedules are never "ready" (``get_ready_schedules`` leaves them out), so they
        are looked for apart, every ``expiry_sweep_interval`` seconds of ticking.
        """
        now = as_utc(now) if now is not None else self.clock()
        active = await self.backend.async_schedule_storage.list_schedules(ScheduleStatus.ACTIVE)
        ended = []
        for schedule in active:
            if schedule.is_expired(now) and await self._complete_expired(schedule):
                ended.append(schedule.id)
        return ended

    async def _complete_expired(self, schedule: Schedule) -> bool:
        ended = schedule.model_copy(deep=True)
        ended.status = ScheduleStatus.COMPLETED
        ended.next_run = None
        self._stamp(ended)
        if not await self._swap(ended):
            return False
        self._log_schedule(
            ended, EventType.EXPIRED, f"schedule expired at {ended.expires_at}; completed"
        )
        return True

    def _stamp(self, schedule: Schedule) -> str:
        """Mark a change as this scheduler's, with a token unique to this write.

        ObjectStore settles a lost precondition by comparing bytes ("is the stored object
        ours?"): two schedulers changing a schedule at the same clock reading would write
        identical bytes and both believe they won. The token keeps every writer's bytes apart.
        """
        token = f"{self.scheduler_id}/{uuid.uuid4().hex[:12]}"
        schedule.metadata = {**schedule.metadata, "last_fire": token}
        return token

    async def _swap(self, schedule: Schedule) -> bool:
        try:
            await self.backend.async_schedule_storage.update_schedule(schedule)
            return True
        except (ConflictError, ObjectNotFoundError):
            # Another scheduler fired this due time (or an operator changed the schedule):
            # the next tick re-reads it.
            self.conflicts += 1
            return False

    def _log_schedule(
        self,
        schedule: Schedule,
        event_type: EventType,
        message: str,
        *,
        task_id: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        event = TaskEvent(
            task_id=task_id,
            event_type=event_type,
            schedule_id=schedule.id,
            queue_name=schedule.queue_name,
            message=message,
            details=details or {},
        )
        self.backend.async_event_storage.record(event)
