"""``SnapshotSource``: what a console reads from, the part of ``Monitor``'s API it uses.

The console (``tui/``) renders what a source publishes and never touches storage itself;
``Monitor`` is one source, ``MonitorThread`` (``thread.py``) runs any source on its own loop
and thread, and the console's ``StaticSource`` replays fixed snapshots.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from ..models import Task, TaskResult
from .snapshot import Snapshot, TaskDetail

SnapshotCallback = Callable[[Snapshot], object]


@runtime_checkable
class SnapshotSource(Protocol):
    """The part of ``omniq_console.monitor.monitor.Monitor`` the console uses."""

    @property
    def latest(self) -> Snapshot | None:
        """The newest snapshot, or None before the first poll."""
        ...

    async def run(self) -> None:
        """Poll until cancelled, publishing each snapshot to the subscribers."""
        ...

    def subscribe(self, callback: SnapshotCallback) -> Callable[[], None]:
        """Call ``callback(snapshot)`` on every new snapshot; returns the unsubscribe function."""
        ...

    def request_poll(self) -> None:
        """Poll as soon as possible (after an action, or when the operator asks)."""
        ...

    def pause(self) -> None:
        """Stop polling until ``resume``."""
        ...

    def resume(self) -> None:
        """Poll again after ``pause``."""
        ...

    def set_interval(self, seconds: float) -> None:
        """Poll every ``seconds`` from now on."""
        ...

    async def task_detail(self, task_id: str) -> TaskDetail:
        """Read one task's body, result and event timeline."""
        ...

    async def task_bodies(self, task_ids: Sequence[str]) -> dict[str, Task | None]:
        """Read the bodies of ``task_ids`` (None: gone), a GET each unless cached."""
        ...

    async def result_bodies(self, task_ids: Sequence[str]) -> dict[str, TaskResult | None]:
        """Read the result records of ``task_ids`` (None: none)."""
        ...
