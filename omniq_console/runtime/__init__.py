"""The OmniQ runtime on the GCS backend: app facade, workers, scheduler, operator actions."""

from .omniq import OmniQ
from .operator import BulkOutcome, Operator
from .registry import TaskRegistry, TaskSpec, UnknownTaskError, task_name
from .scheduler import Scheduler, run_task_id
from .worker import Worker, current_task

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
