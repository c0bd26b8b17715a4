"""Several OS processes dequeue the same queues at once, through the GCS rules model: every task
is handed out exactly once, and no object name is mutated twice within a second."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from faultproxy import GCSRulesProxy

from omniq_console.backend.gcs import GCSBackend
from omniq_console.backend.listing import bounded_gather
from omniq_console.models import Task

WORKER = Path(__file__).with_name("_claim_worker.py")
PROCESSES = 4
TASKS = 150


async def test_processes_claim_each_task_exactly_once(
    gcs_rules: GCSRulesProxy, rules_env: dict[str, str]
) -> None:
    bucket = gcs_rules.bucket
    assert bucket is not None
    async with GCSBackend(bucket) as backend:
        queue = backend.async_task_storage
        tasks = [
            Task(func="m:f", queue_name=("q1", "q2")[i % 2], priority=i % 3) for i in range(TASKS)
        ]
        await bounded_gather(tasks, queue.enqueue, limit=16)
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                str(WORKER),
                bucket,
                backend.prefix,
                "q1,q2",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            for _ in range(PROCESSES)
        ]
        try:
            for proc in procs:
                assert proc.stdout is not None
                line = await asyncio.wait_for(proc.stdout.readline(), 30)
                assert line.strip() == b"READY"
            started = time.monotonic()
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write(b"go\n")
                await proc.stdin.drain()
            outputs = [await asyncio.wait_for(proc.communicate(), 60) for proc in procs]
            elapsed = time.monotonic() - started
        finally:
            for proc in procs:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        assert [proc.returncode for proc in procs] == [0] * PROCESSES
        claimed: list[str] = []
        conflicts = 0
        for out, _ in outputs:
            lines = out.decode().split()
            done = lines.index("DONE")
            claimed.extend(lines[:done])
            conflicts += json.loads(out.decode().split("DONE", 1)[1])["conflicts"]
        assert len(claimed) == len(set(claimed)), "a task was handed out twice"
        assert set(claimed) == {t.id for t in tasks}, "a task was never handed out"
        # Every worker got work: the claims really ran concurrently.
        assert all(out.decode().split().index("DONE") > 0 for out, _ in outputs)
        assert await queue.get_queue_size("q1") == 0 and await queue.get_queue_size("q2") == 0
        running = await queue.list_tasks(status="running")
        assert len(running) == TASKS and len({t.worker_id for t in running}) == PROCESSES
        print(f"{TASKS} tasks, {PROCESSES} processes: {elapsed:.2f}s, {conflicts} lost claims")
        # Lost races are 412s (a precondition, not a mutation); no name was written twice.
        assert gcs_rules.max_mutations_per_second() == 1 and gcs_rules.rate_limited == 0
