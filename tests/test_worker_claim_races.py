"""Contended claimers lose few races (issue 23, a cheap claim path): each works through a run
of consecutive entries from its last win instead of a random pick each time.

Entries of running tasks stay listed until their outcome, at least a second after the claim
(GCS's per-name limit), so a queue's head is full of entries other claimers hold. On the
in-memory store (GCS's rules, injected time): claimers interleaved pass by pass, outcomes
written a second and a bit after each claim, as a worker's are.
"""

from __future__ import annotations

import random

import pytest

from omniq_console.backend import claims, lifecycle
from omniq_console.backend.gcs import GCSBackend
from omniq_console.backend.memstore import MemoryObjectStore, MemoryServer
from omniq_console.clock import FakeClock
from omniq_console.models import Task

CLAIMERS = 4
DEPTH = 400
"""Tasks enqueued before the claimers start (at most)."""
STEP_S = 0.01  # each claim takes this long: 4 claimers hand out about 100 tasks a second
OUTCOME_AFTER_S = lifecycle.NAME_WRITE_GAP_S + 0.05


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server(clock: FakeClock) -> MemoryServer:
    server = MemoryServer(clock=lambda: clock.now().timestamp(), per_name_limit=True)
    server.create_bucket("races")
    return server


async def _backend(server: MemoryServer, clock: FakeClock) -> GCSBackend:
    backend = GCSBackend("races", object_store=MemoryObjectStore("races", server=server))
    await backend.aopen()
    backend.async_task_storage.clock = clock
    return backend


async def _run(
    server: MemoryServer, clock: FakeClock, *, tasks: int, feed_to: int = 0
) -> tuple[list[int], int]:
    """Claimers taking turns until ``tasks`` were handed out (or nothing is left): each claim
    enqueues a new task while fewer than ``feed_to`` were enqueued. Returns, for each task
    handed out in turn, how many places late it came in enqueue order (0: first in, first
    out), and the races lost in all."""
    backends = [await _backend(server, clock) for _ in range(CLAIMERS)]
    queues = [b.async_task_storage for b in backends]
    enqueued: dict[str, int] = {}  # waiting: task id -> place in enqueue order
    count = 0

    async def enqueue() -> None:
        nonlocal count
        enqueued[await queues[0].enqueue(Task(func="m:f"))] = count
        count += 1
        clock.advance(0.001)  # distinct ages

    for _ in range(min(tasks, DEPTH)):
        await enqueue()
    clock.advance(2)
    late: list[int] = []
    running: list[tuple[float, int, Task]] = []  # (outcome due, claimer, task)
    idle = 0
    while idle < 3 * CLAIMERS and len(late) < tasks:
        for k in random.sample(range(CLAIMERS), CLAIMERS):
            for entry in [r for r in running if r[0] <= clock.monotonic()]:
                running.remove(entry)
                _, holder, task = entry
                assert task.record is not None
                done = lifecycle.complete(
                    task.record,
                    worker=f"w{holder}",
                    value=None,
                    execution_time=0.0,
                    now=clock.now(),
                )
                await queues[holder].finish(task, done)
            task = await queues[k].claim_pass(["default"], f"w{k}", 30.0, paused=())
            clock.advance(STEP_S)
            if task is None:
                idle += 1
                continue
            idle = 0
            late.append(len(late) - enqueued.pop(task.id))
            running.append((clock.monotonic() + OUTCOME_AFTER_S, k, task))
            if count < feed_to:
                await enqueue()
    lost = sum(q.claims.races_lost for q in queues)
    for backend in backends:
        await backend.aclose()
    return late, lost


async def test_contended_claimers_lose_few_races_and_hand_each_task_out_once(
    server: MemoryServer, clock: FakeClock
) -> None:
    """Four claimers drain 160 tasks: every task handed out once (``_run`` pops each id once),
    and fewer than 0.6 lost races a task (0.33-0.53 over five seeds; a random pick over the
    best few at every try lost 0.76-0.84 a task here)."""
    random.seed(23)
    late, lost = await _run(server, clock, tasks=160)
    assert len(late) == 160
    assert lost / 160 < 0.6, f"{lost} races lost over 160 tasks"


async def test_on_a_deep_busy_queue_no_task_waits_long_behind_younger_ones(
    server: MemoryServer, clock: FakeClock
) -> None:
    """A queue kept 400 deep while four contended claimers take 1,200 tasks: no task is taken
    500 places or more after its turn (222-419 over five seeds; a random pick over the best 256
    at every try let tasks wait 790-904 places), and races lost stay rare: under 0.1 a claim
    (0.04-0.06; a random pick lost 0.29-0.33)."""
    random.seed(5)
    late, lost = await _run(server, clock, tasks=1_200, feed_to=1_600)
    assert len(late) == 1_200
    assert max(late) < 500, f"a task came {max(late)} places late"
    assert lost / 1_200 < 0.1, f"{lost} races lost over 1,200 claims"


def test_a_contended_pick_takes_the_entry_before_the_last_win() -> None:
    """After a win the next contended pick is the entry ranked just before it (toward the
    head, within the head's priority); at the head, or after a lost race, a random one of the
    best few; uncontended, the head."""
    memory = claims.ClaimMemory(claims.Layout("p/"), lambda: 0.0)
    folder = "p/queues/q/"
    listed = [
        claims._listed(
            folder,
            "q",
            claims.ObjectInfo(
                f"{folder}t{n:03d}.json",
                1,
                0,
                None,
                {"omniq_index": "1", "priority": "0", "created_at": f"2026-12-08T00:00:{n:02d}"},
            ),
        )
        for n in range(10)
    ]
    ranked = sorted((e for e in listed if e is not None), key=lambda e: e.rank)
    memory.won(ranked[6])
    assert claims.pick(ranked, True, memory.cursor) == 5
    assert claims.pick(ranked[:6] + ranked[7:], True, memory.cursor) == 5, "the won one unlisted"
    assert claims.pick(ranked, False, memory.cursor) == 0, "uncontended: the head"
    picks = {claims.pick(ranked, True, ranked[0].rank) for _ in range(200)}
    assert len(picks) > 1 and picks <= set(range(10)), "nothing before it: a random one"
    memory.lost_race()
    assert memory.cursor is None
