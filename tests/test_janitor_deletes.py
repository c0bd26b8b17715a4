"""The demo janitor deletes only what its listing showed: every delete carries the generation it
decided on, so a worker that came back under its id, or a task an operator retried, between the
janitor's listing and its delete stays (and the pass goes on).

On the in-memory store, which enforces delete preconditions as GCS does (fake-gcs-server
ignores them); a hook runs right after the janitor's listing of one prefix, where the race falls.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from faultproxy import GCSRulesProxy
from protocol_helpers import task_in
from test_protocol_fences import CountingStore

from omniq_console.backend.gcs import GCSBackend
from omniq_console.backend.index import WorkerIndex, worker_index, worker_metadata
from omniq_console.backend.storeapi import ObjectInfo
from omniq_console.demo.janitor import Retention, cleanup
from omniq_console.models import TaskStatus, utcnow
from omniq_console.runtime import Operator

LATER = timedelta(hours=1)  # past every retention


class RacingStore(CountingStore):
    """Runs ``after_listing[prefix]`` once, right after a listing of ``prefix`` returns."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.after_listing: dict[str, Callable[[], Awaitable[None]]] = {}

    async def list(self, prefix: str, **kwargs: Any) -> list[ObjectInfo]:
        listed = await super().list(prefix, **kwargs)
        hook = self.after_listing.pop(prefix, None)
        if hook is not None:
            await hook()
        return listed


@pytest.fixture
async def mem() -> AsyncIterator[GCSBackend]:
    async with GCSBackend("janitor", object_store=RacingStore("janitor")) as opened:
        yield opened


def _racing(backend: GCSBackend) -> RacingStore:
    assert isinstance(backend.store, RacingStore)
    return backend.store


async def _beat(backend: GCSBackend, worker_id: str, state: str, *, ago: timedelta) -> None:
    """Write ``worker_id``'s heartbeat (on the generation it has, as a worker does)."""
    key = backend.layout.worker(worker_id)
    listed = [info for info in await backend.store.list(key, limit=1) if info.key == key]
    index = WorkerIndex(
        id=worker_id,
        state=state,
        last_seen=utcnow() - ago,
        started_at=utcnow() - ago,
        host="h",
        pid=1,
        queues=("default",),
        running=(),
        processed=0,
        failed=0,
    )
    await backend.store.write(
        key,
        json.dumps({"id": worker_id, "state": state}).encode(),
        metadata=worker_metadata(index),
        if_generation_match=listed[0].generation if listed else 0,
    )


async def _heartbeats(backend: GCSBackend) -> dict[str, str]:
    found = [worker_index(i) for i in await backend.store.list(backend.layout.workers)]
    return {w.id: w.state for w in found if w is not None}


async def test_a_worker_back_under_its_id_keeps_its_heartbeat(mem: GCSBackend) -> None:
    await _beat(mem, "w-gone", "stopped", ago=timedelta(hours=2))
    await _beat(mem, "w-back", "stopped", ago=timedelta(hours=2))

    async def comes_back() -> None:
        await _beat(mem, "w-back", "running", ago=timedelta(0))

    _racing(mem).after_listing[mem.layout.workers] = comes_back
    assert await cleanup(mem, Retention(), utcnow() + LATER) == 1
    assert await _heartbeats(mem) == {"w-back": "running"}
    sent = [(k, g) for k, g in _racing(mem).deletes if k.startswith(mem.layout.workers)]
    assert sorted(k for k, _ in sent) == [mem.layout.worker(w) for w in ("w-back", "w-gone")]
    assert None not in [g for _, g in sent], "a heartbeat delete without a precondition"


async def test_a_task_retried_after_the_listing_is_not_deleted(mem: GCSBackend) -> None:
    retried, gone = [await task_in(mem, TaskStatus.FAILED, queue=f"q{i}") for i in range(2)]

    async def operator_retries() -> None:
        await Operator(mem, "alice").retry_task(retried.id, expected_status=TaskStatus.FAILED)

    _racing(mem).after_listing[mem.layout.results] = operator_retries
    events_kept = Retention(events=2 * LATER)
    assert await cleanup(mem, events_kept, utcnow() + LATER) == 1
    queue = mem.async_task_storage
    assert await queue.get_task(gone.id) is None
    kept = await queue.get_task(retried.id)
    assert kept is not None and kept.status == TaskStatus.PENDING
    assert None not in [g for _, g in _racing(mem).deletes], "a delete without a precondition"


async def test_every_janitor_delete_through_the_gcs_rules_model_carries_a_generation(
    gcs_rules: GCSRulesProxy,
) -> None:
    """Counted at the HTTP level, in front of the emulator."""
    assert gcs_rules.bucket is not None
    async with GCSBackend(gcs_rules.bucket, endpoint_url=gcs_rules.url) as backend:
        await task_in(backend, TaskStatus.COMPLETED)
        await _beat(backend, "w-gone", "stopped", ago=timedelta(hours=2))
        await backend.async_event_storage.flush()
        gcs_rules.reset_records()
        assert await cleanup(backend, Retention(), utcnow() + LATER) >= 2
        assert await _heartbeats(backend) == {}
        deletes = [r for r in gcs_rules.records if r.method == "DELETE"]
    assert len(deletes) >= 3  # the heartbeat, the task, its record
    assert [r.path for r in deletes if "ifGenerationMatch=" not in r.path] == []
