"""Fixtures for the change feed: one Pub/Sub emulator per session (its Java start takes 5-8 s),
and a fake-gcs-server that publishes GCS notifications of every object change to it.

When the emulator is not installed the fixtures skip, except under ``CI=true``, where they
fail: CI must run the change-feed tests.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from omniq_console.backend.gcs import GCSBackend
from omniq_console.demo.emulator import Emulator, EmulatorUnavailableError, PubSubEmulator

TOPIC = "gcs-changes"


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
