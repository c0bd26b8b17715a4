"""Cancel requests (``requests/{id}.json``) that no one will act on are deleted by the reaper.

An operator whose compare-and-swap keeps losing to a holder's renewals leaves a cancel request
and withdraws it when its action ends (``runtime/operator.py``); an operator killed meanwhile
left it in the bucket for good. Three clients share one bucket, as in production: a worker
(claims, outcomes), an operator (requests, never withdrawn here: its process "died"), and a
reaper whose monotonic clock the test can move forward (``JumpClock``).

Run against the emulator and, always, against the GCS rules model (per-name 429s, delete
preconditions); ``pytest --gcs-rules`` puts the emulator variant under the model as well.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from faultproxy import GCSRulesProxy
from gcs_rules_fixtures import RULES_RETRY
from waiting import wait_until

from omniq_console.backend import lifecycle
from omniq_console.backend.gcs import GCSBackend
from omniq_console.backend.queue import AsyncGCSQueue
from omniq_console.backend.reaper import CANCEL_REQUEST_BOUND_S, Maintenance
from omniq_console.clock import SystemClock
from omniq_console.models import Task, TaskStatus
from omniq_console.runtime import Operator
from omniq_console.runtime import operator as operator_module

PASS_EVERY_S = 0.3
"""Real seconds between the test's reaper passes while it waits for one to act."""


class JumpClock(SystemClock):
    """The machine's clocks, with a monotonic clock the test can move forward at once (the
    reaper decides on it; wall time and sleeping stay real, so per-name gaps are real)."""

    def __init__(self) -> None:
        self.jumped = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.jumped

    def jump(self, seconds: float) -> None:
        self.jumped += seconds


@dataclass
class Clients:
    worker: GCSBackend
    operator: GCSBackend
    reaper: GCSBackend
    clock: JumpClock
    proxy: GCSRulesProxy | None  # a rules model of this test's own, None otherwise


@pytest.fixture(params=["emulator", "rules"])
async def clients(request: pytest.FixtureRequest) -> AsyncIterator[Clients]:
    """A worker's, an operator's and a reaper's client on one fresh bucket: on the emulator
    (under ``--gcs-rules``, the session's model), or on a rules model of the test's own."""
    proxy: GCSRulesProxy | None = None
    if request.param == "rules":
        proxy = request.getfixturevalue("gcs_rules")
        assert proxy.bucket is not None
        bucket, options = proxy.bucket, {"endpoint_url": proxy.url, "retry": RULES_RETRY}
    else:
        bucket, options = request.getfixturevalue("bucket"), {}
    clock = JumpClock()
    async with (
        GCSBackend(bucket, **options) as worker,
        GCSBackend(bucket, **options) as operator,
        GCSBackend(bucket, **options) as reaper,
    ):
        reaper.async_task_storage.clock = clock
        yield Clients(worker, operator, reaper, clock, proxy)


async def _running(c: Clients, n: int) -> list[Task]:
    """``n`` tasks claimed by the worker under a long lease (no reaper requeues them here)."""
    q = c.worker.async_task_storage
    ids = {await q.enqueue(Task(func="m:f", queue_name="q")) for _ in range(n)}
    held = [await q.dequeue(["q"], worker_id="w1", lease_seconds=120) for _ in range(n)]
    assert {t.id for t in held if t is not None} == ids
    return [t for t in held if t is not None]


async def _ask_cancel(c: Clients, task_id: str) -> int:
    """The operator's cancel request of ``task_id``'s run, as a killed operator leaves it;
    return its generation."""
    q = c.operator.async_task_storage
    seen = await q.get_task(task_id)
    assert seen is not None and seen.status == TaskStatus.RUNNING
    request = await q.request_cancel(seen, actor="alice")
    assert request.generation is not None
    return request.generation


async def _complete(q: AsyncGCSQueue, task: Task) -> None:
    await q.ready_to_write(task)
    assert task.record is not None
    done = lifecycle.complete(
        task.record, worker="w1", value=1, execution_time=0.1, now=q.clock.now()
    )
    await q.finish(task, done)


async def _requests(c: Clients) -> dict[str, int]:
    """The cancel requests in the bucket: task id -> generation."""
    layout = c.worker.layout
    found = await c.worker.store.list(layout.requests)
    return {layout.name_of(info.key): info.generation for info in found}


async def _passes_until_gone(c: Clients, task_ids: set[str]) -> Maintenance:
    """Reaper passes until no request of ``task_ids`` is left; their reports summed."""
    total = Maintenance()

    async def gone() -> bool:
        report = await c.reaper.async_task_storage.maintain()
        total.stale_requests += report.stale_requests
        total.unreadable += report.unreadable
        return not task_ids & set(await _requests(c))

    await wait_until(gone, "the reaper deleting the left-over requests", every=PASS_EVERY_S)
    return total


def test_the_reaper_waits_on_a_live_request_as_long_as_its_operator_does() -> None:
    # An operator keeps its request while its action lasts: the reaper must not drop a live
    # one sooner (runtime/operator.py bounds the action; backend/reaper.py the request).
    assert operator_module._SWAP_WITHIN_S <= CANCEL_REQUEST_BOUND_S


async def test_requests_of_runs_that_are_over_go_and_a_live_one_stays_its_bound(
    clients: Clients,
) -> None:
    c = clients
    done, deleted, live = await _running(c, 3)
    asked = {t.id: await _ask_cancel(c, t.id) for t in (done, deleted, live)}
    # The runs end before their holder read the requests: one completes, one is deleted.
    await _complete(c.worker.async_task_storage, done)
    assert await c.worker.async_task_storage.delete_task(deleted.id)
    assert await _requests(c) == asked

    report = await _passes_until_gone(c, {done.id, deleted.id})
    assert report.stale_requests == 2 and report.unreadable == []
    # The live run's request outlived the hold that removed the others: its task still runs.
    assert await _requests(c) == {live.id: asked[live.id]}
    report = await c.reaper.async_task_storage.maintain()
    assert report.stale_requests == 0 and await _requests(c) == {live.id: asked[live.id]}

    # Unchanged for the bound of an operator's action: its operator is gone, the request goes.
    c.clock.jump(CANCEL_REQUEST_BOUND_S)
    report = await c.reaper.async_task_storage.maintain()
    assert report.stale_requests == 1 and await _requests(c) == {}
    still = await c.worker.async_task_storage.get_task(live.id)
    assert still is not None and still.status == TaskStatus.RUNNING  # only the request went
    if c.proxy is not None:
        assert c.proxy.max_mutations_per_second() <= 1


async def test_an_empty_requests_prefix_is_listed_once_per_bound(clients: Clients) -> None:
    c = clients
    q = c.reaper.async_task_storage
    lists: list[int] = []
    for _ in range(3):
        before = c.reaper.store.stats.copy()
        await q.maintain()
        lists.append(c.reaper.store.stats.since(before).count["list"])
    # tasks, entries, records every pass; requests/ the first time only.
    assert lists == [4, 3, 3]
    c.clock.jump(CANCEL_REQUEST_BOUND_S)
    (task,) = await _running(c, 1)
    await _ask_cancel(c, task.id)
    before = c.reaper.store.stats.copy()
    await q.maintain()
    assert c.reaper.store.stats.since(before).count["list"] == 4
    # While a request is there, every pass lists them (it may soon be over).
    before = c.reaper.store.stats.copy()
    await q.maintain()
    assert c.reaper.store.stats.since(before).count["list"] == 4


async def test_a_request_rewritten_during_the_sweep_survives(
    gcs_rules: GCSRulesProxy,
    rules_backend: GCSBackend,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A delete on the generation listed spares a request written since. On the rules model
    only: fake-gcs-server ignores ``ifGenerationMatch`` on a delete."""
    assert gcs_rules.bucket is not None
    options = {"endpoint_url": gcs_rules.url, "retry": RULES_RETRY}
    async with (
        GCSBackend(gcs_rules.bucket, **options) as operator,
        GCSBackend(gcs_rules.bucket, **options) as reaper,
    ):
        c = Clients(rules_backend, operator, reaper, JumpClock(), gcs_rules)
        reaper.async_task_storage.clock = c.clock
        (task,) = await _running(c, 1)
        first = await _ask_cancel(c, task.id)
        await _complete(c.worker.async_task_storage, task)

        # Between the reaper's listing and its delete: the task is retried, claimed again,
        # and the operator asks its new run to cancel (its request replaces the old one).
        q = reaper.async_task_storage
        real_delete = q._delete
        rewritten: list[int] = []

        async def delete_after_a_new_request(key: str, generation: int) -> bool:
            if key == reaper.layout.request(task.id) and not rewritten:
                await Operator(operator, "bob").retry_task(task.id)
                again = await c.worker.async_task_storage.dequeue(
                    ["q"], timeout=20, worker_id="w1", lease_seconds=120
                )
                assert again is not None and again.id == task.id
                rewritten.append(await _ask_cancel(c, task.id))
            return await real_delete(key, generation)

        monkeypatch.setattr(q, "_delete", delete_after_a_new_request)

        async def swept() -> bool:
            report = await q.maintain()
            assert report.stale_requests == 0 and report.unreadable == []
            return bool(rewritten)

        await wait_until(swept, "the reaper deleting the left-over request", every=PASS_EVERY_S)
        assert rewritten[0] != first
        assert await _requests(c) == {task.id: rewritten[0]}
        # The new run's request is live: later passes keep it.
        report = await q.maintain()
        assert report.stale_requests == 0 and await _requests(c) == {task.id: rewritten[0]}
        assert gcs_rules.max_mutations_per_second() <= 1
