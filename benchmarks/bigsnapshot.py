"""A snapshot of a busy bucket built in memory (no emulator): what the console receives when
the monitor has polled ``n`` tasks. Same mix as the seeded buckets (seed.py)."""

from __future__ import annotations

import random
import uuid

import msgspec
from collections import Counter
from datetime import timedelta

from omniq_console.models import ResultStatus, TaskStatus, new_event_id, utcnow
from omniq_console.monitor.snapshot import (
    EventRow,
    QueueStats,
    ResultMinute,
    ScheduleRow,
    Snapshot,
    StuckTask,
    TaskRow,
    WorkerRow,
)

from .seed import ERRORS, FUNCS, QUEUES, Mix


def build(n: int, *, seed_value: int = 3, changed: float = 0.0) -> Snapshot:
    """A snapshot of ``n`` tasks; ``changed`` is the share of tasks whose status differs from
    the snapshot built with the same seed and ``changed=0`` (the next poll's snapshot)."""
    rng = random.Random(seed_value)
    now = utcnow()
    statuses = [
        s.value for s, count in Mix.for_tasks(n).status_counts().items() for _ in range(count)
    ]
    rng.shuffle(statuses)
    queues = tuple(QUEUES)
    rows = []
    for i in range(n):
        status = statuses[i]
        queue = queues[i % len(queues)]
        rows.append(
            TaskRow(
                id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                queue_name=queue,
                func=FUNCS[i % len(FUNCS)],
                status=status,
                priority=QUEUES[queue],
                created_ts=(now - timedelta(seconds=i * 3600 / max(1, n))).timestamp(),
                run_ts=None,
                retry_count=i % 3 if status == "failed" else 0,
                worker_id=f"worker-{i % 4}"
                if status in ("running", "completed", "failed")
                else None,
                error_type=ERRORS[i % len(ERRORS)] if status == "failed" else None,
            )
        )
    if changed:
        flip = random.Random(seed_value + 1).sample(range(n), int(n * changed))
        for i in flip:
            rows[i] = msgspec.structs.replace(rows[i], status="completed", worker_id="worker-0")
    counts = Counter(r.status for r in rows)
    by_queue: dict[str, Counter[str]] = {q: Counter() for q in queues}
    for r in rows:
        by_queue[r.queue_name][r.status] += 1
    queue_stats = tuple(
        QueueStats(
            name=q,
            pending=c["pending"],
            running=c["running"],
            oldest_pending_age_s=3500.0,
            depth_trend=tuple(c["pending"] + k for k in range(30)),
        )
        for q, c in by_queue.items()
    )
    minutes = tuple(
        ResultMinute(
            minute=(now - timedelta(minutes=m)).replace(second=0, microsecond=0),
            success=n // 100 + m,
            error=n // 400,
        )
        for m in range(30, 0, -1)
    )
    events = tuple(
        EventRow(
            id=new_event_id(now - timedelta(seconds=k)),
            timestamp=now - timedelta(seconds=k),
            event_type=("completed", "failed", "dequeued")[k % 3],
            task_id=rows[k % n].id,
            queue_name=rows[k % n].queue_name,
            worker_id="worker-1",
            message=f"{rows[k % n].func} done",
        )
        for k in range(200)
    )
    schedules = tuple(
        ScheduleRow(
            id=f"schedule-{k}",
            func=FUNCS[k % len(FUNCS)],
            schedule_type="cron" if k % 2 else "interval",
            status="paused" if k < 2 else "active",
            cron_expression="*/5 * * * *" if k % 2 else None,
            interval_s=None if k % 2 else 60.0,
            next_run=now + timedelta(minutes=k),
            last_run=now - timedelta(minutes=5),
            run_count=k * 10,
        )
        for k in range(20)
    )
    stuck = tuple(
        StuckTask(
            id=r.id,
            queue_name=r.queue_name,
            func=r.func,
            worker_id=r.worker_id,
            lease_expires_at=now - timedelta(minutes=2),
            overdue_s=120.0,
        )
        for r in rows[:50]
        if r.status == "running"
    )
    workers = tuple(
        WorkerRow(
            id=f"worker-{k}",
            state="running",
            alive=True,
            last_seen=now,
            age_s=1.0,
            host="bench",
            pid=100 + k,
            queues=queues,
            processed=1000 * k,
        )
        for k in range(4)
    )
    results = {s.value: 0 for s in ResultStatus}
    results.update(success=n * 35 // 100, error=counts["failed"])
    tasks = {s.value: counts.get(s.value, 0) for s in TaskStatus}
    failures = Counter(r.error_type for r in rows if r.error_type)
    # model_construct, as the monitor does: 100,000 rows are not validated one by one.
    return Snapshot.model_construct(
        bucket="bench",
        prefix="omniq/",
        taken_at=now,
        stale=False,
        age_s=0.0,
        error=None,
        poll_interval_s=2.0,
        queues=queue_stats,
        tasks=tasks,
        results=results,
        results_per_minute=minutes,
        failures_by_type=dict(failures),
        failure_rate=0.15,
        events=events,
        schedules=schedules,
        stuck=stuck,
        workers=workers,
        unreadable=(),
        requests=Snapshot.model_fields["requests"].get_default(call_default_factory=True),
        task_rows=tuple(rows),
    )
