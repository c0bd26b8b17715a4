"""The reaper: what every worker repairs in the bucket between its claims.

One pass (``Reaper.maintain``, three listings) requeues dead leases, expires pending tasks past
their ``expires_at``, deletes the left-over entries of final tasks and of deleted tasks, repairs
a pending-again record whose entry hint is missing, and gives an entry to a task a crash inside
``enqueue`` left without one (docs/architecture.md, "Transitions"). Each repair waits until the
same state was seen unchanged for a while on this process's monotonic clock (``_Watch``): no
decision compares wall clocks of different machines.

A requeue or an expiry is a transition this pass applies, so the pass logs its event (as the
seed API's ``requeue_expired`` and ``cleanup_expired_tasks``, which run those steps alone):
whoever applies a transition writes its event.

One object never ends a pass: whatever goes wrong with one object (it will not parse, it is
nested too deep for the parser, a check no one foresaw) is reported in
``Maintenance.unreadable`` and the pass goes on. Only storage being unavailable ends a pass.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..gathering import bounded_gather
from ..models import Task, TaskStatus
from . import lifecycle
from .errors import (
    AuthenticationError,
    BackendUnavailableError,
    BucketNotFoundError,
    ConflictError,
    CorruptObjectError,
    ReadOnlyError,
    UnreadableObject,
)
from .index import ResultIndex, queue_entry_index, task_index
from .layout import Layout
from .lifecycle import NAME_WRITE_GAP_S, Transition
from .listing import READ_CONCURRENCY
from .storeapi import ObjectInfo

if TYPE_CHECKING:
    from .queue import AsyncGCSQueue

log = logging.getLogger(__name__)

REPAIR_GRACE_SECONDS = 30.0
"""A repair (a missing entry, a stale hint, an entry without task) waits until the same state
was seen this long."""
LEASE_MARGIN_S = 2.0
"""A lease is dead when its record is unchanged for its lease length plus this margin."""

SYSTEMIC = (
    BackendUnavailableError,
    AuthenticationError,
    BucketNotFoundError,
    ReadOnlyError,
    MemoryError,
)
"""Failures about storage or this process, not about one object: they end a reaper pass or a
claim pass (the caller retries later); every other failure is reported against the object and
the pass goes on."""


@dataclass
class Maintenance:
    """What one ``maintain`` pass did (each list holds task ids).

    ``by`` names who makes the pass (a worker's id; None: the queue's ``worker_id``): it is
    the applier named in the requeue message and in the events of the pass's transitions.
    """

    by: str | None = None
    requeued: list[tuple[str, Transition]] = field(default_factory=list)
    expired: list[tuple[str, Transition]] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    stale_entries: int = 0
    stale_records: int = 0  # pending records of tasks that are gone
    # Objects a step could not use (a record or task that will not parse, a task naming an
    # impossible queue): reported here and skipped; the rest of the pass goes on.
    unreadable: list[UnreadableObject] = field(default_factory=list)


class _Watch:
    """Observations on this process's monotonic clock: ``(key, version)`` first seen when.

    ``held(key, version, seconds)`` is True once the same version of ``key`` was seen for at
    least ``seconds``; a new version restarts the count. Nothing here reads a wall clock.
    """

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self._monotonic = monotonic
        self._seen: dict[str, tuple[object, float]] = {}

    def held(self, key: str, version: object, seconds: float) -> bool:
        now = self._monotonic()
        seen = self._seen.get(key)
        if seen is None or seen[0] != version:
            self._seen[key] = (version, now)
            return seconds <= 0
        return now - seen[1] >= seconds

    def keep_only(self, keys: Iterable[str]) -> None:
        """Forget everything not in ``keys`` (objects that are gone or moved on)."""
        alive = set(keys)
        for key in [k for k in self._seen if k not in alive]:
            del self._seen[key]


async def guarded(report: Maintenance, key: str, step: Awaitable[None]) -> None:
    """Run one step about one object; whatever goes wrong with that object is reported, never
    the end of the pass (only storage being unavailable is)."""
    try:
        await step
    except SYSTEMIC:
        raise
    except ConflictError:
        return  # the object moved on meanwhile: the next pass sees its new state
    except Exception as exc:
        reason = exc.reason if isinstance(exc, CorruptObjectError) else _describe(exc)
        log.warning("reaper skipped %s: %s", key, reason)
        report.unreadable.append(UnreadableObject(key, reason))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply to parse"
    return f"{type(exc).__name__}: {exc}"[:300]


class Reaper:
    """The reaper of one queue store (a worker runs a pass every few seconds)."""

    def __init__(self, queue: AsyncGCSQueue) -> None:
        self.queue = queue
        self.layout = queue.layout

        # The queue's clock at each call (a caller may replace it).
        def monotonic() -> float:
            return queue.clock.monotonic()

        # One watch per kind of repair, so that a step run alone forgets only its own.
        self._leases = _Watch(monotonic)
        self._stale = _Watch(monotonic)
        self._hints = _Watch(monotonic)
        self._orphans = _Watch(monotonic)
        self._dangling = _Watch(monotonic)

    async def maintain(
        self, *, grace_seconds: float = REPAIR_GRACE_SECONDS, by: str | None = None
    ) -> Maintenance:
        """One pass over three listings (tasks, entries, records), made by ``by`` (see
        ``Maintenance``); see the module docstring."""
        q = self.queue
        tasks, entries, records = await asyncio.gather(
            q._list(self.layout.tasks), q._list_entries(self.layout.queues), q._records()
        )
        report = Maintenance(by=by)
        entry_by_id: dict[str, ObjectInfo] = {}
        for info in entries:
            entry_by_id.setdefault(Layout.name_of(info.key), info)
        await self.requeue_dead(records, report)
        await self._repair_entries(records, entry_by_id, grace_seconds, report)
        await self._repair_tasks(tasks, records, entry_by_id, grace_seconds, report)
        await self.expire_waiting(tasks, records, report)
        await self._drop_dangling(tasks, records, entries, grace_seconds, report)
        return report

    # -- dead leases --------------------------------------------------------------------------

    async def requeue_dead(self, records: Mapping[str, ResultIndex], report: Maintenance) -> None:
        """Requeue the running records whose generation stayed the same for a whole lease."""
        watched: list[str] = []
        dead: list[tuple[str, ResultIndex]] = []
        for task_id, rec in records.items():
            if rec.state == TaskStatus.RUNNING:
                watched.append(task_id)
                lease = lifecycle.lease_or(rec.lease_s, self.queue.lease_seconds) + LEASE_MARGIN_S
                if self._leases.held(task_id, rec.generation, lease):
                    dead.append((task_id, rec))
        self._leases.keep_only(watched)
        await bounded_gather(
            dead,
            lambda item: guarded(
                report, self.layout.result(item[0]), self._requeue(item[0], item[1], report)
            ),
            limit=READ_CONCURRENCY,
        )

    async def _requeue(self, task_id: str, listed: ResultIndex, report: Maintenance) -> None:
        """A dead lease: back to pending (CAS on the generation seen unchanged)."""
        q = self.queue
        record = await q.get_record(task_id)
        if record is None or record.generation != listed.generation or not record.lease_owner:
            return  # renewed or finished since the listing
        transition = lifecycle.requeue(record, reaper=self._applier(report), now=q.clock.now())
        await q._write_record(transition.record, listed.generation)
        # Applied once the record landed, whatever becomes of the entry rewrite below.
        self._applied(transition, report)
        task = await q.reader.read(self.layout.task(task_id), Task)
        if task is not None:
            await q._rewrite_entry(task, transition.record)
        report.requeued.append((task_id, transition))

    # -- entries: final tasks' left-overs, stale hints ----------------------------------------

    async def _repair_entries(
        self,
        records: Mapping[str, ResultIndex],
        entry_by_id: Mapping[str, ObjectInfo],
        grace_seconds: float,
        report: Maintenance,
    ) -> None:
        stale: list[str] = []
        hints: list[str] = []
        for task_id, rec in records.items():
            entry = entry_by_id.get(task_id)
            if rec.state.is_final and entry is not None:
                # The finisher deletes its entry right after the outcome: one still there a
                # few seconds later was left by a crash.
                stale.append(task_id)
                if self._stale.held(task_id, rec.generation, NAME_WRITE_GAP_S * 2):
                    await guarded(report, entry.key, self._delete_stale(entry, report))
            elif rec.state == TaskStatus.PENDING:
                hint = queue_entry_index(entry, self.layout) if entry is not None else None
                if hint is None or hint.record_generation != rec.generation:
                    hints.append(task_id)
                    if self._hints.held(task_id, rec.generation, grace_seconds):
                        await guarded(
                            report,
                            self.layout.result(task_id),
                            self._repair_hint(task_id, entry, report),
                        )
        self._stale.keep_only(stale)
        self._hints.keep_only(hints)

    async def _delete_stale(self, entry: ObjectInfo, report: Maintenance) -> None:
        if await self.queue._delete(entry.key, entry.generation):
            report.stale_entries += 1

    async def _repair_hint(
        self, task_id: str, entry: ObjectInfo | None, report: Maintenance
    ) -> None:
        """A pending-again record whose entry does not name it (a crash between the two)."""
        q = self.queue
        task = await q.reader.read(self.layout.task(task_id), Task)
        record = await q.get_record(task_id)
        if task is not None and record is not None and not record.is_final:
            await q._write_entry(task, record, entry.generation if entry else 0)
            report.repaired.append(task_id)

    # -- tasks: a crash inside enqueue, expiry ------------------------------------------------

    async def _repair_tasks(
        self,
        tasks: Iterable[ObjectInfo],
        records: Mapping[str, ResultIndex],
        entry_by_id: Mapping[str, ObjectInfo],
        grace_seconds: float,
        report: Maintenance,
    ) -> None:
        orphans: list[str] = []
        for info in tasks:
            task_id = Layout.name_of(info.key)
            if task_id not in records and task_id not in entry_by_id:
                orphans.append(task_id)
                if self._orphans.held(task_id, info.generation, grace_seconds):
                    await guarded(report, info.key, self._repair_orphan(info, report))
        self._orphans.keep_only(orphans)

    async def _repair_orphan(self, info: ObjectInfo, report: Maintenance) -> None:
        """A task without entry or record: a crash inside ``enqueue``."""
        task = await self.queue.reader.read(info.key, Task)
        if task is not None:
            log.info("re-creating the missing queue entry of pending task %s", task.id)
            await self.queue._write_entry(task, None, 0)
            report.repaired.append(task.id)

    async def expire_waiting(
        self,
        tasks: Iterable[ObjectInfo],
        records: Mapping[str, ResultIndex],
        report: Maintenance,
    ) -> None:
        """Expire the waiting tasks whose ``expires_at`` (from the listing) has passed."""
        now = self.queue.clock.now()
        for info in tasks:
            task_id = Layout.name_of(info.key)
            found = records.get(task_id)
            idx = task_index(info)
            waiting = found is None or found.state == TaskStatus.PENDING
            if waiting and idx is not None and idx.expires_at is not None and idx.expires_at <= now:
                await guarded(report, info.key, self._expire(task_id, report))

    async def _expire(self, task_id: str, report: Maintenance) -> None:
        q = self.queue
        task = await q.get_task(task_id)
        if task is None:
            return
        try:
            transition = lifecycle.expire(task, task.record, now=q.clock.now())
        except lifecycle.TransitionError:
            return  # claimed or changed meanwhile
        await q.apply(task, transition)
        self._applied(transition, report)
        report.expired.append((task_id, transition))

    # -- the events of what a pass applied ----------------------------------------------------

    def _applier(self, report: Maintenance) -> str:
        return report.by or self.queue.worker_id

    def _applied(self, transition: Transition, report: Maintenance) -> None:
        """Log the event of a transition this pass applied (the queue's event log; a queue
        built without one records none)."""
        events = self.queue.events
        if events is not None:
            events.record_transition(
                transition, at=self.queue.clock.now(), worker_id=self._applier(report)
            )

    # -- entries that outlived their task -----------------------------------------------------

    async def _drop_dangling(
        self,
        tasks: Iterable[ObjectInfo],
        records: Mapping[str, ResultIndex],
        entries: Iterable[ObjectInfo],
        grace_seconds: float,
        report: Maintenance,
    ) -> None:
        """Delete entries whose task is gone and whose record is gone or not running (an
        operator delete that crossed a transition's entry rewrite), once seen so for the grace
        period; conditioned on the entry's generation, so an entry rewritten meanwhile stays."""
        task_ids = {Layout.name_of(info.key) for info in tasks}
        dangling: list[str] = []
        for entry in entries:
            task_id = Layout.name_of(entry.key)
            record = records.get(task_id)
            if task_id in task_ids or (record is not None and record.state == TaskStatus.RUNNING):
                continue
            dangling.append(entry.key)
            if self._dangling.held(entry.key, entry.generation, grace_seconds):
                await guarded(report, entry.key, self._delete_stale(entry, report))
        # A pending record of a task that is gone can never run (a claim reads the task): a
        # claim from an old listing whose undo failed, requeued since. A running one is left to
        # its lease; a final one is an outcome, kept until its retention.
        for task_id, rec in records.items():
            if task_id in task_ids or rec.state != TaskStatus.PENDING:
                continue
            key = self.layout.result(task_id)
            dangling.append(key)
            if self._dangling.held(key, rec.generation, grace_seconds):
                await guarded(report, key, self._drop_record(key, rec.generation, report))
        self._dangling.keep_only(dangling)

    async def _drop_record(self, key: str, generation: int, report: Maintenance) -> None:
        if await self.queue._delete(key, generation):
            report.stale_records += 1
