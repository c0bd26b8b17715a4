"""Failure groups: the failed tasks of a snapshot, by exception type and queue.

A group is what the dashboard offers to retry in one confirmed action ("Retry 6 failed tasks
of ValueError in queue emails?"), so it carries the exact ids counted: the retry is bound to
them (``Operator.retry_tasks``), never to whatever fails by the time the operator clicks.
Plain Python, no pandas: the widget needs it without the ``notebook`` extra's pandas.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from ..models import TaskStatus
from ..monitor.snapshot import TaskRow

UNKNOWN_ERROR = "(unknown)"
"""Group name of failed tasks whose index carries no exception type."""


@dataclass(frozen=True, slots=True)
class FailureGroup:
    """Failed tasks of one queue that raised the same exception type."""

    error_type: str
    queue: str
    task_ids: tuple[str, ...]

    @property
    def count(self) -> int:
        return len(self.task_ids)

    @property
    def key(self) -> str:
        """A stable name for the group (what a selector keeps across snapshots)."""
        return f"{self.error_type}\x1f{self.queue}"

    def question(self) -> str:
        """The confirmation an operator answers before the group is retried."""
        noun = "task" if self.count == 1 else "tasks"
        return f"Retry {self.count} failed {noun} of {self.error_type} in queue {self.queue}?"


def failure_groups(rows: Iterable[TaskRow]) -> tuple[FailureGroup, ...]:
    """The failed tasks among ``rows`` grouped by (exception type, queue), largest first."""
    failed = TaskStatus.FAILED.value
    ids: defaultdict[tuple[str, str], list[str]] = defaultdict(list)
    for row in rows:
        if row.status == failed:
            ids[(row.error_type or UNKNOWN_ERROR, row.queue_name)].append(row.id)
    groups = (FailureGroup(kind, queue, tuple(sorted(t))) for (kind, queue), t in ids.items())
    return tuple(sorted(groups, key=lambda g: (-g.count, g.error_type, g.queue)))


__all__ = ["UNKNOWN_ERROR", "FailureGroup", "failure_groups"]
