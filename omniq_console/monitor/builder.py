"""From the model's running aggregates to a ``Snapshot`` at a given time.

Counts, failure groups and outcome minutes are read from the model as they are (kept up to
date per change). What depends on the clock is computed here: claimed and stuck over the
running tasks; pending, delayed, expired and the oldest waiting age from the model's waiting
set, advanced to the snapshot's time (it re-classes only the tasks the clock moved). Throughput
windows sort durations per queue, so they are recomputed at most every ``THROUGHPUT_EVERY_S``.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..backend.layout import Layout
from ..models import Schedule, ScheduleStatus, as_utc
from .model import MINUTE, BucketModel, Outcome
from .records import ScheduleRecord, to_datetime
from .snapshot import (
    QueueStats,
    QueueWindow,
    ResultMinute,
    ScheduleRow,
    StuckTask,
    WorkerRow,
)
from .waiting import DELAYED, EXPIRED, PENDING

SLICE = 2_000
TREND_LENGTH = 30
RESULT_MINUTES = 30
FAILURE_WINDOW_S = 300.0
THROUGHPUT_EVERY_S = 10.0
WINDOWS = (("15m", 900.0), ("1h", 3600.0), ("6h", 21600.0))
OUTCOMES = ("success", "error", "cancelled", "expired")


@dataclass(frozen=True, slots=True)
class Thresholds:
    """What counts as overdue, dead or stuck."""

    overdue_grace: timedelta = timedelta(seconds=60)
    worker_timeout: timedelta = timedelta(seconds=30)


@dataclass(frozen=True, slots=True)
class Parts:
    queues: tuple[QueueStats, ...]
    results_per_minute: tuple[ResultMinute, ...]
    window_outcomes: dict[str, int]
    failure_rate: float
    outcome_window_s: float
    outcome_source: str
    schedules: tuple[ScheduleRow, ...]
    stuck: tuple[StuckTask, ...]
    workers: tuple[WorkerRow, ...]


def _pct(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    at = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return round(sorted_values[at], 3)


class SnapshotBuilder:
    """Keeps what spans polls (depth trends, the throughput cache) and builds the parts."""

    def __init__(self) -> None:
        self.trends: dict[str, tuple[int, ...]] = {}
        self._throughput: dict[str, tuple[QueueWindow, ...]] = {}
        self._throughput_at = -math.inf

    async def throughput(
        self, model: BucketModel, now: float
    ) -> dict[str, tuple[QueueWindow, ...]]:
        """Per-queue windows, recomputed at most every ``THROUGHPUT_EVERY_S`` (sorting every
        outcome's durations), in a thread from a copy of the outcomes."""
        if now - self._throughput_at < THROUGHPUT_EVERY_S:
            return self._throughput
        outcomes = list(model.outcomes.values())
        self._throughput = await asyncio.to_thread(throughput_windows, outcomes, now)
        self._throughput_at = now
        return self._throughput

    async def build(self, model: BucketModel, now_dt: datetime, thresholds: Thresholds) -> Parts:
        """The snapshot's parts; yields to the event loop every ``SLICE`` tasks."""
        now = now_dt.timestamp()
        running: dict[str, int] = {}
        claimed: dict[str, int] = {}
        stuck: list[StuckTask] = []
        funcs: dict[str, str] = {}
        held: dict[str, list[str]] = {}
        for n, t in enumerate(model.running_tasks()):
            if n % SLICE == SLICE - 1:
                await asyncio.sleep(0)
            running[t.queue] = running.get(t.queue, 0) + 1
            funcs[t.id] = t.func
            if t.entry is not None:
                # The entry of a running task stays in its queue until the outcome.
                claimed[t.entry.queue] = claimed.get(t.entry.queue, 0) + 1
            if t.worker_id is not None:
                held.setdefault(t.worker_id, []).append(t.id)
            lease = t.lease_expires_at
            if lease is not None and lease < now:
                # Built from checked values every poll (overdue_s moves with the clock):
                # constructed, not validated.
                stuck.append(
                    StuckTask.model_construct(
                        id=t.id,
                        queue_name=t.queue,
                        func=t.func,
                        worker_id=t.worker_id,
                        lease_expires_at=to_datetime(lease),
                        overdue_s=now - lease,
                    )
                )
        # Waiting tasks: only those whose class the clock changed since the last build.
        waiting = model.waiting
        waiting.advance(now)
        stuck.sort(key=lambda s: (-s.overdue_s, s.id))

        throughput = await self.throughput(model, now)
        names = set(model.queue_names) | waiting.queues() | set(claimed) | set(model.paused)
        trends: dict[str, tuple[int, ...]] = {}
        queues = []
        for q in sorted(names):
            pending, delayed = waiting.count(q, PENDING), waiting.count(q, DELAYED)
            trend = (*self.trends.get(q, ()), pending + delayed)[-TREND_LENGTH:]
            trends[q] = trend
            since = waiting.oldest(q) if pending else None
            pause = model.paused.get(q)
            queues.append(
                QueueStats(
                    name=q,
                    pending=pending,
                    delayed=delayed,
                    running=running.get(q, 0),
                    oldest_pending_age_s=max(0.0, now - since) if since is not None else None,
                    depth_trend=trend,
                    expired=waiting.count(q, EXPIRED),
                    claimed=claimed.get(q, 0),
                    paused=pause is not None,
                    paused_by=pause.actor if pause else None,
                    paused_at=to_datetime(pause.at) if pause else None,
                    throughput=throughput.get(q, ()),
                )
            )
        self.trends = trends

        # Only minutes where both successes and failures are known are drawn and counted
        # (``BucketModel.mark_outcomes_known``); the ones before are marked unknown.
        known = model.outcomes_known_from
        first_known = int(known // MINUTE) if known is not None else None
        first = int(now // MINUTE) - RESULT_MINUTES + 1
        bars = []
        for m in range(first, first + RESULT_MINUTES):
            if first_known is not None and m < first_known:
                bars.append(ResultMinute(minute=to_datetime(m * MINUTE), known=False))  # type: ignore[arg-type]
                continue
            counts = {s: model.minutes.get((m, s), 0) for s in OUTCOMES}
            bars.append(ResultMinute(minute=to_datetime(m * MINUTE), **counts))  # type: ignore[arg-type]
        # The failure rate over the last FAILURE_WINDOW_S, from the minute counters: whole
        # minutes, the current one included (so the window is 5 to 6 minutes wide), known
        # minutes only. ``window_outcomes`` counts the same outcomes.
        last = int(now // MINUTE)
        start = last - int(FAILURE_WINDOW_S // MINUTE)
        if first_known is not None:
            start = min(last, max(start, first_known))
        span = range(start, last + 1)
        window = {s: sum(model.minutes.get((m, s), 0) for m in span) for s in OUTCOMES}
        ok, err = window["success"], window["error"]
        source = "results+events" if model.detached else "results"
        window_s = now - span.start * MINUTE

        schedules = [
            schedule_row(key, rec, gen, now_dt, thresholds.overdue_grace)
            for key, (gen, rec) in model.schedules.items()
        ]
        schedules.sort(key=lambda r: (r.next_run is None, r.next_run or now_dt, r.id))

        workers = []
        for w in model.workers.values():
            # What it runs, from the state records (as Queues' running counts it): a heartbeat
            # lists what ran when it was written, up to a heartbeat interval ago.
            runs = tuple(sorted(held.get(w.id, ())))
            age = now - w.last_seen if w.last_seen is not None else None
            alive = (
                w.state == "running"
                and age is not None
                and age <= thresholds.worker_timeout.total_seconds()
            )
            workers.append(
                WorkerRow(
                    id=w.id,
                    state=w.state,
                    alive=alive,
                    last_seen=to_datetime(w.last_seen),
                    age_s=age,
                    host=w.host,
                    pid=w.pid,
                    queues=w.queues,
                    running=runs,
                    processed=w.processed,
                    failed=w.failed,
                    concurrency=w.concurrency,
                    utilisation=round(len(runs) / w.concurrency, 3) if w.concurrency > 0 else None,
                    running_funcs=tuple(funcs[t] for t in runs),
                    dead=w.state == "running" and not alive,
                )
            )
        workers.sort(key=lambda w: w.id)
        return Parts(
            queues=tuple(queues),
            results_per_minute=tuple(bars),
            window_outcomes=window,
            failure_rate=err / (ok + err) if ok + err else 0.0,
            outcome_window_s=round(window_s, 1),
            outcome_source=source,
            schedules=tuple(schedules),
            stuck=tuple(stuck),
            workers=tuple(workers),
        )


def schedule_row(
    key: str, rec: ScheduleRecord, generation: int, now: datetime, grace: timedelta
) -> ScheduleRow:
    """A schedule's row; overdue when active and its next run is more than ``grace`` past.

    The id is the key's: actions on the row address that object, whatever its body claims.
    """
    s = rec.schedule
    paused_by, paused_at = paused_stamp(s) if s.status == ScheduleStatus.PAUSED else (None, None)
    return ScheduleRow(
        id=Layout.name_of(key),
        func=s.func,
        schedule_type=s.schedule_type.value,
        status=s.status.value,
        queue_name=s.queue_name,
        cron_expression=s.cron_expression,
        interval_s=s.interval.total_seconds() if s.interval is not None else None,
        next_run=s.next_run,
        last_run=s.last_run,
        run_count=s.run_count,
        max_runs=s.max_runs,
        overdue=(
            s.status == ScheduleStatus.ACTIVE
            and s.next_run is not None
            and s.next_run < now - grace
        ),
        generation=generation,
        paused_by=paused_by,
        paused_at=paused_at,
    )


def paused_stamp(schedule: Schedule) -> tuple[str | None, datetime | None]:
    """Who paused ``schedule`` and when: the operator's stamp in its body
    (``metadata.last_operator_action``, written with the pause); (None, None) when the last
    action recorded there is not a pause (created paused, or by a writer that does not stamp)."""
    stamp = schedule.metadata.get("last_operator_action")
    if not isinstance(stamp, dict) or stamp.get("action") != "pause_schedule":
        return None, None
    actor = stamp.get("actor")
    try:
        at = as_utc(datetime.fromisoformat(str(stamp.get("at"))))
    except (TypeError, ValueError):
        at = None
    return (str(actor)[:200] if actor else None), at


def throughput_windows(outcomes: list[Outcome], now: float) -> dict[str, tuple[QueueWindow, ...]]:
    """Completed and failed per queue over each of ``WINDOWS``, with wait (started - created)
    and run (completed - started) percentiles; ``covered_s`` is how far back outcomes go."""
    oldest = min((o.completed_at for o in outcomes), default=now)
    # (completed, failed, waits, runs) per queue and window, in one pass over the outcomes.
    acc: dict[str, list[tuple[list[int], list[float], list[float]]]] = {}
    floors = [now - span for _, span in WINDOWS]
    for o in outcomes:
        slots = acc.get(o.queue or "")
        if slots is None:
            slots = acc[o.queue or ""] = [([0, 0], [], []) for _ in WINDOWS]
        wait = o.started_at - o.created_at if o.started_at and o.created_at else None
        # As the function ran; completed - started also holds the outcome's per-name wait.
        run = o.run_s
        for (counts, waits, runs), floor in zip(slots, floors, strict=True):
            if o.completed_at < floor:
                continue
            if o.status == "success":
                counts[0] += 1
            elif o.status == "error":
                counts[1] += 1
            if wait is not None and wait >= 0:
                waits.append(wait)
            if run is not None and run >= 0:
                runs.append(run)
    out: dict[str, tuple[QueueWindow, ...]] = {}
    for queue, slots in acc.items():
        windows = []
        for (name, span), (counts, waits, runs) in zip(WINDOWS, slots, strict=True):
            waits.sort()
            runs.sort()
            covered = min(span, max(0.0, now - oldest))
            windows.append(
                QueueWindow(
                    window=name,
                    window_s=span,
                    completed=counts[0],
                    failed=counts[1],
                    per_minute=round((counts[0] + counts[1]) / (max(covered, 60.0) / 60), 3),
                    wait_p50_s=_pct(waits, 0.5),
                    wait_p95_s=_pct(waits, 0.95),
                    run_p50_s=_pct(runs, 0.5),
                    run_p95_s=_pct(runs, 0.95),
                    covered_s=round(covered, 1),
                )
            )
        out[queue] = tuple(windows)
    return out
