"""The scheduler under the GCS rules model: every fire swaps the schedule object, and GCS takes
one mutation of a name per second, so a scheduler waits out that second after its own last swap
instead of meeting a 429 and its backoff."""

from __future__ import annotations

import asyncio

from faultproxy import GCSRulesProxy
from waiting import wait_until

from omniq_console import OmniQ
from omniq_console.backend.gcs import GCSBackend
from omniq_console.runtime import Scheduler


async def test_a_schedule_fired_every_second_meets_no_429(gcs_rules: GCSRulesProxy) -> None:
    """Each fire swaps the schedule object; GCS takes one mutation of a name per second. The
    scheduler waits out that second after its own last swap instead of meeting a 429 and its
    backoff (before: 4 of 5 fires of a 1 s schedule met one, 9.6 s for 5 fires)."""
    assert gcs_rules.bucket is not None
    async with GCSBackend(gcs_rules.bucket, endpoint_url=gcs_rules.url) as backend:
        await OmniQ(backend).schedule_async("jobs.fast", interval=1)
        scheduler = Scheduler(backend, interval=0.05)
        running = asyncio.create_task(scheduler.run())

        def fired(n: int) -> bool:
            return scheduler.fired >= n

        # The first swap follows the schedule's creation by about its interval, a write this
        # scheduler did not make: a loaded machine may land it within GCS's second. Counted
        # from the first fire on, every swap follows one of the scheduler's own.
        await wait_until(lambda: fired(1), "the first run fired", within=60)
        gcs_rules.reset_records()
        await wait_until(lambda: fired(6), "five more runs fired", within=60)
        scheduler.stop()
        await running
    assert gcs_rules.rate_limited == 0
    assert gcs_rules.max_mutations_per_second() == 1
