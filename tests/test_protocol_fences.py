"""Round three of the protocol's defects (issue 22, 21.6, 20.3, 25.2), each shown on the in-memory
store with GCS's rules (per-name limit on, delete preconditions enforced, time injected), and on
the GCS rules model in front of the emulator where it can show it.

A deeply nested body stops no reaper and no claimer; deletes are fenced on the generations seen;
an entry never outlives its task; a claim from an old listing is undone for certain; the skip
memory and the body cache are bounded; idle claimers list ``paused/`` at most once a second; a
transition's event is written by whoever applies it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from datetime import timedelta
from typing import Any

import pytest
from faultproxy import FaultProxy, GCSRulesProxy
from protocol_helpers import complete, task_in
from reliability_fixtures import (
    FAST_RETRY,
    fault_proxy_fixture,  # noqa: F401 - fixtures used by name
    proxy_bucket_fixture,  # noqa: F401
)

from omniq_console.backend import lifecycle
from omniq_console.backend.claims import MAX_PASS_AGE_S
from omniq_console.backend.errors import BackendUnavailableError, ConflictError
from omniq_console.backend.gcs import GCSBackend
from omniq_console.backend.index import queue_entry_metadata, task_metadata
from omniq_console.backend.listing import BodyCache
from omniq_console.backend.memstore import MemoryObjectStore, MemoryServer
from omniq_console.backend.objectstore import ObjectStore
from omniq_console.backend.queue import AsyncGCSQueue
from omniq_console.backend.reaper import LEASE_MARGIN_S, REPAIR_GRACE_SECONDS
from omniq_console.backend.storeapi import ObjectInfo
from omniq_console.clock import FakeClock
from omniq_console.models import EventType, Schedule, ScheduleStatus, ScheduleType, Task, TaskStatus
from omniq_console.runtime import Operator

DEEP = 5_000


class CountingStore(MemoryObjectStore):
    """The in-memory store, recording every delete's precondition and every listed prefix."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deletes: list[tuple[str, int | None]] = []
        self.listed: list[str] = []

    async def delete(self, key: str, *, if_generation_match: int | None = None) -> bool:
        self.deletes.append((key, if_generation_match))
        return await super().delete(key, if_generation_match=if_generation_match)

    async def list(self, prefix: str, **kwargs: Any) -> list[ObjectInfo]:
        self.listed.append(prefix)
        return await super().list(prefix, **kwargs)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def mem(clock: FakeClock) -> AsyncIterator[GCSBackend]:
    """A backend on the counting in-memory store: GCS's per-name limit on, injected time."""
    server = MemoryServer(clock=lambda: clock.now().timestamp(), per_name_limit=True)
    server.create_bucket("mem-bucket")
    store = CountingStore("mem-bucket", server=server)
    async with GCSBackend("mem-bucket", object_store=store, lease_seconds=10) as opened:
        opened.async_task_storage.clock = clock
        yield opened


def _store(backend: GCSBackend) -> CountingStore:
    assert isinstance(backend.store, CountingStore)
    return backend.store


def _q(backend: GCSBackend) -> AsyncGCSQueue:
    return backend.async_task_storage


def _nested(body: bytes, depth: int, pad: int = 0) -> bytes:
    """``body`` (a JSON object) with a value nested ``depth`` lists deep and ``pad`` bytes more."""
    extra = b',"deep":' + b"[" * depth + b"]" * depth + b',"pad":"' + b"x" * pad + b'"'
    return body[:-1] + extra + b"}"


async def _plant_task(backend: GCSBackend, task: Task, body: bytes, *, entry: bool) -> None:
    """Write ``task``'s objects by hand with ``body``: its index metadata stays intact."""
    store = backend.store
    await store.write(backend.layout.task(task.id), body, metadata=task_metadata(task))
    if entry:
        key = backend.layout.queue_entry(task.queue_name, task.id)
        entry_body = json.dumps({"schema_version": 1, "task_id": task.id, "nonce": task.id})
        await store.write(key, entry_body.encode(), metadata=queue_entry_metadata(task))


async def _exists(backend: GCSBackend, key: str) -> bool:
    return any(info.key == key for info in await backend.store.list(key, limit=1))


# -- 22.1: one object never ends a reaper pass or the claim loop ---------------------------------


async def test_a_deeply_nested_body_ends_no_reaper_pass(mem: GCSBackend, clock: FakeClock) -> None:
    q = _q(mem)
    past = clock.now() - timedelta(seconds=5)
    poison = Task(func="m:f", id="a-poison", expires_at=past)
    await _plant_task(mem, poison, _nested(poison.to_json(), DEEP), entry=True)
    # After the poison in key order: an expired task and a task a crash left without entry.
    expired = Task(func="m:f", id="z-expired", expires_at=past)
    await _plant_task(mem, expired, expired.to_json(), entry=True)
    orphan = Task(func="m:f", id="m-orphan")
    await _plant_task(mem, orphan, orphan.to_json(), entry=False)
    report = await q.maintain(grace_seconds=0)
    assert [task_id for task_id, _ in report.expired] == [expired.id]
    assert report.repaired == [orphan.id]
    assert [(u.key, u.reason) for u in report.unreadable] == [
        (mem.layout.task(poison.id), "nested too deeply to parse")
    ]


async def test_a_poison_task_is_never_claimed_nor_left_running(
    mem: GCSBackend, clock: FakeClock
) -> None:
    q = _q(mem)
    poison = Task(func="m:f", id="poison", priority=9)
    await _plant_task(mem, poison, _nested(poison.to_json(), DEEP), entry=True)
    good = await q.enqueue(Task(func="m:f", priority=1))
    claimed = await q.dequeue(["default"], worker_id="w1")
    assert claimed is not None and claimed.id == good
    assert await q.get_record(poison.id) is None, "a running record was left for the poison"
    # A reaper pass over it after a whole lease finds nothing to requeue.
    await q.maintain()
    clock.advance(q.lease_seconds + LEASE_MARGIN_S + 1)
    report = await q.maintain()
    assert poison.id not in [task_id for task_id, _ in report.requeued]
    assert await q.get_record(poison.id) is None


async def test_a_task_nested_too_deeply_to_read_back_is_refused_at_enqueue(
    mem: GCSBackend,
) -> None:
    q = _q(mem)
    deep: list[Any] = []
    for _ in range(150):
        deep = [deep]
    with pytest.raises(ValueError, match="levels deep"):
        await q.enqueue(Task(func="m:f", args=(deep,)))
    readable: list[Any] = []
    for _ in range(90):
        readable = [readable]
    task_id = await q.enqueue(Task(func="m:f", args=(readable,)))
    stored = await q.get_task(task_id)
    assert stored is not None and stored.args == (readable,)


# -- 22.2 / 21.6: deletes fenced on the generations seen --------------------------------------


async def test_a_purge_deletes_only_what_is_still_pending(
    mem: GCSBackend, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker completes a counted task between the operator's read and the delete: the purge
    skips it and the task keeps its success record."""
    q = _q(mem)
    raced = await task_in(mem, TaskStatus.PENDING, queue="jobs")
    still = await task_in(mem, TaskStatus.PENDING, queue="jobs")
    clock.advance(2)
    real_get_task = q.get_task

    async def read_then_a_worker_finishes(task_id: str) -> Task | None:
        seen = await real_get_task(task_id)
        if task_id == raced.id and seen is not None and seen.status == TaskStatus.PENDING:
            held = await q.dequeue(["jobs"], worker_id="w-fast")
            assert held is not None and held.id == raced.id
            await complete(mem, held, "done")
        return seen

    monkeypatch.setattr(q, "get_task", read_then_a_worker_finishes)
    outcome = await Operator(mem, "ops").purge_queue("jobs", [raced.id, still.id])
    monkeypatch.undo()
    assert outcome.done == [still.id]
    assert [task_id for task_id, _ in outcome.skipped] == [raced.id]
    kept = await q.get_task(raced.id)
    assert kept is not None and kept.status == TaskStatus.COMPLETED
    result = await mem.async_result_storage.get(raced.id)
    assert result is not None and result.result == "done"
    assert await q.get_task(still.id) is None
    assert await q.get_record(still.id) is None


async def test_a_delete_on_an_old_view_deletes_nothing(mem: GCSBackend, clock: FakeClock) -> None:
    q = _q(mem)
    task = await task_in(mem, TaskStatus.PENDING)
    seen = await q.get_task(task.id)
    assert seen is not None
    held = await q.dequeue(["default"], worker_id="w1")
    assert held is not None
    clock.advance(2)
    with pytest.raises(ConflictError):
        await q.delete_task(task.id, seen=seen)
    now = await q.get_task(task.id)
    assert now is not None and now.status == TaskStatus.RUNNING
    assert await _exists(mem, mem.layout.queue_entry("default", task.id))


async def test_a_resume_never_removes_a_newer_pause(mem: GCSBackend, clock: FakeClock) -> None:
    """Console A resumes on the pause it saw; B paused again meanwhile: A's delete is refused."""
    q = _q(mem)
    await q.pause_queue("jobs", actor="a")
    (seen,) = await mem.store.list(mem.layout.paused_queue("jobs"))
    clock.advance(2)
    assert await q.resume_queue("jobs", generation=seen.generation)
    clock.advance(2)
    await q.pause_queue("jobs", actor="b")
    clock.advance(2)
    with pytest.raises(ConflictError):  # A's delete again (a retry after a lost answer)
        await q.resume_queue("jobs", generation=seen.generation)
    assert "jobs" in await q.paused_queues()


async def test_a_schedule_delete_never_removes_a_newer_version(
    mem: GCSBackend, clock: FakeClock
) -> None:
    """A schedule deleted on the version its caller read: changed since (paused by another
    operator), the delete is refused and the schedule stays; without a generation, the one
    listed now; every delete carries a precondition."""
    ss = mem.async_schedule_storage
    schedule = Schedule(
        schedule_type=ScheduleType.INTERVAL, func="m:tick", interval=timedelta(minutes=5)
    )
    await ss.save_schedule(schedule)
    seen = await ss.get_schedule(schedule.id)
    assert seen is not None and seen.generation is not None
    clock.advance(2)
    await ss.pause_schedule(schedule.id)
    clock.advance(2)
    with pytest.raises(ConflictError, match=schedule.id):
        await ss.delete_schedule(schedule.id, generation=seen.generation)
    kept = await ss.get_schedule(schedule.id)
    assert kept is not None and kept.status == ScheduleStatus.PAUSED
    assert await ss.delete_schedule(schedule.id) is True
    assert await ss.get_schedule(schedule.id) is None
    assert await ss.delete_schedule(schedule.id) is False
    key = mem.layout.schedule(schedule.id)
    sent = [generation for k, generation in _store(mem).deletes if k == key]
    assert sent and None not in sent, "a schedule delete without a precondition"


async def test_every_delete_the_protocol_sends_carries_a_generation(
    mem: GCSBackend, clock: FakeClock
) -> None:
    """A workload touching every kind of delete: each carries ``ifGenerationMatch``, and a task
    delete deletes its result once."""
    q = _q(mem)
    op = Operator(mem, "ops")
    done, failed, running, pending, gone = [
        await task_in(mem, status, queue=f"q{i}")
        for i, status in enumerate(
            [
                TaskStatus.COMPLETED,
                TaskStatus.FAILED,
                TaskStatus.RUNNING,
                TaskStatus.PENDING,
                TaskStatus.PENDING,
            ]
        )
    ]
    clock.advance(2)
    await op.cancel_task(running.id)
    await op.retry_task(failed.id)
    await op.pause_queue("q9")
    with pytest.raises(ValueError, match="already paused"):
        await op.pause_queue("q9")  # nothing changed: its audit is withdrawn
    clock.advance(2)
    await op.resume_queue("q9")
    await op.delete_task(done.id)
    await op.purge_queue("q3", [pending.id])
    # A claim from a listing that names a task deleted since: the claim is undone.
    await q._ranked(("q4",))
    await q.delete_task(gone.id)
    clock.advance(0.1)
    assert await q.dequeue(["q4"], worker_id="w-late") is None
    # Left-overs the reaper deletes: an entry without task or record.
    orphan_entry = Task(func="m:f", id="ghost", queue_name="q5")
    key = mem.layout.queue_entry("q5", "ghost")
    await mem.store.write(key, b"{}", metadata=queue_entry_metadata(orphan_entry))
    await q.maintain()
    clock.advance(REPAIR_GRACE_SECONDS + 1)
    await q.maintain()
    assert not await _exists(mem, key)
    await mem.async_event_storage.cleanup_old_events(timedelta(seconds=-60))
    deletes = _store(mem).deletes
    withdrawn = [k for k, _ in deletes if k.startswith(mem.layout.events)]
    assert withdrawn, "no audit was withdrawn"
    assert [d for d in deletes if d[1] is None] == [], "a delete without a precondition"
    result_deletes = [k for k, _ in deletes if k == mem.layout.result(done.id)]
    assert len(result_deletes) == 1, "the result of a deleted task was deleted twice"


async def test_every_delete_through_the_gcs_rules_model_carries_a_generation(
    gcs_rules: GCSRulesProxy,
) -> None:
    """The same promise counted at the HTTP level, in front of the emulator."""
    assert gcs_rules.bucket is not None
    async with GCSBackend(gcs_rules.bucket, endpoint_url=gcs_rules.url) as backend:
        op = Operator(backend, "ops")
        done = await task_in(backend, TaskStatus.COMPLETED)
        pending = await task_in(backend, TaskStatus.PENDING, queue="jobs")
        running = await task_in(backend, TaskStatus.RUNNING, queue="other")
        await op.cancel_task(running.id)
        await op.delete_task(done.id)
        await op.purge_queue("jobs", [pending.id])
        await op.pause_queue("jobs")
        with pytest.raises(ValueError, match="already paused"):
            await op.pause_queue("jobs")  # nothing changed: its audit is withdrawn
        await op.resume_queue("jobs")
        deletes = [r for r in gcs_rules.records if r.method == "DELETE"]
    assert len(deletes) >= 8
    assert [r.path for r in deletes if "ifGenerationMatch=" not in r.path] == []


async def test_a_retried_delete_settles_a_412_by_looking_at_the_object(
    fault_proxy: FaultProxy, proxy_bucket: str
) -> None:
    """Through a fault proxy in front of the emulator (which ignores delete preconditions, so
    the 412 is injected): gone after a lost answer is ours; still there is someone else's."""
    store = ObjectStore(proxy_bucket, endpoint_url=fault_proxy.url, retry=FAST_RETRY)
    await store.open()
    try:
        info = await store.write("k/gone.json", b"{}")
        fault_proxy.drop(times=1, after_forward=True, method="DELETE")
        fault_proxy.fail(412, times=1, method="DELETE")
        assert await store.delete("k/gone.json", if_generation_match=info.generation)
        info = await store.write("k/kept.json", b"{}")
        fault_proxy.fail(503, times=1, method="DELETE")
        fault_proxy.fail(412, times=1, method="DELETE")
        with pytest.raises(ConflictError):
            await store.delete("k/kept.json", if_generation_match=info.generation)
        assert [i.key for i in await store.list("k/")] == ["k/kept.json"]
        fault_proxy.fail(503, times=1, method="DELETE")
        with pytest.raises(BackendUnavailableError):  # no precondition: never retried
            await store.delete("k/kept.json")
    finally:
        await store.close()


# -- 22.3: an entry never outlives its task -------------------------------------------------


async def test_an_entry_is_not_re_created_for_a_task_deleted_mid_retry(
    mem: GCSBackend, clock: FakeClock
) -> None:
    """An operator delete lands between a retry's record write and its entry rewrite."""
    q = _q(mem)
    task_id = await q.enqueue(Task(func="m:f", max_retries=2))
    held = await q.dequeue(["default"], worker_id="w1")
    assert held is not None and held.record is not None
    clock.advance(2)
    retry = lifecycle.fail_or_retry(
        held,
        held.record,
        lifecycle.Failure("E", "boom"),
        worker="w1",
        execution_time=0.1,
        now=clock.now(),
    )
    await q._write_record(retry.record, held.record.generation or 0)  # step (1) only
    clock.advance(2)
    assert await Operator(mem, "ops").delete_task(task_id)
    clock.advance(2)
    await q._rewrite_entry(held, retry.record)  # step (2), late
    assert not await _exists(mem, mem.layout.queue_entry("default", task_id))
    assert await q.get_queue_size("default") == 0


async def test_the_reaper_deletes_entries_and_pending_records_whose_task_is_gone(
    mem: GCSBackend, clock: FakeClock
) -> None:
    q = _q(mem)
    ghost = Task(func="m:f", id="ghost")
    entry_key = mem.layout.queue_entry("default", ghost.id)
    await mem.store.write(entry_key, b"{}", metadata=queue_entry_metadata(ghost))
    # A pending record without its task (a claim's undo that never landed, requeued since).
    record = lifecycle.claim(ghost, None, worker="w", lease_s=10, now=clock.now()).record
    record = lifecycle.requeue(record, reaper="r", now=clock.now()).record
    await mem.store.write(
        mem.layout.result(ghost.id), record.to_json(), metadata=_result_metadata(record)
    )
    first = await q.maintain()
    assert first.stale_entries == 0 and first.stale_records == 0  # within the grace
    clock.advance(REPAIR_GRACE_SECONDS + 1)
    report = await q.maintain()
    assert report.stale_entries == 1 and report.stale_records == 1
    assert not await _exists(mem, entry_key)
    assert await q.get_record(ghost.id) is None


def _result_metadata(record: Any) -> Mapping[str, str]:
    from omniq_console.backend.index import result_metadata

    return result_metadata(record)


# -- 22.4: a claim from an old listing --------------------------------------------------------


async def _listed_then_deleted(store: MemoryObjectStore) -> tuple[AsyncGCSQueue, str]:
    """A claimer that listed the queue, and the task it listed deleted by an operator since
    (the claimer's listing is still fresh on its own clock)."""
    claimer = GCSBackend("old-listing", object_store=store).async_task_storage
    claimer.clock = FakeClock()
    task_id = await claimer.enqueue(Task(func="m:f"))
    await claimer._ranked(("default",))
    operator = GCSBackend("old-listing", object_store=store).async_task_storage
    operator.clock = FakeClock()
    assert await operator.delete_task(task_id)
    return claimer, task_id


async def test_a_claim_from_an_old_listing_of_a_deleted_task_is_undone() -> None:
    store = MemoryObjectStore("old-listing")
    await store.open()
    claimer, task_id = await _listed_then_deleted(store)
    assert await claimer.dequeue(["default"], worker_id="w1") is None
    assert await claimer.get_record(task_id) is None, "the claim re-created a deleted task's record"


async def test_a_claim_undo_is_retried_until_it_lands(monkeypatch: pytest.MonkeyPatch) -> None:
    store = MemoryObjectStore("old-listing")
    await store.open()
    claimer, task_id = await _listed_then_deleted(store)
    real_delete = store.delete
    failures = [BackendUnavailableError("down"), BackendUnavailableError("down")]

    async def flaky(key: str, *, if_generation_match: int | None = None) -> bool:
        if key == claimer.layout.result(task_id) and failures:
            raise failures.pop()
        return await real_delete(key, if_generation_match=if_generation_match)

    monkeypatch.setattr(store, "delete", flaky)
    assert await claimer.dequeue(["default"], worker_id="w1") is None
    assert failures == [] and await claimer.get_record(task_id) is None


async def test_a_claim_pass_stops_using_a_listing_older_than_its_bound(
    mem: GCSBackend, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    q = _q(mem)
    for _ in range(5):
        await q.enqueue(Task(func="m:f"))
    tried: list[str] = []

    async def slow_loss(cand: Any, worker: str, lease: float) -> None:
        tried.append(cand.index.task_id)
        clock.advance(MAX_PASS_AGE_S * 0.6)  # each attempt takes long (a loaded machine)

    monkeypatch.setattr(q, "_claim", slow_loss)
    assert await q.claim_pass(["default"], "w1", 10.0, paused=()) is None
    assert len(tried) == 2


# -- 22.7 / 22.8: bounded memories ------------------------------------------------------------


async def test_the_skip_memory_keeps_only_entries_of_the_latest_listing(
    mem: GCSBackend, clock: FakeClock
) -> None:
    q = _q(mem)
    for _ in range(20):
        await q.enqueue(Task(func="m:f"))
    held = [await q.dequeue(["default"], worker_id="w1") for _ in range(20)]
    assert len(q.claims) == 20
    clock.advance(2)
    for task in held:
        assert task is not None
        await complete(mem, task)
    clock.advance(1)
    assert await q.claim_pass(["default"], "w1", 10.0, paused=()) is None
    assert len(q.claims) == 0


async def test_the_body_cache_is_bounded_by_bytes(mem: GCSBackend) -> None:
    big = "x" * (20 * 1024 * 1024)
    for i in range(16):
        await _q(mem).enqueue(Task(func="m:f", queue_name=f"q{i}", args=(big,)))
    assert mem.cache.bytes <= mem.cache.max_bytes
    assert len(mem.cache) == 0, "a 20 MB body stayed in the cache"
    cache = BodyCache(60, max_bytes=10_000)
    for i in range(12):
        cache.put(f"k{i}", 1, Task(func="m:f"), 1000)
    assert cache.bytes == 10_000 and len(cache) == 10
    assert cache.get("k0", 1, Task) is None and cache.get("k11", 1, Task) is not None


# -- 25.2: paused/ listed at most once a second ------------------------------------------------


async def test_idle_claimers_list_paused_at_most_once_a_second(
    mem: GCSBackend, clock: FakeClock
) -> None:
    q = _q(mem)
    store = _store(mem)
    store.listed.clear()
    for _ in range(20):  # twenty idle passes within a second, no queue paused
        assert await q.dequeue(["default"]) is None
        clock.advance(0.04)
    assert store.listed.count(mem.layout.paused) == 1
    store.listed.clear()
    for _ in range(5):  # a worker that listed paused/ itself and found nothing paused
        await q.claim_pass(["default"], "w1", 10.0, paused=())
    assert store.listed.count(mem.layout.paused) == 0


# -- 20.3: every transition's event is written by whoever applies it ----------------------------


async def test_operator_cancel_and_retry_write_their_transitions_events(
    mem: GCSBackend, clock: FakeClock
) -> None:
    op = Operator(mem, "ops")
    task = await task_in(mem, TaskStatus.PENDING)
    clock.advance(2)
    await op.cancel_task(task.id)
    clock.advance(2)
    await op.retry_task(task.id)
    events = await mem.async_event_storage.get_events(task_id=task.id)
    kinds = [e.event_type for e in events]
    assert EventType.CANCELLED in kinds and EventType.ENQUEUED in kinds
    assert kinds.count(EventType.OPERATOR_ACTION) == 2
    retried = next(e for e in events if e.event_type == EventType.ENQUEUED and e.actor)
    assert retried.details["reason"] == "operator_retry" and retried.actor == "ops"
