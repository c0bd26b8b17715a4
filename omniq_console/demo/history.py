"""Minutes of past results and events, so the demo console's charts start filled.

Reproducible: the same seed and "now" write the same history.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from ..backend.errors import ConflictError
from ..gathering import bounded_gather
from ..models import EventType, ResultStatus, TaskEvent, TaskResult
from .workload import PlannedTask, workload

_WRITE_CONCURRENCY = 16


async def write_history(
    backend: Any,
    *,
    seed: int | None,
    now: datetime,
    worker_ids: Sequence[str],
    minutes: int,
    per_minute: int,
) -> int:
    """Write ``minutes`` of past results and events, ending at ``now``, on an open backend.

    Only results and events are written (the tasks of the past are gone, as the janitor
    would have deleted them), as if by ``worker_ids``. The same ``seed`` and ``now`` give
    the same history. Returns how many results were written (a result already there, from
    this seed, is kept and not counted).
    """
    if minutes < 1 or per_minute < 1:
        raise ValueError("minutes and per_minute must be at least 1")
    rng = random.Random(f"{seed}-history") if seed is not None else random.Random()
    start = now - timedelta(minutes=minutes)
    count = minutes * per_minute
    spacing = (minutes * 60.0) / count
    sequence = workload(rng.getrandbits(32), 1.0)

    async def write(numbered: tuple[int, PlannedTask]) -> None:
        i, item = numbered
        task_id = str(uuid.UUID(int=rng_ids[i], version=4))
        created = start + timedelta(seconds=i * spacing)
        done = created + timedelta(milliseconds=50 + item.work_ms)
        failed = item.outcome not in ("success", "retried")
        worker = worker_ids[rng_workers[i] % len(worker_ids)]
        result = TaskResult(
            task_id=task_id,
            status=ResultStatus.ERROR if failed else ResultStatus.SUCCESS,
            result=None if failed else {"demo": True},
            error=f"{item.outcome} raised by {item.func}" if failed else None,
            error_type=item.outcome if failed else None,
            created_at=created,
            started_at=created + timedelta(milliseconds=50),
            completed_at=done,
            worker_id=worker,
            execution_time=item.work_ms / 1000,
        )
        events = [
            TaskEvent(
                task_id=task_id,
                event_type=EventType.ENQUEUED,
                timestamp=created,
                queue_name=item.queue,
            ),
            TaskEvent(
                task_id=task_id,
                event_type=EventType.DEQUEUED,
                worker_id=worker,
                timestamp=created + timedelta(milliseconds=40),
                queue_name=item.queue,
            ),
            TaskEvent(
                task_id=task_id,
                event_type=EventType.FAILED if failed else EventType.COMPLETED,
                worker_id=worker,
                timestamp=done,
                queue_name=item.queue,
                error_type=result.error_type,
                error_message=result.error,
                execution_time=result.execution_time,
            ),
        ]
        try:
            await backend.async_result_storage.set(result)
        except ConflictError:
            return  # this seed's history is in the bucket already
        # One batch per task, as a worker's flush would hold them.
        await backend.async_event_storage.log_events(events)
        written.append(task_id)

    items = [next(sequence) for _ in range(count)]
    rng_ids = [rng.getrandbits(128) for _ in range(count)]
    rng_workers = [rng.randrange(1_000) for _ in range(count)]
    written: list[str] = []
    await bounded_gather(enumerate(items), write, limit=_WRITE_CONCURRENCY)
    return len(written)
