"""Fixtures for the change feed: one Pub/Sub emulator per session (its Java start takes 5-8 s),
a fake-gcs-server that publishes its own notifications of every object change to it
(``feed``), and a bucket behind the GCS rules model whose notifier publishes what GCS itself
documents (``notified``: overwrite pairs, ARCHIVE, payload NONE, held until flushed).

When the emulator is not installed the fixtures skip, except under ``CI=true``, where they
fail: CI must run the change-feed tests.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from faultproxy import GCSRulesProxy
from gcs_notifier import GCSNotifier
from gcs_rules_fixtures import RULES_RETRY

from omniq_console.backend.gcs import GCSBackend
from omniq_console.demo.emulator import Emulator, EmulatorUnavailableError, PubSubEmulator
from omniq_console.monitor import Monitor
from omniq_console.monitor.sources.pubsub import PubSubFeed

TOPIC = "gcs-changes"
WAIT_S = 20.0
"""How long a feed test waits for messages (the Java emulator is slow on a loaded machine)."""
QUIET_PULL_S = 0.02
"""The feed's pause after an empty pull in tests that wait for a change after each step
(``Monitor(pubsub_quiet_s=QUIET_PULL_S)``), not the product's second (one request a second
per console, all day): such a test would otherwise spend most of its time in that pause. The
pause sets when a change arrives, never what arrives or in which order."""


async def wait_feed(monitor: Monitor, what: str, check: Callable[[PubSubFeed], bool]) -> None:
    """Wait until the monitor's feed satisfies ``check`` (after a pull), or fail saying what."""
    feed = monitor.feed
    assert feed is not None, monitor.feed_error
    try:
        async with asyncio.timeout(WAIT_S):
            await feed.wait_until(check)
    except TimeoutError:
        raise AssertionError(f"waited {WAIT_S} s for {what}") from None


@pytest.fixture(scope="session")
def pubsub_emulator() -> Iterator[PubSubEmulator]:
    emulator = PubSubEmulator()
    try:
        emulator.start()
    except EmulatorUnavailableError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and the Pub/Sub emulator cannot run: {exc}")
        pytest.skip(f"the Pub/Sub emulator cannot run here: {exc}")
    try:
        emulator.create_topic(TOPIC)
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(scope="session")
def notifying_emulator(pubsub_emulator: PubSubEmulator) -> Iterator[Emulator]:
    """A fake-gcs-server publishing every change of every bucket to ``TOPIC``."""
    with Emulator(pubsub=pubsub_emulator, topic=TOPIC) as emulator:
        yield emulator


@dataclass
class Feed:
    """A fresh bucket on the notifying emulator and a subscription that gets its changes."""

    pubsub: PubSubEmulator
    gcs: Emulator
    bucket: str
    subscription: str  # projects/P/subscriptions/S
    name: str  # S


@pytest.fixture
def feed(
    notifying_emulator: Emulator, pubsub_emulator: PubSubEmulator, monkeypatch: pytest.MonkeyPatch
) -> Feed:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", notifying_emulator.url)
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host_port)
    bucket = f"feed-{uuid.uuid4().hex[:12]}"
    notifying_emulator.create_bucket(bucket)
    name = f"sub-{uuid.uuid4().hex[:12]}"
    path = pubsub_emulator.create_subscription(name, TOPIC)
    return Feed(pubsub_emulator, notifying_emulator, bucket, path, name)


@pytest.fixture
async def feed_backend(feed: Feed) -> AsyncIterator[GCSBackend]:
    async with GCSBackend(feed.bucket) as opened:
        yield opened


@dataclass
class Notified:
    """A fresh bucket behind a GCS rules model whose notifier publishes GCS's notifications
    (``gcs_notifier.GCSNotifier``, held until ``notifier.flush()``) to a topic of its own,
    and a subscription to that topic."""

    pubsub: PubSubEmulator
    proxy: GCSRulesProxy
    notifier: GCSNotifier
    bucket: str
    topic: str  # projects/P/topics/T
    subscription: str  # projects/P/subscriptions/S

    async def deliver(self, messages: list[dict[str, Any]]) -> int:
        """Publish ``messages`` as they are (off the loop); returns how many."""
        return await asyncio.to_thread(self.notifier.publish, messages)


@pytest.fixture
def notified(
    emulator: Emulator, pubsub_emulator: PubSubEmulator, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Notified]:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host_port)
    bucket = f"notified-{uuid.uuid4().hex[:12]}"
    emulator.create_bucket(bucket)
    topic = f"gcs-{uuid.uuid4().hex[:12]}"
    pubsub_emulator.create_topic(topic)
    subscription = pubsub_emulator.create_subscription(f"sub-{uuid.uuid4().hex[:12]}", topic)
    # The protocol spaces its writes of a name itself; the notifications are what is tested.
    with GCSRulesProxy(emulator.url, role="objectUser", bucket=bucket, hot_seconds=0.0) as proxy:
        notifier = GCSNotifier(pubsub_emulator, topic, seed=int(uuid.uuid4().int % 10_000))
        proxy.notifier = notifier
        yield Notified(
            pubsub_emulator,
            proxy,
            notifier,
            bucket,
            pubsub_emulator.topic_path(topic),
            subscription,
        )


@pytest.fixture
async def notified_backend(notified: Notified) -> AsyncIterator[GCSBackend]:
    backend = GCSBackend(notified.bucket, endpoint_url=notified.proxy.url, retry=RULES_RETRY)
    async with backend:
        yield backend
