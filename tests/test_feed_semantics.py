"""The change feed against what GCS itself publishes (``gcs_notifier.GCSNotifier`` behind the
GCS rules model): overwrite pairs split across pulls, ARCHIVE on versioned buckets, a backlog
older than the console, payload ``NONE``, acknowledgement on arrival, a bounded buffer, a paused
console, a subscription of the console's own, and one shared with another client."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import urllib.error
import urllib.request
import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

import msgspec
import pytest
from faultproxy import FaultProxy
from gcs_notifier import is_overwrite_half, size_of
from protocol_helpers import tasks_in
from pubsub_fixtures import WAIT_S, Notified, wait_feed

from omniq_console.backend.gcs import GCSBackend
from omniq_console.backend.index import WorkerIndex, worker_metadata
from omniq_console.models import TaskStatus, utcnow
from omniq_console.monitor import Monitor, Snapshot
from omniq_console.monitor.sources import pubsub
from omniq_console.monitor.sources.pubsub import MissedChanges, subscription_name

Message = dict[str, Any]


async def deliver(monitor: Monitor, notified: Notified, messages: list[Message]) -> Snapshot:
    """Publish ``messages``, wait until the feed pulled them all, poll without a listing."""
    feed = monitor.feed
    assert feed is not None, monitor.feed_error
    target = feed.received + await notified.deliver(messages)
    await wait_feed(monitor, f"{len(messages)} message(s)", lambda f: f.received >= target)
    return await monitor.poll(reconcile=False)


def running(snap: Snapshot) -> list[tuple[str, str | None]]:
    return sorted((r.id, r.worker_id) for r in snap.task_rows if r.status == "running")


async def beat(b: GCSBackend, worker: str, generation: int) -> int:
    index = WorkerIndex(
        id=worker, state="running", last_seen=utcnow(), started_at=utcnow(), host="h", pid=1,
        queues=("default",), running=(), processed=0, failed=0, concurrency=1,
    )  # fmt: skip
    info = await b.store.write(
        b.layout.worker(worker), b"{}", metadata=worker_metadata(index),
        if_generation_match=generation,
    )  # fmt: skip
    return info.generation


async def test_notifications_per_task_and_their_size(
    notified: Notified, notified_backend: GCSBackend
) -> None:
    """The real shape's figures (README): a task from enqueue to result, no renewal."""
    await tasks_in(notified_backend, [TaskStatus.COMPLETED])
    messages = notified.notifier.take_held()
    kinds = Counter(m["attributes"]["eventType"] for m in messages)
    sizes = [size_of(m) for m in messages]
    print(
        f"\nper task: {len(messages)} notifications, {sum(sizes)} bytes "
        f"({sum(sizes) / len(sizes):.0f} each); {dict(kinds)}; "
        f"overwrite halves {sum(map(is_overwrite_half, messages))}"
    )
    assert 6 <= len(messages) <= 12
    assert kinds["OBJECT_FINALIZE"] >= 4 and sum(map(is_overwrite_half, messages)) >= 1
    assert all(m["attributes"]["payloadFormat"] == "JSON_API_V1" for m in messages)
    for m in messages:
        data = json.loads(base64.b64decode(m["data"])) if "data" in m else {}
        assert isinstance(data["generation"], str) and isinstance(data["size"], str)
        assert data.get("metadata", {"x": "1"}) != {}


async def test_the_old_half_of_an_overwrite_alone_changes_nothing(
    notified: Notified, notified_backend: GCSBackend
) -> None:
    b = notified_backend
    (held,) = await tasks_in(b, [TaskStatus.RUNNING])
    heartbeat = await beat(b, "w-beat", 0)
    monitor = Monitor(b, subscription=notified.subscription)
    try:
        first = await monitor.poll()
        assert running(first) == [(held.id, "w-test")]
        assert [w.id for w in first.workers] == ["w-beat"]
        notified.notifier.take_held()
        await b.async_task_storage.renew_lease(held)
        await beat(b, "w-beat", heartbeat)
        pair = notified.notifier.take_held()
        old = [m for m in pair if is_overwrite_half(m)]
        assert len(old) == 2, [m["attributes"]["eventType"] for m in pair]
        # The DELETE halves land in a pull of their own, before the FINALIZEs.
        snap = await deliver(monitor, notified, old)
        assert running(snap) == [(held.id, "w-test")]
        assert snap.tasks["running"] == 1 and snap.tasks["pending"] == 0
        assert [w.id for w in snap.workers] == ["w-beat"]
        snap = await deliver(monitor, notified, [m for m in pair if m not in old])
        assert running(snap) == [(held.id, "w-test")] and [w.id for w in snap.workers] == ["w-beat"]
    finally:
        await monitor.aclose()


async def test_archive_on_a_versioned_bucket_is_a_delete(
    notified: Notified, notified_backend: GCSBackend
) -> None:
    b = notified_backend
    notified.notifier.versioned = True
    (task,) = await tasks_in(b, [TaskStatus.PENDING])
    monitor = Monitor(b, subscription=notified.subscription)
    try:
        assert (await monitor.poll()).tasks["pending"] == 1
        notified.notifier.take_held()
        assert await b.async_task_storage.delete_task(task.id)
        gone = notified.notifier.take_held()
        kinds = {m["attributes"]["eventType"] for m in gone}
        # The delete's fence (a cancelled state record) is a FINALIZE; every removal an ARCHIVE.
        assert "OBJECT_ARCHIVE" in kinds and "OBJECT_DELETE" not in kinds
        snap = await deliver(monitor, notified, gone)
        assert snap.tasks["pending"] == 0 and snap.task_rows == ()
    finally:
        await monitor.aclose()


async def test_a_backlog_older_than_the_first_listing_brings_no_ghost_back(
    notified: Notified, notified_backend: GCSBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = notified_backend
    monkeypatch.setattr(pubsub, "BACKLOG_MARGIN_S", 0.0)  # one clock here
    (task,) = await tasks_in(b, [TaskStatus.PENDING])
    assert await b.async_task_storage.delete_task(task.id)
    history = notified.notifier.take_held()
    # The subscription holds the task's creation; its delete comes in a later pull.
    created = [m for m in history if m["attributes"]["eventType"] == "OBJECT_FINALIZE"]
    await notified.deliver(created)
    monitor = Monitor(b, subscription=notified.subscription)
    try:
        assert (await monitor.poll()).tasks["pending"] == 0
        await wait_feed(monitor, "the backlog", lambda f: f.received >= len(created))
        snap = await monitor.poll(reconcile=False)
        assert snap.tasks["pending"] == 0 and snap.task_rows == ()
        assert monitor.feed is not None and monitor.feed.backlog_skipped == len(created)
    finally:
        await monitor.aclose()


async def test_messages_are_acknowledged_once_buffered_not_when_a_poll_applies_them(
    notified: Notified, notified_backend: GCSBackend
) -> None:
    b = notified_backend
    monitor = Monitor(b, subscription=notified.subscription)
    try:
        await monitor.poll()
        await tasks_in(b, [TaskStatus.PENDING])
        messages = notified.notifier.take_held()
        await notified.deliver(messages)
        # No poll: the feed acknowledges what it buffered by itself.
        await wait_feed(monitor, "the acknowledgements", lambda f: f.acks >= len(messages))
        assert (await monitor.poll(reconcile=False)).tasks["pending"] == 1
    finally:
        await monitor.aclose()


async def test_a_paused_monitor_stops_pulling_and_catches_up_on_resume(
    notified: Notified, notified_backend: GCSBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = notified_backend
    monitor = Monitor(b, subscription=notified.subscription)
    try:
        await monitor.poll()
        monitor.pause()
        await wait_feed(monitor, "the feed to park", lambda f: f.parked)
        feed = monitor.feed
        assert feed is not None
        before = (feed.received, feed.pulls)
        await tasks_in(b, [TaskStatus.PENDING])
        messages = notified.notifier.take_held()
        await notified.deliver(messages)
        assert (feed.received, feed.pulls) == before and feed.parked
        monitor.resume()
        await wait_feed(monitor, "the backlog", lambda f: f.received >= before[0] + len(messages))
        snap = await monitor.poll(reconcile=False)
        assert snap.tasks["pending"] == 1
    finally:
        await monitor.aclose()


async def test_an_overflowing_buffer_is_replaced_by_a_listing(
    notified: Notified, notified_backend: GCSBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pubsub, "BUFFER_MAX", 2)
    b = notified_backend
    monitor = Monitor(b, subscription=notified.subscription)
    try:
        await monitor.poll()
        await tasks_in(b, [TaskStatus.PENDING] * 3)
        lists = b.store.stats.count["list"]
        snap = await deliver(monitor, notified, notified.notifier.take_held())
        assert monitor.feed is not None and monitor.feed.dropped > 0
        assert b.store.stats.count["list"] - lists >= 6  # every prefix listed again
        assert snap.tasks["pending"] == 3 and snap.changes == "pubsub"
    finally:
        await monitor.aclose()


async def test_notifications_without_payload_are_looked_up(
    notified: Notified, notified_backend: GCSBackend
) -> None:
    b = notified_backend
    notified.notifier.payload = "NONE"
    monitor = Monitor(b, subscription=notified.subscription)
    try:
        await monitor.poll()
        later = utcnow() + timedelta(hours=1)
        pending, delayed = await tasks_in(b, [TaskStatus.PENDING, TaskStatus.PENDING])
        await b.async_task_storage.delete_task(delayed.id)
        (delayed,) = await tasks_in(b, [TaskStatus.PENDING], run_at=later)
        (held,) = await tasks_in(b, [TaskStatus.RUNNING], queue="other")
        messages = notified.notifier.take_held()
        assert all("data" not in m for m in messages)
        snap = await deliver(monitor, notified, messages)
        queues = {q.name: (q.pending, q.delayed, q.running) for q in snap.queues}
        assert queues == {"default": (1, 1, 0), "other": (0, 0, 1)}
        assert running(snap) == [(held.id, "w-test")]
        assert {r.id for r in snap.task_rows} == {pending.id, delayed.id, held.id}
    finally:
        await monitor.aclose()


def _subscription_exists(notified: Notified, path: str) -> bool:
    try:
        with urllib.request.urlopen(f"{notified.pubsub.url}/v1/{path}", timeout=10):
            return True
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return False
        raise


async def test_topic_mode_makes_a_subscription_of_its_own_and_deletes_it(
    notified: Notified, notified_backend: GCSBackend
) -> None:
    b = notified_backend
    monitor = Monitor(b, topic=notified.topic)
    try:
        assert (await monitor.poll()).changes == "pubsub", monitor.feed_error
        feed = monitor.feed
        assert feed is not None and feed.own_subscription
        name = feed.subscription.rsplit("/", 1)[1]
        assert name.startswith(subscription_name())
        assert _subscription_exists(notified, feed.subscription)
        await tasks_in(b, [TaskStatus.PENDING])
        snap = await deliver(monitor, notified, notified.notifier.take_held())
        assert snap.tasks["pending"] == 1
    finally:
        await monitor.aclose()
    assert not _subscription_exists(notified, feed.subscription)


def test_subscription_names_are_valid_pubsub_names() -> None:
    assert subscription_name("ops box.example.com", 42) == "omniq-console-ops-box.example.com-42"
    assert subscription_name("", 7) == "omniq-console-host-7"
    assert subscription_name("é/é", 1) == "omniq-console-host-1"


def test_missed_changes_in_two_steps_mean_a_shared_subscription() -> None:
    missed = MissedChanges(threshold=3)
    assert not missed.add(3, passes=0)  # one step: a lost message, a restart
    assert not missed.add(0, passes=0)
    assert missed.add(1, passes=1)
    # Old passes are forgotten: misses spread over hours are not a shared subscription.
    missed = MissedChanges(threshold=3)
    assert not missed.add(2, passes=0)
    assert not missed.add(1, passes=5)


async def test_a_feed_missing_half_its_changes_falls_back_and_names_sharing(
    notified: Notified, notified_backend: GCSBackend
) -> None:
    """What a second console on the same subscription does: it takes half the messages."""
    b = notified_backend
    monitor = Monitor(b, subscription=notified.subscription, interval=0.05, feed_grace_s=0)
    try:
        await monitor.poll()
        for _ in range(2):  # the drift grows: a pass finds misses, the next one finds more
            await tasks_in(b, [TaskStatus.PENDING] * 2)
            messages = notified.notifier.take_held()
            await deliver(monitor, notified, messages[1::2])  # the other client got the rest
            passes = monitor.reconciler.passes
            async with asyncio.timeout(WAIT_S):
                while monitor.reconciler.passes == passes and monitor.feed is not None:
                    await monitor.poll()
        snap = await monitor.poll()
        assert snap.changes == "listing"
        assert snap.feed_error is not None and "another console" in snap.feed_error
        assert "--topic" in snap.feed_error
        assert snap.tasks["pending"] == 4
    finally:
        await monitor.aclose()


async def test_a_feed_behind_its_backlog_is_not_taken_for_one_that_misses_changes(
    notified: Notified, notified_backend: GCSBackend
) -> None:
    """A loaded console pulls slower than its bucket changes: the reconcile then finds
    changes whose messages wait in the subscription. That is a feed behind, not a shared
    subscription; only changes published before the feed last emptied it are missed."""
    b = notified_backend
    with FaultProxy(notified.pubsub.url) as proxy:
        monitor = Monitor(
            b,
            subscription=notified.subscription,
            interval=0.05,
            feed_grace_s=0,
            pubsub_api_root=proxy.url + "/v1",
        )
        try:
            await monitor.poll()
            await wait_feed(monitor, "an empty pull", lambda f: f.caught_up_at is not None)
            # From now on every pull waits 6 s at the proxy: the feed falls behind.
            rule = proxy.delay(6.0, times=None, path=":pull")
            await tasks_in(b, [TaskStatus.PENDING] * 4)
            before = monitor.feed.received if monitor.feed is not None else 0
            published = await notified.deliver(notified.notifier.take_held())
            passes = monitor.reconciler.passes
            async with asyncio.timeout(WAIT_S):
                while monitor.reconciler.passes < passes + 2:
                    snap = await monitor.poll()
                    assert snap.changes == "pubsub", snap.feed_error
            feed = monitor.feed
            assert feed is not None
            # The reconcile found the four while their messages waited (the drift it
            # corrected), and judged none of them missed.
            assert snap.tasks["pending"] == 4
            proxy.remove(rule)
            await wait_feed(monitor, "the backlog", lambda f: f.received >= before + published)
            snap = await monitor.poll()
            assert snap.changes == "pubsub" and snap.tasks["pending"] == 4
        finally:
            await monitor.aclose()


async def test_a_pull_that_times_out_is_an_error_not_a_quiet_bucket(
    notified: Notified, notified_backend: GCSBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pubsub, "PULL_TIMEOUT_S", 0.3)
    with FaultProxy(notified.pubsub.url) as proxy:
        proxy.delay(1.0, times=None, path=":pull")
        monitor = Monitor(
            notified_backend, subscription=notified.subscription, pubsub_api_root=proxy.url + "/v1"
        )
        try:
            await monitor.poll()
            await wait_feed(monitor, "a timed-out pull", lambda f: f.timeouts >= 1)
            feed = monitor.feed
            assert feed is not None
            async with asyncio.timeout(WAIT_S):
                await feed.wait_until(lambda f: f.error is not None)
            assert "TimeoutError" in (feed.error or "") and feed.timeouts >= 3
            snap = await monitor.poll()
            assert snap.changes == "listing" and "TimeoutError" in (snap.feed_error or "")
        finally:
            await monitor.aclose()


async def test_a_topic_that_cannot_be_subscribed_falls_back_and_says_why(
    notified: Notified, notified_backend: GCSBackend
) -> None:
    missing = notified.topic.rsplit("/", 1)[0] + "/no-such-topic"
    monitor = Monitor(notified_backend, topic=missing)
    try:
        snap = await monitor.poll()
        assert snap.changes == "listing"
        assert snap.feed_error is not None and "cannot create subscription" in snap.feed_error
        assert "pubsub.subscriptions.create" in snap.feed_error and "404" in snap.feed_error
    finally:
        await monitor.aclose()


async def test_a_subscription_left_by_a_dead_console_of_the_same_name_is_taken_over(
    notified: Notified, notified_backend: GCSBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = notified_backend
    name = f"omniq-console-dead-{uuid.uuid4().hex[:6]}"
    monkeypatch.setattr(pubsub, "subscription_name", lambda: name)
    monkeypatch.setattr(pubsub, "_OWN_FEEDS", itertools.count(1))  # the first feed here
    left = notified.pubsub.create_subscription(name, notified.topic.rsplit("/", 1)[1])
    monitor = Monitor(b, topic=notified.topic)
    try:
        assert (await monitor.poll()).changes == "pubsub", monitor.feed_error
        assert monitor.feed is not None and monitor.feed.subscription == left
        await tasks_in(b, [TaskStatus.PENDING])
        snap = await deliver(monitor, notified, notified.notifier.take_held())
        assert snap.tasks["pending"] == 1
    finally:
        await monitor.aclose()


def test_a_pull_answer_is_decoded_and_bad_ones_are_named() -> None:
    resource = {"name": "omniq/tasks/t.json", "generation": "17", "size": "2",
                "metadata": {"status": "pending"}}  # fmt: skip
    body = json.dumps({"receivedMessages": [{
        "ackId": "a-1",
        "message": {
            "data": base64.b64encode(json.dumps(resource).encode()).decode(),
            "attributes": {"objectId": "omniq/tasks/t.json", "objectGeneration": "17",
                           "eventType": "OBJECT_FINALIZE", "payloadFormat": "JSON_API_V1"},
            "messageId": "1", "publishTime": "2026-12-07T19:00:00.123456789Z",
        },
    }]}).encode()  # fmt: skip
    (pulled,) = pubsub.parse_pull(body)
    message = pulled.message
    assert pulled.ack_id == "a-1" and abs(message.published - 1796670000.123457) < 1e-3
    change = pubsub.parse_message(message)
    assert change == pubsub.Change("omniq/tasks/t.json", 17, {"status": "pending"}, False,
                                   message.published)  # fmt: skip
    assert pubsub.parse_pull(b"{}") == []
    with pytest.raises(pubsub.FeedMessageError, match="not a Pub/Sub pull answer"):
        pubsub.parse_pull(b'{"receivedMessages": [{"message": {}}]}')
    for data in (b'{"metadata": ["x"]}', b"not json", b""):
        bad = msgspec.structs.replace(message, data=msgspec.Raw(json.dumps(
            base64.b64encode(data).decode()).encode()))  # fmt: skip
        if data:
            with pytest.raises(pubsub.FeedMessageError, match="not an object resource"):
                pubsub.parse_message(bad)
        else:  # no data: the key is listed alone
            assert pubsub.parse_message(bad) == change._replace(metadata=None)
    for raw in (b"null", b"17", b'"not base64!"'):  # one bad message, not a bad pull
        bad = msgspec.structs.replace(message, data=msgspec.Raw(raw))
        with pytest.raises(pubsub.FeedMessageError, match="not an object resource"):
            pubsub.parse_message(bad)
