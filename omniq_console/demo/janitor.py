"""Keeping a demo bucket small: finished tasks, results, events and stopped workers go once past
their retention (the emulator slows down as its bucket grows)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

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
    results = backend.async_result_storage
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
            deletes.append(partial(queue.delete_task, ridx.task_id))
        else:
            deletes.append(partial(results.delete, ridx.task_id))
    for info in worker_infos:
        widx = worker_index(info)
        if (
            widx is not None
            and widx.state == "stopped"
            and widx.last_seen is not None
            and now - widx.last_seen > retention.events
        ):
            deletes.append(partial(store.delete, info.key))
    deleted = await bounded_gather(deletes, lambda delete: delete(), limit=_DELETE_CONCURRENCY)
    events = await backend.async_event_storage.cleanup_old_events(now - retention.events)
    return sum(1 for d in deleted if d) + int(events)
