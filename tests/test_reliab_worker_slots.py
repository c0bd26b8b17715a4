"""What a worker's slots and the bucket's running records say, and why they differ.

A worker frees a slot as soon as a function returns; the outcome is written in the background,
no earlier than GCS's per-name second after the claim. Until it lands, the task's state record
still says RUNNING under this worker's lease. So the bucket can show a worker holding more
running records than it has slots (the Workers view once showed 5 of 3), while the functions
it runs, which its heartbeat lists, never exceed ``concurrency``.
"""

from __future__ import annotations

import asyncio

from omniq_console import OmniQ
from omniq_console.backend.gcs import GCSBackend
from omniq_console.backend.index import result_index, worker_index
from omniq_console.models import TaskStatus

SLOTS = 1
TASKS = 8


async def _held(backend: GCSBackend, worker_id: str) -> set[str]:
    """Tasks whose state record says running under ``worker_id``'s lease (one listing)."""
    held = set()
    for info in await backend.store.list(backend.layout.results):
        idx = result_index(info)
        if idx is not None and idx.state == TaskStatus.RUNNING and idx.worker_id == worker_id:
            held.add(idx.task_id)
    return held


async def test_records_held_can_exceed_slots_while_functions_running_never_do(
    backend: GCSBackend,
) -> None:
    omniq = OmniQ(backend)
    omniq.task(name="noop")(lambda: None)
    ids = [await omniq.enqueue_async("noop") for _ in range(TASKS)]
    worker = omniq.worker(worker_id="w-slots", concurrency=SLOTS, heartbeat_interval=1)
    functions_seen: list[int] = []
    held_seen: list[int] = []

    async def sample() -> None:
        while True:
            functions_seen.append(len(worker.running_task_ids))
            held_seen.append(len(await _held(backend, "w-slots")))
            await asyncio.sleep(0.02)

    running = asyncio.create_task(worker.run())
    sampler = asyncio.create_task(sample())
    try:
        for task_id in ids:
            await omniq.get_result_async(task_id, timeout=60)
        heartbeat = None
        for info in await backend.store.list(backend.layout.workers):
            heartbeat = worker_index(info) or heartbeat
    finally:
        sampler.cancel()
        worker.stop()
        await asyncio.wait_for(running, 30)
    # The functions this worker ran at once never exceeded its slots (what its heartbeat lists) ...
    assert max(functions_seen) <= SLOTS
    assert heartbeat is not None and len(heartbeat.running) <= SLOTS
    # ... while the bucket showed it holding more running records than slots: outcomes of
    # functions that had returned, waiting out the per-name second.
    assert max(held_seen) > SLOTS, held_seen
