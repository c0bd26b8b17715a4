"""Monitoring a bucket: ``Monitor`` polls it into immutable ``Snapshot`` objects.

Plain Python (no Textual): the console, ``omniq-console snapshot`` and notebooks share it. In a
notebook, ``await take_snapshot(backend)`` returns a snapshot that displays itself as tables.

The names below are imported when first used: ``from omniq_console.monitor.snapshot import
Snapshot`` (the console's views, the metrics) then loads neither the poller and its HTTP
stack nor the rich tables.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_attributes

if TYPE_CHECKING:
    from .monitor import Monitor, MonitoredBackend, Subscriber, take_snapshot
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
    from .tables import render_snapshot, snapshot_html, snapshot_text

_HOMES = {
    **dict.fromkeys(("Monitor", "MonitoredBackend", "Subscriber", "take_snapshot"), "monitor"),
    **dict.fromkeys(("render_snapshot", "snapshot_html", "snapshot_text"), "tables"),
    **dict.fromkeys(
        (
            *("EventRow", "PrefixUsage", "QueueStats", "QueueWindow", "RequestFigures"),
            *("ResultMinute", "ScheduleRow", "Snapshot", "StuckTask", "TaskDetail"),
            *("TaskRow", "UnreadableRow", "WorkerRow"),
        ),
        "snapshot",
    ),
}

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


__getattr__ = lazy_attributes(__name__, _HOMES)
