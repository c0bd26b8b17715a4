"""Messages the console's parts send each other."""

from __future__ import annotations

from textual.message import Message

from ..monitor.snapshot import Snapshot


class SnapshotUpdated(Message):
    """A new snapshot arrived from the source."""

    def __init__(self, snapshot: Snapshot) -> None:
        super().__init__()
        self.snapshot = snapshot


class OpenTask(Message):
    """The operator asked to open one task's detail."""

    def __init__(self, task_id: str) -> None:
        super().__init__()
        self.task_id = task_id


class ShowQueueTasks(Message):
    """The operator asked for the tasks of one queue."""

    def __init__(self, queue: str) -> None:
        super().__init__()
        self.queue = queue
