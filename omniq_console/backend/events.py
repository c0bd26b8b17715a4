"""Lifecycle events on GCS: ``events/{event_id}.json``, written once, never changed.

Event ids sort by time (UUIDv7-style), so a key-ordered listing is already oldest first and a
monitor can tail new events with ``startOffset``. Filters (task, type, time range) are decided
on listing metadata; only the bodies of matching events are read, and with ``limit`` only as
many as are returned.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ..models import EventType, TaskEvent, as_utc, utcnow
from .errors import ConflictError
from .index import event_index, event_metadata
from .layout import check_id
from .listing import ItemList, StoreBase, bounded_gather
from .objectstore import ObjectInfo
from .sync import sync_twin

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class AsyncGCSEventStorage(StoreBase):
    """An append-only log of task and schedule lifecycle events."""

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

    async def get_events(
        self,
        task_id: str | None = None,
        event_type: EventType | str | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        limit: int | None = None,
    ) -> ItemList[TaskEvent]:
        """Events oldest first, filtered by task, type and time range (both ends inclusive).

        ``limit`` returns the oldest ``limit`` matches and reads only their bodies.
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
        rows: list[tuple[datetime, str, ObjectInfo | TaskEvent]] = []
        unindexed: list[ObjectInfo] = []
        for info in infos:
            idx = event_index(info)
            if idx is None:
                unindexed.append(info)
            elif keep(idx.task_id, idx.event_type, idx.timestamp):
                rows.append((idx.timestamp or _EPOCH, info.key, info))
        bodies = await self.reader.read_listed(unindexed, TaskEvent)
        rows.extend(
            (e.timestamp, self.layout.event(e.id), e)
            for e in bodies
            if keep(e.task_id, e.event_type, e.timestamp)
        )
        rows.sort(key=lambda row: (row[0], row[1]))
        page = rows if limit is None else rows[:limit]
        read = await self.reader.read_listed(
            [item for _, _, item in page if isinstance(item, ObjectInfo)], TaskEvent
        )
        by_id = {e.id: e for e in read}
        out: ItemList[TaskEvent] = ItemList(unreadable=[*bodies.unreadable, *read.unreadable])
        for _, key, item in page:
            event = item if isinstance(item, TaskEvent) else by_id.get(self.layout.name_of(key))
            if event is not None:
                out.append(event)
        return out

    async def cleanup_old_events(self, older_than: timedelta | datetime) -> int:
        """Delete events older than a cutoff (an age, or a point in time); return how many."""
        if isinstance(older_than, timedelta):
            cutoff = utcnow() - older_than
        elif isinstance(older_than, datetime):
            cutoff = as_utc(older_than)
        else:
            raise ValueError("older_than must be a timedelta or a datetime")
        self._check_writable("clean up events", self.layout.events)
        infos = await self._list(self.layout.events)
        old: list[str] = []
        unindexed: list[ObjectInfo] = []
        for info in infos:
            idx = event_index(info)
            if idx is None or idx.timestamp is None:
                unindexed.append(info)
            elif idx.timestamp < cutoff:
                old.append(info.key)
        bodies = await self.reader.read_listed(unindexed, TaskEvent)
        old.extend(self.layout.event(e.id) for e in bodies if e.timestamp < cutoff)
        return sum(await bounded_gather(old, self.reader.delete))


class GCSEventStorage(AsyncGCSEventStorage):
    """Event storage with blocking ``*_sync`` twins (open the backend with ``with backend:``)."""

    log_event_sync = sync_twin(AsyncGCSEventStorage.log_event)
    get_events_sync = sync_twin(AsyncGCSEventStorage.get_events)
    cleanup_old_events_sync = sync_twin(AsyncGCSEventStorage.cleanup_old_events)
