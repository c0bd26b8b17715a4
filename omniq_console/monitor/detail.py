"""One task on demand: its definition overlaid with its state record, and its events; bodies
for search.

A task's status, worker, attempt and retries are the state record's (``lifecycle.overlay``, the
path ``get_task`` takes), never the definition body's. Bodies read for search go through the
backend's ``BodyReader`` and ``BodyCache``: when the model knows an object's generation and the
cache holds it, no GET is sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TypeVar

from ..backend import lifecycle
from ..backend.errors import CorruptObjectError
from ..backend.layout import Layout, check_id
from ..backend.listing import BodyReader, parse_model
from ..backend.objectstore import ObjectData, ObjectInfo
from ..backend.storeapi import ObjectStoreAPI
from ..models import OmniQModel, Task, TaskResult
from .io import read_many
from .model import BucketModel
from .records import parse_event_body
from .snapshot import EventRow, TaskDetail, UnreadableRow
from .sources.events import EVENT_LOOKBACK, event_key_at, event_row

M = TypeVar("M", bound=OmniQModel)

DETAIL_EVENTS = 500
"""Most events a task detail shows (newest kept)."""
DETAIL_EVENT_OBJECTS = 200
"""Most event objects a detail reads."""


def _model_or_report(
    model: type[M], got: ObjectData | UnreadableRow | None, unreadable: list[UnreadableRow]
) -> M | None:
    if got is None:
        return None
    if isinstance(got, UnreadableRow):
        unreadable.append(got)
        return None
    try:
        return parse_model(model, got.key, got.data)
    except CorruptObjectError as exc:
        unreadable.append(UnreadableRow(key=got.key, reason=exc.reason))
        return None


async def task_detail(
    store: ObjectStoreAPI, layout: Layout, model: BucketModel, task_id: str
) -> TaskDetail:
    check_id(task_id, "task id")
    unreadable: list[UnreadableRow] = []
    bodies = await read_many(store, [layout.task(task_id), layout.result(task_id)])
    definition = _model_or_report(Task, bodies.get(layout.task(task_id)), unreadable)
    result = _model_or_report(TaskResult, bodies.get(layout.result(task_id)), unreadable)
    # The definition says what was enqueued; status, worker, attempt and retries are the
    # state record's, as get_task derives them.
    task = lifecycle.overlay(definition, result) if definition is not None else None
    anchor = task.created_at.timestamp() if task else None
    if anchor is None and result is not None:
        anchor = result.created_at.timestamp()
    if anchor is None and task_id in model.defs:
        anchor = model.defs[task_id].created_at
    events: dict[str, EventRow] = {}
    if anchor is not None:
        start = event_key_at(
            layout.events, int(anchor * 1000 - EVENT_LOOKBACK.total_seconds() * 1000)
        )
        infos = await store.list(layout.events, start_offset=start)
        wanted = []
        for info in infos:
            md = info.metadata
            tasks = md.get("tasks") or md.get("task")
            # Read an object when its index names the task, or cannot say (no index, cut list).
            if tasks is None or md.get("tasks_truncated") or task_id in tasks.split(","):
                wanted.append(info.key)
        read = await read_many(store, wanted[-DETAIL_EVENT_OBJECTS:])
        for key, got in read.items():
            if isinstance(got, UnreadableRow):
                unreadable.append(got)
                continue
            parsed = parse_event_body(key, got.data)
            if isinstance(parsed, UnreadableRow):
                unreadable.append(parsed)
                continue
            name = Layout.name_of(key)
            for n, event in enumerate(parsed):
                if event.task_id == task_id:
                    row = event_row(event, f"{name}:{n}")
                    events[row.id] = row
    ordered = sorted(events.values(), key=lambda r: (r.timestamp, r.id))[-DETAIL_EVENTS:]
    return TaskDetail(
        task_id=task_id,
        task=task,
        result=result,
        events=tuple(ordered),
        unreadable=tuple(unreadable),
        status=task.status.value if task is not None else None,
        worker_id=task.worker_id if task is not None else None,
        attempt=result.attempt if result is not None else 0,
        retry_count=task.retry_count if task is not None else 0,
        max_retries=task.max_retries if task is not None else None,
    )


async def bodies(
    reader: BodyReader, model: BucketModel, kind: str, keys: dict[str, str], cls: type[M]
) -> dict[str, M | None]:
    """``keys``: task id -> key. Bodies at the generation the model knows (from the backend's
    cache when it holds that one); missing or unreadable objects map to None."""
    infos = [
        ObjectInfo(key, model.generation(kind, key) or 0, 0, None, {}) for key in keys.values()
    ]
    out: dict[str, M | None] = dict.fromkeys(keys)
    for item in await reader.read_listed(infos, cls):
        # A task body names its id, a state record its task's.
        tid = item.task_id if isinstance(item, TaskResult) else getattr(item, "id", None)
        if isinstance(tid, str) and tid in out:
            out[tid] = item
    await asyncio.sleep(0)
    return out


def task_keys(layout: Layout, ids: Sequence[str], result: bool) -> dict[str, str]:
    keys = {}
    for tid in ids:
        try:
            keys[tid] = layout.result(tid) if result else layout.task(tid)
        except ValueError:
            continue
    return keys
