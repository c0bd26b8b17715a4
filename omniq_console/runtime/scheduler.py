"""The scheduler: turns due schedules into tasks, exactly once per due time.

Several schedulers may run against one bucket (one per app instance, say). For each due
schedule each of them does, in this order:

1. plan the run on a copy of the schedule (``mark_run``: run count, last and next run, or
   COMPLETED after ``max_runs``), with the run it owes written into the copy
   (``metadata["owed_run"]``: the task id, the due time, this write's token), and remember the
   run as owed in this process *before* the swap;
2. compare-and-swap that copy (``update_schedule`` on the generation it read). Exactly one
   scheduler wins the swap for a given due time; the others get ``ConflictError`` and skip;
3. the winner enqueues the task. Its id is derived from the schedule id and the due time
   (uuid5) and the enqueue is create-only, so a retried or repeated enqueue of the same run,
   by this scheduler or another, can never produce a second task.

A swap whose answer is lost (a storage error after the retries) is settled on the next tick
by reading the schedule back: if it carries this write's token the swap landed and the run is
enqueued; if the schedule moved on otherwise, the run is not ours; if it is still due, it is
fired afresh. An enqueue that fails after the swap was won is retried on the next ticks. A
scheduler *killed* between its swap (2) and its enqueue (3) leaves the owed run in the schedule
body: every scheduler's sweep (at start, then every ``expiry_sweep_interval``) enqueues owed
runs it has not checked yet whose due time is less than ``OWED_RUN_HORIZON`` old. No run is
lost then unless no scheduler runs for that long; none is doubled (the create-only enqueue
refuses a second task while the first exists; a run whose task was deleted within the horizon
can be enqueued again by a scheduler that had not checked it yet). No schedule name is written
more than once per fire: the owed run rides in the swap itself.

GCS takes about one mutation of an object name per second, so a schedule fires at most about
once a second whatever its interval (runs that fall in between are skipped, as runs missed while
no scheduler ran are). A scheduler waits until ``NAME_WRITE_GAP_S`` have passed since it last
wrote a schedule (or lost a swap of it to a rival's write) before it swaps it again: less than a
second, where sending at once would meet a 429 and its backoff (1 s, 2 s, ...), holding up every
other schedule of the tick longer.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..backend.errors import ConflictError, ObjectNotFoundError, StorageError
from ..backend.lifecycle import NAME_WRITE_GAP_S
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


# The schedule metadata key of the run a swap owes (see the module docstring).
OWED_RUN = "owed_run"
# How old an owed run's due time may be for a sweep to still enqueue it. Past it, a run a
# killed scheduler owed is left alone: its task may have run and been cleaned up meanwhile.
OWED_RUN_HORIZON = timedelta(minutes=10)


def run_task_id(schedule_id: str, due: datetime) -> str:
    """The id of the task a schedule fires for its run due at ``due``."""
    return str(uuid.uuid5(RUN_ID_NAMESPACE, f"{schedule_id}@{as_utc(due).isoformat()}"))


@dataclass
class _Owed:
    """A run this scheduler owes: the schedule as planned, its task, and whether the swap that
    planned it is known to have landed (False while its answer was lost)."""

    planned: Schedule
    task: Task
    due: datetime
    token: str
    landed: bool


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
        # Runs whose swap this scheduler made (or may have made: answer lost) and that are not
        # enqueued yet: settled and retried each tick. Keyed by task id.
        self._owed: dict[str, _Owed] = {}
        # Owed runs found in schedule bodies by the sweep and checked already, by schedule id:
        # each is enqueued (or found enqueued) once per process, not once per sweep.
        self._swept: dict[str, str] = {}
        # (schedule id, reason) already logged: a broken schedule is reported once, not per tick.
        self._reported: set[tuple[str, str]] = set()
        # When this scheduler last wrote each schedule (monotonic), for GCS's per-name gap;
        # only the last NAME_WRITE_GAP_S of writes are kept.
        self._written: dict[str, float] = {}

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
        fired: list[str] = []
        if self._last_sweep is None or clock - self._last_sweep >= self.expiry_sweep_interval:
            self._last_sweep = clock
            # Runs the sweep enqueued (owed by another scheduler, maybe one that is about to
            # enqueue them itself and will find them enqueued) are this tick's too.
            fired += (await self._sweep(now))[1]
        fired += [t for t in [await self._enqueue_owed(i) for i in list(self._owed)] if t]
        ready: list[Schedule] = list(await store.get_ready_schedules(now))
        unsettled = {o.planned.id for o in self._owed.values() if not o.landed}
        clock = time.monotonic()
        self._written = {k: t for k, t in self._written.items() if clock - t < NAME_WRITE_GAP_S}
        for schedule in ready:
            if schedule.id in unsettled:
                continue  # a swap of ours may have landed: settled by reading back first
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
        task = _run_task(planned, due, fire, now)
        planned.metadata[OWED_RUN] = {"task_id": task.id, "due": due.isoformat(), "fire": fire}
        # Owed before the swap: a swap whose answer is lost may have landed.
        owed = self._owed[task.id] = _Owed(planned, task, due, fire, landed=False)
        try:
            won = await self._swap(planned)
        except StorageError:
            logger.warning(
                "%s: the swap firing schedule %s was not confirmed; settled next tick",
                self.scheduler_id,
                schedule.id,
            )
            raise
        if not won:
            del self._owed[task.id]
            return None
        owed.landed = True
        return await self._enqueue_owed(task.id)

    async def _settle(self, owed: _Owed) -> bool:
        """Whether a swap whose answer was lost landed, read back from the schedule.

        It landed when the schedule carries its token, or when the schedule's run count reached
        the planned one: then this due time was fired, by us or by a rival whose enqueue of the
        same task id is create-only too, so enqueuing it cannot double it. Otherwise the owed
        run is dropped: the swap did not land (a schedule still due is fired afresh).
        Raises ``StorageError`` when the schedule cannot be read (settled next tick).
        """
        stored = await self.backend.async_schedule_storage.get_schedule(owed.planned.id)
        if stored is not None and (
            stored.metadata.get("last_fire") == owed.token
            or stored.run_count >= owed.planned.run_count
        ):
            owed.landed = True
            return True
        del self._owed[owed.task.id]
        return False

    async def _enqueue_owed(self, run_id: str) -> str | None:
        """Enqueue a run we owe; kept for the next tick when storage fails."""
        owed = self._owed[run_id]
        if not owed.landed:
            try:
                if not await self._settle(owed):
                    return None
            except StorageError as exc:
                logger.warning(
                    "%s: schedule %s not read back (retried next tick): %s",
                    self.scheduler_id,
                    owed.planned.id,
                    exc,
                )
                return None
        planned, task, due = owed.planned, owed.task, owed.due
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
            self._swept[schedule.id] = task.id
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
        self._swept[schedule.id] = task.id  # the sweep need not check it again
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
        return (await self._sweep(as_utc(now) if now is not None else self.clock()))[0]

    async def _sweep(self, now: datetime) -> tuple[list[str], list[str]]:
        """One sweep: the ids of the schedules it completed, and of the owed runs' tasks it
        enqueued."""
        schedules = await self.backend.async_schedule_storage.list_schedules()
        ended: list[str] = []
        enqueued: list[str] = []
        for schedule in schedules:
            if (task_id := await self._finish_owed_run(schedule, now)) is not None:
                enqueued.append(task_id)
            if (
                schedule.status == ScheduleStatus.ACTIVE
                and schedule.is_expired(now)
                and await self._complete_expired(schedule)
            ):
                ended.append(schedule.id)
        return ended, enqueued

    async def _finish_owed_run(self, schedule: Schedule, now: datetime) -> str | None:
        """Enqueue the run a schedule's last swap owes, if no task of it exists (a scheduler
        killed between its swap and its enqueue, or one about to enqueue it: the enqueue is
        create-only); once per process per owed run. The task id when this call enqueued it."""
        owed = schedule.metadata.get(OWED_RUN)
        if not isinstance(owed, dict) or self._swept.get(schedule.id) == owed.get("task_id"):
            return None
        try:
            due = as_utc(datetime.fromisoformat(str(owed["due"])))
            task = _run_task(schedule, due, str(owed["fire"]), now)
        except (KeyError, ValueError, TypeError) as exc:
            self._report_once(schedule.id, f"its owed run is unreadable: {exc}")
            return None
        if task.id != owed.get("task_id") or now - due > OWED_RUN_HORIZON:
            self._swept[schedule.id] = str(owed.get("task_id"))
            return None
        enqueued = None
        if task.id not in self._owed:
            self._owed[task.id] = _Owed(schedule, task, due, str(owed["fire"]), landed=True)
            enqueued = await self._enqueue_owed(task.id)
        self._swept[schedule.id] = task.id
        return enqueued

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
        last = self._written.get(schedule.id)
        if last is not None:
            # GCS's per-name second since our last write (or a rival's that beat us).
            await asyncio.sleep(last + NAME_WRITE_GAP_S - time.monotonic())
        try:
            await self.backend.async_schedule_storage.update_schedule(schedule)
        except (ConflictError, ObjectNotFoundError):
            # Another scheduler fired this due time (or an operator changed the schedule):
            # the next tick re-reads it.
            self.conflicts += 1
            return False
        finally:
            # A write that landed did so before its answer came (or was lost): the per-name
            # gap counts from here. A lost precondition means a rival wrote it just now: the
            # gap holds for that write as well.
            self._written[schedule.id] = time.monotonic()
        return True

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


def _run_task(schedule: Schedule, due: datetime, fire: str, now: datetime) -> Task:
    """The task of ``schedule``'s run due at ``due`` (the same whoever builds it)."""
    options = TaskOptions.from_metadata(schedule.queue_name, schedule.metadata)
    return options.build_task(
        schedule.func,
        schedule.args,
        schedule.kwargs,
        task_id=run_task_id(schedule.id, due),
        metadata={"schedule_id": schedule.id, "due": due.isoformat(), "fire": fire},
        now=now,
    )
