"""The reaper: what every worker repairs in the bucket between its claims.

One pass (``Reaper.maintain``, three listings) requeues dead leases, expires pending tasks past
their ``expires_at``, deletes the left-over entries of final tasks and of deleted tasks, repairs
a pending-again record whose entry hint is missing, and gives an entry to a task a crash inside
``enqueue`` left without one (docs/architecture.md, "Transitions"). Each repair waits until the
same state was seen unchanged for a while on this process's monotonic clock (``_Watch``): no
decision compares wall clocks of different machines.

It also deletes the operators' cancel requests (``requests/{id}.json``) that no one will act
on: an operator withdraws its own when its action ends, but one whose process died leaves it
behind, and nothing else ever removed it. ``requests/`` is a fourth listing, made first in a
pass when due: every pass while requests are there, at most once per
``CANCEL_REQUEST_BOUND_S`` while it is empty (it almost always is).

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
CANCEL_REQUEST_BOUND_S = 30.0
"""The longest an operator's action waits on a cancel request (``runtime/operator.py`` then
gives up and withdraws it): a request seen unchanged for this long was left by an operator
that is gone, and is deleted even though its task still runs."""

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
    stale_requests: int = 0  # cancel requests no one will act on (see ``_drop_requests``)
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
        self._requests = _Watch(monotonic)
        # When ``requests/`` is next listed (monotonic; None: at the next pass).
        self._requests_due: float | None = None

    async def maintain(
        self, *, grace_seconds: float = REPAIR_GRACE_SECONDS, by: str | None = None
    ) -> Maintenance:
        """One pass over three listings (tasks, entries, records), and ``requests/`` when
        due, made by ``by`` (see ``Maintenance``); see the module docstring."""
        q = self.queue
        # Before the other listings: what they show of a request's task is then later than
        # the request itself (``_drop_requests`` relies on it).
        requests = await self._listed_requests()
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
        if requests is not None:
            await self._drop_requests(requests, tasks, records, report)
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

    # -- cancel requests no one will act on ---------------------------------------------------

    async def _listed_requests(self) -> list[ObjectInfo] | None:
        """The cancel requests, when ``requests/`` is due to be listed (None: not this pass).
        While some are there it is listed every pass; empty, once per
        ``CANCEL_REQUEST_BOUND_S`` (a request is never older than that when it matters)."""
        now = self.queue.clock.monotonic()
        if self._requests_due is not None and now < self._requests_due:
            return None
        found = await self.queue._list(self.layout.requests)
        self._requests_due = None if found else now + CANCEL_REQUEST_BOUND_S
        return found

    async def _drop_requests(
        self,
        requests: Iterable[ObjectInfo],
        tasks: Iterable[ObjectInfo],
        records: Mapping[str, ResultIndex],
        report: Maintenance,
    ) -> None:
        """Delete the cancel requests no one will act on, each on the generation listed (a
        request written since, for a later run, stays):

        - the run it names is over: its task is gone, or has no running record. ``requests/``
          was listed before the tasks and records, so the request was there before the run
          was seen over; no later run honours it (it names its run), and the operator who
          wrote it has stopped waiting (it re-reads the task and gives up once its status
          changed). Deleted once seen so for ``NAME_WRITE_GAP_S * 2``, which leaves the
          operator time to withdraw its own and keeps the delete a second from its creation;
        - whatever its task, seen unchanged for ``CANCEL_REQUEST_BOUND_S``: its operator has
          given up or died (a holder that renews reads a request within a third of its lease
          and cancels; a task whose holder stopped renewing is requeued, which ends the run).
        """
        task_ids = {Layout.name_of(info.key) for info in tasks}
        listed: list[str] = []
        for info in requests:
            task_id = Layout.name_of(info.key)
            record = records.get(task_id)
            running = record is not None and record.state == TaskStatus.RUNNING
            over = task_id not in task_ids or not running
            listed.append(info.key)
            hold = NAME_WRITE_GAP_S * 2 if over else CANCEL_REQUEST_BOUND_S
            if self._requests.held(info.key, info.generation, hold):
                await guarded(report, info.key, self._drop_request(info, report))
        self._requests.keep_only(listed)

    async def _drop_request(self, info: ObjectInfo, report: Maintenance) -> None:
        if await self.queue._delete(info.key, info.generation):
            log.info("deleted cancel request %s: no one will act on it", info.key)
            report.stale_requests += 1
