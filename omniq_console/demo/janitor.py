"""Keeping a demo bucket small: finished tasks, results, events and stopped workers go once past
their retention (the emulator slows down as its bucket grows).

Every delete is decided on a listing and conditioned on the generation that listing showed
(``ifGenerationMatch``), like every delete of the protocol: a heartbeat a worker rewrote since
(it came back under its id), a result rewritten or a task retried since stays. A 412 is settled
by looking (``ObjectStore.delete``: gone means an earlier sending of ours landed), and what
moved on is left for a later pass, never the end of this one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from ..backend.errors import ConflictError, CorruptObjectError
from ..backend.index import result_index, worker_index
from ..backend.layout import Layout
from ..gathering import bounded_gather
from ..models import TaskStatus

_DELETE_CONCURRENCY = 16


@dataclass(frozen=True)
class Retention:
    """How long finished things stay: completed tasks (and successful results) ``completed``,
    failed/cancelled/expired ones ``failed`` (so an operator has time to retry them), events
    and stopped workers ``events``."""

    completed: timedelta = timedelta(minutes=3)
    failed: timedelta = timedelta(minutes=15)
    events: timedelta = timedelta(minutes=5)


async def cleanup(backend: Any, retention: Retention, now: datetime) -> int:
    """Delete what is past its ``retention`` at ``now``; returns how many objects went.

    Decided on listings alone.
    """
    store, layout = backend.store, backend.layout
    queue = backend.async_task_storage
    # Deletes as listed: False when the object is gone or changed since (left alone).
    delete_listed = backend.async_result_storage.reader.delete_listed
    task_infos, result_infos, worker_infos = await asyncio.gather(
        store.list(layout.tasks), store.list(layout.results), store.list(layout.workers)
    )
    # A task's status is its state record's (docs/architecture.md, "Task status is derived
    # from which objects exist"): the record's index decides, the task's own does not.
    stored_tasks = {Layout.name_of(info.key) for info in task_infos}
    deletes: list[Callable[[], Awaitable[Any]]] = []
    for info in result_infos:
        ridx = result_index(info)
        if ridx is None or not ridx.state.is_final:
            continue
        at = ridx.completed_at or info.updated
        keep = retention.completed if ridx.state == TaskStatus.COMPLETED else retention.failed
        if at is None or now - at <= keep:
            continue
        # A task goes with its record; a result whose task is gone (history) goes alone.
        if ridx.task_id in stored_tasks:
            deletes.append(partial(_delete_final_task, queue, ridx.task_id, info.generation))
        else:
            deletes.append(partial(delete_listed, (info.key, info.generation)))
    for info in worker_infos:
        widx = worker_index(info)
        if (
            widx is not None
            and widx.state == "stopped"
            and widx.last_seen is not None
            and now - widx.last_seen > retention.events
        ):
            deletes.append(partial(delete_listed, (info.key, info.generation)))
    deleted = await bounded_gather(deletes, lambda delete: delete(), limit=_DELETE_CONCURRENCY)
    events = await backend.async_event_storage.cleanup_old_events(now - retention.events)
    return sum(1 for d in deleted if d) + int(events)


async def _delete_final_task(queue: Any, task_id: str, record_generation: int) -> bool:
    """Delete a task whose state record was listed final at ``record_generation``; False (and
    nothing deleted) when the task is gone or moved on since (an operator retried it)."""
    try:
        try:
            seen = await queue.get_task(task_id)
        except CorruptObjectError:
            # Unreadable: deleted on the generations listed now, as an operator's delete is.
            return bool(await queue.delete_task(task_id))
        if seen is None or seen.record is None or seen.record.generation != record_generation:
            return False
        return bool(await queue.delete_task(task_id, seen=seen))
    except ConflictError:
        return False  # it moved on between the read and a delete: a later pass decides again
