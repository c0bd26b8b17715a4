"""The baseline poll: what the original OmniQ GCS backend does to show the same numbers.

It knows nothing of index metadata: it lists every prefix, then GETs and parses every body
(32 requests in flight) and counts from the bodies: a task's status from its state record
(``results/{id}.json``; a task without one is pending, docs/architecture.md), events from
batches and single event objects alike. Its cost is one listing request per 1,000 objects plus
one GET per object, at every poll, changed or not.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field

from omniq_console.backend.events import events_in
from omniq_console.backend.layout import Layout
from omniq_console.backend.objectstore import ObjectStore, RequestStats
from omniq_console.models import Schedule, Task, TaskEvent, TaskResult, TaskStatus

CONCURRENCY = 32


@dataclass
class NaiveResult:
    seconds: float
    requests: RequestStats
    objects: dict[str, int]
    tasks_by_status: Counter[str] = field(default_factory=Counter)
    results_by_status: Counter[str] = field(default_factory=Counter)


async def naive_poll(
    store: ObjectStore, layout: Layout, concurrency: int = CONCURRENCY
) -> NaiveResult:
    """One poll the naive way, on an open store; its requests are counted on ``store.stats``."""
    prefixes = {
        "tasks": (layout.tasks, Task),
        "queues": (layout.queues, None),
        "results": (layout.results, TaskResult),
        "events": (layout.events, TaskEvent),
        "schedules": (layout.schedules, Schedule),
    }
    before = store.stats.copy()
    started = time.perf_counter()
    listed = {kind: await store.list(prefix) for kind, (prefix, _) in prefixes.items()}
    sem = asyncio.Semaphore(concurrency)
    out = NaiveResult(0.0, RequestStats(), {k: len(v) for k, v in listed.items()})

    tasks: list[str] = []
    states: dict[str, TaskStatus] = {}

    async def fetch(kind: str, key: str) -> None:
        model = prefixes[kind][1]
        async with sem:
            data = (await store.read(key)).data
        if kind == "events":
            events_in(key, data)
            return
        if model is None:
            json.loads(data)
            return
        parsed = model.model_validate_json(data)
        if isinstance(parsed, Task):
            tasks.append(parsed.id)
        elif isinstance(parsed, TaskResult):
            states[parsed.task_id] = parsed.task_status
            if parsed.is_final:
                out.results_by_status[parsed.status.value] += 1

    await asyncio.gather(
        *(fetch(kind, info.key) for kind, infos in listed.items() for info in infos)
    )
    out.tasks_by_status.update(states.get(t, TaskStatus.PENDING).value for t in tasks)
    out.seconds = time.perf_counter() - started
    out.requests = store.stats.since(before)
    return out
