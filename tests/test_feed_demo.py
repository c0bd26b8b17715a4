"""The demo starts the Pub/Sub emulator when it is installed and its console watches by
changes, through a subscription of its own; it exports nothing two processes would share;
without the emulator, it says plainly that it lists."""

from __future__ import annotations

import os

import pytest

from omniq_console.backend.gcs import GCSBackend
from omniq_console.cli import demo_exports
from omniq_console.demo.emulator import EmulatorUnavailableError, PubSubEmulator
from omniq_console.demo.environment import DemoEnvironment
from omniq_console.monitor import Monitor


async def test_the_demo_feeds_its_console_through_pubsub(
    pubsub_emulator: PubSubEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    with DemoEnvironment(fleet=False) as demo:
        assert demo.topic is not None, demo.feed_note
        assert demo.feed_note.startswith("changes: Pub/Sub")
        lines = demo_exports(
            endpoint=demo.url, bucket=demo.bucket, prefix=demo.prefix, topic=demo.topic,
            pubsub_host=demo.pubsub_host,
        )  # fmt: skip
        exports = demo.write_exports(lines)
        text = exports.read_text()
        assert f"export OMNIQ_TOPIC={demo.topic}" in text and "subscriptions/" not in text
        assert exports.stat().st_mode & 0o777 == 0o600
        assert os.environ["PUBSUB_EMULATOR_HOST"] == demo.pubsub_host
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", demo.url)
        async with GCSBackend(demo.bucket, prefix=demo.prefix) as backend:
            monitor = Monitor(backend, topic=demo.topic)
            try:
                assert (await monitor.poll()).changes == "pubsub"
                feed = monitor.feed
                assert feed is not None
                await backend.store.write(
                    f"{backend.layout.prefix}paused/default.json", b"{}",
                    metadata={"omniq_index": "1", "actor": "demo"},
                )  # fmt: skip
                await feed.wait_until(lambda f: f.received >= 1)
                snap = await monitor.poll(reconcile=False)
                assert [q.name for q in snap.queues if q.paused] == ["default"]
                assert feed.own_subscription
            finally:
                await monitor.aclose()
    assert "PUBSUB_EMULATOR_HOST" not in os.environ
    assert not exports.exists()


def test_without_the_emulator_the_demo_says_it_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PubSubEmulator, "start", _unavailable)
    with DemoEnvironment(fleet=False) as demo:
        assert demo.topic is None
        assert demo.feed_note.startswith("changes: listing (no change feed:")


def _unavailable(self: PubSubEmulator, *args: object, **kwargs: object) -> PubSubEmulator:
    raise EmulatorUnavailableError("the Pub/Sub emulator is not installed (test)")


def test_the_console_and_serve_take_a_topic(monkeypatch: pytest.MonkeyPatch) -> None:
    from omniq_console import cli

    monkeypatch.delenv("OMNIQ_SUBSCRIPTION", raising=False)
    args = cli._parser().parse_args(["--bucket", "b-1", "--topic", "projects/p/topics/t"])
    settings = cli._settings(args)
    assert (settings.topic, settings.subscription) == ("projects/p/topics/t", None)
    assert "topic" in cli._SHARED_FLAGS  # serve passes it on to each console
