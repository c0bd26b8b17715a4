"""The task queue on GCS: atomic, fenced claims that mutate no object name twice a second.

The objects, the transitions and the order of writes are those of docs/architecture.md
("Layout of a bucket", "Transitions"); the rules of each transition live in
``backend/lifecycle.py``. This module keeps only the GCS write order:

- ``enqueue``: (1) ``tasks/{id}.json`` create-only (2) ``queues/{q}/{id}.json`` create-only.
- a claim: (1) the state record ``results/{id}.json``, create-only when the task has none, else
  a compare-and-swap on the generation the entry's hint names. Exactly one claimer wins, and
  logs the claim's event (``lifecycle.event_of``) with its process's next event batch.
- an outcome of the lease holder (complete, fail, retry, release): (1) the record CAS on the
  generation the holder itself last wrote (the fence) (2) final: entry delete; back to pending:
  the entry's hint rewritten (record generation, run_at) so claimers see it in their next
  listing.
- an operator's cancel of a running task whose holder renews as often as GCS allows (every
  second, lease 3 s): (1) ``requests/{id}.json`` create-only, naming the run (attempt, holder);
  the holder reads it (one GET) before each renewal and writes the cancel instead of the
  renewal, a compare-and-swap on its own last generation (2) the operator deletes the request
  on its generation once the task moved on.
- ``maintain`` (each worker's reaper): dead leases requeued, final tasks' left-over entries
  deleted, pending-again records whose entry hint is missing repaired, tasks left without an
  entry by a crash inside ``enqueue`` given one, pending tasks past ``expires_at`` expired.

A writer never writes a name again within ``NAME_WRITE_GAP_S`` of its own last write of it; no
decision depends on comparing wall clocks of different machines (leases are judged dead by an
unchanged generation on the observer's monotonic clock).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import secrets
import socket
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from ..clock import SYSTEM_CLOCK, Clock
from ..models import SCHEMA_VERSION, ResultStatus, Task, TaskResult, TaskStatus
from . import lifecycle
from .bridge import SyncBridge
from .claims import (
    BACKOFF_S,
    BEST_FEW,
    LOSSES_BEFORE_BACKOFF,
    MAX_PASS_AGE_S,
    Candidate,
    ClaimMemory,
    Listed,
    pick,
)
from .errors import (
    ConflictError,
    CorruptObjectError,
    ObjectNotFoundError,
    StorageError,
)
from .events import AsyncGCSEventStorage
from .index import (
    PausedIndex,
    ResultIndex,
    paused_index,
    paused_metadata,
    queue_entry_metadata,
    result_index,
    result_metadata,
    task_index,
    task_metadata,
)
from .layout import Layout, check_id
from .lifecycle import NAME_WRITE_GAP_S, Transition, check_lease
from .listing import MAX_NESTING, BodyReader, ItemList, StoreBase, layout_name, too_deep
from .reaper import REPAIR_GRACE_SECONDS, SYSTEMIC, Maintenance, Reaper
from .storeapi import ObjectInfo, ObjectStoreAPI
from .sync import sync_twin

log = logging.getLogger(__name__)

DEFAULT_LEASE_SECONDS = 30.0
POLL_INTERVAL = (0.2, 0.5)
"""Seconds between passes of a waiting ``dequeue`` (random in this range, so workers spread)."""
PAUSED_MAX_AGE_S = 1.0
"""A claim pass reuses the last listing of ``paused/`` while it is younger than this."""
MAX_ENTRIES_NOTED = 10_000
"""Entry generations remembered for the final outcome's delete (beyond: one listing)."""
UNDO_ATTEMPTS = 6
"""Tries to undo a claim of a task that cannot run (about a minute of backoff in all)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def default_worker_id() -> str:
    """``host-pid-xxxxxx``: readable in the console, unique across restarts, a safe key."""
    host = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname())
    return f"{host.strip('-')[:40] or 'worker'}-{os.getpid()}-{secrets.token_hex(3)}"


def _entry_body(task_id: str, queue: str) -> bytes:
    # The nonce makes every write's bytes unique: ObjectStore settles a 412 after a lost answer
    # by comparing the stored bytes with its own.
    body = {
        "schema_version": SCHEMA_VERSION,
        "task_id": task_id,
        "queue": queue,
        "nonce": secrets.token_hex(8),
    }
    return json.dumps(body, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """An operator's request that the lease holder of one run of a task cancel it
    (``requests/{task_id}.json``).

    With a short lease the holder rewrites the state record about once a second, as often as
    GCS takes a mutation of one name: an operator's compare-and-swap of that record can lose
    to every renewal. The holder reads this request before each renewal and, when it names
    the run it holds (``attempt`` and ``worker_id``), writes the cancel itself, fenced like
    any renewal. A request naming an older run is ignored, so one left behind by a crashed
    operator never cancels a later run.
    """

    task_id: str
    attempt: int
    worker_id: str
    actor: str
    generation: int | None = None

    def to_json(self) -> bytes:
        body = {
            "schema_version": SCHEMA_VERSION,
            "action": "cancel",
            "task_id": self.task_id,
            "attempt": self.attempt,
            "worker_id": self.worker_id,
            "actor": self.actor,
            # Unique bytes: ObjectStore settles a 412 after a lost answer by comparing them.
            "nonce": secrets.token_hex(8),
        }
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def parse(cls, key: str, data: bytes, generation: int) -> CancelRequest:
        """The request stored at ``key``; ``CorruptObjectError`` when it is not one."""
        try:
            body = json.loads(data)
            request = cls(
                task_id=str(body["task_id"]),
                attempt=int(body["attempt"]),
                worker_id=str(body["worker_id"]),
                actor=str(body["actor"]),
                generation=generation,
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise CorruptObjectError(key, f"not a cancel request ({exc!r})") from None
        if body.get("action") != "cancel":
            raise CorruptObjectError(key, f"unknown request action {body.get('action')!r}")
        return request

    def names(self, record: TaskResult) -> bool:
        """True when this request is for the run ``record`` describes."""
        return record.attempt == self.attempt and record.lease_owner == self.worker_id

    def honoured_in(self, record: TaskResult | None) -> bool:
        """True when ``record`` is the cancel this request asked for (of the run it named)."""
        return (
            record is not None
            and record.status == ResultStatus.CANCELLED
            and record.attempt == self.attempt
            and record.error == lifecycle.cancelled_by(self.actor)
        )


class CancelledOnRequest(ConflictError):
    """The lease holder found an operator's cancel request and cancelled its run itself: the
    lease is no longer its own (a ``ConflictError``, as for any lost lease)."""


class AsyncGCSQueue(StoreBase):
    """Tasks in named queues, claimed atomically by workers that hold a renewable lease."""

    def __init__(
        self,
        store: ObjectStoreAPI,
        layout: Layout,
        reader: BodyReader,
        bridge: SyncBridge,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        worker_id: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
        events: AsyncGCSEventStorage | None = None,
    ) -> None:
        super().__init__(store, layout, reader, bridge)
        self.lease_seconds = check_lease(lease_seconds)
        self.worker_id = worker_id or default_worker_id()
        self.clock = clock
        # Where a claim's event goes (the backend's event log; None: no events recorded).
        self.events = events
        # Names this process wrote, and when (monotonic): the per-name gap is kept from these.
        self._written: OrderedDict[str, float] = OrderedDict()
        # Entries' generations as this process last saw them (claimed from, or wrote): a
        # final outcome deletes its entry on that generation without listing it first.
        self._entries: OrderedDict[str, int] = OrderedDict()
        # The clock is looked up at each call: tests and callers may replace ``self.clock``.
        self.claims = ClaimMemory(layout, lambda: self.clock.monotonic())
        self.reaper = Reaper(self)
        self._paused: tuple[float, dict[str, PausedIndex]] | None = None

    # -- the per-name gap ---------------------------------------------------------------------

    async def _gap(self, key: str) -> None:
        """Wait until ``NAME_WRITE_GAP_S`` has passed since this process last wrote ``key``."""
        wrote = self._written.get(key)
        if wrote is not None:
            wait = wrote + NAME_WRITE_GAP_S - self.clock.monotonic()
            if wait > 0:
                await self.clock.sleep(wait)

    def _wrote(self, key: str) -> None:
        now = self.clock.monotonic()
        self._written[key] = now
        self._written.move_to_end(key)
        while self._written:
            oldest, at = next(iter(self._written.items()))
            if now - at <= NAME_WRITE_GAP_S:
                break
            del self._written[oldest]

    async def _write_record(self, record: TaskResult, expected: int) -> TaskResult:
        """Write a state record: create-only (``expected=0``) or CAS on ``expected``."""
        key = self.layout.result(record.task_id)
        await self._gap(key)
        try:
            await self.reader.write(
                key, record, result_metadata(record), if_generation_match=expected
            )
        finally:
            self._wrote(key)
        return record

    async def _write_entry(
        self, task: Task, record: TaskResult | None, expected: int | None
    ) -> ObjectInfo | None:
        """Create (``expected`` 0 or None) or rewrite the entry's hint; never fatal.

        A failed hint delays a claim (the reaper repairs it), it never loses a task.
        """
        key = self.layout.queue_entry(task.queue_name, task.id)
        await self._gap(key)
        try:
            info = await self.store.write(
                key,
                _entry_body(task.id, task.queue_name),
                metadata=queue_entry_metadata(task, record),
                if_generation_match=expected or 0,
            )
            self._note_entry(task.id, info.generation)
            return info
        except ConflictError:
            if not expected:
                return None  # it exists: fine for a create
            log.info("queue entry %s changed meanwhile; the reaper repairs its hint", key)
            return None
        except StorageError as exc:
            log.warning("queue entry %s not written (%s); the reaper repairs it", key, exc)
            return None
        finally:
            self._wrote(key)

    async def _delete(self, key: str, generation: int) -> bool:
        """Delete ``key`` at ``generation``, the one the caller saw (a mutation too: the
        per-name gap applies). ``ConflictError`` when it changed since; False when absent."""
        await self._gap(key)
        try:
            return await self.reader.delete(key, if_generation_match=generation)
        finally:
            self._wrote(key)

    def _note_entry(self, task_id: str, generation: int) -> None:
        """Remember the generation of an entry this process claimed from or wrote."""
        self._entries[task_id] = generation
        self._entries.move_to_end(task_id)
        while len(self._entries) > MAX_ENTRIES_NOTED:
            self._entries.popitem(last=False)

    async def _drop_entry(self, queue: str, task_id: str) -> None:
        """Delete a final task's entry on the generation last seen of it; never fatal."""
        key = self.layout.queue_entry(queue, task_id)
        try:
            generation = self._entries.pop(task_id, None)
            if generation is None:
                info = await self._stat(key)
                if info is None:
                    return
                generation = info.generation
            await self._delete(key, generation)
        except ConflictError:
            log.info("queue entry %s changed meanwhile; the reaper deletes it", key)
        except StorageError as exc:
            # Harmless if it stays: the reaper deletes entries of final tasks.
            log.warning("could not delete queue entry %s: %s", key, exc)

    # -- enqueue and read ---------------------------------------------------------------------

    async def enqueue(self, task: Task) -> str:
        """Store a PENDING task in its queue; return its id.

        ``ConflictError`` when a different task with this id exists already.
        """
        task_key = self.layout.task(task.id)
        self.layout.queue_entry(task.queue_name, task.id)
        self._check_writable("enqueue", task_key)
        if task.status != TaskStatus.PENDING:
            raise ValueError(
                f"task {task.id} is {task.status.value}: only a pending task is enqueued"
            )
        if too_deep([task.args, task.kwargs, task.metadata], MAX_NESTING):
            # Stored, it could never be read back (parse_model refuses such bodies).
            raise ValueError(
                f"task {task.id}: its args, kwargs or metadata nest lists and dicts more than "
                f"{MAX_NESTING - 1} levels deep; such a body could not be read back"
            )
        try:
            await self.reader.write(task_key, task, task_metadata(task), if_generation_match=0)
        except ConflictError as exc:
            raise ConflictError(task_key, 0, f"a task with id {task.id} exists already") from exc
        self._wrote(task_key)
        await self._write_entry(task, None, 0)
        return task.id

    async def get_record(self, task_id: str) -> TaskResult | None:
        """The task's state record (``results/{id}.json``), or None when it has none."""
        return await self.reader.read(self.layout.result(task_id), TaskResult)

    async def get_task(self, task_id: str) -> Task | None:
        """The task with its current status, or None; ``CorruptObjectError`` when unreadable.

        Two GETs in parallel: the definition and the state record.
        """
        task, record = await asyncio.gather(
            self.reader.read(self.layout.task(task_id), Task), self.get_record(task_id)
        )
        return None if task is None else lifecycle.overlay(task, record)

    async def get_queue_size(self, queue_name: str) -> int:
        """Tasks waiting in the queue (delayed ones included, running ones not)."""
        entries, records = await asyncio.gather(
            self._list_entries(self.layout.queue(queue_name)), self._records()
        )

        def waiting(info: ObjectInfo) -> bool:
            record = records.get(Layout.name_of(info.key))
            return record is None or record.state == TaskStatus.PENDING

        return sum(1 for info in entries if waiting(info))

    async def statuses(self) -> dict[str, TaskStatus]:
        """The status of every task, by id, from two listings (tasks and state records) and no
        body reads."""
        infos, records = await asyncio.gather(self._list(self.layout.tasks), self._records())
        out: dict[str, TaskStatus] = {}
        for info in infos:
            task_id = Layout.name_of(info.key)
            record = records.get(task_id)
            out[task_id] = record.state if record is not None else TaskStatus.PENDING
        return out

    async def list_tasks(
        self,
        queue_name: str | None = None,
        status: TaskStatus | str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> ItemList[Task]:
        """Tasks oldest first (by ``created_at``), with their current status.

        Filtered on listing metadata (tasks' and state records'); only the bodies of the page
        asked for (``offset``, ``limit``) are read. Unparseable objects are in ``.unreadable``.
        """
        if queue_name is not None:
            check_id(queue_name, "queue name")
        wanted = TaskStatus(status) if status is not None else None
        if offset < 0 or (limit is not None and limit < 0):
            raise ValueError("offset and limit must not be negative")
        infos, records = await asyncio.gather(self._list(self.layout.tasks), self._records())
        rows: list[tuple[datetime, str, ObjectInfo]] = []
        unindexed: list[ObjectInfo] = []
        for info in infos:
            idx = task_index(info)
            rec = records.get(Layout.name_of(info.key))
            state = rec.state if rec is not None else TaskStatus.PENDING
            if idx is None:
                unindexed.append(info)
            elif (queue_name is None or idx.queue == queue_name) and wanted in (None, state):
                rows.append((idx.created_at or _EPOCH, info.key, info))
        rows.sort(key=lambda row: (row[0], row[1]))
        page = [info for _, _, info in rows[offset : None if limit is None else offset + limit]]
        tasks = await self.reader.read_listed([*page, *unindexed], Task)
        by_id = {t.id: t for t in tasks}
        record_infos = [
            ObjectInfo(self.layout.result(i), r.generation, 0, None, {})
            for i, r in records.items()
            if i in by_id
        ]
        read = await self.reader.read_listed(record_infos, TaskResult)
        rec_by_id = {r.task_id: r for r in read}
        out: ItemList[Task] = ItemList(unreadable=[*tasks.unreadable, *read.unreadable])
        views = [lifecycle.overlay(t, rec_by_id.get(t.id)) for t in tasks]
        views.sort(key=lambda t: (t.created_at, t.id))
        for view in views:
            if (queue_name is None or view.queue_name == queue_name) and wanted in (
                None,
                view.status,
            ):
                out.append(view)
        if unindexed:
            return ItemList(
                out[offset : None if limit is None else offset + limit], unreadable=out.unreadable
            )
        return out

    # -- paused queues ------------------------------------------------------------------------

    async def paused_queues(self, *, max_age_s: float = 0.0) -> dict[str, PausedIndex]:
        """The paused queues (one listing of ``paused/``), by name; with ``max_age_s``, the
        answer of a listing at most that old when there is one."""
        if self._paused is not None and self.clock.monotonic() - self._paused[0] < max_age_s:
            return dict(self._paused[1])
        out: dict[str, PausedIndex] = {}
        for info in await self.store.list(self.layout.paused):
            if layout_name(self.layout.paused, info.key) is None:
                continue
            idx = paused_index(info)
            if idx is not None:
                out[idx.queue] = idx
        self._paused = (self.clock.monotonic(), out)
        return dict(out)

    async def pause_queue(self, queue_name: str, *, actor: str) -> bool:
        """Stop workers claiming from ``queue_name``; False when it was paused already."""
        key = self.layout.paused_queue(queue_name)
        self._check_writable("pause queue", key)
        await self._gap(key)
        try:
            await self.store.write(
                key,
                json.dumps({"queue": queue_name, "actor": actor}).encode(),
                metadata=paused_metadata(actor, self.clock.now()),
                if_generation_match=0,
            )
        except ConflictError:
            return False
        finally:
            self._wrote(key)
            self._paused = None  # this process's next pass sees its own pause at once
        return True

    async def resume_queue(self, queue_name: str, *, generation: int | None = None) -> bool:
        """Let workers claim from ``queue_name`` again; False when it was not paused.

        Deletes ``paused/{queue}.json`` on ``generation`` (the pause the caller saw; without
        it, the one listed now): ``ConflictError`` when it was paused again since, so a resume
        retried after a lost answer never removes someone else's newer pause.
        """
        key = self.layout.paused_queue(queue_name)
        self._check_writable("resume queue", key)
        if generation is None:
            info = await self._stat(key)
            if info is None:
                return False
            generation = info.generation
        try:
            return await self._delete(key, generation)
        finally:
            self._paused = None

    # -- claims -------------------------------------------------------------------------------

    async def dequeue(
        self,
        queues: Sequence[str] | str,
        timeout: float | None = None,
        *,
        worker_id: str | None = None,
        lease_seconds: float | None = None,
    ) -> Task | None:
        """Claim the best ready task of ``queues`` (highest priority, then oldest).

        The task returned is RUNNING, owned by ``worker_id`` under a lease of
        ``lease_seconds`` (renew it with ``renew_lease``); exactly one worker gets each task.
        Delayed, expired and paused-queue tasks are never handed out. ``timeout=None`` looks
        once and returns None when there is nothing; a positive ``timeout`` waits up to that
        many seconds. The claim's ``dequeued`` event goes out with the backend's next event
        batch (flushed when the backend closes).
        """
        names = [queues] if isinstance(queues, str) else list(dict.fromkeys(queues))
        if not names:
            raise ValueError("dequeue needs at least one queue name")
        for name in names:
            self.layout.queue(name)
        self._check_writable("dequeue", self.layout.queue(names[0]))
        # A worker id is also the key of its heartbeat (workers/{id}.json): same rules as ids.
        worker = check_id(worker_id or self.worker_id, "worker id")
        lease = self.lease_seconds if lease_seconds is None else check_lease(lease_seconds)
        deadline = None if not timeout or timeout <= 0 else self.clock.monotonic() + timeout
        while True:
            task = await self.claim_pass(names, worker, lease)
            if task is not None or deadline is None:
                return task
            remaining = deadline - self.clock.monotonic()
            if remaining <= 0:
                return None
            await self.clock.sleep(min(remaining, random.uniform(*POLL_INTERVAL)))

    async def claim_pass(
        self,
        queues: Sequence[str],
        worker: str,
        lease: float,
        *,
        paused: Iterable[str] | None = None,
    ) -> Task | None:
        """One look at ``queues`` (one listing each, and one of ``paused/`` at most once a
        second unless the caller passes what it listed, ``()`` when nothing is paused): claim
        the best candidate, or None."""
        self._check_writable("claim", self.layout.results)
        if paused is None:
            paused = await self.paused_queues(max_age_s=PAUSED_MAX_AGE_S)
        skip = set(paused)
        active = [q for q in queues if q not in skip]
        if not active:
            return None
        ranked = await self._ranked(tuple(active))
        # The head first while this process wins its races (strict order for a lone worker);
        # once it has lost one lately, or after a loss in this pass, a random one of the best
        # few, so that workers do not all race for the head, and again for the next one.
        spread = self.claims.contended()
        lost = self.claims.races_lost
        # A pass works through one listing: once it is older than MAX_PASS_AGE_S, what it
        # names may have been deleted or claimed meanwhile; the next pass lists again.
        while self.claims.listing_age() < MAX_PASS_AGE_S:
            # Only the head is wanted unless the pick is spread over the best few.
            ready = self.claims.ready(ranked, self.clock.now(), limit=BEST_FEW if spread else 1)
            if not ready:
                return None
            entry = ready[pick(ready, spread, self.claims.cursor)]
            cand = entry.candidate(self.layout)
            if cand is None:
                continue  # not ours to claim: the reaper reports or repairs it
            # Tried once, won or lost: skipped until its entry changes (or a lease passes).
            self.claims.skip(entry, lease)
            try:
                task = await self._claim(cand, worker, lease)
            except SYSTEMIC:
                raise
            except Exception:
                # One entry no check foresaw never stops the claims of the others.
                log.exception("skipping queue entry %s", cand.info.key)
                task = None
            if task is not None:
                self.claims.won(entry)
                return task
            spread = True
            if self.claims.races_lost - lost >= LOSSES_BEFORE_BACKOFF:
                # Behind the other claimers: let them settle, then look again.
                await self.clock.sleep(random.uniform(*BACKOFF_S))
                ranked = await self._ranked(tuple(active), fresh=True)
                lost = self.claims.races_lost
        return None

    async def _ranked(self, queues: tuple[str, ...], *, fresh: bool = False) -> list[Listed]:
        """The entries of ``queues``, ranked: from a fresh listing, or (unless ``fresh``) from
        the last one if it is recent and still has entries this process has not tried."""
        recent = None if fresh else self.claims.recent(queues)
        if recent is not None:
            return recent
        # The raw listings: the claim memory checks each entry's key once, not every pass.
        listings = await asyncio.gather(*(self.store.list(self.layout.queue(q)) for q in queues))
        self.claims.rank(queues, zip(queues, listings, strict=True))
        return self.claims.ranked()

    async def _claim(self, cand: Candidate, worker: str, lease: float) -> Task | None:
        task_id = cand.index.task_id
        expected = cand.index.record_generation or 0
        record: TaskResult | None = None
        if expected:
            # A pending-again record: its hint names the generation; the body is in the cache
            # when we wrote or read it, else one GET.
            record = self.reader.cache.get(self.layout.result(task_id), expected, TaskResult)
            if record is None:
                try:
                    record = await self.get_record(task_id)
                except CorruptObjectError as exc:
                    log.warning("skipping a task whose state record is unreadable: %s", exc)
                    record = None
                if record is None or record.generation != expected:
                    return None
        if cand.index.func is not None:
            # What the record needs of the task is in the entry: only the winner reads it.
            definition = Task.model_construct(
                id=task_id, func=cand.index.func, queue_name=cand.queue
            )
        else:
            found = await self._definition(cand)
            if found is None:
                return None
            definition = found
        try:
            transition = lifecycle.claim(
                definition, record, worker=worker, lease_s=lease, now=self.clock.now()
            )
        except lifecycle.TransitionError:
            return None
        try:
            await self._write_record(transition.record, expected)
        except ConflictError:
            self.claims.lost_race()
            return None
        self._note_entry(task_id, cand.info.generation)
        # The winner reads the definition (always: an old listing may name a task deleted
        # since, and a create-only claim would re-create its record). A task that is gone,
        # unreadable, or that anything else goes wrong with is not handed out: the claim is
        # undone, so no running record stays behind for a task that cannot run.
        try:
            task = await self._definition(cand)
            view = None if task is None else lifecycle.overlay(task, transition.record)
        except BaseException:
            await self._undo_claim(transition.record)
            raise
        if view is None:
            await self._undo_claim(transition.record)
            return None
        self._record_claim(transition, worker)
        return view

    def _record_claim(self, claimed: Transition, worker: str) -> None:
        """Log a claim's event with the next batch: the claim is applied here, for a worker's
        pass and for ``dequeue`` alike, so its event is written here (never fatal)."""
        assert claimed.record.started_at is not None
        self._log_transition(claimed, worker=worker, at=claimed.record.started_at)

    def _log_transition(
        self,
        transition: Transition,
        *,
        worker: str | None,
        actor: str | None = None,
        at: datetime | None = None,
    ) -> None:
        """Log the event of a transition applied here with the next batch (never fatal)."""
        if self.events is None:
            return
        event = lifecycle.event_of(
            transition, at=at or self.clock.now(), worker_id=worker, actor=actor
        )
        try:
            self.events.record(event)
        except (StorageError, ValueError) as exc:
            log.warning("%s event of %s not recorded: %s", event.event_type, event.task_id, exc)

    async def _undo_claim(self, record: TaskResult) -> None:
        """Delete the record our claim just wrote, on its generation, retried until settled:
        gone (undone), or changed by someone else (an operator's cancel: theirs to keep)."""
        key = self.layout.result(record.task_id)
        assert record.generation is not None
        for attempt in range(UNDO_ATTEMPTS):
            try:
                await self._delete(key, record.generation)
                return
            except ConflictError:
                return  # it moved on: no longer ours to undo
            except StorageError as exc:
                if attempt + 1 == UNDO_ATTEMPTS:
                    # Its lease dies unrenewed; the reaper requeues it, then deletes the
                    # record of a task that is gone.
                    log.warning("claim of %s not undone (%s); the reaper repairs it", key, exc)
                    return
                await self.clock.sleep(min(2.0**attempt, 30.0))

    async def _definition(self, cand: Candidate) -> Task | None:
        """The task of an entry, or None when it is gone, moved or unreadable (the reaper and
        the monitor report those)."""
        try:
            task = await self.reader.read(self.layout.task(cand.index.task_id), Task)
        except CorruptObjectError as exc:
            log.warning("skipping the queue entry of an unreadable task: %s", exc)
            task = None
        if task is None or task.queue_name != cand.queue:
            return None
        return task

    # -- the lease holder's writes ------------------------------------------------------------

    def _held(self, task: Task) -> TaskResult:
        record = task.record
        if record is None or record.generation is None:
            raise ValueError(
                f"task {task.id} carries no state record: only a task returned by dequeue "
                "(or renew_lease) has a lease"
            )
        return record

    async def renew_lease(self, task: Task, lease_seconds: float | None = None) -> Task:
        """Extend the lease of a RUNNING task this worker holds; return the task as stored.

        ``ConflictError`` when the record changed since ``task`` was returned (cancelled,
        requeued after the lease was judged dead): the worker no longer owns it.
        """
        self._check_writable("renew lease", self.layout.result(task.id))
        record = self._held(task)
        lease = self.lease_seconds if lease_seconds is None else check_lease(lease_seconds)
        if task.status != TaskStatus.RUNNING or not record.lease_owner:
            raise ValueError(
                f"task {task.id} is {task.status.value}: only a running task has a lease"
            )
        request = await self._cancel_request(task.id)
        if request is not None and request.names(record):
            await self._cancel_on_request(task, record, request)
        renewed = lifecycle.renew(
            record, worker=record.lease_owner, lease_s=lease, now=self.clock.now()
        )
        await self._fenced(renewed, record, "its lease was lost (cancelled or requeued)")
        return lifecycle.overlay(task, renewed)

    async def _cancel_request(self, task_id: str) -> CancelRequest | None:
        """The operator's cancel request of ``task_id`` (one GET), or None. Never fatal: a
        request that cannot be read now is read at the next renewal, the lease is renewed."""
        key = self.layout.request(task_id)
        try:
            got = await self.store.read(key)
            return CancelRequest.parse(key, got.data, got.generation)
        except ObjectNotFoundError:
            return None
        except StorageError as exc:
            log.warning("cancel request %s not read (%s); renewing the lease", key, exc)
            return None

    async def _cancel_on_request(
        self, task: Task, record: TaskResult, request: CancelRequest
    ) -> None:
        """Apply ``request`` as the holder: the cancel is written instead of the renewal, on
        the holder's own cadence (fenced on its last generation, like a renewal), its event
        logged as the operator's; then ``CancelledOnRequest``: the run is over."""
        transition = lifecycle.cancel(task, record, actor=request.actor, now=self.clock.now())
        await self._fenced(transition.record, record, "its lease was lost (cancelled or requeued)")
        self._log_transition(transition, worker=record.lease_owner, actor=request.actor)
        await self._after_record(task, transition)
        raise CancelledOnRequest(
            self.layout.result(task.id),
            record.generation,
            f"task {task.id} cancelled by {request.actor} (asked of its lease holder)",
        )

    async def request_cancel(self, task: Task, *, actor: str) -> CancelRequest:
        """Ask the lease holder of ``task`` (RUNNING, as read by ``get_task``) to cancel this
        run at its next renewal; return the request as stored (withdraw it with
        ``withdraw_request`` once the task moved on). A request already there for the same
        run is kept; one for an older run is replaced."""
        key = self.layout.request(task.id)
        self._check_writable("request cancel", key)
        record = self._held(task)
        if task.status != TaskStatus.RUNNING or not record.lease_owner:
            raise ValueError(f"task {task.id} is {task.status.value}: no lease holder to ask")
        request = CancelRequest(task.id, record.attempt, record.lease_owner, actor)
        expected = 0
        for _ in range(2):
            await self._gap(key)
            try:
                info = await self.store.write(key, request.to_json(), if_generation_match=expected)
            except ConflictError:
                current = await self._cancel_request(task.id)
                if current is not None and current.names(record):
                    return current  # another operator asked already
                # Gone meanwhile, or one for an older run (left by a crash): replaced.
                expected = (current.generation or 0) if current is not None else 0
                continue
            finally:
                self._wrote(key)
            return replace(request, generation=info.generation)
        raise ConflictError(key, expected, f"task {task.id}: its cancel request kept changing")

    async def withdraw_request(self, request: CancelRequest) -> None:
        """Delete ``request`` on its generation (a newer one is left); never fatal: a request
        left behind names a run that is over, and no later run honours it."""
        if request.generation is None:
            return
        key = self.layout.request(request.task_id)
        self._check_writable("withdraw a cancel request", key)
        try:
            await self._delete(key, request.generation)
        except ConflictError:
            pass  # replaced by a newer request: not ours to remove
        except StorageError as exc:
            log.info("cancel request %s not withdrawn (%s); it names a finished run", key, exc)

    async def ready_to_write(self, task: Task) -> None:
        """Wait until this process may write ``task``'s state record again (the per-name gap).

        A holder calls it before it computes an outcome, so that times in the outcome (a
        retry's ``run_at``) count from the write itself.
        """
        await self._gap(self.layout.result(task.id))

    async def finish(self, task: Task, transition: Transition) -> Task:
        """Write the lease holder's outcome (``transition`` from ``backend/lifecycle.py``).

        Fenced: a compare-and-swap on the record generation the holder last wrote, so an
        outcome lands only while the lease is still this worker's; ``ConflictError``
        otherwise (nothing written). Then the entry goes (final) or its hint is rewritten
        (pending again, so claimers see it in their next listing).
        """
        self._check_writable("finish", self.layout.result(task.id))
        record = self._held(task)
        await self._fenced(transition.record, record, "its lease was lost; outcome dropped")
        await self._after_record(task, transition)
        return lifecycle.overlay(task, transition.record)

    async def release(self, task: Task, reason: str = "released") -> Task:
        """Put a RUNNING task this worker holds back in its queue (say, on shutdown)."""
        self._check_writable("release", self.layout.result(task.id))
        record = self._held(task)
        if not record.lease_owner:
            raise ValueError(
                f"task {task.id} is {task.status.value}: only a running task is released"
            )
        await self.ready_to_write(task)
        transition = lifecycle.release(
            record, worker=record.lease_owner, now=self.clock.now(), reason=reason
        )
        return await self.finish(task, transition)

    async def _fenced(self, new: TaskResult, old: TaskResult, advice: str) -> None:
        assert old.generation is not None
        try:
            await self._write_record(new, old.generation)
        except ConflictError as exc:
            raise ConflictError(
                self.layout.result(new.task_id), old.generation, f"task {new.task_id}: {advice}"
            ) from exc

    async def _after_record(self, task: Task, transition: Transition) -> None:
        if transition.final:
            await self._drop_entry(task.queue_name, task.id)
            return
        # Back to pending: the entry's hint (record generation, run_at) lets claimers see it.
        await self._rewrite_entry(task, transition.record)

    # -- operator transitions -----------------------------------------------------------------

    async def apply(self, task: Task, transition: Transition) -> Task:
        """Write an operator's transition (cancel, retry) of ``task`` as read by ``get_task``.

        A compare-and-swap on the record generation that was read (create-only when the task
        had no record): ``ConflictError`` when the task moved on since.
        """
        key = self.layout.result(task.id)
        self._check_writable("update", key)
        read = task.record
        expected = read.generation if read is not None and read.generation else 0
        try:
            await self._write_record(transition.record, expected)
        except ConflictError as exc:
            raise ConflictError(
                key, expected, f"task {task.id}: re-read it and decide again"
            ) from exc
        await self._after_record(task, transition)
        return lifecycle.overlay(task, transition.record)

    async def update_task(self, task: Task) -> Task:
        """Write ``task``'s definition fields (priority, run_at, metadata, ...) if it is
        unchanged since it was read (compare-and-swap on the task object).

        A status is not a definition field: it changes by a transition (``lifecycle.cancel``,
        ``lifecycle.operator_retry``, ... written with ``apply``; workers through
        ``dequeue``/``finish``); a ``task`` whose status differs from the stored one raises
        ``ValueError``. ``ConflictError`` when the task or its record changed since ``task``
        was read: re-read it and decide again.
        """
        key = self.layout.task(task.id)
        self.layout.queue(task.queue_name)
        self._check_writable("update", key)
        expected = task.generation
        if expected is None:
            raise ValueError(
                f"task {task.id} was never read from or written to the bucket: "
                "get it with get_task first"
            )
        current = await self.get_task(task.id)
        if current is None:
            raise ObjectNotFoundError(key, "task")
        if current.generation != expected or _record_gen(current) != _record_gen(task):
            raise ConflictError(key, expected, f"task {task.id}: re-read it and decide again")
        if current.queue_name != task.queue_name:
            raise ValueError(f"task {task.id}: moving a task to another queue is not supported")
        if task.status != current.status:
            raise ValueError(
                f"task {task.id} is {current.status.value}: a change to {task.status.value} is a "
                "transition (lifecycle.cancel / operator_retry written with apply, or the "
                "worker's dequeue and finish), not an update_task"
            )
        definition = task.model_copy(deep=True)
        definition.__dict__.update(
            status=TaskStatus.PENDING, worker_id=None, lease_expires_at=None, started_at=None
        )
        definition.updated_at = self.clock.now()
        changed_definition = _definition_fields(definition) != _definition_fields(current)
        if changed_definition:
            await self._gap(key)
            try:
                await self.reader.write(
                    key, definition, task_metadata(definition), if_generation_match=expected
                )
            except ConflictError as exc:
                raise ConflictError(key, expected, f"task {task.id}: re-read it") from exc
            finally:
                self._wrote(key)
            current = lifecycle.overlay(definition, current.record)
        if changed_definition and current.status == TaskStatus.PENDING:
            await self._rewrite_entry(definition, current.record)
        return current

    async def _rewrite_entry(self, task: Task, record: TaskResult | None) -> None:
        """Point the entry's hint at ``record``: a compare-and-swap on the entry as listed now;
        an entry that is missing is created only while the task exists (a task deleted meanwhile
        never gets its entry back: nothing else would ever delete it but the reaper)."""
        key = self.layout.queue_entry(task.queue_name, task.id)
        current = await self._stat(key)
        if current is None and await self._stat(self.layout.task(task.id)) is None:
            log.info("task %s is gone: its queue entry is not re-created", task.id)
            return
        await self._write_entry(task, record, current.generation if current else 0)

    async def delete_task(self, task_id: str, *, seen: Task | None = None) -> bool:
        """Delete a task, its queue entry and its state record, each on the generation seen;
        False when the task did not exist.

        ``seen`` is the task as the caller read it (``get_task``); without it, as read now.
        Fenced like a worker's outcome: a task that is not final first gets a cancelled
        record (create-only, or a compare-and-swap on the record seen), so no claim, renewal
        or outcome lands while it is deleted; ``ConflictError`` (nothing deleted) when the
        task moved on since it was seen. Deletes are conditioned on the generations seen
        (``ifGenerationMatch``): a retried one never removes a newer object.
        """
        key = self.layout.task(task_id)
        self._check_writable("delete", key)
        if seen is None:
            try:
                seen = await self.get_task(task_id)
            except CorruptObjectError:
                return await self._delete_unreadable(task_id)
        if seen is None:
            record = await self._stat(self.layout.result(task_id))
            if record is not None:  # a record left without its task
                await self._delete(record.key, record.generation)
            return False
        if seen.generation is None:
            raise ValueError(f"task {task_id} was never read from the bucket: use get_task")
        fence = seen.record
        if fence is None or not fence.is_final:
            transition = lifecycle.delete_fence(seen, seen.record, now=self.clock.now())
            try:
                fence = await self._write_record(transition.record, _record_gen(seen) or 0)
            except ConflictError as exc:
                raise ConflictError(
                    self.layout.result(task_id), _record_gen(seen), f"task {task_id} moved on"
                ) from exc
        assert fence.generation is not None
        # The final record stays until the task is gone: no claim can land meanwhile.
        deleted = await self._delete(key, seen.generation)
        await self._drop_entry(seen.queue_name, task_id)
        try:
            await self._delete(self.layout.result(task_id), fence.generation)
        except ConflictError:
            # Retried by an operator meanwhile: a pending record whose task is gone, which
            # the reaper deletes (docs/architecture.md, "Transitions").
            log.info("the record of deleted task %s changed meanwhile; left to the reaper", task_id)
        return deleted

    async def _delete_unreadable(self, task_id: str) -> bool:
        """Delete a task whose body or record cannot be read, on the generations listed."""
        suffix = f"/{task_id}.json"
        entries = [
            i for i in await self._list_entries(self.layout.queues) if i.key.endswith(suffix)
        ]
        found = [
            info
            for key in (self.layout.task(task_id), self.layout.result(task_id))
            if (info := await self._stat(key)) is not None
        ]
        for info in [*entries, *found]:
            await self._delete(info.key, info.generation)
        return any(info.key == self.layout.task(task_id) for info in found)

    # -- housekeeping -------------------------------------------------------------------------

    async def maintain(
        self, *, grace_seconds: float = REPAIR_GRACE_SECONDS, by: str | None = None
    ) -> Maintenance:
        """One reaper pass (three listings): requeue dead leases, expire what waited too long,
        remove final and deleted tasks' entries, repair what a crash left half-written (see
        ``backend/reaper.py``).

        Dead leases are judged on this process's monotonic clock: a running record whose
        generation stays the same for its lease length (plus ``LEASE_MARGIN_S``) across passes
        has not been renewed, whatever any machine's wall clock says. The first pass of a new
        process only observes. The pass logs the events of the requeues and expiries it applies
        as ``by``'s (a worker's id; default this queue's ``worker_id``).
        """
        self._check_writable("maintain", self.layout.tasks)
        return await self.reaper.maintain(grace_seconds=grace_seconds, by=by)

    async def requeue_expired(self) -> list[str]:
        """Return tasks whose lease is dead to their queue; return their ids (one listing of
        the records; a lease is judged dead across calls, as in ``maintain``)."""
        self._check_writable("requeue expired", self.layout.results)
        report = Maintenance()
        await self.reaper.requeue_dead(await self._records(), report)
        return [task_id for task_id, _ in report.requeued]

    async def cleanup_expired_tasks(self) -> int:
        """Mark pending tasks past ``expires_at`` EXPIRED and drop their entries; return how
        many (two listings: tasks and records)."""
        self._check_writable("clean up expired tasks", self.layout.tasks)
        tasks, records = await asyncio.gather(self._list(self.layout.tasks), self._records())
        report = Maintenance()
        await self.reaper.expire_waiting(tasks, records, report)
        return len(report.expired)

    # -- helpers ------------------------------------------------------------------------------

    async def _records(self) -> dict[str, ResultIndex]:
        """Every state record's index, by task id (one listing of ``results/``)."""
        out: dict[str, ResultIndex] = {}
        for info in await self._list(self.layout.results):
            idx = result_index(info)
            if idx is not None:
                out[idx.task_id] = idx
        return out


def _record_gen(task: Task) -> int | None:
    return task.record.generation if task.record is not None else None


def _definition_fields(task: Task) -> Mapping[str, object]:
    data = task.model_dump(mode="json")
    for volatile in (
        "status",
        "worker_id",
        "lease_expires_at",
        "started_at",
        "updated_at",
        "retry_count",
    ):
        data.pop(volatile, None)
    return data


class GCSQueue(AsyncGCSQueue):
    """The task queue with blocking ``*_sync`` twins (open the backend with ``with backend:``)."""

    enqueue_sync = sync_twin(AsyncGCSQueue.enqueue)
    dequeue_sync = sync_twin(AsyncGCSQueue.dequeue)
    get_task_sync = sync_twin(AsyncGCSQueue.get_task)
    update_task_sync = sync_twin(AsyncGCSQueue.update_task)
    delete_task_sync = sync_twin(AsyncGCSQueue.delete_task)
    list_tasks_sync = sync_twin(AsyncGCSQueue.list_tasks)
    get_queue_size_sync = sync_twin(AsyncGCSQueue.get_queue_size)
    cleanup_expired_tasks_sync = sync_twin(AsyncGCSQueue.cleanup_expired_tasks)
    renew_lease_sync = sync_twin(AsyncGCSQueue.renew_lease)
    release_sync = sync_twin(AsyncGCSQueue.release)
    requeue_expired_sync = sync_twin(AsyncGCSQueue.requeue_expired)
    get_record_sync = sync_twin(AsyncGCSQueue.get_record)
    statuses_sync = sync_twin(AsyncGCSQueue.statuses)
    paused_queues_sync = sync_twin(AsyncGCSQueue.paused_queues)
    maintain_sync = sync_twin(AsyncGCSQueue.maintain)
    claim_pass_sync = sync_twin(AsyncGCSQueue.claim_pass)
    ready_to_write_sync = sync_twin(AsyncGCSQueue.ready_to_write)
    request_cancel_sync = sync_twin(AsyncGCSQueue.request_cancel)
    withdraw_request_sync = sync_twin(AsyncGCSQueue.withdraw_request)
    finish_sync = sync_twin(AsyncGCSQueue.finish)
    apply_sync = sync_twin(AsyncGCSQueue.apply)
    pause_queue_sync = sync_twin(AsyncGCSQueue.pause_queue)
    resume_queue_sync = sync_twin(AsyncGCSQueue.resume_queue)
