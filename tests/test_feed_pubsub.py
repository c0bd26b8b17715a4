"""The change feed on fake-gcs-server + the real Pub/Sub emulator: changes without listings,
drift corrected by one reconcile pass, and a dead or silent feed falling back to listing."""

from __future__ import annotations

from msgspec.structs import astuple

import asyncio
import json
import uuid
from datetime import timedelta

from pubsub_fixtures import WAIT_S, Feed, wait_feed
from waiting import wait_until

from omniq_console.backend.gcs import GCSBackend
from omniq_console.models import utcnow
from omniq_console.monitor import Monitor, Snapshot, take_snapshot


def iso(seconds: float = 0.0) -> str:
    return (utcnow() + timedelta(seconds=seconds)).isoformat()


async def enqueue(b: GCSBackend, tid: str, queue: str = "alpha") -> None:
    md = {"omniq_index": "1", "status": "pending", "queue": queue, "priority": "0",
          "func": "app.work", "run_at": "", "expires_at": "", "created_at": iso()}  # fmt: skip
    body = json.dumps({"id": tid, "func": "app.work", "queue_name": queue}).encode()
    await b.store.write(b.layout.task(tid), body, metadata=md, if_generation_match=0)
    entry = {k: md[k] for k in ("omniq_index", "priority", "run_at", "expires_at", "created_at")}
    await b.store.write(
        b.layout.queue_entry(queue, tid), b"{}", metadata=entry, if_generation_match=0
    )


def record(tid: str, state: str, status: str, **extra: str) -> dict[str, str]:
    """A state record's index metadata (docs/architecture.md, "Index metadata")."""
    return {
        "omniq_index": "1", "status": status, "state": state, "queue": "alpha",
        "func": "app.work", "attempt": "1", "worker_id": "w-1", "lease_s": "30",
        "lease_expires_at": iso(30), "created_at": iso(-5), "started_at": iso(-1), **extra,
    }  # fmt: skip


async def claim(b: GCSBackend, tid: str) -> int:
    info = await b.store.write(
        b.layout.result(tid), b"{}", metadata=record(tid, "running", "pending"),
        if_generation_match=0,
    )  # fmt: skip
    return info.generation


async def complete(b: GCSBackend, tid: str, generation: int) -> None:
    md = record(tid, "completed", "success", completed_at=iso())
    await b.store.write(b.layout.result(tid), b"{}", metadata=md, if_generation_match=generation)
    await b.store.delete(b.layout.queue_entry("alpha", tid))


def received(monitor: Monitor) -> int:
    assert monitor.feed is not None, monitor.feed_error
    return monitor.feed.received


async def pull_all(feed: Feed, count: int) -> list[dict[str, object]]:
    """What the side subscription got, once it holds ``count`` messages."""
    got: list[dict[str, object]] = []

    async def holds_count() -> bool:
        got.extend(await asyncio.to_thread(feed.pubsub.pull, feed.name))
        return len(got) >= count

    await wait_until(
        holds_count, f"{count} notifications on the side subscription", within=WAIT_S,
        detail=lambda: f"it got {len(got)}",
    )
    return got


async def feed_poll(monitor: Monitor, received_before: int, count: int = 1) -> Snapshot:
    """Wait until the feed has buffered ``count`` more messages, then poll without a listing."""
    await wait_feed(monitor, f"{count} message(s)", lambda f: f.received >= received_before + count)
    lists = feed_backend_lists(monitor)
    snap = await monitor.poll(reconcile=False)
    assert feed_backend_lists(monitor) == lists, "a feed poll must not list"
    return snap


def feed_backend_lists(monitor: Monitor) -> int:
    return monitor.backend.store.stats.count["list"]


async def test_each_change_is_on_the_next_poll_without_a_listing(
    feed: Feed, feed_backend: GCSBackend
) -> None:
    b = feed_backend
    monitor = Monitor(b, subscription=feed.subscription)
    try:
        first = await monitor.poll()
        assert first.changes == "pubsub" and first.tasks["pending"] == 0
        tid = "t-" + uuid.uuid4().hex[:8]

        seen = received(monitor)
        await enqueue(b, tid)
        snap = await feed_poll(monitor, seen, 2)
        alpha = next(q for q in snap.queues if q.name == "alpha")
        assert (snap.tasks["pending"], alpha.pending) == (1, 1)

        seen = received(monitor)
        gen = await claim(b, tid)
        snap = await feed_poll(monitor, seen)
        alpha = next(q for q in snap.queues if q.name == "alpha")
        assert (snap.tasks["running"], alpha.pending, alpha.running) == (1, 0, 1)
        assert snap.task_rows[0].worker_id == "w-1"

        seen = received(monitor)
        await complete(b, tid, gen)
        snap = await feed_poll(monitor, seen, 2)
        assert snap.tasks["completed"] == 1 and snap.results["success"] == 1
        assert sum(m.success for m in snap.results_per_minute) == 1

        seen = received(monitor)
        await b.store.write(
            f"{b.layout.prefix}paused/alpha.json", b"{}",
            metadata={"omniq_index": "1", "actor": "ops", "at": iso()}, if_generation_match=0,
        )  # fmt: skip
        snap = await feed_poll(monitor, seen)
        alpha = next(q for q in snap.queues if q.name == "alpha")
        assert alpha.paused and alpha.paused_by == "ops"

        seen = received(monitor)
        await b.store.delete(b.layout.task(tid))
        await b.store.delete(b.layout.result(tid))
        snap = await feed_poll(monitor, seen, 2)
        assert snap.tasks["completed"] == 0 and snap.results["success"] == 0
        assert snap.task_rows == ()
        # The outcome outlives its deleted record: it is still on the chart, from the feed.
        assert sum(m.success for m in snap.results_per_minute) == 1
        assert snap.outcome_source == "results+events"
        assert snap.changes == "pubsub"
    finally:
        await monitor.aclose()


async def test_schedule_pause_arrives_through_the_feed(
    feed: Feed, feed_backend: GCSBackend
) -> None:
    from omniq_console.models import Schedule, ScheduleStatus, ScheduleType

    b = feed_backend
    monitor = Monitor(b, subscription=feed.subscription)
    try:
        schedule = Schedule(schedule_type=ScheduleType.INTERVAL, func="app.tick",
                            interval=timedelta(seconds=5))  # fmt: skip
        info = await b.store.write(b.layout.schedule(schedule.id), schedule.to_json(),
                                   metadata={"omniq_index": "1", "status": "active"})  # fmt: skip
        await monitor.poll()
        seen = received(monitor)
        paused = schedule.model_copy(update={"status": ScheduleStatus.PAUSED})
        await b.store.write(b.layout.schedule(schedule.id), paused.to_json(),
                            metadata={"omniq_index": "1", "status": "paused"},
                            if_generation_match=info.generation)  # fmt: skip
        snap = await feed_poll(monitor, seen)
        assert [s.status for s in snap.schedules] == ["paused"]
    finally:
        await monitor.aclose()


def _messages(raw: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{"data": m.get("data", ""), "attributes": m["attributes"]} for m in raw]


async def test_duplicated_reordered_and_lost_messages_are_right_after_one_reconcile_pass(
    feed: Feed, feed_backend: GCSBackend
) -> None:
    b = feed_backend
    ps = feed.pubsub
    # The monitor listens to a topic the test controls; the real notifications go to a side
    # subscription, and the test forwards them duplicated, reversed and with some lost.
    private = f"relay-{uuid.uuid4().hex[:8]}"
    ps.create_topic(private)
    watched = ps.create_subscription(f"watched-{uuid.uuid4().hex[:8]}", private)
    monitor = Monitor(b, subscription=watched, interval=0.05, feed_grace_s=0)
    try:
        await monitor.poll()
        ids = [f"t-{i}-{uuid.uuid4().hex[:6]}" for i in range(6)]
        for tid in ids:
            await enqueue(b, tid)
        gens = {tid: await claim(b, tid) for tid in ids[:4]}
        for tid in ids[:2]:
            await complete(b, tid, gens[tid])
        await b.store.delete(b.layout.task(ids[5]))
        await b.store.delete(b.layout.queue_entry("alpha", ids[5]))

        # 12 creates, 4 claims, 2 completions (the new generation, the delete of the one it
        # replaced, the entry's delete), 2 deletes.
        real = await pull_all(feed, 24)
        assert len(real) == 24
        forwarded = _messages(real)
        # One never arrives: the creation of a task nothing changes afterwards (more, step
        # after step, is a shared subscription: the feed gives up, see test_feed_semantics.py).
        lost = [m for m in forwarded if m["attributes"]["objectId"] == b.layout.task(ids[4])]
        kept = [m for m in forwarded if m not in lost]
        replay = list(reversed(kept)) + kept[:5]  # out of order, then duplicates
        ps.publish(private, replay)
        await wait_feed(monitor, "the forwarded messages", lambda f: f.received >= len(replay))
        await monitor.poll(reconcile=False)
        passes = monitor.reconciler.passes
        async with asyncio.timeout(WAIT_S):
            while monitor.reconciler.passes == passes:
                await monitor.poll()
        snap = await monitor.poll(reconcile=False)
        truth = await take_snapshot(b, include_tasks=True)
        assert snap.changes == "pubsub", snap.feed_error
        assert snap.tasks == truth.tasks and snap.results == truth.results
        assert [(q.name, q.pending, q.running) for q in snap.queues] == [
            (q.name, q.pending, q.running) for q in truth.queues
        ]
        assert sorted(astuple(r)[:4] for r in snap.task_rows) == sorted(
            astuple(r)[:4] for r in truth.task_rows
        )
        assert snap.feed_drift is not None and snap.feed_drift >= 1
        counts = truth.tasks
        assert (counts["completed"], counts["running"], counts["pending"]) == (2, 2, 1)
    finally:
        await monitor.aclose()


async def test_a_dead_feed_falls_back_to_listing_and_says_so(
    feed: Feed, feed_backend: GCSBackend
) -> None:
    b = feed_backend
    monitor = Monitor(b, subscription=feed.subscription)
    try:
        assert (await monitor.poll()).changes == "pubsub"
        feed.pubsub.delete_subscription(feed.name)
        await wait_feed(monitor, "the feed to fail", lambda f: f.error is not None)
        await enqueue(b, "after-death")
        snap = await monitor.poll()
        assert snap.changes == "listing"
        assert snap.feed_error is not None and "404" in snap.feed_error
        assert snap.tasks["pending"] == 1  # the listing sees what the feed no longer brings
    finally:
        await monitor.aclose()


async def test_a_silent_feed_falls_back_when_the_reconcile_finds_changes(
    feed: Feed, feed_backend: GCSBackend
) -> None:
    b = feed_backend
    quiet = f"quiet-{uuid.uuid4().hex[:8]}"
    feed.pubsub.create_topic(quiet)
    silent = feed.pubsub.create_subscription(f"silent-{uuid.uuid4().hex[:8]}", quiet)
    monitor = Monitor(b, subscription=silent, interval=0.05, feed_grace_s=0)
    try:
        assert (await monitor.poll()).changes == "pubsub"
        await enqueue(b, "unannounced")
        async with asyncio.timeout(WAIT_S):
            while (snap := await monitor.poll()).changes == "pubsub":
                pass
        assert snap.feed_error is not None and "silent" in snap.feed_error
        snap = await monitor.poll()
        assert snap.tasks["pending"] == 1
    finally:
        await monitor.aclose()
