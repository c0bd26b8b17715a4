"""What the console's widgets need from the app: a small protocol instead of the app class.

Views, the status bar and the task detail screen reach the app only through
:class:`ConsoleContext` (:func:`console_of`), so they can be mounted in any app that provides
it and never depend on the app's own layout of screens and widgets.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from textual.app import SystemCommand
from textual.dom import DOMNode

from ..monitor.snapshot import Snapshot
from .source import SnapshotSource
from .thresholds import Thresholds

if TYPE_CHECKING:
    from .actions import ActionRunner


@runtime_checkable
class ConsoleContext(Protocol):
    """The app state and services the console's widgets use.

    ``snapshot``, ``interval`` and ``polling_paused`` are Textual reactives on the app:
    widgets ``watch`` them rather than being told.
    """

    thresholds: Thresholds
    source: SnapshotSource
    bucket: str
    prefix: str
    read_only: bool

    @property
    def snapshot(self) -> Snapshot | None: ...

    @property
    def interval(self) -> float | None: ...

    @property
    def polling_paused(self) -> bool: ...

    @property
    def actions(self) -> ActionRunner: ...

    @property
    def can_act(self) -> bool: ...

    def now(self) -> datetime:
        """The snapshot's time plus the time since it arrived (what countdowns count from)."""
        ...

    def data_age(self) -> float:
        """Seconds since the data shown was read from the bucket."""
        ...


@runtime_checkable
class ProvidesCommands(Protocol):
    """A view or screen that adds its own commands to the command palette."""

    def commands(self) -> Iterable[SystemCommand]:
        """The palette commands that apply now (only actions the selection allows)."""
        ...


def console_of(node: DOMNode) -> ConsoleContext:
    """The :class:`ConsoleContext` ``node`` runs in; a clear error outside the console."""
    app = node.app
    if not isinstance(app, ConsoleContext):
        raise TypeError(f"{type(node).__name__} needs an app providing ConsoleContext")
    return app
