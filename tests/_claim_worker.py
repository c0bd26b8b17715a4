"""A worker process for tests/test_backend_claims.py: dequeues until nothing is left.

Usage: python tests/_claim_worker.py BUCKET PREFIX QUEUE[,QUEUE...]
Prints READY once open, waits for a line on stdin (so that all workers start together), then
prints the id of every task it claims, and DONE with its request figures.
"""

from __future__ import annotations

import asyncio
import json
import sys

from omniq_console.backend.gcs import GCSBackend


async def main(bucket: str, prefix: str, queues: list[str]) -> None:
    async with GCSBackend(bucket, prefix=prefix) as backend:
        queue = backend.async_task_storage
        print("READY", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        while (task := await queue.dequeue(queues)) is not None:
            print(task.id, flush=True)
        stats = backend.store.stats
        print("DONE", json.dumps({"count": stats.count, "conflicts": stats.conflicts}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3].split(",")))
