"""Monitoring a bucket: ``Monitor`` polls it into immutable ``Snapshot`` objects.

Plain Python (no Textual): the console, ``omniq-console snapshot`` and notebooks share it. In a
notebook, ``await take_snapshot(backend)`` returns a snapshot that displays itself as tables.
"""

from .monitor import Monitor, MonitoredBackend, Subscriber, take_snapshot
from .notebook import render_snapshot, snapshot_html, snapshot_text
from .snapshot import (
    EventRow,
    PrefixUsage,
    QueueStats,
    QueueWindow,
    RequestFigures,
    ResultMinute,
    ScheduleRow,
    Snapshot,
    StuckTask,
    TaskDetail,
    TaskRow,
    UnreadableRow,
    WorkerRow,
)

__all__ = [
    "EventRow",
    "Monitor",
    "MonitoredBackend",
    "PrefixUsage",
    "QueueStats",
    "QueueWindow",
    "RequestFigures",
    "ResultMinute",
    "ScheduleRow",
    "Snapshot",
    "StuckTask",
    "Subscriber",
    "TaskDetail",
    "TaskRow",
    "UnreadableRow",
    "WorkerRow",
    "render_snapshot",
    "snapshot_html",
    "snapshot_text",
    "take_snapshot",
]
