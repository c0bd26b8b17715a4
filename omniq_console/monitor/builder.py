"""From the model's running aggregates to a ``Snapshot`` at a given time.

Counts, failure groups, outcome minutes, running and claimed counts are read from the model
as they are (kept up to date per change). What depends on the clock is advanced to the
snapshot's time: stuck tasks from the running set's lease heap, pending, delayed, expired and
the oldest waiting age from the waiting set's heaps (each touches only what the clock moved).
Throughput windows are kept per outcome; their percentiles walk histogram bins, so they are
recomputed at most every ``THROUGHPUT_EVERY_S``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..backend.layout import Layout
from ..models import Schedule, ScheduleStatus, as_utc
from .model import MINUTE, BucketModel
from .records import ScheduleRecord
from .snapshot import (
    QueueStats,
    QueueWindow,
    ResultMinute,
    ScheduleRow,
    StuckTask,
    WorkerRow,
    to_datetime,
)
from .waiting import DELAYED, EXPIRED, PENDING

TREND_LENGTH = 30
FUNCS_SLICE = 5_000
"""Running tasks' functions looked up between two yields to the event loop."""
RESULT_MINUTES = 30
FAILURE_WINDOW_S = 300.0
THROUGHPUT_EVERY_S = 10.0
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


class SnapshotBuilder:
    """Keeps what spans polls (depth trends, the throughput cache) and builds the parts."""

    def __init__(self) -> None:
        self.trends: dict[str, tuple[int, ...]] = {}
        self._throughput: dict[str, tuple[QueueWindow, ...]] = {}
        self._throughput_at = -math.inf
        self._sorted_runs: dict[str, tuple[frozenset[str], tuple[str, ...]]] = {}
        """Per worker: the ids it held at the last build, and them sorted."""

    def throughput(self, model: BucketModel, now: float) -> dict[str, tuple[QueueWindow, ...]]:
        """Per-queue windows, recomputed at most every ``THROUGHPUT_EVERY_S``."""
        if 0 <= now - self._throughput_at < THROUGHPUT_EVERY_S:
            return self._throughput
        self._throughput = model.throughput.windows(now, model.oldest_outcome())
        self._throughput_at = now
        return self._throughput

    async def build(self, model: BucketModel, now_dt: datetime, thresholds: Thresholds) -> Parts:
        """The snapshot's parts (none of it walks every task)."""
        now = now_dt.timestamp()
        await model.settle_in_slices()
        # Running and waiting tasks: only those whose class the clock changed since the last
        # build are touched.
        running_set = model.running
        running_set.advance(now)
        running, claimed, held = running_set.by_queue, running_set.claimed, running_set.held
        # Built from checked values every poll (overdue_s moves with the clock): constructed,
        # not validated.
        stuck = [
            StuckTask.model_construct(
                id=t.id,
                queue_name=t.queue,
                func=t.func,
                worker_id=t.worker_id,
                lease_expires_at=to_datetime(t.lease_expires_at),
                overdue_s=now - t.lease_expires_at,
            )
            for t in running_set.stuck.values()
            if t.lease_expires_at is not None
        ]
        waiting = model.waiting
        waiting.advance(now)
        stuck.sort(key=lambda s: (-s.overdue_s, s.id))

        throughput = self.throughput(model, now)
        await asyncio.sleep(0)  # the windows' percentiles walk histogram bins: ~20 ms at 100,000
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
        sorted_runs: dict[str, tuple[frozenset[str], tuple[str, ...]]] = {}
        get = running_set.get
        for w in model.workers.values():
            # What it runs, from the state records (as Queues' running counts it): a heartbeat
            # lists what ran when it was written, up to a heartbeat interval ago.
            ids: AbstractSet[str] = held.get(w.id, frozenset())
            sorted_runs[w.id] = held_sorted(ids, self._sorted_runs.get(w.id))
            runs = sorted_runs[w.id][1]
            # Looked up every build: a task's function can change while it runs (its
            # definition arriving after its state record). In slices: a worker holding tens
            # of thousands (stale leases at a million tasks) held the loop ~100 ms.
            funcs: list[str] = []
            for start in range(0, len(runs), FUNCS_SLICE):
                chunk = runs[start : start + FUNCS_SLICE]
                funcs += [t.func if (t := get(tid)) is not None else "" for tid in chunk]
                await asyncio.sleep(0)
            busy = min(len(runs), w.concurrency) if w.concurrency > 0 else len(runs)
            age = now - w.last_seen if w.last_seen is not None else None
            alive = (
                w.state == "running"
                and age is not None
                and age <= thresholds.worker_timeout.total_seconds()
            )
            # Built from checked values every poll (age moves with the clock): constructed,
            # not validated (a tuple of every id a worker holds, validated one by one).
            workers.append(
                WorkerRow.model_construct(
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
                    finishing=len(runs) - busy,
                    utilisation=round(busy / w.concurrency, 3) if w.concurrency > 0 else None,
                    running_funcs=tuple(funcs),
                    dead=w.state == "running" and not alive,
                )
            )
            await asyncio.sleep(0)  # tens of thousands of ids per worker at a million tasks
        self._sorted_runs = sorted_runs
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


def held_sorted(
    ids: AbstractSet[str], last: tuple[frozenset[str], tuple[str, ...]] | None
) -> tuple[frozenset[str], tuple[str, ...]]:
    """``ids`` (a copy) and them sorted; ``last`` again while they are the same ids (a
    C-level comparison, where a sort of a worker's share at a million tasks, ~45,000 ids,
    takes ~30 ms)."""
    if last is not None and last[0] == ids:
        return last
    return frozenset(ids), tuple(sorted(ids))


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
