"""The oracle in CI: 200 random fleet steps on the emulator, and after each one the Monitor's
snapshot equals the bucket's ground truth, in listing mode and in change-feed mode
(``tests/oracle.py``). ``benchmarks/oracle.py`` runs it longer and with other seeds."""

from __future__ import annotations

from oracle import Fleet, Truth, monitor_for, oracle_seed, run_oracle
from pubsub_fixtures import QUIET_PULL_S, Feed

from omniq_console.backend.gcs import GCSBackend
from omniq_console.clock import FakeClock
from omniq_console.monitor.snapshot import Snapshot

STEPS = 200


async def test_the_snapshot_equals_the_bucket_in_listing_mode(backend: GCSBackend) -> None:
    clock = FakeClock()
    monitor = monitor_for(backend, clock)
    mismatches = await run_oracle(
        backend, seed=oracle_seed(), steps=STEPS, monitor=monitor, clock=clock
    )
    assert not mismatches, "\n".join(map(str, mismatches[:30]))


# Each step waits for a pull sent after its writes that emptied the subscription, then takes
# one snapshot (``oracle._settle``); pulls follow each other quickly (``QUIET_PULL_S``).
async def test_the_snapshot_equals_the_bucket_in_feed_mode(
    feed: Feed, feed_backend: GCSBackend
) -> None:
    clock = FakeClock()
    monitor = monitor_for(
        feed_backend, clock, subscription=feed.subscription, pubsub_quiet_s=QUIET_PULL_S
    )
    seen_modes: set[str] = set()

    async def mode(n: int, label: str, snap: Snapshot, truth: Truth) -> None:
        seen_modes.add(snap.changes)

    try:
        mismatches = await run_oracle(
            feed_backend,
            seed=oracle_seed() + 1,
            steps=STEPS,
            monitor=monitor,
            clock=clock,
            fleet=Fleet(feed_backend, oracle_seed() + 1, clock),
            settle_s=15.0,
            reconcile=False,  # every change through the feed: nothing mended by listing
            on_step=mode,
        )
    finally:
        await monitor.aclose()
    assert not mismatches, "\n".join(map(str, mismatches[:30]))
    assert seen_modes == {"pubsub"}, f"the feed fell back: {monitor.feed_error}"
