"""Failure groups as the notebook offers them: one per exception type and queue.

A group is what the dashboard offers to retry in one confirmed action ("Retry 6 failed tasks
of ValueError in queue emails?"), so it carries the exact ids counted. The grouping itself
lives in ``omniq_console.monitor.groups``, shared with the console.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..monitor.groups import UNKNOWN_ERROR, FailureGroup
from ..monitor.groups import failure_groups as _failure_groups
from ..monitor.snapshot import TaskRow


def failure_groups(rows: Iterable[TaskRow]) -> tuple[FailureGroup, ...]:
    """The failed tasks among ``rows`` grouped by (exception type, queue), largest first."""
    return _failure_groups(rows, by_queue=True)


__all__ = ["UNKNOWN_ERROR", "FailureGroup", "failure_groups"]
