"""An operator's action on a running task against a holder that renews as often as the
protocol allows (lease 3 s: a renewal every second, so the state record is never quiet for a
whole second), under GCS's rules (per-name 429s) with request latency.

Before cancel requests, each of the operator's compare-and-swaps lost to the next renewal and
the operator was told the task "kept changing". Now the operator leaves a cancel request the
holder honours at its next renewal (the holder writes the cancelled record itself, on its own
cadence), so the action lands within about one renewal interval.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator

import pytest
from faultproxy import GCSRulesProxy
from gcs_rules_fixtures import RULES_RETRY
from waiting import wait_until

from omniq_console import OmniQ
from omniq_console.backend.gcs import GCSBackend
from omniq_console.models import EventType, ResultStatus, TaskStatus
from omniq_console.runtime import Operator, Worker

LATENCY_S = 0.05
"""Added before every request reaches the model (each way of a round trip, roughly)."""
BOUND_S = 12.0
"""What the operator may take: a few renewal intervals plus the rules model's 429 backoff,
generous for a loaded machine (it took about 1-3 s when measured)."""


@pytest.fixture
async def operator_backend(gcs_rules: GCSRulesProxy) -> AsyncIterator[GCSBackend]:
    """The operator's own client (a console is another process than the worker)."""
    assert gcs_rules.bucket is not None
    async with GCSBackend(
        gcs_rules.bucket, endpoint_url=gcs_rules.url, retry=RULES_RETRY
    ) as backend:
        yield backend


HELD = 4
"""Tasks held at once, each acted on: one lucky swap no longer passes the test."""


async def _holding(
    backend: GCSBackend, worker_id: str
) -> tuple[Worker, asyncio.Task[None], list[str], list[str]]:
    """``HELD`` tasks held by one worker with a 3 s lease (each renewed every second), running
    until cancelled; returned once every one of them has been renewed."""
    omniq = OmniQ(backend)
    seen: list[str] = []

    @omniq.task(name="forever")
    async def forever() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        return "finished"

    task_ids = [await omniq.enqueue_async("forever") for _ in range(HELD)]
    worker = omniq.worker(worker_id=worker_id, concurrency=HELD, lease_seconds=3, reap_interval=60)
    running = asyncio.create_task(worker.run())
    first: dict[str, int] = {}

    async def renewed(task_id: str) -> bool:
        record = await backend.async_task_storage.get_record(task_id)
        if record is None or record.status != ResultStatus.PENDING or not record.lease_owner:
            return False
        assert record.generation is not None
        return first.setdefault(task_id, record.generation) != record.generation

    for task_id in task_ids:
        await wait_until(functools.partial(renewed, task_id), "the holder renewing its lease")
    return worker, running, task_ids, seen


async def _stop(worker: Worker, running: asyncio.Task[None]) -> None:
    worker.stop()
    await asyncio.wait_for(running, 30)


@pytest.mark.parametrize("own_client", [True, False], ids=["console-process", "same-process"])
async def test_cancel_lands_against_a_holder_renewing_every_second(
    gcs_rules: GCSRulesProxy,
    rules_backend: GCSBackend,
    operator_backend: GCSBackend,
    own_client: bool,
) -> None:
    gcs_rules.delay(LATENCY_S, times=None)
    worker, running, task_ids, seen = await _holding(rules_backend, "w-busy")
    operator = Operator(operator_backend if own_client else rules_backend, "alice")

    async def cancel(task_id: str) -> float:
        started = time.monotonic()
        cancelled = await operator.cancel_task(task_id, expected_status=TaskStatus.RUNNING)
        assert cancelled.status == TaskStatus.CANCELLED
        return time.monotonic() - started

    try:
        took = await asyncio.gather(*(cancel(i) for i in task_ids))
        assert max(took) < BOUND_S, f"the cancels took {took} s"
        await wait_until(lambda: seen == ["cancelled"] * HELD, "the functions cancelled")
    finally:
        await _stop(worker, running)
    # The per-name limit held throughout (no name mutated twice within a second).
    assert gcs_rules.max_mutations_per_second() <= 1
    for task_id in task_ids:
        result = await rules_backend.async_result_storage.get(task_id)
        assert result is not None and result.status == ResultStatus.CANCELLED
        assert result.error == "cancelled by alice"
        events = await rules_backend.async_event_storage.get_events(task_id=task_id)
        kinds = [e.event_type for e in events]
        assert kinds.count(EventType.CANCELLED) == 1
        assert EventType.COMPLETED not in kinds and EventType.FAILED not in kinds
        audit = [e for e in events if e.event_type == EventType.OPERATOR_ACTION]
        assert [(e.details["action"], e.actor) for e in audit] == [("cancel_task", "alice")]
    # Every request was withdrawn.
    assert await rules_backend.store.list(rules_backend.layout.requests) == []


async def test_delete_lands_against_a_holder_renewing_every_second(
    gcs_rules: GCSRulesProxy, rules_backend: GCSBackend, operator_backend: GCSBackend
) -> None:
    gcs_rules.delay(LATENCY_S, times=None)
    worker, running, task_ids, seen = await _holding(rules_backend, "w-busy")
    operator = Operator(operator_backend, "alice")

    async def delete(task_id: str) -> float:
        started = time.monotonic()
        assert await operator.delete_task(task_id, expected_status=TaskStatus.RUNNING)
        return time.monotonic() - started

    try:
        took = await asyncio.gather(*(delete(i) for i in task_ids))
        assert max(took) < BOUND_S, f"the deletes took {took} s"
        await wait_until(lambda: seen == ["cancelled"] * HELD, "the functions cancelled")
    finally:
        await _stop(worker, running)
    for task_id in task_ids:
        assert await rules_backend.async_task_storage.get_task(task_id) is None
        assert await rules_backend.async_result_storage.get(task_id) is None
    assert gcs_rules.max_mutations_per_second() <= 1
