"""Lifecycle events on GCS: batches ``events/{batch_id}.json`` and single ``events/{id}.json``.

Workers write their events as one batch object per flush, about once a second
(``EventBatcher``): a task's lifecycle costs a share of one write, not one write per event
(docs/architecture.md, "Events"). ``log_event`` still writes a single event at once (operator
audits, the seed API). Batch ids and event ids sort by time (UUIDv7-style, strictly increasing
within a process), so a key-ordered listing is oldest first and a monitor can tail new objects
with ``startOffset``. Filters (task, type, time range) are decided on listing metadata where it
can decide; only the bodies of matching objects are read.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from ..gathering import bounded_gather
from ..models import EventBatch, EventType, TaskEvent, as_utc, new_event_id, utcnow
from ..stopping import StopSignal
from . import lifecycle
from .errors import (
    ConflictError,
    CorruptObjectError,
    ObjectNotFoundError,
    StorageError,
    UnreadableObject,
)
from .index import event_batch_index, event_batch_metadata, event_index, event_metadata
from .layout import check_id
from .listing import READ_CONCURRENCY, ItemList, StoreBase, parse_model
from .objectstore import ObjectInfo
from .sync import sync_twin

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 1.0
"""How often a worker's ``EventBatcher`` writes what it has buffered."""
MAX_BUFFERED_EVENTS = 10_000
"""A batcher that cannot write (an outage) keeps at most this many events; older ones go first."""


class AsyncGCSEventStorage(StoreBase):
    """An append-only log of task and schedule lifecycle events.

    ``record(event)`` is how the runtime logs: buffered, and written with the other events of
    this process as one batch about once a second. ``log_event`` writes one event at once.
    Close the backend (or ``await flush()``) to write what is buffered.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batcher = EventBatcher(self)
        self._flusher: asyncio.Task[None] | None = None

    def record(self, event: TaskEvent) -> None:
        """Log ``event`` with the next batch (within about a second); never blocks or fails.

        Must be called on the event loop the backend is open on.
        """
        self._check_writable("log event", self.layout.events)
        self.batcher.add(event)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(
                self.batcher.run(), name="omniq-event-batcher"
            )

    def record_transition(
        self,
        transition: lifecycle.Transition,
        *,
        at: datetime,
        worker_id: str | None = None,
        actor: str | None = None,
        **fields: Any,
    ) -> None:
        """Log the event of a transition the caller has just applied, with the next batch.

        The one way a worker, the reaper and the seed API's housekeeping write a transition's
        event (built by ``lifecycle.event_of``): whoever applies a transition writes its event,
        so a task's timeline holds every change of its status. Never fails: the transition
        stands whether or not its event can be logged (a read-only backend, a bad field), so a
        failure is logged and the caller goes on.
        """
        event = lifecycle.event_of(transition, at=at, worker_id=worker_id, actor=actor, **fields)
        try:
            self.record(event)
        except (StorageError, ValueError) as exc:
            log.warning(
                "%s event of task %s not recorded: %s", event.event_type.value, event.task_id, exc
            )

    async def flush(self) -> int:
        """Write the buffered events now; return how many were written."""
        return await self.batcher.flush()

    async def aclose(self) -> None:
        """Stop the background flusher after a last flush (the backend calls this on close)."""
        flusher, self._flusher = self._flusher, None
        if flusher is not None and not flusher.done():
            self.batcher.stop()
            await asyncio.gather(flusher, return_exceptions=True)
        await self.batcher.flush()

    async def log_event(self, event: TaskEvent) -> TaskEvent:
        """Append ``event``; ``ConflictError`` if a *different* event with its id exists already.

        Logging the very same event again (a caller retrying after an error) is not a conflict:
        events are immutable, so equal bytes mean it is already logged.
        """
        key = self.layout.event(event.id)
        self._check_writable("log event", key)
        try:
            await self.reader.write(key, event, event_metadata(event), if_generation_match=0)
        except ConflictError as exc:
            existing = await self.store.read(key)
            if existing.data != event.to_json():
                raise ConflictError(key, 0, f"an event with id {event.id} exists already") from exc
        return event

    async def log_events(self, events: Sequence[TaskEvent]) -> str | None:
        """Append ``events`` as one batch object; return its key (None when there were none)."""
        if not events:
            return None
        batch_id = new_event_id()
        key = self.layout.event(batch_id)
        self._check_writable("log events", key)
        batch = EventBatch(events=list(events))
        await self.reader.write(
            key, batch, event_batch_metadata(batch_id, events), if_generation_match=0
        )
        return key

    async def get_events(
        self,
        task_id: str | None = None,
        event_type: EventType | str | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        limit: int | None = None,
    ) -> ItemList[TaskEvent]:
        """Events oldest first, filtered by task, type and time range (both ends inclusive).

        ``limit`` returns the oldest ``limit`` matches. Single events are decided on their
        listing metadata; a batch is read when its metadata says it may hold a match.
        """
        if task_id is not None:
            check_id(task_id, "task id")
        wanted = EventType(event_type) if event_type is not None else None
        start = as_utc(start_time) if start_time is not None else None
        end = as_utc(end_time) if end_time is not None else None
        if limit is not None and limit < 0:
            raise ValueError("limit must not be negative")

        def keep(task: str | None, kind: EventType, at: datetime | None) -> bool:
            return (
                (task_id is None or task == task_id)
                and (wanted is None or kind == wanted)
                and (start is None or (at is not None and at >= start))
                and (end is None or (at is not None and at <= end))
            )

        infos = await self._list(self.layout.events)
        singles: list[ObjectInfo] = []
        batches: list[ObjectInfo] = []
        for info in infos:
            idx = event_index(info)
            if idx is not None:
                if keep(idx.task_id, idx.event_type, idx.timestamp):
                    singles.append(info)
                continue
            bidx = event_batch_index(info)
            if bidx is None:
                batches.append(info)  # no usable index: its body decides
                continue
            if start is not None and bidx.last_ts is not None and bidx.last_ts < start:
                continue
            if end is not None and bidx.first_ts is not None and bidx.first_ts > end:
                continue
            if wanted is not None and wanted.value not in bidx.types:
                continue
            if task_id is not None and not bidx.tasks_truncated and task_id not in bidx.tasks:
                continue
            batches.append(info)
        # Oldest first by what the index says (a single event's time, a batch's first one), so
        # that with ``limit`` only the objects that can hold the oldest matches are read.
        ranked = sorted(singles + batches, key=_earliest)
        rows: list[TaskEvent] = []
        unreadable: list[UnreadableObject] = []
        step = max(1, len(ranked) if limit is None else limit)
        for start_at in range(0, len(ranked), step):
            chunk = ranked[start_at : start_at + step]
            found, bad = await self.read_events(chunk)
            unreadable.extend(bad)
            rows.extend(e for e in found if keep(e.task_id, e.event_type, e.timestamp))
            rows.sort(key=lambda e: (e.timestamp, e.id))
            following = ranked[start_at + step] if start_at + step < len(ranked) else None
            if (
                limit is not None
                and len(rows) >= limit
                and (following is None or rows[limit - 1].timestamp <= _earliest(following)[0])
            ):
                break
        return ItemList(rows if limit is None else rows[:limit], unreadable=unreadable)

    async def read_events(
        self, infos: Sequence[ObjectInfo]
    ) -> tuple[list[TaskEvent], list[UnreadableObject]]:
        """The events in listed event objects (batches or single events), and what failed."""
        unreadable: list[UnreadableObject] = []

        async def one(info: ObjectInfo) -> list[TaskEvent]:
            try:
                got = await self.store.read(info.key)
            except ObjectNotFoundError:
                return []  # deleted since it was listed (an event cleanup): gone, not broken
            try:
                events = events_in(info.key, got.data)
            except CorruptObjectError as exc:
                unreadable.append(UnreadableObject(exc.key, exc.reason))
                return []
            # A batch holding other than what its index says lost or gained events after it
            # was written (its writer writes both at once): what it holds is shown, and the
            # disagreement reported, never taken silently for a batch with nothing in it.
            index = event_batch_index(info)
            if index is not None and index.count != len(events):
                unreadable.append(
                    UnreadableObject(
                        info.key,
                        f"events by its index: {index.count}, in its body: {len(events)}",
                    )
                )
            return events

        lists = await bounded_gather(infos, one, limit=READ_CONCURRENCY)
        return [e for events in lists for e in events], unreadable

    async def cleanup_old_events(self, older_than: timedelta | datetime) -> int:
        """Delete events older than a cutoff (an age, or a point in time); return how many
        objects were deleted (a batch goes once its newest event is older than the cutoff)."""
        if isinstance(older_than, timedelta):
            cutoff = utcnow() - older_than
        elif isinstance(older_than, datetime):
            cutoff = as_utc(older_than)
        else:
            raise ValueError("older_than must be a timedelta or a datetime")
        self._check_writable("clean up events", self.layout.events)
        infos = await self._list(self.layout.events)
        old: list[tuple[str, int]] = []
        unknown: list[ObjectInfo] = []
        for info in infos:
            idx = event_index(info)
            bidx = event_batch_index(info) if idx is None else None
            newest = idx.timestamp if idx is not None else bidx.last_ts if bidx else None
            if newest is None:
                unknown.append(info)
            elif newest < cutoff:
                old.append((info.key, info.generation))
        for info in unknown:
            try:
                got = await self.store.read(info.key)
                events = events_in(info.key, got.data)
            except (CorruptObjectError, StorageError):
                continue  # reported by readers; never deleted on a guess
            if events and max(e.timestamp for e in events) < cutoff:
                old.append((info.key, got.generation))
        return sum(await bounded_gather(old, self.reader.delete_listed, limit=READ_CONCURRENCY))


def _earliest(info: ObjectInfo) -> tuple[datetime, str]:
    """The earliest time an event object can hold, from its index (the epoch when unknown)."""
    idx = event_index(info)
    if idx is not None and idx.timestamp is not None:
        return idx.timestamp, info.key
    bidx = event_batch_index(info)
    if bidx is not None and bidx.first_ts is not None:
        return bidx.first_ts, info.key
    return _EPOCH, info.key


def events_in(key: str, data: bytes) -> list[TaskEvent]:
    """The events a stored body holds: a batch's list, or one single event.

    ``CorruptObjectError`` naming ``key`` when it is neither.
    """
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raw = None  # parse_model says why
    if isinstance(raw, dict) and isinstance(raw.get("events"), list) and "event_type" not in raw:
        return list(parse_model(EventBatch, key, data).events)
    return [parse_model(TaskEvent, key, data)]


class EventBatcher:
    """Buffers one process's events and writes them as one batch about once a second.

    ``add`` never blocks and never fails; ``run()`` flushes every ``interval`` until stopped,
    then flushes what is left. A flush that fails keeps its events for the next one (at most
    ``MAX_BUFFERED_EVENTS``; beyond that the oldest are dropped and counted in ``dropped``).
    """

    def __init__(self, storage: AsyncGCSEventStorage, *, interval: float = FLUSH_INTERVAL_S):
        self.storage = storage
        self.interval = interval
        self.dropped = 0
        self.written = 0
        self._buffer: list[TaskEvent] = []
        self._stop = StopSignal()
        self._lock: asyncio.Lock | None = None

    def add(self, event: TaskEvent) -> None:
        """Queue ``event`` for the next flush."""
        self._buffer.append(event)
        excess = len(self._buffer) - MAX_BUFFERED_EVENTS
        if excess > 0:
            del self._buffer[:excess]
            self.dropped += excess

    @property
    def pending(self) -> int:
        """Events buffered and not yet written."""
        return len(self._buffer)

    async def flush(self) -> int:
        """Write what is buffered as one batch now; return how many events were written."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            events, self._buffer = self._buffer, []
            if not events:
                return 0
            try:
                await self.storage.log_events(events)
            except (StorageError, OSError) as exc:
                log.warning(
                    "%d event(s) not written yet (kept for the next flush): %s", len(events), exc
                )
                self._buffer[:0] = events
                return 0
            self.written += len(events)
            return len(events)

    async def run(self) -> None:
        """Flush every ``interval`` seconds until ``stop()``; then a last flush."""
        self._stop.bind()
        try:
            while not await self._stop.wait(self.interval):
                await self.flush()
        finally:
            self._stop = StopSignal()  # a later record() may start the flusher again
            await asyncio.shield(self.flush())

    def stop(self) -> None:
        """End ``run()`` after a last flush (from any thread)."""
        self._stop.set()


class GCSEventStorage(AsyncGCSEventStorage):
    """Event storage with blocking ``*_sync`` twins (open the backend with ``with backend:``)."""

    log_event_sync = sync_twin(AsyncGCSEventStorage.log_event)
    log_events_sync = sync_twin(AsyncGCSEventStorage.log_events)
    flush_sync = sync_twin(AsyncGCSEventStorage.flush)
    read_events_sync = sync_twin(AsyncGCSEventStorage.read_events)
    get_events_sync = sync_twin(AsyncGCSEventStorage.get_events)
    cleanup_old_events_sync = sync_twin(AsyncGCSEventStorage.cleanup_old_events)
