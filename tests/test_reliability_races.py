"""Races between processes: workers, a reaper and an enqueuer on one bucket, a worker killed
mid-task; and several consoles pausing and resuming one schedule at once.

The truth is what the task functions themselves logged (one line per call, per process) and
what every task body says at the end; the store and the monitor must agree with it.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from reliability_fixtures import QUEUE, Fleet, expected_runs, race_tasks
from waiting import wait_until

from omniq_console.backend.errors import ConflictError
from omniq_console.backend.gcs import GCSBackend
from omniq_console.demo.emulator import Emulator
from omniq_console.models import (
    EventType,
    ResultStatus,
    Schedule,
    ScheduleStatus,
    ScheduleType,
    Task,
    TaskStatus,
)
from omniq_console.monitor.monitor import Monitor
from omniq_console.runtime.operator import Operator

N_TASKS = 100
PREFIX = "race/"


@pytest.fixture
async def backend(bucket: str, emulator: Emulator) -> AsyncIterator[GCSBackend]:
    async with GCSBackend(bucket, prefix=PREFIX, endpoint_url=emulator.url, cache_timeout=0) as b:
        yield b


async def _statuses(backend: GCSBackend) -> Counter[str]:
    """Task statuses from listings (tasks and state records, no body reads: light on the
    emulator while the fleet works)."""
    return Counter(s.value for s in (await backend.async_task_storage.statuses()).values())


async def _wait_all_final(backend: GCSBackend, n: int, fleet: Fleet, seconds: float) -> None:
    final = {s.value for s in TaskStatus if s.is_final}
    counts: Counter[str] = Counter()

    async def all_final() -> bool:
        nonlocal counts
        counts = await _statuses(backend)
        return sum(counts.values()) == n and set(counts) <= final

    await wait_until(
        all_final, f"all {n} tasks final", within=seconds, every=0.5,
        detail=lambda: f"{dict(counts)}\n{fleet.logs()}",
    )


async def _wait_for_victim(
    fleet: Fleet, names: list[str], slow_ids: set[str], seconds: float
) -> str:
    """A worker that is in the middle of a slow task right now (slow tasks run until the
    test releases them)."""
    pids = {fleet.procs[n].pid: n for n in names}

    def mid_slow_task() -> str | None:
        runs = fleet.executions()
        ended = {(t, p) for phase, t, p, _ in runs if phase == "end"}
        for phase, task_id, pid, _ in runs:
            mid_run = phase == "start" and (task_id, pid) not in ended
            if mid_run and task_id in slow_ids and pid in pids:
                return pids[pid]
        return None

    return await wait_until(
        mid_slow_task, "a worker in the middle of a slow task", within=seconds,
        detail=fleet.logs,
    )


async def test_processes_racing_lose_nothing_and_duplicate_only_after_a_kill(
    backend: GCSBackend, emulator: Emulator, bucket: str, tmp_path: Path
) -> None:
    tasks = race_tasks(N_TASKS)
    by_id = {t.id: t for t in tasks}
    fleet = Fleet(bucket, PREFIX, emulator.url, tmp_path, lease=3.0)
    workers = ["w1", "w2", "w3"]
    try:
        for name in workers:
            fleet.spawn(name, "worker", concurrency=2)
        fleet.spawn("reaper", "reaper")
        fleet.spawn("enqueuer", "enqueuer", tasks=[t.model_dump(mode="json") for t in tasks])
        slow_ids = {t.id for t in tasks if t.func == "rel:slow"}
        victim = await _wait_for_victim(fleet, workers, slow_ids, 120)
        killed_pid = fleet.kill(victim)
        fleet.spawn("w4", "worker", concurrency=2)
        fleet.release_slow()
        await _wait_all_final(backend, N_TASKS, fleet, 120)
    finally:
        fleet.stop_all()
    assert fleet.procs["enqueuer"].returncode == 0, fleet.logs()

    # Every task exists once, in exactly one final state, the one its function calls for.
    truth: dict[str, Task] = {}
    for task_id in by_id:
        stored = await backend.async_task_storage.get_task(task_id)
        assert stored is not None, f"task {task_id} was lost"
        truth[task_id] = stored
    for task_id, stored in truth.items():
        want = TaskStatus.FAILED if by_id[task_id].func == "rel:boom" else TaskStatus.COMPLETED
        assert stored.status == want, (task_id, stored.status)
    assert await backend.store.list(backend.layout.queues) == [], "queue entries left behind"

    results = {r.task_id: r for r in await backend.async_result_storage.list_results()}
    assert set(results) == set(by_id)
    for task_id, result in results.items():
        want_result = ResultStatus.ERROR if by_id[task_id].func == "rel:boom" else (
            ResultStatus.SUCCESS
        )
        assert result.status == want_result, (task_id, result)

    # How often each function ran: exactly as asked, except for tasks a killed worker had
    # started (at-least-once: they may run again elsewhere after their lease expired).
    ends: dict[str, Counter[int]] = defaultdict(Counter)
    started_by_killed: set[str] = set()
    for phase, task_id, pid, _ in fleet.executions():
        if phase == "end":
            ends[task_id][pid] += 1
        if phase == "start" and pid == killed_pid:
            started_by_killed.add(task_id)
    assert started_by_killed, "the killed worker was running a task"
    duplicated = []
    for task_id, task in by_id.items():
        total = sum(ends[task_id].values())
        by_survivors = total - ends[task_id][killed_pid]
        assert total >= expected_runs(task), f"{task_id} ran {total} times: not finished"
        assert by_survivors <= expected_runs(task), f"{task_id} ran {by_survivors} times"
        if total > expected_runs(task):
            duplicated.append(task_id)
    assert set(duplicated) <= started_by_killed, "a duplicate run not caused by the kill"
    # The slow task the victim was running ran to its end elsewhere.
    assert any(sum(ends[t].values()) - ends[t][killed_pid] >= 1 for t in started_by_killed)
    lease_events = await backend.async_event_storage.get_events(
        event_type=EventType.LEASE_EXPIRED
    )
    # The reaper returned the victim's task. (It may return others the victim had claimed but
    # not started yet: those ran once, which the duplicate check above already proves.)
    assert {e.task_id for e in lease_events} & started_by_killed

    # The monitor's counts are the truth.
    snap = await Monitor(backend, poll_timeout=30).poll(raise_errors=True)
    truth_counts = Counter(t.status.value for t in truth.values())
    assert {k: v for k, v in snap.tasks.items() if v} == dict(truth_counts)
    result_counts = Counter(r.status.value for r in results.values())
    assert {k: v for k, v in snap.results.items() if v} == dict(result_counts)
    assert sum(q.pending + q.delayed + q.running for q in snap.queues) == 0
    assert snap.stuck == () and snap.unreadable == ()
    assert sorted(row.id for row in snap.task_rows) == sorted(by_id)


def _console(
    bucket: str, endpoint: str, schedule_id: str, seed: int, rounds: int,
    outcomes: list[tuple[str, str, int | None, ScheduleStatus | None]],
    round_start: threading.Barrier,
) -> None:
    """One console (its own backend and event loop) pausing and resuming at random."""
    rng = random.Random(seed)

    async def run() -> None:
        async with GCSBackend(bucket, prefix=PREFIX, endpoint_url=endpoint, cache_timeout=0) as b:
            op = Operator(b, actor=f"console-{seed}")
            for _ in range(rounds):
                # Every console starts its next action at once: the writes collide.
                await asyncio.to_thread(round_start.wait, 60)
                action = rng.choice(["pause_schedule", "resume_schedule"])
                try:
                    saved = await getattr(op, action)(schedule_id)
                except ConflictError:
                    outcomes.append((action, "conflict", None, None))
                except ValueError as exc:
                    # "already paused/active": refused on the state read, nothing written.
                    kind = "refused" if "already" in str(exc) else f"error: {exc}"
                    outcomes.append((action, kind, None, None))
                except Exception as exc:  # anything else is a failure the test reports
                    outcomes.append((action, f"error: {exc!r}", None, None))
                else:
                    outcomes.append((action, "done", saved.generation, saved.status))

    asyncio.run(run())


async def test_concurrent_pause_resume_from_many_consoles_loses_no_update(
    backend: GCSBackend, emulator: Emulator, bucket: str
) -> None:
    schedule = Schedule(
        schedule_type=ScheduleType.INTERVAL, func="rel:ok", interval=timedelta(minutes=5),
        queue_name=QUEUE,
    )
    await backend.async_schedule_storage.save_schedule(schedule)
    outcomes: list[tuple[str, str, int | None, ScheduleStatus | None]] = []
    round_start = threading.Barrier(5)
    consoles = [
        threading.Thread(
            target=_console,
            args=(bucket, emulator.url, schedule.id, seed, 15, outcomes, round_start),
        )
        for seed in range(5)
    ]
    for thread in consoles:
        thread.start()
    for thread in consoles:
        thread.join(60)
    assert len(outcomes) == 5 * 15, "a console did not finish"

    done = sorted((o for o in outcomes if o[1] == "done"), key=lambda o: o[2] or 0)
    kinds = Counter(o[1] for o in outcomes)
    assert set(kinds) <= {"done", "conflict", "refused"}, kinds
    assert kinds["done"] >= 2 and kinds["conflict"] >= 1, kinds
    # Successful writes form one chain: each one saw the previous one, so they alternate
    # (a lost update would show as two pauses, or two resumes, in a row).
    statuses = [o[3] for o in done]
    assert statuses[0] == ScheduleStatus.PAUSED
    for before, after in itertools.pairwise(statuses):
        assert before != after, f"two successful {after} in a row: a lost update"
    assert len({o[2] for o in done}) == len(done), "two writes reported the same generation"

    final = await backend.async_schedule_storage.get_schedule(schedule.id)
    assert final is not None
    assert (final.status, final.generation) == (done[-1][3], done[-1][2])
    audits = await backend.async_event_storage.get_events(event_type=EventType.OPERATOR_ACTION)
    audited = len([e for e in audits if e.schedule_id == schedule.id])
    # Every change is audited; an audit written before its compare-and-swap may also record
    # an attempt that then lost (a conflict), never one refused on the state it read.
    assert len(done) <= audited <= len(done) + kinds["conflict"]


async def test_two_consoles_pausing_from_the_same_version_cannot_both_win(
    backend: GCSBackend, emulator: Emulator, bucket: str
) -> None:
    """The interleaving the random test above hits only sometimes, forced: both read the same
    version, both pause it. Their bodies are byte-identical; exactly one may succeed."""
    schedule = Schedule(
        schedule_type=ScheduleType.INTERVAL, func="rel:ok", interval=timedelta(minutes=5)
    )
    await backend.async_schedule_storage.save_schedule(schedule)
    async with GCSBackend(bucket, prefix=PREFIX, endpoint_url=emulator.url,
                          cache_timeout=0) as other:
        mine = await backend.async_schedule_storage.get_schedule(schedule.id)
        theirs = await other.async_schedule_storage.get_schedule(schedule.id)
        assert mine is not None and theirs is not None
        assert mine.generation == theirs.generation
        theirs.pause()
        mine.pause()
        await other.async_schedule_storage.update_schedule(theirs)
        with pytest.raises(ConflictError):
            await backend.async_schedule_storage.update_schedule(mine)
