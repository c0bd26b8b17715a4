"""Snapshot: one immutable, self-contained picture of a bucket's four stores.

The monitor builds it from listings (index metadata) and the few bodies it has to read; the
console, the ``snapshot`` command and notebooks only read it. Plain Python: no Textual here.

Large collections (``task_rows``) are tuples of msgspec structs rather than pydantic
models: a snapshot of 100,000 tasks must stay small in memory and cheap to build. They are
left out of ``to_json_dict()`` unless asked for.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
from pydantic import BaseModel, ConfigDict, Field

from ..models import ResultStatus, Task, TaskResult, TaskStatus


class _Frozen(BaseModel):
    # defer_build: validators built by the first poll, not at import: the console's first
    # frame imports these models (its views name them) but validates none.
    model_config = ConfigDict(frozen=True, ser_json_timedelta="float", defer_build=True)


class QueueWindow(_Frozen):
    """A queue's throughput and latency over one window (from result records, and from
    events where the records are gone). Wait = started - created; run = the function's own
    time (``execution_time`` of the state record, as its worker measured it), not
    completed - started, which also holds the outcome's wait for GCS's per-name second."""

    window: str  # "15m" | "1h" | "6h"
    window_s: float
    completed: int = 0
    failed: int = 0
    per_minute: float = 0.0
    wait_p50_s: float | None = None
    wait_p95_s: float | None = None
    run_p50_s: float | None = None
    run_p95_s: float | None = None
    # How much of the window the bucket (and the monitor's memory) still holds data for.
    covered_s: float = 0.0


class QueueStats(_Frozen):
    """Depth of one queue. ``pending`` are ready to run now, ``delayed`` wait for ``run_at``."""

    name: str
    pending: int = 0
    delayed: int = 0
    running: int = 0
    oldest_pending_age_s: float | None = None
    # Depth (pending + delayed) at each of the last polls, oldest first: the trend line.
    depth_trend: tuple[int, ...] = ()
    # Entries past their expires_at, still in the queue until a cleanup removes them.
    expired: int = 0
    # Entries of running tasks: a claimed task's entry stays in its queue until its outcome
    # (pending + delayed + expired + claimed = the entries listed under queues/{name}/).
    claimed: int = 0
    # ``paused/{queue}.json`` exists: workers do not claim from this queue.
    paused: bool = False
    paused_by: str | None = None
    paused_at: datetime | None = None
    throughput: tuple[QueueWindow, ...] = ()


class ResultMinute(_Frozen):
    """Results completed in one UTC minute, by outcome: one bar of the outcome chart.

    Every outcome the monitor knows of, also of tasks deleted since (until ``OUTCOME_KEEP_S``).
    ``known`` is False for a minute before ``Snapshot.outcomes_known_since``: some of its
    outcomes may have been deleted before the monitor started, so it holds no counts."""

    minute: datetime
    success: int = 0
    error: int = 0
    cancelled: int = 0
    expired: int = 0
    known: bool = True


class EventRow(_Frozen):
    id: str
    timestamp: datetime
    event_type: str
    task_id: str | None = None
    queue_name: str | None = None
    schedule_id: str | None = None
    worker_id: str | None = None
    actor: str | None = None
    message: str | None = None
    error_type: str | None = None
    error_message: str | None = None


class ScheduleRow(_Frozen):
    id: str
    func: str
    schedule_type: str
    status: str
    queue_name: str = "default"
    cron_expression: str | None = None
    interval_s: float | None = None
    next_run: datetime | None = None
    last_run: datetime | None = None
    run_count: int = 0
    max_runs: int | None = None
    # Active, and its next run is more than a grace period in the past: nobody fires it.
    overdue: bool = False
    generation: int | None = None
    # Who paused it and when (None while active): the console shows it beside the status.
    paused_by: str | None = None
    paused_at: datetime | None = None


class StuckTask(_Frozen):
    """A running task whose lease expired: its worker died or hangs."""

    id: str
    queue_name: str
    func: str
    worker_id: str | None
    lease_expires_at: datetime | None
    overdue_s: float


class WorkerRow(_Frozen):
    id: str
    state: str
    alive: bool
    last_seen: datetime | None
    age_s: float | None
    host: str = ""
    pid: int = 0
    queues: tuple[str, ...] = ()
    # Tasks whose state record names this worker as lease holder (the population of Queues'
    # running), not the heartbeat's list, which is up to a heartbeat interval old.
    running: tuple[str, ...] = ()
    processed: int = 0  # from the heartbeat: outcomes this worker process landed
    failed: int = 0
    concurrency: int = 0
    # Of ``running``, at least this many have ended and wait for their outcome to be written:
    # a function's slot is freed when it returns, its outcome lands up to a second later (GCS's
    # per-name second), and a worker never runs more functions than its slots.
    finishing: int = 0
    utilisation: float | None = None  # functions running / concurrency (at most 1)
    running_funcs: tuple[str, ...] = ()  # function of each task in ``running``, same order
    dead: bool = False  # says it runs, but its heartbeat is stale

    @property
    def busy(self) -> int:
        """Functions running: its running tasks but those ``finishing``."""
        return len(self.running) - self.finishing

    def load_text(self) -> str:
        """``2/4``: functions running of its slots; ``+1``: outcomes still being written."""
        text = f"{self.busy}/{self.concurrency}" if self.concurrency else str(self.busy)
        return f"{text} +{self.finishing}" if self.finishing else text


class UnreadableRow(_Frozen):
    key: str
    reason: str


class RequestFigures(_Frozen):
    """What monitoring costs: GCS requests made by this monitor, and their price."""

    total: int = 0
    by_kind: dict[str, int] = Field(default_factory=dict)
    errors: int = 0
    retries: int = 0
    last_poll_requests: int = 0
    last_poll_ms: float = 0.0
    mean_latency_ms: float = 0.0
    # None until there is a window to measure a rate over: 60 s of polling, or 3 polls that
    # span at least 30 s (see ``monitor/requests.py``). Never extrapolated from one poll.
    requests_per_minute: float | None = None
    # Class A (list, write) at $0.05 and Class B (get) at $0.004 per 10,000 requests.
    cost_per_hour_usd: float | None = None
    window_s: float = 0.0
    # The monitor is paused: it sends nothing, so there is no live cost.
    paused: bool = False
    # Latency by request kind ("list", "get", "write", "delete", ...) over the window, in ms.
    latency_p50_ms: dict[str, float] = Field(default_factory=dict)
    latency_p95_ms: dict[str, float] = Field(default_factory=dict)
    # Failed requests by status: "412", "429", "5xx", "4xx" (other), "network".
    errors_by_status: dict[str, int] = Field(default_factory=dict)
    # Bodies the monitor needed: served from its cache, or read from the bucket.
    cache_hits: int = 0
    cache_misses: int = 0


class PrefixUsage(_Frozen):
    """What one prefix of the layout holds (``tasks/``, ``queues/``, ``results/``, ...), from
    the listings the monitor already made: no extra request."""

    prefix: str
    objects: int = 0
    bytes: int = 0


class TaskRow(msgspec.Struct, frozen=True, gc=False):
    """One task as the tasks table shows it (from the listing's index metadata): status,
    worker, attempt and retries from its state record as ``get_task`` derives them (the
    worker: the holder while it runs, who ran it last once final, none while it waits).

    A bucket may hold a million tasks, each with its row: times are kept as POSIX seconds
    (``*_ts``; a ``datetime`` is 48 bytes and ~1.5 µs to make, and most rows are never
    shown) and given as UTC datetimes by the ``*_at`` properties; the collector never tracks
    a row (it holds only strings, numbers and None)."""

    id: str
    queue_name: str
    func: str
    status: str
    priority: int
    created_ts: float | None
    run_ts: float | None
    retry_count: int
    worker_id: str | None
    error_type: str | None
    started_ts: float | None = None
    completed_ts: float | None = None
    attempt: int = 0

    @property
    def created_at(self) -> datetime | None:
        return to_datetime(self.created_ts)

    @property
    def run_at(self) -> datetime | None:
        return to_datetime(self.run_ts)

    @property
    def started_at(self) -> datetime | None:
        return to_datetime(self.started_ts)

    @property
    def completed_at(self) -> datetime | None:
        return to_datetime(self.completed_ts)

    def as_dict(self) -> dict[str, Any]:
        """The row's fields by name, times as UTC datetimes under their ``*_at`` names."""
        return {TIME_FIELDS.get(f, f): getattr(self, TIME_FIELDS.get(f, f)) for f in ROW_FIELDS}


ROW_FIELDS: tuple[str, ...] = TaskRow.__struct_fields__
TIME_FIELDS = {"created_ts": "created_at", "run_ts": "run_at", "started_ts": "started_at",
               "completed_ts": "completed_at"}  # fmt: skip
"""A row's time fields (POSIX seconds) and the properties giving them as datetimes."""


def to_datetime(ts: float | None) -> datetime | None:
    """POSIX seconds as a UTC datetime (None stays None)."""
    return datetime.fromtimestamp(ts, UTC) if ts is not None else None


class Snapshot(_Frozen):
    """Everything the console shows, as of ``taken_at``."""

    # Task rows are msgspec structs (checked by type when a snapshot is validated).
    model_config = ConfigDict(arbitrary_types_allowed=True)

    bucket: str
    prefix: str
    taken_at: datetime
    stale: bool = False
    # Seconds since the data was fetched (grows while polls fail), and the last poll's error.
    age_s: float = 0.0
    error: str | None = None
    poll_interval_s: float = 2.0
    queues: tuple[QueueStats, ...] = ()
    # Populations (README, "What the numbers count"):
    # - ``tasks``: every task in the bucket (a definition in tasks/), by the status derived from
    #   its state record (no record: pending), as ``get_task`` derives it; ``task_rows`` hold
    #   the same tasks.
    # - ``results`` and ``failures_by_type``: the state records of those same tasks, by result
    #   status (``pending`` while waiting or running) and, for errors, by error type: the
    #   groups add up to ``results["error"]`` and to the failed task rows.
    # - ``results_without_task``: state records whose task is gone (kept as history), counted
    #   nowhere else.
    # - ``window_outcomes``, ``failure_rate``, ``results_per_minute`` and queues' throughput:
    #   outcomes by the minute they completed, including those of tasks deleted since (the
    #   monitor remembers them), from ``outcomes_known_since`` on.
    tasks: dict[str, int] = Field(default_factory=lambda: {s.value: 0 for s in TaskStatus})
    results: dict[str, int] = Field(default_factory=lambda: {s.value: 0 for s in ResultStatus})
    results_without_task: dict[str, int] = Field(default_factory=dict)
    results_per_minute: tuple[ResultMinute, ...] = ()
    failures_by_type: dict[str, int] = Field(default_factory=dict)
    # errors / (success + errors) of the outcomes in ``window_outcomes``.
    failure_rate: float = 0.0
    # Outcomes completed over the last ``outcome_window_s``, by kind: what ``failure_rate``
    # is computed from (the counts to show beside it).
    window_outcomes: dict[str, int] = Field(default_factory=dict)
    # The window ``failure_rate`` covers; the bars cover ``len(results_per_minute)`` minutes.
    outcome_window_s: float = 300.0
    # From when on every outcome is known (None: no listing yet). Minutes before it are not
    # drawn nor counted: retention may have deleted their successes and not their failures.
    outcomes_known_since: datetime | None = None
    # "results": outcomes from result records only; "results+events": some of them from
    # events or from records the monitor saw before they were deleted.
    outcome_source: str = "results"
    events: tuple[EventRow, ...] = ()  # newest first, bounded
    schedules: tuple[ScheduleRow, ...] = ()
    stuck: tuple[StuckTask, ...] = ()
    workers: tuple[WorkerRow, ...] = ()
    unreadable: tuple[UnreadableRow, ...] = ()
    requests: RequestFigures = Field(default_factory=RequestFigures)
    storage: tuple[PrefixUsage, ...] = ()
    task_rows: tuple[TaskRow, ...] = Field(default=(), exclude=True)
    # "pubsub" while the change feed is live, "listing" otherwise.
    changes: str = "listing"
    # Objects the last complete reconcile pass corrected (None before one completed).
    feed_drift: int | None = None
    # Why the feed is not live, once it fell back to listing.
    feed_error: str | None = None
    # Published before the first poll succeeded: "connecting to <bucket> (attempt n)".
    connecting: bool = False
    attempt: int = 0

    def __rich__(self) -> Any:
        """Readable tables for rich (terminals, notebooks); see ``monitor/tables.py``."""
        from .tables import render_snapshot

        return render_snapshot(self)

    def _repr_html_(self) -> str:
        """Jupyter's display: the rich tables as HTML."""
        from .tables import snapshot_html

        return snapshot_html(self)

    def to_frames(self) -> Any:
        """The snapshot as pandas frames by part; see ``monitor/frames.py`` (imported when
        asked: it builds on this module's rows, and it is where pandas stays optional)."""
        from .frames import snapshot_frames

        return snapshot_frames(self)

    def to_json_dict(self, *, include_tasks: bool = False) -> dict[str, Any]:
        """The JSON form printed by ``omniq-console snapshot``."""
        data = self.model_dump(mode="json")
        if include_tasks:
            data["task_rows"] = [
                {
                    k: (v.isoformat() if isinstance(v, datetime) else v)
                    for k, v in r.as_dict().items()
                }
                for r in self.task_rows
            ]
        return data


class TaskDetail(_Frozen):
    """One task opened by the operator: its definition overlaid with its state record (as
    ``get_task`` returns it), the record itself and its event timeline.

    ``status``, ``worker_id``, ``attempt`` and ``retry_count`` are the state record's (no
    record: pending, never claimed), never what the definition body said at enqueue.
    """

    task_id: str
    task: Task | None = None
    result: TaskResult | None = None
    events: tuple[EventRow, ...] = ()  # oldest first
    unreadable: tuple[UnreadableRow, ...] = ()
    status: str | None = None
    worker_id: str | None = None  # the lease holder while running, else who ran it last
    attempt: int = 0
    retry_count: int = 0
    max_retries: int | None = None
