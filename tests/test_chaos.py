"""Chaos: worker processes and two schedulers behind GCS's rules and a faulty network, workers
killed and stopped past their lease at random, one worker's clock 90 s ahead.

At the end: every task is final once, each stored result was written by the attempt that owns
the final status, a task ran twice only when a worker that ran it was killed or stopped, and no
due time of a schedule fired twice. Each round of chaos harms a worker not harmed before, and
a stalled worker sleeps past its lease while the next rounds go on: about 40 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import timedelta
from pathlib import Path

import pytest
from faultproxy import GCSRulesProxy
from waiting import wait_until

from omniq_console.backend.gcs import GCSBackend
from omniq_console.demo.emulator import Emulator
from omniq_console.models import EventType, ResultStatus, Schedule, ScheduleType, Task

CHILD = Path(__file__).with_name("_chaos_child.py")
TASKS = 48
WAVES = 4  # tasks arrive in waves during the chaos, so kills and stops hit running work
ROUNDS = 4  # each kills or stalls one of the four workers with a true clock
STALL_SECONDS = 6.0  # longer than lease + margin (5 s): another worker requeues its tasks
SETTLE_SECONDS = 90.0


class Fleet:
    """The child processes, and who was killed or stopped."""

    def __init__(self, endpoint: str, bucket: str, exec_log: Path, logs: Path) -> None:
        self.endpoint, self.bucket, self.exec_log, self.logs = endpoint, bucket, exec_log, logs
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.harmed: set[str] = set()
        self.started: set[str] = set()  # said READY
        self._n = 0
        # How many harms so far ("over" once the chaos ends): a task's work lasts until the
        # next harm, so every harm hits work under way (tests/_chaos_child.py).
        self.harms = logs / "harms"
        self._say_harms("0")

    def _say_harms(self, text: str) -> None:
        part = self.harms.with_suffix(".part")
        part.write_text(text)
        os.replace(part, self.harms)  # readers never see half a write

    def harm_done(self) -> None:
        self._say_harms(str(len(self.harmed)))

    def chaos_over(self) -> None:
        self._say_harms("over")

    def start(self, role: str, offset: float = 0.0) -> str:
        """Start one child (``ready`` waits for it): children start side by side."""
        self._n += 1
        name = f"{role}-{self._n}"
        cfg = {
            "role": role,
            "id": name,
            "bucket": self.bucket,
            "endpoint": self.endpoint,
            "exec_log": str(self.exec_log),
            "harms": str(self.harms),
            "offset": offset,
        }
        env = {**os.environ, "CHAOS_CFG": json.dumps(cfg)}
        env.pop("STORAGE_EMULATOR_HOST", None)
        log = (self.logs / f"{name}.log").open("w")
        # stdout carries one line, READY, read at once by ``ready``; stderr goes to a file.
        self.procs[name] = subprocess.Popen(
            [sys.executable, str(CHILD)], env=env, stdout=subprocess.PIPE, stderr=log, text=True
        )
        return name

    def wait_ready(self) -> None:
        """Wait until every child started says READY."""
        for name in self.procs.keys() - self.started:
            stdout = self.procs[name].stdout
            assert stdout is not None
            line = stdout.readline().strip()
            log = (self.logs / f"{name}.log").read_text()
            assert line == "READY", f"{name} did not start: {log}"
            self.started.add(name)

    def unharmed_workers(self) -> list[str]:
        """Workers running (started, not killed) and not harmed yet."""
        return [
            n
            for n in self.started - self.harmed
            if n.startswith("worker") and self.procs[n].poll() is None
        ]

    def kill(self, name: str) -> None:
        self.harmed.add(name)
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait(10)
        self.harm_done()

    async def pause(self, name: str, seconds: float) -> None:
        """SIGSTOP past the lease, then SIGCONT: a stalled worker that wakes up."""
        self.harmed.add(name)
        self.procs[name].send_signal(signal.SIGSTOP)
        self.harm_done()
        # Wall clock on purpose: the stall is the fault under test, a fixed length past the
        # lease (a stopped process has no event to wait for).
        await asyncio.sleep(seconds)
        self.procs[name].send_signal(signal.SIGCONT)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.mark.timeout(240)
async def test_chaos_loses_nothing_and_doubles_only_what_it_harmed(
    emulator: Emulator, tmp_path: Path
) -> None:
    rng = random.Random(1201)
    bucket = f"chaos-{rng.getrandbits(40):010x}"
    emulator.create_bucket(bucket)
    exec_log = tmp_path / "exec.log"
    exec_log.touch()
    with GCSRulesProxy(emulator.url, role="objectAdmin", bucket=bucket) as proxy:
        faults = random.Random(7)
        proxy.fail(503, times=None, where=lambda r: faults.random() < 0.04)
        proxy.fail(429, times=None, where=lambda r: faults.random() < 0.03)
        proxy.drop(
            times=None,
            after_forward=True,
            where=lambda r: r.method == "POST" and faults.random() < 0.02,
        )
        fleet = Fleet(proxy.url, bucket, exec_log, tmp_path)
        async with GCSBackend(bucket, prefix="chaos/", endpoint_url=emulator.url) as direct:
            schedule = Schedule(
                schedule_type=ScheduleType.INTERVAL,
                func="chaos:tick",
                interval=timedelta(seconds=2),
                queue_name="chaos",
                args=(-1,),
            )
            await direct.async_schedule_storage.save_schedule(schedule)
            tasks = [
                Task(
                    func="chaos:flaky" if i % 10 == 0 else "chaos:ok",
                    args=(i,),
                    queue_name="chaos",
                    max_retries=1,
                    retry_delay=timedelta(seconds=0.2),
                    id=f"chaos-{i:03d}",
                )
                for i in range(TASKS)
            ]
            waves = [tasks[i::WAVES] for i in range(WAVES)]
            stalls: list[asyncio.Task[None]] = []
            try:
                for _ in range(4):
                    fleet.start("worker")
                # A machine whose clock is 90 s ahead, never harmed: a retry it schedules is due
                # 90 s later for the others, so only it can run the task in time.
                skewed = fleet.start("worker", offset=90.0)
                fleet.start("scheduler")
                fleet.start("scheduler", offset=-30.0)
                fleet.wait_ready()
                for _ in range(ROUNDS):
                    for task in waves.pop() if waves else ():
                        await direct.async_task_storage.enqueue(task)
                    # The chaos's rhythm: work starts, then harm.
                    calls = len(exec_log.read_text().splitlines())
                    await wait_until(
                        lambda: len(exec_log.read_text().splitlines()) > calls,  # noqa: B023
                        "work started in this round",
                        within=60,
                    )
                    victim = rng.choice(sorted(set(fleet.unharmed_workers()) - {skewed}))
                    if rng.random() < 0.5:
                        fleet.kill(victim)
                        fleet.start("worker")  # a replacement, ready while the rounds go on
                    else:  # stalled while the next rounds go on
                        stalls.append(asyncio.create_task(fleet.pause(victim, STALL_SECONDS)))
                await asyncio.gather(*stalls)
                fleet.chaos_over()
                fleet.wait_ready()
                for wave in waves:  # what the chaos window had no time for
                    for task in wave:
                        await direct.async_task_storage.enqueue(task)

                async def fired_five() -> bool:
                    got = await direct.async_schedule_storage.get_schedule(schedule.id)
                    return got is not None and got.run_count >= 5

                await wait_until(fired_five, "five runs of the schedule", within=60)
                await direct.async_schedule_storage.update_schedule(
                    _paused(await direct.async_schedule_storage.get_schedule(schedule.id))
                )

                async def all_final() -> bool:
                    statuses = await direct.async_task_storage.statuses()
                    return all(s.is_final for s in statuses.values())

                with contextlib.suppress(AssertionError):  # the asserts below say what is not
                    await wait_until(
                        all_final, "every task final", within=SETTLE_SECONDS, every=0.5
                    )
            finally:
                for stall in stalls:
                    stall.cancel()
                fleet.chaos_over()
                fleet.stop_all()

            statuses = await direct.async_task_storage.statuses()
            logs = "\n".join(p.read_text()[-2000:] for p in tmp_path.glob("*-*.log"))
            not_final = {i: s.value for i, s in statuses.items() if not s.is_final}
            assert not not_final, f"not final: {not_final}\n{logs}"
            assert {t.id for t in tasks} <= set(statuses)

            runs: dict[str, list[tuple[int, str]]] = defaultdict(list)
            for line in exec_log.read_text().split("\n"):
                if line.strip():
                    task_id, attempt, worker = line.split()
                    runs[task_id].append((int(attempt), worker))
            for task_id in statuses:
                result = await direct.async_result_storage.get(task_id)
                assert result is not None and result.is_final, task_id
                ran = runs[task_id]
                if result.status == ResultStatus.SUCCESS:
                    # The stored outcome is the one of the attempt that owns the final status.
                    assert (result.attempt, result.worker_id) in ran, (task_id, result, ran)
                expected = 2 if task_id.startswith("chaos-") and int(task_id[6:]) % 10 == 0 else 1
                extra = len(ran) - expected
                if extra > 0:
                    harmed_ran = {w for _, w in ran} & fleet.harmed
                    assert harmed_ran, f"{task_id} ran {len(ran)} times, no harmed worker: {ran}"

            events = await direct.async_event_storage.get_events(
                event_type=EventType.SCHEDULE_FIRED
            )
            dues = Counter(e.details.get("due") for e in events if e.schedule_id == schedule.id)
            assert dues and max(dues.values()) == 1, dues
            final_schedule = await direct.async_schedule_storage.get_schedule(schedule.id)
            assert final_schedule is not None
            fired = [i for i in statuses if i not in {t.id for t in tasks}]
            assert final_schedule.run_count == len(fired) == len(dues) >= 5
            assert all(runs[i] for i in fired), "a fired run never executed"
            # The chaos did what it says: workers were harmed, leases died and were requeued.
            requeued = await direct.async_event_storage.get_events(
                event_type=EventType.LEASE_EXPIRED
            )
            assert len(fleet.harmed) == ROUNDS and requeued, (fleet.harmed, len(requeued))


def _paused(schedule: Schedule | None) -> Schedule:
    assert schedule is not None
    schedule.pause()
    return schedule
