"""A child process of tests/test_chaos.py: a worker (optionally with a skewed wall clock) or a
scheduler, on the bucket behind the fault proxy. Configured by the CHAOS_CFG environment
variable (JSON); every task function appends ``task attempt worker`` to the exec log."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import signal
from datetime import datetime, timedelta
from pathlib import Path

from waiting import wait_until

from omniq_console.backend.gcs import GCSBackend
from omniq_console.backend.objectstore import RetryPolicy
from omniq_console.clock import SystemClock
from omniq_console.runtime import Scheduler, Worker, current_task
from omniq_console.runtime.registry import TaskRegistry

RETRY = RetryPolicy(base_delay=0.1, max_delay=1.0, deadline=20.0, request_timeout=5.0)


class SkewedClock(SystemClock):
    def __init__(self, offset_s: float) -> None:
        self.offset = timedelta(seconds=offset_s)

    def now(self) -> datetime:
        return super().now() + self.offset


def registry(exec_log: Path, harms: Path, worker_id: str) -> TaskRegistry:
    reg = TaskRegistry()

    def harms_so_far() -> float:
        said = harms.read_text()
        return math.inf if said == "over" else int(said)

    def note() -> None:
        task = current_task()
        assert task is not None and task.record is not None
        with exec_log.open("a") as fh:
            fh.write(f"{task.id} {task.record.attempt} {worker_id}\n")

    async def ok(n: int) -> int:
        note()
        # The work: until the test harms a worker or ends the chaos, so that every harm hits
        # work under way.
        before = harms_so_far()
        if before < math.inf:
            await wait_until(lambda: harms_so_far() > before, "the next harm", within=600)
        return n

    async def flaky(n: int) -> int:
        note()
        task = current_task()
        assert task is not None
        if task.retry_count == 0:
            raise RuntimeError("first attempt fails")
        return n

    reg.register(ok, name="chaos:ok")
    reg.register(flaky, name="chaos:flaky", max_retries=1, retry_delay=0.2)
    reg.register(ok, name="chaos:tick")
    return reg


async def main() -> None:
    cfg = json.loads(os.environ["CHAOS_CFG"])
    logging.basicConfig(level=logging.WARNING, format=f"{cfg['id']} %(message)s")
    backend = GCSBackend(cfg["bucket"], prefix="chaos/", endpoint_url=cfg["endpoint"], retry=RETRY)
    clock = SkewedClock(cfg.get("offset", 0.0))
    async with backend:
        backend.async_task_storage.clock = clock
        if cfg["role"] == "worker":
            runner: Worker | Scheduler = Worker(
                backend,
                registry(Path(cfg["exec_log"]), Path(cfg["harms"]), cfg["id"]),
                ["chaos"],
                concurrency=2,
                worker_id=cfg["id"],
                lease_seconds=3,
                poll_timeout=0.3,
                heartbeat_interval=1.0,
                reap_interval=0.5,
                shutdown_grace=2.0,
                clock=clock,
            )
        else:
            runner = Scheduler(backend, interval=0.3, scheduler_id=cfg["id"], clock=clock.now)
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, runner.stop)
        print("READY", flush=True)
        await runner.run()


if __name__ == "__main__":
    asyncio.run(main())
