"""The OmniQ runtime on the GCS backend: app facade, workers, scheduler, operator actions.

The names below are imported when first used: ``from omniq_console.runtime.operator import
StateChanged`` (the console, before its first frame) then loads neither the facade nor the
backend and its HTTP stack (aiohttp, google-auth), which ``OmniQ`` and ``Worker`` need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_attributes

if TYPE_CHECKING:
    from .omniq import OmniQ
    from .operator import BulkOutcome, Operator
    from .registry import TaskRegistry, TaskSpec, UnknownTaskError, task_name
    from .scheduler import Scheduler, run_task_id
    from .worker import Worker, current_task

_HOMES = {
    "OmniQ": "omniq",
    **dict.fromkeys(("BulkOutcome", "Operator"), "operator"),
    **dict.fromkeys(("TaskRegistry", "TaskSpec", "UnknownTaskError", "task_name"), "registry"),
    **dict.fromkeys(("Scheduler", "run_task_id"), "scheduler"),
    **dict.fromkeys(("Worker", "current_task"), "worker"),
}

__all__ = [
    "BulkOutcome",
    "OmniQ",
    "Operator",
    "Scheduler",
    "TaskRegistry",
    "TaskSpec",
    "UnknownTaskError",
    "Worker",
    "current_task",
    "run_task_id",
    "task_name",
]


__getattr__ = lazy_attributes(__name__, _HOMES)
