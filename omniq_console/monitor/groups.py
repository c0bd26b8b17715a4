"""Failure groups: a snapshot's failed tasks by exception type (and queue), and since when.

One home for what the console's Results view and the notebook's dashboard both show. A
group carries the exact ids it counted: a bulk retry is bound to them, never to whatever
fails by the time the operator confirms. It also says since when the type fails (first and
last failure seen) and how often per minute lately, so a group that started minutes ago
(after a deploy) looks different from one that has failed steadily for a day.

Plain Python (no Textual, no pandas): the console runs it in a thread over 100,000 rows, and
the notebook widget needs it without the ``notebook`` extra.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..models import TaskStatus
from .snapshot import TaskRow, to_datetime

UNKNOWN_ERROR = "(unknown)"
"""Group name of failed tasks whose index carries no exception type."""

TREND_MINUTES = 30
"""Minutes of the per-minute trend, the newest last."""

NEW_WITHIN = timedelta(minutes=10)
"""A group whose first failure is this recent is new: something changed."""

_FAILED = TaskStatus.FAILED.value


def failed_ts(row: TaskRow) -> float | None:
    """When ``row`` failed, in POSIX seconds: its completion, else its start or creation
    (older index entries)."""
    for ts in (row.completed_ts, row.started_ts, row.created_ts):
        if ts is not None:
            return ts
    return None


def failed_at(row: TaskRow) -> datetime | None:
    """``failed_ts`` as a UTC datetime."""
    return to_datetime(failed_ts(row))


@dataclass(frozen=True, slots=True)
class FailureGroup:
    """Failed tasks that raised one exception type (in one queue when grouped by queue).

    ``task_ids`` are sorted. ``per_minute`` counts failures in each of the
    ``TREND_MINUTES`` minutes up to the time the groups were made, oldest first.
    """

    error_type: str
    queue: str | None
    task_ids: tuple[str, ...]
    queues: tuple[str, ...]
    first_seen: datetime | None
    last_seen: datetime | None
    per_minute: tuple[int, ...]
    now: datetime | None

    @property
    def count(self) -> int:
        return len(self.task_ids)

    @property
    def key(self) -> str:
        """A stable name for the group (what a selector keeps across snapshots)."""
        return self.error_type if self.queue is None else f"{self.error_type}\x1f{self.queue}"

    @property
    def is_new(self) -> bool:
        """Its first failure is within ``NEW_WITHIN`` of the time the groups were made."""
        if self.first_seen is None or self.now is None:
            return False
        return self.now - self.first_seen <= NEW_WITHIN

    def question(self) -> str:
        """The confirmation an operator answers before the group is retried."""
        noun = "task" if self.count == 1 else "tasks"
        where = f" in queue {self.queue}" if self.queue is not None else ""
        return f"Retry {self.count} failed {noun} of {self.error_type}{where}?"


@dataclass(slots=True)
class _Collect:
    ids: list[str]
    times: list[float]  # POSIX seconds: a datetime is made only for the first and last
    queues: set[str]


def failure_groups(
    rows: Iterable[TaskRow],
    *,
    queue: str | None = None,
    by_queue: bool = False,
    now: datetime | None = None,
) -> tuple[FailureGroup, ...]:
    """The failed tasks among ``rows`` grouped by exception type, largest group first.

    ``queue`` keeps that queue's tasks only; ``by_queue`` makes one group per (type, queue).
    ``now`` ends the per-minute trend (default: the newest failure among the rows).
    """
    collected: dict[tuple[str, str | None], _Collect] = {}
    for row in rows:
        if row.status != _FAILED or (queue is not None and row.queue_name != queue):
            continue
        key = (row.error_type or UNKNOWN_ERROR, row.queue_name if by_queue else None)
        group = collected.get(key)
        if group is None:
            group = collected[key] = _Collect([], [], set())
        group.ids.append(row.id)
        if (at := failed_ts(row)) is not None:
            group.times.append(at)
        group.queues.add(row.queue_name)
    if now is None:
        newest = max((max(g.times) for g in collected.values() if g.times), default=None)
        now = to_datetime(newest)
    groups = [_group(kind, where, c, now) for (kind, where), c in collected.items()]
    return tuple(sorted(groups, key=lambda g: (-g.count, g.error_type, g.queue or "")))


def _group(kind: str, queue: str | None, c: _Collect, now: datetime | None) -> FailureGroup:
    times = c.times
    trend = [0] * TREND_MINUTES
    if now is not None:
        end = now.timestamp()
        for at in times:
            minutes_ago = int((end - at) // 60)
            if 0 <= minutes_ago < TREND_MINUTES:
                trend[TREND_MINUTES - 1 - minutes_ago] += 1
    return FailureGroup(
        error_type=kind,
        queue=queue,
        task_ids=tuple(sorted(c.ids)),
        queues=tuple(sorted(c.queues)),
        first_seen=to_datetime(min(times, default=None)),
        last_seen=to_datetime(max(times, default=None)),
        per_minute=tuple(trend),
        now=now,
    )


__all__ = [
    "NEW_WITHIN",
    "TREND_MINUTES",
    "UNKNOWN_ERROR",
    "FailureGroup",
    "failed_at",
    "failed_ts",
    "failure_groups",
]
