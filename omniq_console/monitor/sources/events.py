"""Events: the live-event rows of a snapshot, and outcomes whose result records are gone.

Event objects are batches (``events/{batch_id}.json``, one per worker flush) or single events
(the old form). Keys are time-ordered, so in listing mode the monitor tails them: each poll
lists from a little before the newest key seen (``EVENT_LOOKBACK``) and skips what it has seen.
With a change feed, new event objects arrive as messages instead. Either way the newest few
objects' bodies are read (bounded per poll), and rows are ranked by when the monitor saw them,
clamped: an event stamped in the future by a fast clock ranks as "now", so it cannot hold the
live slots.
"""

from __future__ import annotations

import heapq
import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

from ...backend.layout import Layout
from ...backend.objectstore import ObjectInfo
from ...backend.storeapi import ObjectStoreAPI
from ...models import EventType
from ..io import read_many
from ..model import BucketModel, Outcome
from ..records import Decoder, EventObject, EventRecord, parse_event_body
from ..snapshot import EventRow, UnreadableRow

EVENT_LOOKBACK = timedelta(seconds=10)
"""Writers' clocks differ and writes take time: keys do not arrive strictly in key order, so
each tail starts this far before the newest key seen (keys are deduplicated)."""
FIRST_EVENT_WINDOWS = (timedelta(minutes=1), timedelta(minutes=10), timedelta(hours=1))
SEEN_KEEP = 10_000
"""Event keys remembered as seen through the feed (about an hour of a small fleet's batches)."""
BODIES_PER_POLL = 32
"""Event objects whose bodies one poll reads at most (newest first)."""

_UUID7_HEAD = re.compile(r"^([0-9a-f]{8})-([0-9a-f]{4})-7")
_OUTCOME_OF = {
    EventType.COMPLETED.value: "success",
    EventType.FAILED.value: "error",
    EventType.CANCELLED.value: "cancelled",
    EventType.EXPIRED.value: "expired",
}


def event_id_ms(event_id: str) -> int | None:
    """The millisecond timestamp in a UUIDv7-style id, None for other ids."""
    match = _UUID7_HEAD.match(event_id)
    if match is None:
        return None
    return int(match.group(1) + match.group(2), 16)


def event_key_at(events_prefix: str, ms: int) -> str:
    """The smallest event key written at or after ``ms`` (a listing's ``startOffset``)."""
    head = f"{max(0, ms) & ((1 << 48) - 1):012x}"
    return f"{events_prefix}{head[:8]}-{head[8:]}"


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


class Ranked(NamedTuple):
    rank: float  # min(timestamp, time seen): what orders the live slots
    row: EventRow


def event_row(event: EventRecord, fallback_id: str) -> EventRow:
    return EventRow(
        id=event.id or fallback_id,
        timestamp=event.timestamp,
        event_type=event.event_type,
        task_id=event.task_id,
        queue_name=event.queue_name,
        schedule_id=event.schedule_id,
        worker_id=event.worker_id,
        actor=event.actor,
        message=event.message,
        error_type=event.error_type,
        error_message=event.error_message,
    )


class EventTail:
    """The newest ``keep`` events, and the tail cursor of listing mode."""

    def __init__(self, layout: Layout, decode: Decoder, keep: int) -> None:
        self._layout = layout
        self._decode = decode
        self.keep = keep
        self._start_ms: int | None = None
        self._seen: set[str] = set()
        self._seen_heap: list[str] = []
        """``_seen``'s keys as a heap, the oldest (smallest) first: the feed's marks drop the
        oldest without sorting the set each time."""
        self._rows: dict[str, Ranked] = {}
        self.unreadable: dict[str, UnreadableRow] = {}

    # -- listing mode -----------------------------------------------------------------------

    async def list_new(self, store: ObjectStoreAPI, now: datetime) -> list[ObjectInfo]:
        """Event objects written since the last tail (the first one widens its window until
        it holds ``keep`` events)."""
        prefix = self._layout.events
        if self._start_ms is not None:
            infos = await store.list(prefix, start_offset=event_key_at(prefix, self._start_ms))
            listed_from = self._start_ms
        else:
            now_ms = _ms(now)
            infos = []
            end: str | None = None
            listed_from = now_ms
            for window in FIRST_EVENT_WINDOWS:
                listed_from = now_ms - int(window.total_seconds() * 1000)
                start = event_key_at(prefix, listed_from)
                infos = await store.list(prefix, start_offset=start, end_offset=end) + infos
                held = sum(self._count(i) for i in infos)
                if held >= self.keep:
                    break
                end = start
        new = [i for i in infos if i.key not in self._seen and not i.key.endswith("/")]
        self._advance(new, listed_from, now)
        return new

    def _count(self, info: ObjectInfo) -> int:
        decoded = self._decode(info.key, info.metadata)
        return decoded.events if isinstance(decoded, EventObject) else 1

    def _advance(self, new: Sequence[ObjectInfo], listed_from: int, now: datetime) -> None:
        self._seen.update(i.key for i in new)
        newest = max(
            (ms for k in self._seen if (ms := event_id_ms(Layout.name_of(k))) is not None),
            default=None,
        )
        start = listed_from
        if newest is not None:
            # A writer whose clock runs ahead must not move the tail past everyone else's.
            newest = min(newest, _ms(now))
            start = max(start, newest - int(EVENT_LOOKBACK.total_seconds() * 1000))
        self._start_ms = start
        floor = event_key_at(self._layout.events, start)
        self._seen = {k for k in self._seen if k >= floor}
        self._seen_heap = sorted(self._seen)  # a sorted list is a heap

    def mark_seen(self, keys: Iterable[str]) -> None:
        """Keys that arrived through the feed: a later tail (after a fallback) skips them.

        Only the newest ``SEEN_KEEP`` are kept (keys sort by time): in feed mode nothing else
        prunes them, and a tail after a fallback starts near the newest anyway."""
        for key in keys:
            if key not in self._seen:
                self._seen.add(key)
                heapq.heappush(self._seen_heap, key)
        while len(self._seen) > SEEN_KEEP:
            self._seen.discard(heapq.heappop(self._seen_heap))

    # -- both modes -------------------------------------------------------------------------

    async def read_new(
        self,
        store: ObjectStoreAPI,
        model: BucketModel,
        new: Sequence[tuple[str, Mapping[str, str]]],
        now: datetime,
    ) -> None:
        """Read the newest new event objects (key order is time order) into rows: as many as
        hold ``keep`` events, at most ``BODIES_PER_POLL``; their completed/failed events
        become outcomes where the model has no result record."""
        shown: list[str] = []
        held = 0
        for key, metadata in sorted(dict(new).items(), reverse=True):
            if held >= self.keep or len(shown) >= BODIES_PER_POLL:
                break
            shown.append(key)
            decoded = self._decode(key, metadata)
            held += decoded.events if isinstance(decoded, EventObject) else 1
        bodies = await read_many(store, shown)
        seen_at = now.timestamp()
        fresh: dict[str, tuple[float, EventRecord]] = {}
        for key in shown:
            got = bodies.get(key)
            if got is None:
                continue
            if isinstance(got, UnreadableRow):
                self.unreadable[key] = got
                continue
            events = parse_event_body(key, got.data)
            if isinstance(events, UnreadableRow):
                self.unreadable[key] = events
                continue
            name = Layout.name_of(key)
            for n, event in enumerate(events):
                rank = min(event.timestamp.timestamp(), seen_at)
                fresh[event.id or f"{name}:{n}"] = (rank, event)
                self._outcome(model, event)
        self._keep_newest(fresh)
        if len(self.unreadable) > self.keep:
            self.unreadable = dict(sorted(self.unreadable.items())[-self.keep :])

    def _keep_newest(self, fresh: dict[str, tuple[float, EventRecord]]) -> None:
        """Add ``fresh`` events (by id: rank, event) to the rows, keeping the newest ``keep``
        by (rank, id); a row is built only for a fresh event that stays (a batch holds
        hundreds of events, a screen shows a few dozen)."""
        for ident in fresh:
            self._rows.pop(ident, None)  # the newer reading of the same event replaces it
        if len(self._rows) + len(fresh) > self.keep:
            newest = heapq.nlargest(
                self.keep,
                itertools.chain(
                    ((r.rank, ident) for ident, r in self._rows.items()),
                    ((rank, ident) for ident, (rank, _) in fresh.items()),
                ),
            )
            kept = {ident for _, ident in newest}
            self._rows = {i: r for i, r in self._rows.items() if i in kept}
            fresh = {i: f for i, f in fresh.items() if i in kept}
        for ident, (rank, event) in fresh.items():
            self._rows[ident] = Ranked(rank, event_row(event, ident))

    @staticmethod
    def _outcome(model: BucketModel, event: EventRecord) -> None:
        status = _OUTCOME_OF.get(event.event_type)
        if status is None or event.task_id is None or event.task_id in model.states:
            return
        defn = model.defs.get(event.task_id)
        model.add_outcome(
            event.task_id,
            Outcome(
                status,
                event.queue_name or (defn.queue if defn else None),
                defn.created_at if defn else None,
                None,
                event.timestamp.timestamp(),
                "events",
            ),
            only_if_new=True,
        )

    def rows(self) -> tuple[EventRow, ...]:
        """Newest first (by the clamped rank, then id)."""
        ranked = sorted(self._rows.values(), key=lambda r: (r.rank, r.row.id), reverse=True)
        return tuple(r.row for r in ranked[: self.keep])
