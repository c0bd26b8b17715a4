"""Filtering, ordering and paging of task rows: plain Python, run off the UI loop.

A snapshot may hold 100,000 ``TaskRow``s. The console filters them in a thread worker and
shows one bounded page; this module is what that worker runs.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter

from ..models import TaskStatus, allowed_task_actions
from ..monitor.groups import UNKNOWN_ERROR, failed_ts
from ..monitor.snapshot import TaskRow

PAGE_SIZE = 200
"""Rows shown at once in a windowed table: a screenful many times over, cheap to diff."""


_OLDEST = -math.inf
"""A row without the time sorts as the oldest."""


def _or_oldest(ts: float | None) -> float:
    return ts if ts is not None else _OLDEST


@dataclass(frozen=True, slots=True)
class TaskFilter:
    """What the operator asked to see. Empty fields match everything.

    ``func`` and ``text`` match case-insensitively as substrings; ``text`` looks at the id,
    function, queue, worker and exception type, and at the body text known for the task
    (its arguments, keyword arguments and error message, see :func:`body_text`).
    """

    queue: str | None = None
    status: str | None = None
    func: str = ""
    error_type: str | None = None
    text: str = ""

    @property
    def is_empty(self) -> bool:
        return not (self.queue or self.status or self.func or self.error_type or self.text)

    def predicate(self, texts: Mapping[str, str] | None = None) -> Callable[[TaskRow], bool]:
        """One function testing a row, with the constant parts worked out once.

        ``texts`` maps task ids to the casefolded body text read so far (:func:`body_text`).
        """
        known = texts or {}
        queue, status, error_type = self.queue, self.status, self.error_type
        func = self.func.casefold()
        text = self.text.casefold()
        group_unknown = error_type == UNKNOWN_ERROR

        def match(row: TaskRow) -> bool:
            if queue is not None and row.queue_name != queue:
                return False
            if status is not None and row.status != status:
                return False
            if error_type is not None and (
                (row.error_type is not None) if group_unknown else row.error_type != error_type
            ):
                return False
            if func and func not in row.func.casefold():
                return False
            return not (
                text
                and not any(
                    text in field.casefold()
                    for field in (row.id, row.func, row.queue_name, row.worker_id, row.error_type)
                    if field
                )
                and text not in known.get(row.id, "")
            )

        return match

    def describe(self, *, with_status: bool = True) -> str:
        """The filter in words, as a confirmation names it: ``of ValueError in queue emails``."""
        parts: list[str] = []
        if self.status and with_status:
            parts.append(f"with status {self.status}")
        if self.error_type:
            parts.append(f"of {self.error_type}")
        if self.func:
            parts.append(f"whose function contains {self.func!r}")
        if self.queue:
            parts.append(f"in queue {self.queue}")
        if self.text:
            parts.append(f"matching {self.text!r}")
        return " ".join(parts)


def _newest_first(row: TaskRow) -> tuple[float, str]:
    return (_or_oldest(row.created_ts), row.id)


def _text(value: str | None) -> str:
    return (value or "").casefold()


SORT_KEYS: dict[str, Callable[[TaskRow], object]] = {
    "id": lambda r: r.id,
    "status": lambda r: r.status,
    "error": lambda r: _text(r.error_type),
    "queue": lambda r: _text(r.queue_name),
    "func": lambda r: _text(r.func),
    "created": _newest_first,
    "failed": lambda r: _or_oldest(failed_ts(r)),
    "retries": lambda r: r.retry_count,
    "priority": lambda r: r.priority,
    "worker": lambda r: _text(r.worker_id),
}
"""How the whole filter is sorted by each column of the tasks tables (by column key)."""


@dataclass(frozen=True, slots=True)
class TaskOrder:
    """The column the matching rows are sorted by, before paging; ties stay newest first."""

    column: str = "created"
    descending: bool = True

    def __post_init__(self) -> None:
        if self.column not in SORT_KEYS:
            raise ValueError(f"tasks cannot be sorted by {self.column!r}")

    def sort(self, rows: Sequence[TaskRow]) -> list[TaskRow]:
        """``rows`` in this order (a new list)."""
        ordered = sorted(rows, key=_newest_first, reverse=True)
        if self.column != "created":
            # Stable: rows equal in the column keep the newest-first order.
            ordered.sort(key=SORT_KEYS[self.column], reverse=self.descending)  # type: ignore[arg-type]
        elif not self.descending:
            ordered.reverse()
        return ordered

    def describe(self, label: str) -> str:
        """``newest first``, or ``sorted by Retries ▼`` (``label`` names the column)."""
        if self.column == "created":
            return "newest first" if self.descending else "oldest first"
        if self.column == "failed":
            return "latest failure first" if self.descending else "earliest failure first"
        return f"sorted by {label} {'▼' if self.descending else '▲'}"


# The statuses a cancel applies to, worked out once: a page may test 100,000 rows (a row's
# status is a plain string, found in a set of ``StrEnum`` members by its value).
_CANCELLABLE = frozenset(s for s in TaskStatus if "cancel" in allowed_task_actions(s))
_FAILED = TaskStatus.FAILED.value


@dataclass(frozen=True, slots=True)
class TaskPage:
    """One window of the rows that match a filter, and what a bulk action would act on.

    The ids a bulk action takes are read from ``matching`` when one asks for them, not for
    every snapshot: three tuples of up to 100,000 ids each, built for each poll in the
    filter's thread, were a quarter of its CPU (49 ms a snapshot of 100,000 tasks, 37 ms
    without them), time in which it held the interpreter the UI loop waits for.
    """

    filter: TaskFilter
    rows: tuple[TaskRow, ...]
    start: int
    matched: int
    total: int
    # Every matching row, in ``order`` (the filter's own list, not a copy).
    matching: Sequence[TaskRow] = field(default=(), repr=False)
    # How many matching rows are in each status: what the keys offered and the summary need.
    statuses: Mapping[str, int] = field(default_factory=dict)
    order: TaskOrder = TaskOrder()

    @property
    def end(self) -> int:
        return self.start + len(self.rows)

    @property
    def failed(self) -> int:
        """How many matching tasks are in status failed."""
        return self.statuses.get(_FAILED, 0)

    @property
    def cancellable(self) -> int:
        """How many matching tasks a cancel applies to (pending or running)."""
        return sum(self.statuses.get(status, 0) for status in _CANCELLABLE)

    @property
    def failed_ids(self) -> tuple[str, ...]:
        """Ids of the matching tasks in status failed: exactly what "retry all" would retry."""
        return tuple(r.id for r in self.matching if r.status == _FAILED)

    @property
    def failed_queues(self) -> tuple[str, ...]:
        """The queues those failed tasks are in."""
        return tuple(sorted({r.queue_name for r in self.matching if r.status == _FAILED}))

    @property
    def ids(self) -> tuple[str, ...]:
        """Ids of every matching task: exactly what a bulk delete of the filter would take."""
        return tuple(r.id for r in self.matching)

    @property
    def cancellable_ids(self) -> tuple[str, ...]:
        """Ids of the matching tasks a cancel applies to: what a bulk cancel would take."""
        return tuple(r.id for r in self.matching if r.status in _CANCELLABLE)

    def failed_description(self) -> str:
        """Which failed tasks a bulk retry of this page's filter takes, in words.

        ``of ValueError in queue emails``; without a queue in the filter, the queues the
        tasks are in are named, so the confirmation says where the change lands.
        """
        what = self.filter.describe(with_status=False)
        if self.filter.queue is None and self.failed_queues:
            noun = "queue" if len(self.failed_queues) == 1 else "queues"
            where = f"in {noun} {', '.join(self.failed_queues)}"
            what = f"{what} {where}" if what else where
        return what

    def describe(self) -> str:
        """``showing 1-200 of 1,234 matching (100,000 in all)``."""
        if not self.matched:
            shown = "no task matches" if self.total else "no tasks"
        else:
            shown = f"showing {self.start + 1:,}-{self.end:,} of {self.matched:,}"
            if not self.filter.is_empty:
                shown += " matching"
        if not self.filter.is_empty:
            shown += f" ({self.total:,} in all)"
        return shown


def page_start(start: int, matched: int, size: int = PAGE_SIZE) -> int:
    """``start`` moved onto a page boundary inside ``0 .. matched``."""
    if matched <= 0:
        return 0
    last = (matched - 1) // size * size
    return min(max(start, 0) // size * size, last)


def body_text(*parts: object) -> str:
    """What text search matches in a body: ``repr`` of args and kwargs, the error message."""
    return " ".join(part if isinstance(part, str) else repr(part) for part in parts).casefold()


_status = attrgetter("status")


def select_tasks(
    rows: Sequence[TaskRow],
    flt: TaskFilter,
    start: int = 0,
    size: int = PAGE_SIZE,
    *,
    texts: Mapping[str, str] | None = None,
    anchor: str | None = None,
    order: TaskOrder = TaskOrder(),
) -> TaskPage:
    """The page of ``rows`` matching ``flt`` that starts at (or before) ``start``, in ``order``
    (newest first by default): the whole filter is sorted, then paged.

    With ``anchor`` (the id of the first row of a page the operator moved to), the page
    starts at that row wherever it is now: rows arriving above do not slide the page.
    """
    if flt.is_empty:
        matched: Sequence[TaskRow] = rows
    else:
        matched = list(filter(flt.predicate(texts), rows))
    ordered = order.sort(matched)
    at = next((i for i, r in enumerate(ordered) if r.id == anchor), None) if anchor else None
    start = at if at is not None else page_start(start, len(ordered), size)
    return TaskPage(
        filter=flt,
        rows=tuple(ordered[start : start + size]),
        start=start,
        matched=len(ordered),
        total=len(rows),
        matching=ordered,
        statuses=Counter(map(_status, ordered)),
        order=order,
    )
