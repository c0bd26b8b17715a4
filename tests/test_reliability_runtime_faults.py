"""The runtime and the monitor behind the fault proxy: flaky storage, outages, slow answers.

Workers must lose no task and run none twice; the monitor must say "stale" within its time
limit, keep the last good numbers, and recover by itself; an operator action in an outage must
fail with a clear message and leave the stored state exactly as it was.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from faultproxy import WRITE_METHODS, FaultProxy, ProxyRequest
from reliability_fixtures import (
    FAST_RETRY,
    Fleet,
    expected_runs,
    fault_proxy_fixture,  # noqa: F401 - fixtures used by name
    proxy_bucket_fixture,  # noqa: F401
    race_tasks,
)
from waiting import wait_until

from omniq_console.backend import lifecycle
from omniq_console.backend.errors import StorageError
from omniq_console.backend.gcs import GCSBackend
from omniq_console.clock import FakeClock
from omniq_console.demo.emulator import Emulator
from omniq_console.models import (
    EventType,
    ResultStatus,
    Schedule,
    ScheduleType,
    Task,
    TaskStatus,
    utcnow,
)
from omniq_console.monitor.monitor import Monitor
from omniq_console.monitor.snapshot import Snapshot
from omniq_console.runtime import OmniQ, Scheduler, run_task_id
from omniq_console.runtime.operator import Operator

PREFIX = "faults/"


def chance(p: float, seed: int) -> Callable[[ProxyRequest], bool]:
    """A predicate true for a fraction ``p`` of requests. Seeded, though which requests it hits
    still depends on how concurrent requests interleave."""
    rng = random.Random(seed)
    lock = threading.Lock()

    def pick(_: ProxyRequest) -> bool:
        with lock:
            return rng.random() < p

    return pick


@pytest.fixture
async def direct(proxy_bucket: str, emulator: Emulator) -> AsyncIterator[GCSBackend]:
    """The same bucket without the proxy: to seed it and to read back the truth."""
    async with GCSBackend(proxy_bucket, prefix=PREFIX, endpoint_url=emulator.url,
                          cache_timeout=0) as b:
        yield b


@pytest.fixture
async def proxied(proxy_bucket: str, fault_proxy: FaultProxy) -> AsyncIterator[GCSBackend]:
    async with GCSBackend(proxy_bucket, prefix=PREFIX, endpoint_url=fault_proxy.url,
                          retry=FAST_RETRY, cache_timeout=0) as b:
        yield b


# -- workers ----------------------------------------------------------------------------------


async def test_workers_on_flaky_storage_lose_nothing_and_run_nothing_twice(
    direct: GCSBackend, proxy_bucket: str, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    # Transient errors on any request, lost answers to writes (applied, then the connection
    # dies), dropped connections before reads: all within what retries absorb.
    fault_proxy.fail(503, times=None, where=chance(0.06, 1))
    fault_proxy.fail(429, times=None, path="/upload/", where=chance(0.04, 2))
    fault_proxy.drop(times=None, after_forward=True, path="/upload/", where=chance(0.05, 3))
    fault_proxy.drop(times=None, after_forward=True, method="DELETE", where=chance(0.05, 4))
    fault_proxy.drop(times=None, method="GET", where=chance(0.03, 5))

    tasks = race_tasks(40, slow_every=9)
    by_id = {t.id: t for t in tasks}
    fleet = Fleet(proxy_bucket, PREFIX, fault_proxy.url, tmp_path, lease=3.0)
    try:
        fleet.spawn("enqueuer", "enqueuer", tasks=[t.model_dump(mode="json") for t in tasks])
        fleet.spawn("w1", "worker", concurrency=2)
        fleet.spawn("w2", "worker", concurrency=2)
        # A burst once the fleet is busy (slow tasks hold their slots until then): five
        # failures in a row, one short of the children's retry budget, so no single request
        # can exhaust it.
        slow_ids = {t.id for t in tasks if t.func == "rel:slow"}

        def busy() -> bool:
            runs = fleet.executions()
            held = sum(1 for phase, t, _, _ in runs if phase == "start" and t in slow_ids)
            return len(runs) >= 10 or held >= 4  # four slow ones: every slot is taken

        await wait_until(
            busy, "the fleet busy", within=120,
            detail=lambda: f"{fleet.executions()}\n{fleet.logs()}",
        )
        burst = fault_proxy.fail(503, times=5)
        fleet.release_slow()
        statuses: list[TaskStatus] = []

        async def all_final() -> bool:
            nonlocal statuses
            statuses = list((await direct.async_task_storage.statuses()).values())
            return len(statuses) == len(tasks) and all(s.is_final for s in statuses)

        await wait_until(
            all_final, "all tasks final", within=120, every=0.5,
            detail=lambda: f"{Counter(statuses)}\n{fleet.logs()}",
        )
    finally:
        fleet.stop_all()
    assert fleet.procs["enqueuer"].returncode == 0, fleet.logs()

    assert burst.hits == 5
    outcomes = Counter(r.outcome for r in fault_proxy.records)
    assert outcomes["injected-503"] >= 5 and outcomes["dropped-after"] >= 3, outcomes

    for task_id, task in by_id.items():
        stored = await direct.async_task_storage.get_task(task_id)
        assert stored is not None, f"{task_id} lost"
        want = TaskStatus.FAILED if task.func == "rel:boom" else TaskStatus.COMPLETED
        assert stored.status == want, (task_id, stored.status)
        result = await direct.async_result_storage.get(task_id)
        assert result is not None, f"{task_id} has no result"
        assert result.status == (
            ResultStatus.ERROR if task.func == "rel:boom" else ResultStatus.SUCCESS
        )
    assert await direct.store.list(direct.layout.queues) == []
    ends = Counter(t for phase, t, _, _ in fleet.executions() if phase == "end")
    # Nobody died here: every function ran exactly as often as asked, not once more.
    assert {t: ends[t] for t in by_id} == {t: expected_runs(task) for t, task in by_id.items()}


# -- the monitor ------------------------------------------------------------------------------


async def _seed_tasks(backend: GCSBackend, n: int) -> None:
    for i in range(n):
        await backend.async_task_storage.enqueue(Task(func="m:f", id=f"seed-{i}"))


async def test_monitor_goes_stale_in_an_outage_keeps_its_numbers_and_recovers(
    direct: GCSBackend, proxied: GCSBackend, fault_proxy: FaultProxy
) -> None:
    await _seed_tasks(direct, 5)
    clock = FakeClock()
    monitor = Monitor(proxied, interval=0.2, poll_timeout=3.0, clock=clock.now)
    fresh = await monitor.poll()
    assert not fresh.stale and fresh.tasks["pending"] == 5

    fault_proxy.outage(503)
    clock.advance(1.0)
    started = time.monotonic()
    stale = await monitor.poll()
    assert time.monotonic() - started < monitor.poll_timeout + 1.0
    assert stale.stale and stale.error
    assert "\n" not in stale.error and len(stale.error) <= 300
    assert "503" in stale.error or "did not answer" in stale.error, stale.error
    # The last good numbers, marked stale: never zeros, never a half-polled mix.
    assert stale.tasks == fresh.tasks and stale.queues == fresh.queues
    clock.advance(1.0)
    staler = await monitor.poll()
    assert staler.stale and staler.age_s > stale.age_s > 0

    fault_proxy.clear()
    await direct.async_task_storage.enqueue(Task(func="m:f", id="after-outage"))
    back = await monitor.poll()
    assert not back.stale and back.error is None and back.age_s == 0
    assert back.tasks["pending"] == 6


async def test_monitor_with_slow_storage_times_out_and_says_so(
    direct: GCSBackend, proxied: GCSBackend, fault_proxy: FaultProxy
) -> None:
    await _seed_tasks(direct, 2)
    monitor = Monitor(proxied, interval=0.2, poll_timeout=1.0)
    assert not (await monitor.poll()).stale
    fault_proxy.delay(4.0, times=None)
    started = time.monotonic()
    snap = await monitor.poll()
    assert time.monotonic() - started < 2.0
    assert snap.stale and snap.error is not None and "timed out" in snap.error
    assert snap.tasks["pending"] == 2
    fault_proxy.clear()
    assert not (await monitor.poll()).stale


async def test_running_monitor_recovers_by_itself(
    direct: GCSBackend, proxied: GCSBackend, fault_proxy: FaultProxy
) -> None:
    await _seed_tasks(direct, 3)
    monitor = Monitor(proxied, interval=0.2, poll_timeout=2.0, max_backoff=1.0)
    seen: list[Snapshot] = []
    monitor.subscribe(seen.append)
    runner = asyncio.create_task(monitor.run())

    async def until(predicate: Callable[[Snapshot], bool], seconds: float) -> Snapshot:
        return await wait_until(
            lambda: seen[-1] if seen and predicate(seen[-1]) else None,
            "such a snapshot", within=seconds,
            detail=lambda: str([(s.stale, s.error) for s in seen]),
        )

    try:
        await until(lambda s: not s.stale, 10)
        fault_proxy.outage(503)
        down = await until(lambda s: s.stale, 10)
        assert down.tasks["pending"] == 3
        fault_proxy.clear()
        up = await until(lambda s: not s.stale, 10)
        assert up.error is None and up.tasks["pending"] == 3
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


# -- operator actions -------------------------------------------------------------------------


async def _seed_for_actions(direct: GCSBackend) -> tuple[Schedule, Task, Task]:
    schedule = Schedule(schedule_type=ScheduleType.INTERVAL, func="m:f",
                        interval=timedelta(minutes=1))
    await direct.async_schedule_storage.save_schedule(schedule)
    queue = direct.async_task_storage
    await queue.enqueue(Task(func="m:f", id="to-fail", queue_name="ops"))
    claimed = await queue.dequeue(["ops"], worker_id="w-ops")
    assert claimed is not None and claimed.record is not None
    await queue.ready_to_write(claimed)
    failure = lifecycle.Failure("ValueError", "boom", "Traceback: boom", retryable=False)
    failed = await queue.finish(
        claimed,
        lifecycle.fail_or_retry(
            claimed, claimed.record, failure, worker="w-ops", execution_time=0.1, now=utcnow()
        ),
    )
    await queue.enqueue(Task(func="m:f", id="to-cancel", queue_name="ops"))
    pending = await queue.get_task("to-cancel")
    assert pending is not None
    return schedule, failed, pending


async def _state(direct: GCSBackend) -> dict[str, object]:
    """Every object of the bucket, key -> (generation, body): what 'unchanged' means."""
    out: dict[str, object] = {}
    for info in await direct.store.list(direct.layout.prefix):
        if "/events/" in info.key or "/workers/" in info.key:
            continue
        out[info.key] = (info.generation, (await direct.store.read(info.key)).data)
    return out


ACTIONS = ["pause_schedule", "trigger_schedule", "retry_task", "cancel_task", "delete_task"]


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("outage", ["everything", "writes only", "uploads only"])
async def test_operator_action_in_an_outage_fails_clearly_and_changes_nothing(
    direct: GCSBackend, proxied: GCSBackend, fault_proxy: FaultProxy, outage: str, action: str
) -> None:
    schedule, failed, pending = await _seed_for_actions(direct)
    target = {
        "pause_schedule": schedule.id,
        "trigger_schedule": schedule.id,
        "retry_task": failed.id,
        "cancel_task": pending.id,
        "delete_task": pending.id,
    }[action]
    before = await _state(direct)
    events_before = await direct.async_event_storage.get_events()
    op = Operator(proxied, actor="oncall")
    if outage == "everything":
        fault_proxy.outage(503)
    else:
        # Reads work, writes fail: the action reads, decides, and cannot write. With "uploads
        # only", deletes still go through: an action must not delete before it can write.
        fault_proxy.fail(503, times=None, path="/upload/")
        if outage == "writes only":
            fault_proxy.fail(503, times=None, method="DELETE")

    with pytest.raises(StorageError) as err:
        await getattr(op, action)(target)
    message = str(err.value)
    assert "\n" not in message and fault_proxy.url in message, message

    fault_proxy.clear()
    assert await _state(direct) == before, "the action failed but changed the bucket"
    events_after = await direct.async_event_storage.get_events()
    assert [e.id for e in events_after] == [e.id for e in events_before]
    # Once storage is back, the same action goes through, audited.
    await getattr(op, action)(target)
    audit = await direct.async_event_storage.get_events(event_type=EventType.OPERATOR_ACTION)
    assert [(e.actor, e.details.get("action")) for e in audit] == [("oncall", action)]


def after_first_write() -> Callable[[ProxyRequest], bool]:
    """True for every write request but the first: an outage that starts mid-action."""
    writes = 0

    def pick(request: ProxyRequest) -> bool:
        nonlocal writes
        if request.method not in WRITE_METHODS:
            return False
        writes += 1
        return writes > 1

    return pick


@pytest.mark.parametrize("action", ACTIONS)
async def test_operator_action_cut_off_mid_way_is_undone_or_audited(
    direct: GCSBackend, proxied: GCSBackend, fault_proxy: FaultProxy, action: str
) -> None:
    """Storage fails right after the action's first write. Either the action failed and the
    bucket is as it was, or it stands and is audited: never a change nobody can account for."""
    schedule, failed, pending = await _seed_for_actions(direct)
    target = {
        "pause_schedule": schedule.id,
        "trigger_schedule": schedule.id,
        "retry_task": failed.id,
        "cancel_task": pending.id,
        "delete_task": pending.id,
    }[action]
    before = await _state(direct)
    fault_proxy.fail(503, times=None, where=after_first_write())
    op = Operator(proxied, actor="oncall")
    try:
        await getattr(op, action)(target)
        raised = None
    except StorageError as exc:
        raised = exc
    fault_proxy.clear()
    audit = await direct.async_event_storage.get_events(event_type=EventType.OPERATOR_ACTION)
    changed = await _state(direct) != before
    if raised is not None:
        assert "\n" not in str(raised)
        assert not changed, f"{action} failed ({raised}) but its change stands"
    else:
        assert [e.details.get("action") for e in audit] == [action]


async def test_a_slow_poll_stretches_the_interval_and_the_snapshot_says_so(
    direct: GCSBackend, proxied: GCSBackend, fault_proxy: FaultProxy
) -> None:
    """A big bucket's poll is slow: the next one waits three times as long, so polling never
    takes the console's whole time; a quick poll restores the chosen interval."""
    await _seed_tasks(direct, 3)
    monitor = Monitor(proxied, interval=0.2, poll_timeout=5.0)
    quick = await monitor.poll()
    assert quick.poll_interval_s == 0.2 and monitor.next_delay() == 0.2

    fault_proxy.delay(0.8, times=None, path="/o?")  # every listing answers after 0.8 s
    slow = await monitor.poll()
    assert not slow.stale
    assert slow.poll_interval_s >= 3 * 0.8
    assert monitor.next_delay() == slow.poll_interval_s

    fault_proxy.clear()
    again = await monitor.poll()
    assert again.poll_interval_s == 0.2 and monitor.next_delay() == 0.2


# -- schedulers -------------------------------------------------------------------------------


async def _due_schedule(direct: GCSBackend) -> tuple[str, datetime]:
    """A 60-second interval schedule; its id and first due time."""
    schedule_id = await OmniQ(direct).schedule_async("jobs.tick", interval=60, schedule_id="tick")
    schedule = await direct.async_schedule_storage.get_schedule(schedule_id)
    assert schedule is not None and schedule.next_run is not None
    return schedule_id, schedule.next_run


async def test_a_schedule_swap_whose_answer_is_lost_still_enqueues_its_run(
    direct: GCSBackend, proxied: GCSBackend, fault_proxy: FaultProxy
) -> None:
    schedule_id, due = await _due_schedule(direct)
    now = due + timedelta(seconds=1)
    scheduler = Scheduler(proxied, scheduler_id="lossy")
    # Every write lands, but its answer is lost (retries included): the swap is won unseen.
    fault_proxy.drop(times=None, after_forward=True, method="POST")
    assert await scheduler.tick(now) == []
    fault_proxy.clear()
    stored = await direct.async_schedule_storage.get_schedule(schedule_id)
    assert stored is not None and stored.run_count == 1, "the swap did not land: no test"
    # The next tick reads the schedule back, finds its own swap, and enqueues the run.
    assert await scheduler.tick(now + timedelta(seconds=1)) == [run_task_id(schedule_id, due)]
    tasks = list(await direct.async_task_storage.list_tasks())
    assert [t.id for t in tasks] == [run_task_id(schedule_id, due)]


async def test_a_run_a_rivals_sweep_enqueues_mid_fire_is_fired_once_by_the_pair(
    direct: GCSBackend, proxied: GCSBackend, fault_proxy: FaultProxy
) -> None:
    """On a loaded machine a rival's sweep can list a schedule between another scheduler's
    swap and its enqueue: the rival enqueues the owed run (create-only) and the other finds it
    enqueued. The run fired once, in that tick: the rival's tick returns it (it used to return
    nothing, so neither scheduler said it fired: the CI failure of
    ``test_two_schedulers_racing_fire_each_due_time_once``)."""
    schedule_id, due = await _due_schedule(direct)
    now = due + timedelta(seconds=1)
    # Every write after the swap (the run's enqueue) is slow to arrive, as under load.
    fault_proxy.delay(4.0, times=None, where=after_first_write())
    slow = asyncio.create_task(Scheduler(proxied, scheduler_id="slow").tick(now))

    async def swapped() -> bool:
        stored = await direct.async_schedule_storage.get_schedule(schedule_id)
        return stored is not None and stored.run_count == 1

    await wait_until(swapped, "the slow scheduler's swap")
    rival = Scheduler(direct, scheduler_id="rival")  # its first tick sweeps
    got_rival = await rival.tick(now)
    got_slow = await slow
    assert got_slow + got_rival == [run_task_id(schedule_id, due)], (got_slow, got_rival)
    tasks = list(await direct.async_task_storage.list_tasks())
    assert [t.id for t in tasks] == [run_task_id(schedule_id, due)]


async def test_a_run_owed_by_a_killed_scheduler_is_enqueued_by_the_next(
    direct: GCSBackend, proxied: GCSBackend, fault_proxy: FaultProxy
) -> None:
    schedule_id, due = await _due_schedule(direct)
    now = due + timedelta(seconds=1)
    # The swap lands; every write after it fails: the run's enqueue never happens, and the
    # scheduler is then dropped as if killed before its next tick.
    fault_proxy.fail(503, times=None, where=after_first_write())
    assert await Scheduler(proxied, scheduler_id="killed").tick(now) == []
    fault_proxy.clear()
    assert list(await direct.async_task_storage.list_tasks()) == []
    # Another scheduler's first tick sweeps the schedules and finishes the owed run, once.
    later = now + timedelta(seconds=5)
    survivor = Scheduler(direct, scheduler_id="survivor")
    # The run its sweep enqueued is one this tick fired (and the scheduler's count).
    assert await survivor.tick(later) == [run_task_id(schedule_id, due)]
    assert survivor.fired == 1
    assert await survivor.tick(later + timedelta(seconds=1)) == []
    tasks = list(await direct.async_task_storage.list_tasks())
    assert [t.id for t in tasks] == [run_task_id(schedule_id, due)]
    stored = await direct.async_schedule_storage.get_schedule(schedule_id)
    assert stored is not None and stored.run_count == 1
