"""Claims: tasks handed out per second by 1, 4 and 16 worker processes racing on one queue,
with duplicates (must be 0), tasks lost (must be 0) and requests per task, beside the
emulator's raw rate of conditional writes (every claim needs at least one: the ceiling).

Each worker process claims from the prepared queue (``dequeue``: the state record created) and
completes each task as the runtime's worker does (``finish`` with ``lifecycle.complete``: a
compare-and-swap on the record, then the entry deleted), written in the background at least a
second after the claim (docs/architecture.md, "GCS's per-name limit") while it claims on, until
the queue is empty; the tasks do nothing, so this measures claiming. Workers open their backend
first, then wait for one "go" so that Python's start-up is not timed. Every id handed out is
reported, and the bucket is checked afterwards (the state records' index).

Run as ``python -m benchmarks.claims --worker ...`` it is one worker process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from functools import partial
from typing import Any

from omniq_console.backend import lifecycle
from omniq_console.backend.gcs import GCSBackend
from omniq_console.backend.index import result_index
from omniq_console.backend.layout import Layout
from omniq_console.backend.objectstore import REQUEST_KINDS, ObjectStore
from omniq_console.backend.queue import AsyncGCSQueue
from omniq_console.models import Task, TaskStatus

from .common import ROOT, Table, emulator, log, verdict
from .seed import run_jobs

QUEUE = "bench"
CEILING_IN_FLIGHT = (8, 16)
# Conditional writes in one claim + completion: the state record's create, then its CAS.
CONDITIONAL_WRITES_PER_TASK = 2


@dataclass
class ClaimRun:
    workers: int
    tasks: int
    handed_out: int
    duplicates: int
    lost: int
    not_completed: int
    seconds: float
    requests: Counter[str]
    conflicts: int
    empty_passes: int
    retries: int
    worker_cpu_s: float
    emulator_cpu_s: float

    @property
    def rate(self) -> float:
        return self.handed_out / self.seconds if self.seconds else 0.0

    @property
    def per_task(self) -> float:
        return sum(self.requests.values()) / max(1, self.handed_out)


# -- one worker process ------------------------------------------------------------------------


async def _worker(endpoint: str, bucket: str, worker_id: str) -> dict[str, object]:
    backend = GCSBackend(bucket, endpoint_url=endpoint, token="anon")
    async with backend:
        queue = backend.async_task_storage
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        before = backend.store.stats.copy()
        cpu = time.process_time()
        started = time.time()
        ids: list[str] = []
        outcomes: list[asyncio.Task[Task]] = []
        empty_passes = 0
        while True:
            task = await queue.dequeue(QUEUE, worker_id=worker_id)
            if task is None:
                # Nothing claimable right now: entries of tasks other workers hold are skipped.
                # Stop once none is left waiting.
                empty_passes += 1
                if await queue.get_queue_size(QUEUE) == 0:
                    break
                await asyncio.sleep(0.05)
                continue
            ids.append(task.id)
            outcomes.append(asyncio.create_task(_complete(queue, task, worker_id)))
        await asyncio.gather(*outcomes)
        ended = time.time()
        cpu = time.process_time() - cpu
        delta = backend.store.stats.since(before)
    return {
        "worker": worker_id,
        "ids": ids,
        "started": started,
        "ended": ended,
        "requests": {k: delta.count[k] for k in REQUEST_KINDS},
        "conflicts": delta.conflicts,
        "empty_passes": empty_passes,
        "cpu_s": cpu,
        "retries": delta.retries,
    }


async def _complete(queue: AsyncGCSQueue, task: Task, worker_id: str) -> Task:
    """The holder's success, as the runtime's worker writes it (after the per-name gap)."""
    await queue.ready_to_write(task)
    record = task.record
    assert record is not None
    done = lifecycle.complete(
        record, worker=worker_id, value=None, execution_time=0.0, now=queue.clock.now()
    )
    return await queue.finish(task, done)


def worker_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--id", required=True)
    parser.add_argument("--profile", help="write this worker's cProfile stats to this file")
    args = parser.parse_args(argv)
    if args.profile:
        import cProfile

        with cProfile.Profile(time.process_time) as prof:
            out = asyncio.run(_worker(args.endpoint, args.bucket, args.id))
        prof.dump_stats(args.profile)
    else:
        out = asyncio.run(_worker(args.endpoint, args.bucket, args.id))
    print(json.dumps(out), flush=True)
    return 0


# -- the parent --------------------------------------------------------------------------------


async def _prepare(endpoint: str, bucket: str, tasks: int) -> None:
    backend = GCSBackend(bucket, endpoint_url=endpoint, token="anon")
    async with backend:
        queue = backend.async_task_storage
        jobs = (
            partial(queue.enqueue, Task(func="bench:noop", queue_name=QUEUE, args=(i,)))
            for i in range(tasks)
        )
        await run_jobs(jobs, concurrency=16)


async def _check_bucket(endpoint: str, bucket: str) -> tuple[int, int]:
    """(tasks in the bucket, of which not COMPLETED), from the listings' index metadata: a
    task's status is its state record's (docs/architecture.md)."""
    store = ObjectStore(bucket, endpoint_url=endpoint, token="anon")
    await store.open()
    try:
        tasks = await store.list("omniq/tasks/")
        records = await store.list("omniq/results/")
    finally:
        await store.close()
    indexes = [result_index(info) for info in records]
    completed = {i.task_id for i in indexes if i is not None and i.state == TaskStatus.COMPLETED}
    return len(tasks), sum(1 for info in tasks if Layout.name_of(info.key) not in completed)


def _cpu_seconds(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def _pid(emu: Any) -> int:
    """The emulator's process id (its CPU is counted beside the workers')."""
    child = emu._child
    assert child is not None, "the emulator is not running"
    return int(child.pid)


def claim_run(
    endpoint: str,
    bucket: str,
    tasks: int,
    workers: int,
    emulator_pid: int,
    profile: str | None = None,
) -> ClaimRun:
    asyncio.run(_prepare(endpoint, bucket, tasks))
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH") or str(ROOT)}
    env.pop("STORAGE_EMULATOR_HOST", None)
    # Closed in the finally below, once every worker has exited.
    logs = [tempfile.TemporaryFile(mode="w+") for _ in range(workers)]  # noqa: SIM115
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.claims",
                "--worker",
                "--endpoint",
                endpoint,
                "--bucket",
                bucket,
                "--id",
                f"w{k}",
                *([] if profile is None else ["--profile", f"{profile}/w{workers}-{k}.prof"]),
            ],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=logs[k],
            text=True,
        )
        for k in range(workers)
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"a claim worker failed to start: {line!r}")
        emulator_cpu = _cpu_seconds(emulator_pid)
        go = time.time()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        reports = []
        for p, err in zip(procs, logs, strict=True):
            out, _ = p.communicate(timeout=600)
            if p.returncode != 0:
                err.seek(0)
                raise RuntimeError(
                    f"a claim worker exited with {p.returncode}: {err.read()[-3000:]}"
                )
            reports.append(json.loads(out.strip().splitlines()[-1]))
        emulator_cpu = _cpu_seconds(emulator_pid) - emulator_cpu
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for err in logs:
            err.close()
    ended = max(float(r["ended"]) for r in reports)
    ids = [i for r in reports for i in r["ids"]]
    requests: Counter[str] = Counter()
    for r in reports:
        requests.update(r["requests"])
    stored, not_completed = asyncio.run(_check_bucket(endpoint, bucket))
    return ClaimRun(
        workers=workers,
        tasks=tasks,
        handed_out=len(ids),
        duplicates=len(ids) - len(set(ids)),
        lost=tasks - len(set(ids)),
        not_completed=not_completed + (tasks - stored),
        seconds=ended - go,
        requests=requests,
        conflicts=sum(int(r["conflicts"]) for r in reports),
        empty_passes=sum(int(r["empty_passes"]) for r in reports),
        retries=sum(int(r["retries"]) for r in reports),
        worker_cpu_s=sum(float(r["cpu_s"]) for r in reports),
        emulator_cpu_s=emulator_cpu,
    )


async def _ceiling(endpoint: str, bucket: str, writes: int, in_flight: int) -> float:
    """Create-only multipart writes per second (``ifGenerationMatch=0``), ``in_flight`` at once."""
    store = ObjectStore(bucket, endpoint_url=endpoint, token="anon")
    await store.open()
    try:
        body = json.dumps({"bench": "x" * 200}).encode()
        metadata = {"omniq_index": "1", "status": "pending", "queue": QUEUE}
        tag = f"ceiling-{in_flight}"
        jobs = (
            partial(
                store.write,
                f"raw/{tag}/{k:06d}.json",
                body,
                metadata=metadata,
                if_generation_match=0,
            )
            for k in range(writes)
        )
        started = time.perf_counter()
        await run_jobs(jobs, concurrency=in_flight)
        return writes / (time.perf_counter() - started)
    finally:
        await store.close()


def run(
    tasks: int = 600, workers: list[int] | None = None, profile: str | None = None
) -> list[Table]:
    counts = workers or [1, 4, 16]
    runs: list[ClaimRun] = []
    ceilings: dict[int, float] = {}
    with emulator("memory") as emu:
        # The memory backend's cost per request grows with the bucket: every run and the
        # ceiling get a bucket of their own holding the same prepared queue.
        for in_flight in CEILING_IN_FLIGHT:
            bucket = f"claims-ceiling-{in_flight}"
            emu.create_bucket(bucket)
            asyncio.run(_prepare(emu.url, bucket, tasks))
            ceilings[in_flight] = asyncio.run(_ceiling(emu.url, bucket, tasks, in_flight))
            rate = ceilings[in_flight]
            log(f"claims: ceiling {rate:,.0f} conditional writes/s ({in_flight} in flight)")
        for w in counts:
            bucket = f"claims-{w}"
            emu.create_bucket(bucket)
            r = claim_run(emu.url, bucket, tasks, w, _pid(emu), profile)
            log(
                f"claims: {w} workers: {r.rate:,.1f} tasks/s, {r.duplicates} duplicates, "
                f"{r.lost} lost, {r.per_task:.1f} requests/task"
            )
            runs.append(r)
    ceiling = max(ceilings.values())
    table = Table(
        f"Claims: {tasks} no-op tasks, worker processes racing on one queue (dequeue + finish)",
        [
            "workers",
            "tasks/s",
            "duplicates",
            "lost",
            "left not completed",
            "requests per task (list/get/write/delete)",
            "412 conflicts",
            "CPU ms per task (workers + emulator)",
            "ceiling: conditional writes/s",
            f"ceiling / {CONDITIONAL_WRITES_PER_TASK} writes per task",
            "of that ceiling",
        ],
    )
    for r in runs:
        by_kind = "/".join(
            f"{r.requests[k] / max(1, r.handed_out):.2f}"
            for k in ("list", "get", "write", "delete")
        )
        table.add(
            r.workers,
            round(r.rate, 1),
            r.duplicates,
            r.lost,
            r.not_completed,
            f"{r.per_task:.2f} ({by_kind})",
            r.conflicts,
            f"{1000 * r.worker_cpu_s / max(1, r.handed_out):.1f} + "
            f"{1000 * r.emulator_cpu_s / max(1, r.handed_out):.1f}",
            round(ceiling),
            round(ceiling / CONDITIONAL_WRITES_PER_TASK),
            f"{100 * r.rate / (ceiling / CONDITIONAL_WRITES_PER_TASK):.0f}%",
        )
    safe = all(r.duplicates == 0 and r.lost == 0 and r.not_completed == 0 for r in runs)
    table.notes.append(
        "Emulator: fake-gcs-server `-backend memory`, a fresh bucket per row. Ceiling: "
        + ", ".join(f"{v:,.0f}/s with {k} in flight" for k, v in ceilings.items())
        + " (create-only multipart writes, `ifGenerationMatch=0`, one client process, same bucket "
        "size). A claim + completion needs 2 conditional writes (the state record's create and "
        "its compare-and-swap), 1 GET (the task), 1 DELETE (the entry) and a share of the "
        "listings (entries, records, paused queues), so ceiling / 2 is the most a client could "
        "hand out. Each outcome is written a second after its claim (GCS's per-name limit) "
        "while the worker claims on."
    )
    outcome = "every task handed out once, none lost, all COMPLETED" if safe else "VIOLATED"
    table.notes.append(
        f"Exactly once: {outcome} (ids reported by every worker, then the bucket listed): "
        f"{verdict(0 if safe else 1, 0)}. The machine has {os.cpu_count()} cores: the emulator "
        "and the workers share them."
    )
    return [table]


def main(argv: list[str]) -> int:
    """``python -m benchmarks.claims [--tasks N] [--workers 1,4]``: the table alone; with
    ``--worker``, one worker process of a run."""
    if "--worker" in argv:
        return worker_main(argv)
    parser = argparse.ArgumentParser(prog="python -m benchmarks.claims", description=__doc__)
    parser.add_argument("--tasks", type=int, default=600, help="tasks in the prepared queue")
    parser.add_argument(
        "--workers", default="1,4,16", help="worker process counts, comma-separated"
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="each worker process writes its cProfile stats here (w<workers>-<k>.prof)",
    )
    args = parser.parse_args(argv)
    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
    for table in run(tasks=args.tasks, workers=workers, profile=args.profile):
        print(table.markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
