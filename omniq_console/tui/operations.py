"""Operator actions as the console sees them: the Operator API, and what to tell the operator.

The real implementation is ``omniq_console.runtime.operator.Operator``; the console depends
only on this protocol, so it can be driven by a recording fake in UI tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ..backend.errors import ConflictError, ObjectNotFoundError
from ..models import allowed_task_actions
from ..runtime.operator import StateChanged
from .fmt import count

__all__ = [
    "CONFLICT_MESSAGE",
    "BulkOutcomeLike",
    "ConsoleOperator",
    "StateChanged",
    "allowed_task_actions",
    "describe_bulk",
    "describe_error",
]

CONFLICT_MESSAGE = "changed since you saw it: refresh and try again"


class BulkOutcomeLike(Protocol):
    """``runtime.operator.BulkOutcome``: what a bulk action did to each id it was given."""

    done: list[str]
    skipped: list[tuple[str, str]]
    failed: list[tuple[str, str]]


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
    ) -> BulkOutcomeLike: ...

    async def cancel_tasks(
        self, task_ids: Sequence[str], expected_status: str | None = None
    ) -> BulkOutcomeLike: ...

    async def delete_tasks(
        self, task_ids: Sequence[str], expected_status: str | None = None
    ) -> BulkOutcomeLike: ...

    async def pause_queue(self, queue: str) -> None: ...

    async def resume_queue(self, queue: str) -> None: ...

    async def purge_queue(self, queue: str, task_ids: Sequence[str]) -> BulkOutcomeLike: ...


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


def describe_bulk(action: str, outcome: BulkOutcomeLike) -> tuple[str, bool]:
    """What a bulk action did, and whether everything asked for was done."""
    asked = len(outcome.done) + len(outcome.skipped) + len(outcome.failed)
    lines = [f"{action}: {count(len(outcome.done))} of {count(asked)} done"]
    if outcome.skipped:
        lines.append(
            f"{count(len(outcome.skipped))} skipped (changed since you saw them), "
            f"e.g. {outcome.skipped[0][0]}: {outcome.skipped[0][1]}"
        )
    if outcome.failed:
        lines.append(
            f"{count(len(outcome.failed))} failed, "
            f"e.g. {outcome.failed[0][0]}: {outcome.failed[0][1]}"
        )
    return "\n".join(lines), not (outcome.skipped or outcome.failed)
