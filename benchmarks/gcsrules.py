"""GCS's rules: the same workload unthrottled and under the GCS rules model, in one run.

4 worker processes drain 200 no-op tasks, then 200 tasks of 50-200 ms, through the rules proxy
of the test suite (``tests/faultproxy.py``, ``GCSRulesProxy``) in front of fake-gcs-server:
once with the per-name limit off (the baseline: same proxy, same hops, nothing refused) and
once as GCS behaves (429 on a second mutation of one name within a second). Printed side by
side: tasks/s, 429s per 100 writes, object writes per task, the most mutations of one name
within any second, enqueue-to-result median and p95, duplicates and lost tasks, and worker CPU
per no-op task.

Run as ``python -m benchmarks.gcsrules --worker ...`` it is one worker process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omniq_console.backend.gcs import GCSBackend
from omniq_console.models import ResultStatus, Task, TaskStatus, utcnow
from omniq_console.runtime import Worker
from omniq_console.runtime.registry import TaskRegistry, submit_task

from .common import ROOT, Table, emulator, log, verdict

sys.path.insert(0, str(ROOT / "tests"))
from faultproxy import GCSRulesProxy

QUEUE = "bench"
WORKERS = 4
CONCURRENCY = 8
NOOP_TASKS = 200
SLOW_TASKS = 200
TIMEOUT_S = 300.0
PROBE_TASKS = 40
PROBE_SPACING_S = 0.25  # 4 tasks/s: well under the fleet's capacity, so no queueing


def _registry(exec_log: Path) -> TaskRegistry:
    reg = TaskRegistry()

    def noop(n: int) -> int:
        _log_exec(exec_log, n)
        return n

    async def slow(n: int, ms: int) -> int:
        _log_exec(exec_log, n)
        await asyncio.sleep(ms / 1000)
        return n

    reg.register(noop, name="bench:noop")
    reg.register(slow, name="bench:slow")
    return reg


def _log_exec(exec_log: Path, n: int) -> None:
    with exec_log.open("a") as fh:
        fh.write(f"{n}\n")


async def _worker_main(endpoint: str, bucket: str, exec_log: Path, worker_id: str) -> None:
    """One worker process: open, say READY, run until stdin says STOP; answer CPU? with its
    CPU seconds so far."""
    async with GCSBackend(bucket, endpoint_url=endpoint) as backend:
        worker = Worker(
            backend,
            _registry(exec_log),
            [QUEUE],
            concurrency=CONCURRENCY,
            worker_id=worker_id,
            poll_interval=0.05,
            poll_timeout=0.5,
        )
        print("READY", flush=True)
        runner = asyncio.create_task(worker.run())
        loop = asyncio.get_running_loop()
        while True:
            line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
            if line == "CPU?":
                times = os.times()
                answer = {"cpu": times.user + times.system, "user": times.user}
                print(json.dumps(answer), flush=True)
            elif line in ("STOP", ""):
                break
        worker.stop()
        await runner
        stats = backend.store.stats
        print(
            json.dumps(
                {
                    "cpu": time.process_time(),
                    "count": stats.count,
                    "rate_limited": stats.rate_limited,
                }
            ),
            flush=True,
        )


@dataclass
class Phase:
    """One batch of tasks and what it took."""

    name: str
    tasks: int
    seconds: float = 0.0
    cpu_s: float = 0.0
    user_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    lost: int = 0


@dataclass
class ModeResult:
    mode: str
    phases: list[Phase]
    writes: int
    rate_limited: int
    mutations: int
    deletes: int
    max_per_second: int
    duplicates: int
    requests: Counter[str] = field(default_factory=Counter)
    probe: list[float] = field(default_factory=list)


class _Workers:
    def __init__(self, endpoint: str, bucket: str, exec_log: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("STORAGE_EMULATOR_HOST", None)
        self.procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.gcsrules",
                    "--worker",
                    endpoint,
                    bucket,
                    str(exec_log),
                    f"bench-w{i}",
                ],
                cwd=ROOT,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for i in range(WORKERS)
        ]
        for proc in self.procs:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            if line != "READY":
                raise RuntimeError(f"worker did not start: {line!r}")

    def cpu(self) -> tuple[float, float]:
        """The workers' CPU seconds so far: user+system, and user alone."""
        total = user = 0.0
        for proc in self.procs:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write("CPU?\n")
            proc.stdin.flush()
            answer = json.loads(proc.stdout.readline())
            total += answer["cpu"]
            user += answer["user"]
        return total, user

    def stop(self) -> list[dict[str, Any]]:
        out = []
        for proc in self.procs:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write("STOP\n")
            proc.stdin.flush()
        for proc in self.procs:
            assert proc.stdout is not None
            out.append(json.loads(proc.stdout.readline()))
            proc.wait(60)
        return out


async def _drain(
    backend: GCSBackend, tasks: list[Task], phase: Phase, spacing_s: float = 0.0
) -> None:
    """Enqueue ``tasks`` (all at once, or one every ``spacing_s``) and wait until all are
    final; record how long it took and each task's enqueue-to-result time."""
    started = time.perf_counter()
    if spacing_s:
        for task in tasks:
            task.created_at = utcnow()
            await submit_task(backend, task)
            await asyncio.sleep(spacing_s)
    else:
        await asyncio.gather(*(submit_task(backend, t) for t in tasks))
    ids = {t.id for t in tasks}
    deadline = started + TIMEOUT_S
    while time.perf_counter() < deadline:
        statuses = await backend.async_task_storage.statuses()
        if all(statuses.get(i, TaskStatus.PENDING).is_final for i in ids):
            break
        await asyncio.sleep(0.1)
    phase.seconds = time.perf_counter() - started
    results = await backend.async_result_storage.list_results()
    by_id = {r.task_id: r for r in results if r.task_id in ids}
    phase.lost = sum(1 for i in ids if i not in by_id or by_id[i].status != ResultStatus.SUCCESS)
    created = {t.id: t.created_at for t in tasks}
    phase.latencies = [
        (r.completed_at - created[r.task_id]).total_seconds()
        for r in by_id.values()
        if r.completed_at is not None
    ]


async def _run_mode(mode: str, emu: Any, workdir: Path) -> ModeResult:
    bucket = f"bench-rules-{uuid.uuid4().hex[:10]}"
    emu.create_bucket(bucket)
    hot = 1.0 if mode == "GCS rules" else 0.0
    with GCSRulesProxy(emu.url, role="objectAdmin", hot_seconds=hot, bucket=bucket) as proxy:
        exec_log = workdir / f"exec-{uuid.uuid4().hex[:6]}.log"
        exec_log.touch()
        workers = _Workers(proxy.url, bucket, exec_log)
        phases = []
        requests: Counter[str] = Counter()
        try:
            async with GCSBackend(bucket, endpoint_url=proxy.url) as backend:
                rng = random.Random(7)
                noop = [
                    Task(func="bench:noop", args=(i,), queue_name=QUEUE) for i in range(NOOP_TASKS)
                ]
                slow = [
                    Task(
                        func="bench:slow",
                        args=(NOOP_TASKS + i, rng.randint(50, 200)),
                        queue_name=QUEUE,
                    )
                    for i in range(SLOW_TASKS)
                ]
                for name, tasks in (("no-op", noop), ("50-200 ms", slow)):
                    phase = Phase(name, len(tasks))
                    cpu0 = workers.cpu()
                    log(f"{mode}: {len(tasks)} {name} tasks")
                    await _drain(backend, tasks, phase)
                    cpu1 = workers.cpu()
                    phase.cpu_s, phase.user_s = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
                    phases.append(phase)
                probe = [
                    Task(func="bench:noop", args=(10_000 + i,), queue_name=QUEUE)
                    for i in range(PROBE_TASKS)
                ]
                log(f"{mode}: {PROBE_TASKS} no-op tasks, one every {PROBE_SPACING_S} s")
                latency = Phase("latency probe", PROBE_TASKS)
                await _drain(backend, probe, latency, spacing_s=PROBE_SPACING_S)
                # The enqueuer's requests, less its own polling of the statuses.
                requests["write"] += backend.store.stats.count["write"]
        finally:
            final = workers.stop()
        for w in final:
            requests.update(w["count"])
        runs = Counter(int(line) for line in exec_log.read_text().split())
        return ModeResult(
            mode=mode,
            phases=phases,
            writes=proxy.writes,
            rate_limited=proxy.rate_limited,
            mutations=sum(proxy.mutation_counts().values()),
            deletes=sum(w["count"].get("delete", 0) for w in final),
            max_per_second=proxy.max_mutations_per_second(),
            duplicates=sum(1 for n in runs.values() if n > 1),
            requests=requests,
            probe=latency.latencies,
        )


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run() -> list[Table]:
    """Both modes, one after the other, on one emulator; one table."""
    import tempfile

    with emulator("memory") as emu, tempfile.TemporaryDirectory() as tmp:
        results = [asyncio.run(_run_mode(m, emu, Path(tmp))) for m in ("unthrottled", "GCS rules")]
    base, rules = results
    tasks = NOOP_TASKS + SLOW_TASKS
    # Requests and writes are counted over the whole run, the latency probe included.
    counted = tasks + PROBE_TASKS

    def rate(r: ModeResult) -> float:
        return tasks / sum(p.seconds for p in r.phases)

    def writes_per_task(r: ModeResult) -> float:
        return (r.mutations - r.deletes) / counted

    def latencies(r: ModeResult) -> list[float]:
        return [x for p in r.phases for x in p.latencies]

    def cpu_ms(r: ModeResult) -> float:
        return r.phases[0].cpu_s / NOOP_TASKS * 1000

    def user_ms(r: ModeResult) -> float:
        return r.phases[0].user_s / NOOP_TASKS * 1000

    table = Table(
        "GCS's rules: 4 worker processes, 200 no-op then 200 tasks of 50-200 ms",
        ["figure", "unthrottled", "GCS rules model", "target", "verdict"],
    )
    ratio = rate(rules) / rate(base)
    per100 = rules.rate_limited / max(1, rules.writes) * 100

    def per_task(r: ModeResult) -> str:
        return " / ".join(
            f"{r.requests[k] / counted:.2f}" for k in ("list", "get", "write", "delete")
        )

    def dollars(r: ModeResult) -> float:
        class_a = r.requests["list"] + r.requests["write"]
        return (class_a * 0.05 + r.requests["get"] * 0.004) / 10_000 / counted * 1_000_000

    table.rows += [
        ["tasks/s", f"{rate(base):.1f}", f"{rate(rules):.1f}", "", ""],
        ["requests per task: list / get / write / delete", per_task(base), per_task(rules), "", ""],
        [
            "$ per 1,000,000 tasks (Class A $0.05, B $0.004 per 10,000)",
            f"{dollars(base):.2f}",
            f"{dollars(rules):.2f}",
            "",
            "",
        ],
        [
            "tasks/s under the model / unthrottled",
            "",
            f"{ratio:.2f}",
            ">= 0.8",
            verdict(ratio, 0.8, lower_is_better=False),
        ],
        [
            "429 answers per 100 writes",
            f"{base.rate_limited / max(1, base.writes) * 100:.2f}",
            f"{per100:.2f}",
            "<= 1",
            verdict(per100, 1.0),
        ],
        [
            "object writes per task (creates+updates, events incl.)",
            f"{writes_per_task(base):.2f}",
            f"{writes_per_task(rules):.2f}",
            "<= 5",
            verdict(writes_per_task(rules), 5.0),
        ],
        [
            "deletes per task (free, but mutations)",
            f"{base.deletes / counted:.2f}",
            f"{rules.deletes / counted:.2f}",
            "",
            "",
        ],
        [
            "most mutations of one name within any second",
            str(base.max_per_second),
            str(rules.max_per_second),
            "1",
            verdict(rules.max_per_second, 1),
        ],
        [
            "enqueue-to-result at 4 tasks/s: median / p95 (s)",
            f"{statistics.median(base.probe):.2f} / {_pct(base.probe, 0.95):.2f}",
            f"{statistics.median(rules.probe):.2f} / {_pct(rules.probe, 0.95):.2f}",
            "",
            "",
        ],
        [
            "enqueue-to-result of the bursts, median (s)",
            f"{statistics.median(latencies(base)):.2f}",
            f"{statistics.median(latencies(rules)):.2f}",
            "",
            "",
        ],
        [
            "enqueue-to-result of the bursts, p95 (s)",
            f"{_pct(latencies(base), 0.95):.2f}",
            f"{_pct(latencies(rules), 0.95):.2f}",
            "",
            "",
        ],
        [
            "duplicates / lost",
            f"{base.duplicates} / {sum(p.lost for p in base.phases)}",
            f"{rules.duplicates} / {sum(p.lost for p in rules.phases)}",
            "0 / 0",
            "met" if rules.duplicates == 0 and not sum(p.lost for p in rules.phases) else "missed",
        ],
        [
            "worker CPU per no-op task, user+system (ms)",
            f"{cpu_ms(base):.1f}",
            f"{cpu_ms(rules):.1f}",
            "<= 8",
            verdict(cpu_ms(rules), 8.0),
        ],
        [
            "worker CPU per no-op task, user only (ms)",
            f"{user_ms(base):.1f}",
            f"{user_ms(rules):.1f}",
            "",
            "",
        ],
    ]
    table.notes.append(
        "Both runs go through the same rules proxy (the unthrottled one with the per-name "
        "limit off), so hops and request counting are alike. Enqueue-to-result includes the "
        "outcome's wait of a second after its claim (GCS's per-name limit) and the enqueue of "
        "the whole batch at once. CPU is the 4 worker processes' user+system time over the "
        "no-op phase (the emulator and the proxy run in other processes)."
    )
    return [table]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gcsrules")
    parser.add_argument("--worker", nargs=4, metavar=("ENDPOINT", "BUCKET", "EXEC_LOG", "ID"))
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = _parse(None)
    if args.worker:
        endpoint, bucket, exec_log, worker_id = args.worker
        asyncio.run(_worker_main(endpoint, bucket, Path(exec_log), worker_id))
    else:
        for t in run():
            print(t.markdown())
