"""Operator actions as the console sees them: the Operator API, and what to tell the operator.

The real implementation is ``omniq_console.runtime.operator.Operator``; the console depends
only on this protocol, so it can be driven by a recording fake in UI tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ..backend.errors import ConflictError, ObjectNotFoundError
from ..runtime.operator import BulkOutcome, StateChanged

__all__ = [
    "CONFLICT_MESSAGE",
    "ConsoleOperator",
    "StateChanged",
    "describe_bulk",
    "describe_error",
]

CONFLICT_MESSAGE = "changed since you saw it: refresh and try again"


class ConsoleOperator(Protocol):
    """The part of ``omniq_console.runtime.operator.Operator`` the console calls.

    ``expected_status`` / ``generation`` bind an action to what the operator saw: the
    operator refuses (``ConflictError``) when the object moved on since.
    """

    async def pause_schedule(
        self, schedule_id: str, *, generation: int | None = None
    ) -> object: ...

    async def resume_schedule(
        self, schedule_id: str, *, generation: int | None = None
    ) -> object: ...

    async def trigger_schedule(self, schedule_id: str) -> str: ...

    async def retry_task(self, task_id: str, *, expected_status: str | None = None) -> object: ...

    async def cancel_task(self, task_id: str, *, expected_status: str | None = None) -> object: ...

    async def delete_task(self, task_id: str, *, expected_status: str | None = None) -> bool: ...

    async def retry_tasks(
        self, task_ids: Sequence[str], expected_status: str | None = None
    ) -> BulkOutcome: ...

    async def cancel_tasks(
        self, task_ids: Sequence[str], expected_status: str | None = None
    ) -> BulkOutcome: ...

    async def delete_tasks(
        self, task_ids: Sequence[str], expected_status: str | None = None
    ) -> BulkOutcome: ...

    async def pause_queue(self, queue: str) -> None: ...

    async def resume_queue(self, queue: str) -> None: ...

    async def purge_queue(self, queue: str, task_ids: Sequence[str]) -> BulkOutcome: ...


def describe_error(action: str, error: BaseException) -> str:
    """One sentence telling the operator why ``action`` did not happen and what to do."""
    if isinstance(error, StateChanged):
        # It says what the task is now ("task ab12 is now running on worker w-1").
        return f"{action}: {error}"
    if isinstance(error, ConflictError):
        return f"{action}: {CONFLICT_MESSAGE}"
    if isinstance(error, ObjectNotFoundError):
        return f"{action}: it no longer exists ({error})"
    if isinstance(error, PermissionError):
        return f"{action}: not permitted ({error})"
    if isinstance(error, ValueError):
        return f"{action}: {error}"
    return f"{action} failed: {type(error).__name__}: {error}"


def describe_bulk(action: str, outcome: BulkOutcome) -> tuple[str, bool]:
    """What a bulk action did, and whether everything asked for was done."""
    return outcome.summary(action), outcome.complete
