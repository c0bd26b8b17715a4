"""Jupyter as a home for the console: a live dashboard widget, the full console in a cell,
and snapshots as pandas DataFrames.

``dashboard("my-bucket")`` shows a live panel with actions; ``console("my-bucket")`` runs the
Textual console in an iframe; ``snapshot_frames(snapshot)`` (also ``snapshot.to_frames()``;
its home is ``omniq_console.monitor.frames``) returns DataFrames. Attributes load lazily:
importing the package needs neither ipywidgets nor pandas.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..monitor.frames import snapshot_frames
    from .served import NotebookConsole, console
    from .widget import Dashboard, dashboard

# Homes relative to this package: the frames live with the snapshot they read.
_EXPORTS = {
    "Dashboard": ".widget",
    "dashboard": ".widget",
    "NotebookConsole": ".served",
    "console": ".served",
    "snapshot_frames": "..monitor.frames",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)


__all__ = ["Dashboard", "NotebookConsole", "console", "dashboard", "snapshot_frames"]
