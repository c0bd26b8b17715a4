"""One task on demand: its body, its state record and its events; bodies for search.

Bodies read for search are cached by generation: when the model knows a task's generation and
the cache holds that generation, no GET is sent.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence
from typing import TypeVar

from ..backend.errors import CorruptObjectError
from ..backend.layout import Layout, check_id
from ..backend.listing import parse_model
from ..backend.objectstore import ObjectData
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
BODY_CACHE = 20_000
SEARCH_CONCURRENCY = 8


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
    task = _model_or_report(Task, bodies.get(layout.task(task_id)), unreadable)
    result = _model_or_report(TaskResult, bodies.get(layout.result(task_id)), unreadable)
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
    )


class BodyCache:
    """Task and result bodies by (key, generation), least recently used dropped first."""

    def __init__(self) -> None:
        self._items: OrderedDict[str, tuple[int, OmniQModel | None]] = OrderedDict()
        self.hits = 0
        """Bodies served from the cache (the model's generation matched)."""
        self.misses = 0
        """Bodies that had to be read."""

    async def bodies(
        self,
        store: ObjectStoreAPI,
        model: BucketModel,
        kind: str,
        keys: dict[str, str],
        cls: type[M],
    ) -> dict[str, M | None]:
        """``keys``: task id -> key. Missing or unreadable objects map to None."""
        out: dict[str, M | None] = {}
        need: list[str] = []
        for tid, key in keys.items():
            gen = model.generation(kind, key)
            cached = self._items.get(key)
            if cached is not None and gen is not None and cached[0] == gen:
                self._items.move_to_end(key)
                out[tid] = cached[1]  # type: ignore[assignment]
            else:
                need.append(key)
        self.hits += len(keys) - len(need)
        self.misses += len(need)
        got = await read_many(store, need, SEARCH_CONCURRENCY)
        by_key = {key: tid for tid, key in keys.items()}
        for key in need:
            value = got.get(key)
            parsed: M | None = None
            if isinstance(value, ObjectData):
                try:
                    parsed = parse_model(cls, key, value.data)
                except CorruptObjectError:
                    parsed = None
                self._items[key] = (value.generation, parsed)
                self._items.move_to_end(key)
            out[by_key[key]] = parsed
        while len(self._items) > BODY_CACHE:
            self._items.popitem(last=False)
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
