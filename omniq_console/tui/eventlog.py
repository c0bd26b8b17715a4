"""The live event tail: events gathered across snapshots, newest first, bounded."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..monitor.snapshot import EventRow


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Events of one type, and whose task id / queue contain the given text. Empty matches all."""

    event_type: str | None = None
    task: str = ""
    queue: str = ""

    def matches(self, event: EventRow) -> bool:
        if self.event_type is not None and event.event_type != self.event_type:
            return False
        if self.task and self.task.casefold() not in (event.task_id or "").casefold():
            return False
        return not (self.queue and self.queue.casefold() not in (event.queue_name or "").casefold())


class EventLog:
    """Events by id (ids sort by time), keeping the newest ``capacity``.

    A snapshot carries only the last few hundred events; keeping them here lets the tail
    grow past one snapshot's window while the console runs.
    """

    def __init__(self, capacity: int = 1000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._events: dict[str, EventRow] = {}

    def __len__(self) -> int:
        return len(self._events)

    def merge(self, events: Iterable[EventRow]) -> int:
        """Add the events not seen yet; returns how many were new."""
        new = 0
        for event in events:
            if event.id not in self._events:
                self._events[event.id] = event
                new += 1
        if len(self._events) > self.capacity:
            keep = sorted(self._events, reverse=True)[: self.capacity]
            self._events = {key: self._events[key] for key in keep}
        return new

    def newest_first(self, flt: EventFilter | None = None) -> list[EventRow]:
        """The events kept, newest first, those matching ``flt`` only."""
        events = (self._events[key] for key in sorted(self._events, reverse=True))
        if flt is None:
            return list(events)
        return [e for e in events if flt.matches(e)]
