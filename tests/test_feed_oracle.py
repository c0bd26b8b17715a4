"""The oracle of "the screen equals the bucket", fed by GCS's own notification semantics.

Rounds of real protocol traffic (enqueue, claim, lease renewal, outcome, delete, heartbeat,
queue and schedule pause/resume) run through the GCS rules model, whose notifier builds what
GCS publishes (``gcs_notifier.GCSNotifier``). Each round's notifications are delivered as
Pub/Sub may: first the old halves of its overwrites alone, with stale redeliveries of earlier
rounds (the monitor must still show the bucket as it was before the round), then the rest,
shuffled, duplicated, in two publishes (it must now show the bucket as it is). A backlog of
creations whose deletes come later sits in the subscription before the console starts. After
every pull, the feed-mode monitor's snapshot (no reconcile) is compared with a fresh
listing-mode monitor's snapshot of the same bucket at the same clock.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

import pytest
from gcs_notifier import Message, is_overwrite_half
from protocol_helpers import complete, fail_once
from pubsub_fixtures import QUIET_PULL_S, Notified, wait_feed

from omniq_console.backend import lifecycle
from omniq_console.backend.gcs import GCSBackend
from omniq_console.backend.index import WorkerIndex, worker_metadata
from omniq_console.clock import FakeClock
from omniq_console.models import Schedule, ScheduleType, Task, utcnow
from omniq_console.monitor import Monitor, Snapshot
from omniq_console.monitor.sources import pubsub
from omniq_console.runtime.registry import submit_task

QUEUES = ("alpha", "beta")
ROUNDS = 5


def view(snap: Snapshot) -> dict[str, Any]:
    """What the oracle compares: counts, depths, the running set, schedules, workers."""
    return {
        "tasks": snap.tasks,
        "results": snap.results,
        "queues": [
            (q.name, q.pending, q.delayed, q.running, q.expired, q.claimed, q.paused, q.paused_by)
            for q in snap.queues
        ],
        "rows": sorted(snap.task_rows, key=lambda r: r.id),
        "running": sorted((r.id, r.worker_id) for r in snap.task_rows if r.status == "running"),
        "schedules": [(s.id, s.status, s.next_run, s.paused_by) for s in snap.schedules],
        "workers": [(w.id, w.state, w.alive, w.dead, w.running) for w in snap.workers],
        "stuck": sorted(s.id for s in snap.stuck),
    }


class Traffic:
    """Random protocol traffic on one backend, remembering what it holds."""

    def __init__(self, backend: GCSBackend, rng: random.Random) -> None:
        self.b = backend
        self.rng = rng
        self.pending: list[str] = []
        self.held: list[Task] = []
        self.done: list[str] = []
        self.beats: dict[str, int] = {}
        self.paused: set[str] = set()
        self.schedules: list[str] = []

    async def enqueue(self) -> None:
        task = Task(queue_name=self.rng.choice(QUEUES), func="jobs:work")
        await submit_task(self.b, task)
        self.pending.append(task.id)

    async def claim(self) -> None:
        queues = [q for q in QUEUES if q not in self.paused]
        if not queues:
            return
        got = await self.b.async_task_storage.dequeue(queues, worker_id="w-oracle")
        if got is not None:
            self.pending.remove(got.id)
            self.held.append(got)

    async def renew(self) -> None:
        if self.held:
            at = self.rng.randrange(len(self.held))
            self.held[at] = await self.b.async_task_storage.renew_lease(self.held[at])

    async def finish(self) -> None:
        if self.held:
            task = self.held.pop(self.rng.randrange(len(self.held)))
            if self.rng.random() < 0.5:
                await complete(self.b, task)
            else:
                failure = lifecycle.Failure("KeyError", "gone", retryable=False)
                await fail_once(self.b, task, failure)
            self.done.append(task.id)

    async def delete(self) -> None:
        pool = self.pending + self.done
        if pool:
            tid = self.rng.choice(pool)
            (self.pending if tid in self.pending else self.done).remove(tid)
            await self.b.async_task_storage.delete_task(tid)

    async def beat(self) -> None:
        worker = self.rng.choice(("w-1", "w-2"))
        index = WorkerIndex(
            id=worker, state="running", last_seen=utcnow(), started_at=utcnow(), host="h",
            pid=1, queues=QUEUES, running=(), processed=0, failed=0, concurrency=1,
        )  # fmt: skip
        info = await self.b.store.write(
            self.b.layout.worker(worker), b"{}", metadata=worker_metadata(index),
            if_generation_match=self.beats.get(worker, 0),
        )  # fmt: skip
        self.beats[worker] = info.generation

    async def pause_queue(self) -> None:
        queue = self.rng.choice(QUEUES)
        if queue in self.paused:
            await self.b.async_task_storage.resume_queue(queue)
            self.paused.discard(queue)
        else:
            await self.b.async_task_storage.pause_queue(queue, actor="oracle")
            self.paused.add(queue)

    async def schedule(self) -> None:
        store = self.b.async_schedule_storage
        if not self.schedules:
            made = await store.save_schedule(
                Schedule(
                    schedule_type=ScheduleType.INTERVAL,
                    func="jobs:tick",
                    interval=timedelta(minutes=5),
                )
            )
            self.schedules.append(made.id)
            return
        sid = self.schedules[0]
        current = await store.get_schedule(sid)
        assert current is not None
        if current.status.value == "paused":
            await store.resume_schedule(sid)
        else:
            await store.pause_schedule(sid)

    async def round(self, steps: int) -> None:
        """An enqueue, a claim, then ``steps`` random moves."""
        await self.enqueue()
        await self.claim()
        moves = [self.enqueue, self.enqueue, self.claim, self.renew, self.finish, self.delete,
                 self.beat, self.pause_queue, self.schedule]  # fmt: skip
        for _ in range(steps):
            await self.rng.choice(moves)()


class Clock:
    """One time for both monitors (ages, liveness and overdue depend on it)."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now


async def truth(backend: GCSBackend, clock: Clock) -> dict[str, Any]:
    """A fresh listing-mode monitor's view of the bucket now."""
    return view(await Monitor(backend, clock=clock).poll(raise_errors=True))


async def pulled(monitor: Monitor, notified: Notified, messages: list[Message]) -> Snapshot:
    feed = monitor.feed
    assert feed is not None, monitor.feed_error
    target = feed.received + await notified.deliver(messages)
    await wait_feed(monitor, f"{len(messages)} message(s)", lambda f: f.received >= target)
    return await monitor.poll(reconcile=False)


@pytest.mark.parametrize(
    ("payload", "versioned"), [("JSON_API_V1", False), ("JSON_API_V1", True), ("NONE", False)]
)
async def test_after_every_pull_the_feed_shows_what_a_fresh_listing_shows(
    notified: Notified,
    notified_backend: GCSBackend,
    monkeypatch: pytest.MonkeyPatch,
    payload: str,
    versioned: bool,
) -> None:
    monkeypatch.setattr(pubsub, "BACKLOG_MARGIN_S", 0.0)  # one clock here
    b = notified_backend
    notifier = notified.notifier
    notifier.payload = "NONE" if payload == "NONE" else "JSON_API_V1"
    notifier.versioned = versioned
    rng = random.Random(f"{payload}-{versioned}")
    # The queue waits out its per-name gap on a clock of its own, in no real time; the
    # monitors judge ages, liveness and overdue at ``clock``, one instant per round.
    b.async_task_storage.clock = FakeClock()
    traffic = Traffic(b, rng)
    clock = Clock()
    # A backlog: creations (and overwrites) in the subscription, their deletes still to come.
    await traffic.round(6)
    await traffic.delete()
    backlog = notifier.take_held()
    kept = [m for m in backlog if m["attributes"]["eventType"] == "OBJECT_FINALIZE"]
    await notified.deliver(notifier.shuffled(kept))
    late_deletes = [m for m in backlog if m not in kept]

    monitor = Monitor(
        b, subscription=notified.subscription, clock=clock, pubsub_quiet_s=QUIET_PULL_S
    )
    try:
        first = view(await monitor.poll())
        assert first == await truth(b, clock)
        stale = late_deletes
        for n in range(ROUNDS):
            before = await truth(b, clock)
            earlier = list(notifier.published)
            await traffic.round(3)
            messages = notifier.take_held()
            halves = [m for m in messages if is_overwrite_half(m)]
            rest = [m for m in messages if not is_overwrite_half(m)]
            # Pull 1: the old halves of this round's overwrites and stale redeliveries.
            early = notifier.shuffled(halves + stale, earlier)
            assert view(await pulled(monitor, notified, early)) == before, f"round {n}, early"
            # Pulls 2 and 3: the rest, shuffled with duplicates, split in two.
            late = notifier.shuffled(rest, earlier)
            cut = len(late) // 2
            await pulled(monitor, notified, late[:cut])
            snap = await pulled(monitor, notified, late[cut:])
            assert view(snap) == await truth(b, clock), f"round {n}"
            assert snap.changes == "pubsub", snap.feed_error
            stale = []
            clock.now = utcnow()
        assert traffic.done or traffic.held, "the traffic never ran a task"
    finally:
        await monitor.aclose()


async def test_a_round_without_its_notifications_is_not_equal(
    notified: Notified, notified_backend: GCSBackend
) -> None:
    """The oracle can fail: a change the feed never delivered shows."""
    b = notified_backend
    clock = Clock()
    monitor = Monitor(b, subscription=notified.subscription, clock=clock)
    try:
        await monitor.poll()
        traffic = Traffic(b, random.Random(1))
        await traffic.enqueue()
        notified.notifier.take_held()  # never published
        assert view(await monitor.poll(reconcile=False)) != await truth(b, clock)
    finally:
        await monitor.aclose()
