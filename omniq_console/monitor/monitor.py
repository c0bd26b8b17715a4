"""Monitor: polls a bucket and publishes immutable ``Snapshot`` objects.

A poll lists ``tasks/``, ``queues/``, ``results/``, ``schedules/`` and ``workers/`` concurrently
and tails ``events/`` (DESIGN decisions 2, 3, 6, 7). Counts come from the index kept in each
object's custom metadata; a body is read only when an object has no usable index (or is a
schedule) and its generation changed since the last poll, and for events new since the last
poll (the newest ``recent_events`` of them). A quiet bucket therefore costs list requests only.

Decoding and aggregation run in worker threads, so a snapshot of 100,000 tasks does not
freeze the event loop the console draws on. Polls never overlap (a lock). A failed or timed-out
poll keeps the last good snapshot and publishes a stale copy with its age and the error; the
run loop backs off and recovers by itself.

What a poll costs, with T tasks, E queue entries (pending and delayed tasks), R results,
S schedules and W workers: ceil(T/1000) + ceil(E/1000) + ceil(R/1000) + ceil(S/1000) +
ceil(W/1000) list requests (a prefix over 10,000 objects is listed as key ranges: at most one
more request per 10,000 objects), plus ceil(N/1000) for the event tail, N being the events
written since about 10 s before the newest one seen (one request when nothing happened), plus
one GET per schedule whose generation changed, per new event (at most ``recent_events``), and
per object without index metadata whose generation changed. A quiet bucket: 6 list requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import math
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from ..backend.errors import (
    AuthenticationError,
    BackendUnavailableError,
    BucketNotFoundError,
    ChecksumMismatchError,
    CorruptObjectError,
    ObjectNotFoundError,
    StorageError,
)
from ..backend.index import event_index
from ..backend.layout import Layout, check_id
from ..backend.listing import parse_model
from ..backend.objectstore import (
    REQUEST_KINDS,
    ObjectData,
    ObjectInfo,
    ObjectStore,
    RequestStats,
)
from ..models import OmniQModel, Task, TaskResult, utcnow
from .aggregate import (
    BODY_PARSERS,
    DECODERS,
    Aggregate,
    Decoded,
    Memo,
    RowCache,
    Thresholds,
    aggregate,
    decode_listing,
    entry_body_parser,
    entry_decoder,
    event_id_ms,
    event_key_at,
    event_row,
    merge_decoded,
    parse_event_body,
)
from .snapshot import EventRow, RequestFigures, Snapshot, TaskDetail, TaskRow, UnreadableRow

log = logging.getLogger(__name__)

T = TypeVar("T")
M = TypeVar("M", bound=OmniQModel)

KINDS = ("tasks", "queues", "results", "schedules", "workers")
"""The prefixes listed whole on every poll (events are tailed)."""

CLASS_A_USD = 0.05 / 10_000
"""GCS Class A operations (list, write), standard storage, per request."""
CLASS_B_USD = 0.004 / 10_000
"""GCS Class B operations (get), standard storage, per request."""

EVENT_LOOKBACK = timedelta(seconds=10)
"""Writers' clocks differ and writes take time: keys do not arrive strictly in key order, so
each tail starts this far before the newest key seen (ids are deduplicated)."""
FIRST_EVENT_WINDOWS = (timedelta(minutes=1), timedelta(minutes=10), timedelta(hours=1))
"""The first poll lists events in widening windows until it has ``recent_events`` of them,
instead of listing the whole history."""
DETAIL_EVENTS = 500
"""Most events a task detail reads (newest kept)."""
BODY_CONCURRENCY = 16
BODY_BATCH = 256
LIST_CONCURRENCY = 4
"""List requests in flight per poll. ObjectStore parses each 1,000-object page (~5-10 ms of
CPU) on the event loop as it lands; more requests in flight means more pages landing in one
loop iteration, i.e. a longer freeze of the console."""
FREE_SLICE = 1_000
SPLIT_EVERY = 10_000
"""A prefix with more objects than this is listed next time as key ranges fetched
concurrently (boundaries from the last listing): real GCS pages 1,000 objects at a time, one
page after another, so 100,000 tasks would be 100 sequential requests otherwise."""
RATE_WINDOW_S = 600.0
_SECRET = re.compile(r"(?i)(bearer\s+|access_token=|token=|key=)[^\s&,;]+")


class MonitoredBackend(Protocol):
    """What the monitor needs of a backend (``GCSBackend`` has it): an open ObjectStore."""

    @property
    def store(self) -> ObjectStore: ...

    @property
    def layout(self) -> Layout: ...

    @property
    def bucket_name(self) -> str: ...

    @property
    def prefix(self) -> str: ...


SLOW_POLL_S = 0.5
"""A poll slower than this stretches the interval (see ``Monitor.effective_interval``)."""
POLL_SHARE = 3.0
"""On a big bucket, the interval is at least this many times the last poll's duration."""

Subscriber = Callable[[Snapshot], Awaitable[Any] | Any]


class Monitor:
    """Polls one backend's bucket; never two polls at once.

    ``interval``: seconds between timed polls in ``run()``. ``poll_timeout``: a poll's own time
    limit (the store retries, and a poller must say "stale" within seconds). ``recent_events``:
    how many events a snapshot keeps (newest first). ``clock``: returns the current UTC time
    (tests pass a fixed one). ``task_rows``: build ``Snapshot.task_rows`` (one row per task).
    """

    def __init__(
        self,
        backend: MonitoredBackend,
        *,
        interval: float = 2.0,
        poll_timeout: float = 10.0,
        recent_events: int = 200,
        clock: Callable[[], datetime] | None = None,
        task_rows: bool = True,
        max_backoff: float = 30.0,
        overdue_grace: float = 60.0,
        worker_timeout: float = 30.0,
    ) -> None:
        _check_seconds(interval, "interval")
        _check_seconds(poll_timeout, "poll_timeout")
        _check_seconds(max_backoff, "max_backoff")
        if recent_events < 1:
            raise ValueError("recent_events must be at least 1")
        self._backend = backend
        self._interval = float(interval)
        self.poll_timeout = float(poll_timeout)
        self.recent_events = int(recent_events)
        self._clock = clock or utcnow
        self._task_rows = task_rows
        self._max_backoff = float(max_backoff)
        self._overdue_grace = float(overdue_grace)
        self._worker_timeout = float(worker_timeout)

        self.latest: Snapshot | None = None
        """The newest snapshot published (stale when the last poll failed), None before any."""
        self._last_good: Snapshot | None = None
        self._lock = asyncio.Lock()
        self._subscribers: list[Subscriber] = []
        self._failures = 0

        # What earlier polls learned; see aggregate.py for why memos are replaced, not mutated.
        self._memos: dict[str, Memo] = {kind: {} for kind in KINDS}
        self._splits: dict[str, tuple[str, ...]] = {kind: () for kind in KINDS}
        self._trends: dict[str, tuple[int, ...]] = {}
        self._rows: tuple[TaskRow, ...] = ()
        self._rows_source: tuple[Memo, Memo] | None = None
        self._row_cache: RowCache | None = None
        self._event_start_ms: int | None = None
        self._event_seen: set[str] = set()
        self._events: dict[str, EventRow] = {}
        self._event_unreadable: dict[str, UnreadableRow] = {}

        # Requests: the monitor's own, counted while a poll or a detail is in flight.
        self._totals = RequestStats()
        self._active = 0
        self._meter_start: RequestStats | None = None
        self._rate_samples: deque[tuple[float, int, int, int]] = deque(maxlen=1000)
        self._last_poll_requests = 0
        self._last_poll_ms = 0.0

        # The run loop.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._requested = False
        self._paused = False

    # -- configuration ----------------------------------------------------------------------

    @property
    def backend(self) -> MonitoredBackend:
        return self._backend

    @property
    def interval(self) -> float:
        """Seconds between timed polls (before any failure backoff)."""
        return self._interval

    def set_interval(self, seconds: float) -> None:
        """Change the poll interval; a running loop reschedules its next poll at once."""
        _check_seconds(seconds, "interval")
        self._interval = float(seconds)
        self._signal()

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        """Stop timed polls (``request_poll()`` still polls once)."""
        self._paused = True
        self._signal()

    def resume(self) -> None:
        """Restart timed polls; the next one is due one interval after the last."""
        self._paused = False
        self._signal()

    @property
    def failures(self) -> int:
        """Polls failed in a row (0 after a good one)."""
        return self._failures

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(snapshot)`` with every snapshot published; returns an unsubscribe.

        A coroutine function is awaited. A callback that raises is logged and kept.
        """
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(callback)

        return unsubscribe

    def request_poll(self) -> None:
        """Ask the run loop for a poll now (say, after an action). Requests made while a poll
        runs are coalesced into one poll right after it. Safe from any thread."""
        self._requested = True
        self._signal()

    def _signal(self) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake.set()
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._wake.set)

    # -- the run loop -----------------------------------------------------------------------

    @property
    def effective_interval(self) -> float:
        """The interval between polls, stretched on a big bucket.

        A poll that took more than ``SLOW_POLL_S`` (tens of thousands of objects) spaces the
        next one ``POLL_SHARE`` times its own duration, so polling never takes more than a
        third of the console's time: a warm 100,000-task poll is ~2 s of CPU, and every 2 s
        would leave the UI nothing (benchmarks/ui.py). Quick polls keep the chosen interval.
        """
        last = self._last_poll_ms / 1000
        if last < SLOW_POLL_S:
            return self._interval
        return max(self._interval, POLL_SHARE * last)

    def next_delay(self) -> float:
        """Seconds until the next timed poll: the effective interval, doubled per failure in a
        row up to ``max_backoff`` (never below the interval)."""
        if not self._failures:
            return self.effective_interval
        ceiling = max(self._max_backoff, self._interval)
        return min(ceiling, self._interval * 2.0 ** min(self._failures, 30))

    async def run(self) -> None:
        """Poll until cancelled: at once, then every interval (backing off while polls fail),
        and whenever ``request_poll()`` is called."""
        if self._loop is not None:
            raise RuntimeError("this monitor is already running")
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()  # bound to this loop; a monitor may run again elsewhere
        last_start: float | None = None
        last_end = 0.0
        try:
            while True:
                now = time.monotonic()
                delay = self.next_delay()
                # A slow poll still leaves half an interval of quiet before the next one.
                due = 0.0 if last_start is None else max(last_start + delay, last_end + delay / 2)
                if self._requested or (not self._paused and now >= due):
                    self._requested = False
                    last_start = time.monotonic()
                    await self.poll()
                    last_end = time.monotonic()
                    continue
                self._wake.clear()
                if self._requested:
                    continue
                timeout = None if self._paused else due - now
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
        finally:
            self._loop = None

    # -- polling ----------------------------------------------------------------------------

    async def poll(self, *, raise_errors: bool = False) -> Snapshot:
        """Take one snapshot now (after any poll in flight) and publish it.

        On failure the last good snapshot is returned as a stale copy (``stale``, ``age_s``,
        ``error``), unless ``raise_errors``, which raises instead (a one-shot snapshot).
        """
        async with self._lock:
            store = self._backend.store
            before = store.stats.copy()
            started = time.perf_counter()
            error: BaseException | None = None
            with self._metered():
                try:
                    async with asyncio.timeout(self.poll_timeout):
                        snapshot = await self._poll_once()
                except Exception as exc:  # noqa: BLE001 - any failure makes the snapshot stale
                    error = exc
            delta = store.stats.since(before)
            self._last_poll_requests = delta.total
            self._last_poll_ms = (time.perf_counter() - started) * 1000
            self._rate_samples.append((time.monotonic(), *self._cumulative()))
            if error is not None:
                self._failures += 1
                if raise_errors:
                    if isinstance(error, TimeoutError):
                        raise TimeoutError(
                            f"the snapshot did not finish within {self.poll_timeout:g} s"
                        ) from error
                    raise error
                snapshot = self._stale(error)
            else:
                self._failures = 0
                snapshot = snapshot.model_copy(
                    update={
                        "requests": self.request_figures(),
                        "poll_interval_s": self.effective_interval,
                    }
                )
                self._last_good = snapshot
            self.latest = snapshot
        await self._publish(snapshot)
        return snapshot

    def _stale(self, error: BaseException) -> Snapshot:
        now = self._clock()
        base = self._last_good
        if base is None:
            base = Snapshot(
                bucket=self._backend.bucket_name,
                prefix=self._backend.layout.prefix,
                taken_at=now,
                poll_interval_s=self._interval,
            )
        return base.model_copy(
            update={
                "stale": True,
                "age_s": max(0.0, (now - base.taken_at).total_seconds()),
                "error": describe_error(error, self.poll_timeout),
                "requests": self.request_figures(),
                "poll_interval_s": self._interval,
            }
        )

    async def _publish(self, snapshot: Snapshot) -> None:
        for callback in list(self._subscribers):
            try:
                result = callback(snapshot)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("a snapshot subscriber failed")

    async def _poll_once(self) -> Snapshot:
        store = self._backend.store
        layout = self._backend.layout
        now = self._clock()
        folders = {
            "tasks": layout.tasks,
            "queues": layout.queues,
            "results": layout.results,
            "schedules": layout.schedules,
            "workers": layout.workers,
        }
        previous = dict(self._memos)
        # Few list requests in flight: each page is parsed on this loop as it lands, and many
        # landing together would block it (see LIST_CONCURRENCY).
        limit = asyncio.Semaphore(LIST_CONCURRENCY)
        *parts, (event_infos, listed_from_ms) = await _gather(
            *(
                self._list_decoded(store, kind, folders[kind], previous[kind], limit)
                for kind in KINDS
            ),
            self._list_events(store, layout, now, limit),
        )
        decoded: dict[str, Decoded] = dict(zip(KINDS, parts, strict=True))
        for kind in KINDS:
            # The new memo holds only facts (key@generation -> meaning): committing it now
            # keeps the bodies read below even if this poll runs out of time.
            self._memos[kind] = decoded[kind].memo
        for kind in KINDS:
            await self._read_into_memo(store, kind, decoded[kind])
        self._splits = {kind: _split_points(self._memos[kind]) for kind in KINDS}

        new_events, event_unreadable, seen_event_keys = await self._read_new_events(
            store, event_infos
        )

        memos = self._memos
        thresholds = Thresholds(
            overdue_grace=timedelta(seconds=max(2 * self._interval, self._overdue_grace)),
            worker_timeout=timedelta(seconds=self._worker_timeout),
        )
        merged_unreadable = {**self._event_unreadable, **event_unreadable}
        event_unreadable_kept = dict(sorted(merged_unreadable.items())[-self.recent_events :])
        # Rows hold nothing time-dependent: reuse them while tasks and results stay the same
        # (and only if they were built from exactly the memos this poll started from).
        rows_source = (previous["tasks"], previous["results"])
        reuse_rows = (
            not decoded["tasks"].changed
            and not decoded["results"].changed
            and self._rows_source is not None
            and all(a is b for a, b in zip(rows_source, self._rows_source, strict=True))
        )
        agg: Aggregate = await asyncio.to_thread(
            aggregate,
            now=now,
            tasks=memos["tasks"],
            entries=memos["queues"],
            results=memos["results"],
            schedules=memos["schedules"],
            workers=memos["workers"],
            trends=self._trends,
            thresholds=thresholds,
            task_rows=self._task_rows,
            previous_rows=self._rows if reuse_rows else None,
            previous_cache=self._row_cache,
            extra_unreadable=tuple(event_unreadable_kept.values()),
        )

        # Everything succeeded: commit the state that must not half-change.
        events = {**self._events, **{row.id: row for row in new_events}}
        newest = sorted(events.values(), key=lambda r: (r.timestamp, r.id), reverse=True)
        newest = newest[: self.recent_events]
        self._events = {row.id: row for row in newest}
        self._event_unreadable = event_unreadable_kept
        self._commit_event_tail(layout, seen_event_keys, listed_from_ms, now)
        self._trends = agg.trends
        self._rows = agg.task_rows
        self._row_cache = agg.row_cache
        self._rows_source = (memos["tasks"], memos["results"])

        return Snapshot.model_construct(
            bucket=self._backend.bucket_name,
            prefix=layout.prefix,
            taken_at=now,
            stale=False,
            age_s=0.0,
            error=None,
            poll_interval_s=self._interval,
            queues=agg.queues,
            tasks=agg.tasks,
            results=agg.results,
            results_per_minute=agg.results_per_minute,
            failures_by_type=agg.failures_by_type,
            failure_rate=agg.failure_rate,
            events=tuple(newest),
            schedules=agg.schedules,
            stuck=agg.stuck,
            workers=agg.workers,
            unreadable=agg.unreadable,
            requests=RequestFigures(),
            task_rows=agg.task_rows,
        )

    # -- listings and bodies ----------------------------------------------------------------

    async def _list_decoded(
        self,
        store: ObjectStore,
        kind: str,
        prefix: str,
        previous: Memo,
        limit: asyncio.Semaphore,
    ) -> Decoded:
        """List one prefix (as concurrent key ranges once it is large) and decode each range
        in a thread as it arrives, so no more than a range's ObjectInfos live at once."""
        decode = (
            entry_decoder(self._backend.layout) if kind == "queues" else _in_layout(prefix, DECODERS[kind])
        )
        bounds = [None, *self._splits[kind], None]

        async def one(lo: str | None, hi: str | None) -> Decoded:
            async with limit:
                box = [await store.list(prefix, start_offset=lo, end_offset=hi)]
            return await asyncio.to_thread(_decode_and_free, box, decode, previous)

        if len(bounds) == 2:
            return await one(None, None)
        box = [await _gather(*(one(lo, hi) for lo, hi in itertools.pairwise(bounds)))]
        return await asyncio.to_thread(_merge_and_free, box, len(previous))

    async def _read_into_memo(self, store: ObjectStore, kind: str, decoded: Decoded) -> None:
        """Read the bodies a listing could not answer for, in batches, into the kind's memo."""
        if not decoded.need_body:
            return
        parser = entry_body_parser(self._backend.layout) if kind == "queues" else BODY_PARSERS[kind]
        memo = decoded.memo
        for start in range(0, len(decoded.need_body), BODY_BATCH):
            batch = decoded.need_body[start : start + BODY_BATCH]
            bodies = await _read_many(store, [info.key for info in batch])
            parsed = await asyncio.to_thread(_parse_bodies, parser, bodies)
            for info in batch:
                got = parsed.get(info.key)
                if got is not None:
                    memo[info.key] = got

    async def _list_events(
        self, store: ObjectStore, layout: Layout, now: datetime, limit: asyncio.Semaphore
    ) -> tuple[list[ObjectInfo], int]:
        """List the event tail; returns the listing and where it started (ms)."""
        prefix = layout.events
        if self._event_start_ms is not None:
            start = event_key_at(prefix, self._event_start_ms)
            async with limit:
                return await store.list(prefix, start_offset=start), self._event_start_ms
        now_ms = _ms(now)
        infos: list[ObjectInfo] = []
        end: str | None = None
        start_ms = now_ms
        for window in FIRST_EVENT_WINDOWS:
            start_ms = now_ms - int(window.total_seconds() * 1000)
            start = event_key_at(prefix, start_ms)
            async with limit:
                part = await store.list(prefix, start_offset=start, end_offset=end)
            infos = part + infos
            if len(infos) >= self.recent_events:
                break
            end = start
        return infos, start_ms

    async def _read_new_events(
        self, store: ObjectStore, infos: list[ObjectInfo]
    ) -> tuple[list[EventRow], dict[str, UnreadableRow], list[str]]:
        """Rows for events not seen before (bodies of the newest ``recent_events`` only)."""
        new = [i for i in infos if i.key not in self._event_seen and not i.key.endswith("/")]
        shown = new[-self.recent_events :]
        bodies = await _read_many(store, [i.key for i in shown])
        rows: list[EventRow] = []
        unreadable: dict[str, UnreadableRow] = {}
        for info in shown:
            index = event_index(info)
            got = bodies.get(info.key)
            body = None
            if isinstance(got, UnreadableRow):
                unreadable[info.key] = got
            elif got is not None:
                parsed = parse_event_body(info.key, got.data)
                if isinstance(parsed, UnreadableRow):
                    unreadable[info.key] = parsed
                else:
                    body = parsed
            row = event_row(info.key, index, body, info.updated)
            if row is not None:
                rows.append(row)
            elif info.key not in unreadable:
                unreadable[info.key] = UnreadableRow(key=info.key, reason="event vanished")
        return rows, unreadable, [i.key for i in new]

    def _commit_event_tail(
        self, layout: Layout, new_keys: Sequence[str], listed_from_ms: int, now: datetime
    ) -> None:
        self._event_seen.update(new_keys)
        newest = max(
            (ms for k in self._event_seen if (ms := event_id_ms(Layout.name_of(k))) is not None),
            default=None,
        )
        start_ms = listed_from_ms
        if newest is not None:
            # A writer whose clock runs ahead must not move the tail past everyone else's.
            newest = min(newest, _ms(now))
            start_ms = max(start_ms, newest - int(EVENT_LOOKBACK.total_seconds() * 1000))
        self._event_start_ms = start_ms
        # Keys before the next start offset are never listed again: forget them.
        floor = event_key_at(layout.events, start_ms)
        self._event_seen = {k for k in self._event_seen if k >= floor}

    # -- request figures --------------------------------------------------------------------

    @contextlib.contextmanager
    def _metered(self) -> Iterator[None]:
        """Count the store's requests while this monitor has work in flight (overlapping
        polls and details are counted once)."""
        store = self._backend.store
        if self._active == 0:
            self._meter_start = store.stats.copy()
        self._active += 1
        try:
            yield
        finally:
            self._active -= 1
            if self._active == 0 and self._meter_start is not None:
                _add_into(self._totals, store.stats.since(self._meter_start))
                self._meter_start = None

    def _current_totals(self) -> RequestStats:
        totals = self._totals.copy()
        if self._meter_start is not None:
            _add_into(totals, self._backend.store.stats.since(self._meter_start))
        return totals

    def _cumulative(self) -> tuple[int, int, int]:
        t = self._current_totals()
        return t.total, t.count["list"] + t.count["write"], t.count["get"] + t.count["bucket"]

    def request_figures(self) -> RequestFigures:
        """Requests this monitor made since it was created, and what they cost per hour."""
        t = self._current_totals()
        seconds = sum(t.seconds.values())
        per_min_total = per_min_a = per_min_b = 0.0
        now = time.monotonic()
        samples = [s for s in self._rate_samples if now - s[0] <= RATE_WINDOW_S]
        if len(samples) >= 2 and samples[-1][0] > samples[0][0]:
            span_min = (samples[-1][0] - samples[0][0]) / 60
            first, last = samples[0], samples[-1]
            per_min_total = (last[1] - first[1]) / span_min
            per_min_a = (last[2] - first[2]) / span_min
            per_min_b = (last[3] - first[3]) / span_min
        elif self._last_poll_requests:
            # One poll so far: extrapolate it over the configured interval.
            a, b = t.count["list"] + t.count["write"], t.count["get"] + t.count["bucket"]
            scale = 60 / max(self._interval, self._last_poll_ms / 1000)
            share = self._last_poll_requests / max(1, t.total)
            per_min_total = self._last_poll_requests * scale
            per_min_a, per_min_b = a * share * scale, b * share * scale
        return RequestFigures(
            total=t.total,
            by_kind={k: t.count[k] for k in REQUEST_KINDS},
            errors=sum(t.errors.values()),
            retries=t.retries,
            last_poll_requests=self._last_poll_requests,
            last_poll_ms=round(self._last_poll_ms, 1),
            mean_latency_ms=round(seconds / t.total * 1000, 2) if t.total else 0.0,
            requests_per_minute=round(per_min_total, 2),
            cost_per_hour_usd=round(60 * (per_min_a * CLASS_A_USD + per_min_b * CLASS_B_USD), 6),
        )

    # -- one task, on demand ----------------------------------------------------------------

    async def task_detail(self, task_id: str) -> TaskDetail:
        """Read one task's body, its result and its events (oldest first), now.

        Events are found by listing ``events/`` from shortly before the task was created, so
        a deleted task with no result shows no events. Raises the store's errors (say
        ``BackendUnavailableError``) or ``TimeoutError`` after ``poll_timeout``.
        """
        check_id(task_id, "task id")
        store = self._backend.store
        layout = self._backend.layout
        with self._metered():
            async with asyncio.timeout(self.poll_timeout):
                return await self._task_detail(store, layout, task_id)

    async def _task_detail(self, store: ObjectStore, layout: Layout, task_id: str) -> TaskDetail:
        unreadable: list[UnreadableRow] = []
        bodies = await _read_many(store, [layout.task(task_id), layout.result(task_id)])
        task = _model_or_report(Task, bodies.get(layout.task(task_id)), unreadable)
        result = _model_or_report(TaskResult, bodies.get(layout.result(task_id)), unreadable)
        anchor = task.created_at if task else result.created_at if result else None
        if anchor is None:
            known = self._memos["tasks"].get(layout.task(task_id))
            # A task's facts tuple: created_at is its 8th field (see aggregate.py).
            anchor = known[1][7] if known and isinstance(known[1], tuple) else None
        events: list[EventRow] = []
        if anchor is not None:
            start = event_key_at(layout.events, _ms(anchor) - _ms_of(EVENT_LOOKBACK))
            infos = await store.list(layout.events, start_offset=start)
            candidates = []
            for info in infos:
                index = event_index(info)
                if index is None or index.task_id == task_id:
                    candidates.append((info, index))
            candidates = candidates[-DETAIL_EVENTS:]
            need = [i.key for i, _ in candidates if Layout.name_of(i.key) not in self._events]
            read = await _read_many(store, need)
            for info, index in candidates:
                cached = self._events.get(Layout.name_of(info.key))
                if cached is not None:
                    if cached.task_id == task_id:
                        events.append(cached)
                    continue
                got = read.get(info.key)
                body = None
                if isinstance(got, UnreadableRow):
                    unreadable.append(got)
                elif got is not None:
                    parsed = parse_event_body(info.key, got.data)
                    if isinstance(parsed, UnreadableRow):
                        unreadable.append(parsed)
                    else:
                        body = parsed
                if index is None and (body is None or body.task_id != task_id):
                    continue
                row = event_row(info.key, index, body, info.updated)
                if row is not None:
                    events.append(row)
        events.sort(key=lambda r: (r.timestamp, r.id))
        return TaskDetail(
            task_id=task_id,
            task=task,
            result=result,
            events=tuple(events),
            unreadable=tuple(unreadable),
        )


async def take_snapshot(
    backend: MonitoredBackend, *, include_tasks: bool = False, timeout: float = 60.0
) -> Snapshot:
    """One snapshot of an open backend, for scripts, notebooks and ``omniq-console snapshot``.

    Raises instead of returning a stale snapshot: ``BucketNotFoundError``,
    ``AuthenticationError``, ``BackendUnavailableError``, or ``TimeoutError`` after
    ``timeout`` seconds. ``include_tasks`` builds ``task_rows`` (one row per task).
    """
    monitor = Monitor(backend, poll_timeout=timeout, task_rows=include_tasks)
    return await monitor.poll(raise_errors=True)


# -- helpers --------------------------------------------------------------------------------


def describe_error(error: BaseException, timeout: float | None = None) -> str:
    """A failed poll's one-line message, with anything that looks like a credential masked."""
    if isinstance(error, TimeoutError) and timeout is not None:
        return f"poll timed out after {timeout:g} s"
    text = str(error).splitlines()[0].strip() if str(error).strip() else ""
    text = _SECRET.sub(r"\1***", text)
    name = type(error).__name__
    return (f"{name}: {text}" if text else name)[:300]


def _check_seconds(value: float, what: str) -> None:
    if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} must be a positive number of seconds, not {value!r}")


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def _ms_of(value: timedelta) -> int:
    return int(value.total_seconds() * 1000)


def _add_into(total: RequestStats, delta: RequestStats) -> None:
    for kind in REQUEST_KINDS:
        total.count[kind] += delta.count[kind]
        total.errors[kind] += delta.errors[kind]
        total.seconds[kind] += delta.seconds[kind]
    total.retries += delta.retries
    total.conflicts += delta.conflicts


def _decode_and_free(
    box: list[list[ObjectInfo]], decode: Callable[[ObjectInfo], Any], previous: Memo
) -> Decoded:
    """Decode a listing in a worker thread, then free it there, a slice at a time.

    The listing is handed over in a box the event loop no longer looks into, so its last
    reference dies here: freeing 100,000 ObjectInfos at once is ~30 ms of C code holding the
    GIL, and wherever it happens in one piece the event loop waits. Slices let it run between.
    """
    infos = box.pop()
    try:
        return decode_listing(infos, decode, previous)
    finally:
        while infos:
            del infos[-FREE_SLICE:]


def _merge_and_free(box: list[list[Decoded]], previous_size: int) -> Decoded:
    """Join decoded key ranges in a worker thread (100,000 dict inserts), freeing the parts."""
    parts = box.pop()
    merged = merge_decoded(parts, previous_size)
    while parts:
        part = parts.pop()
        if part is not merged:
            part.memo.clear()
    return merged


def _split_points(memo: Memo) -> tuple[str, ...]:
    """Every SPLIT_EVERY-th key: the key ranges the next poll lists concurrently."""
    if len(memo) <= SPLIT_EVERY:
        return ()
    return tuple(sorted(itertools.islice(memo, SPLIT_EVERY, None, SPLIT_EVERY)))


async def _gather(*aws: Awaitable[Any]) -> list[Any]:
    """Run concurrently; on the first failure cancel the rest and raise that error itself
    (not an ExceptionGroup: callers and messages deal in one error)."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(_as_coro(aw)) for aw in aws]
    except BaseExceptionGroup as failed:
        raise _first_error(failed) from None
    return [task.result() for task in tasks]


async def _as_coro(aw: Awaitable[T]) -> T:
    return await aw


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_error(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return group.exceptions[0]


_FATAL = (AuthenticationError, BackendUnavailableError, BucketNotFoundError)


async def _read_many(
    store: ObjectStore, keys: Sequence[str]
) -> dict[str, ObjectData | UnreadableRow]:
    """Read bodies concurrently. A missing object is left out; an object GCS refuses to
    serve intact becomes an ``UnreadableRow``; losing the bucket or the network raises."""
    if not keys:
        return {}
    limit = asyncio.Semaphore(BODY_CONCURRENCY)

    async def one(key: str) -> tuple[str, ObjectData | UnreadableRow | None]:
        async with limit:
            try:
                return key, await store.read(key)
            except ObjectNotFoundError:
                return key, None
            except _FATAL:
                raise
            except (ChecksumMismatchError, StorageError) as exc:
                return key, UnreadableRow(key=key, reason=describe_error(exc))

    pairs = await _gather(*(one(k) for k in keys))
    return {key: value for key, value in pairs if value is not None}


def _parse_bodies(
    parser: Callable[[str, bytes], Any], bodies: Mapping[str, ObjectData | UnreadableRow]
) -> dict[str, tuple[int, Any]]:
    out: dict[str, tuple[int, Any]] = {}
    for key, got in bodies.items():
        if isinstance(got, UnreadableRow):
            # A read that failed is not a fact about this generation: generation -1 never
            # matches a listing, so the next poll tries again.
            out[key] = (-1, got)
        else:
            out[key] = (got.generation, parser(key, got.data))
    return out


def _model_or_report(
    model: type[M], got: ObjectData | UnreadableRow | None, unreadable: list[UnreadableRow]
) -> M | None:
    if got is None:
        return None
    if isinstance(got, UnreadableRow):
        unreadable.append(got)
        return None
    try:
        return parse_model(model, got.key, got.data)
    except CorruptObjectError as exc:
        unreadable.append(UnreadableRow(key=got.key, reason=exc.reason))
        return None


__all__ = ["Monitor", "MonitoredBackend", "Subscriber", "describe_error", "take_snapshot"]


def _in_layout(folder: str, decode: Callable[[ObjectInfo], Any]) -> Callable[[ObjectInfo], Any]:
    """Report keys that are not ``{folder}{id}.json`` (a sub-folder, no extension) instead of
    counting them: the stores never hand such objects out, so the console must not count them.
    A structural check only: it runs for every object of a 100,000-object listing."""

    def checked(info: ObjectInfo) -> Any:
        name = info.key[len(folder) :]
        if not name.endswith(".json") or "/" in name or name == ".json":
            return UnreadableRow(
                key=info.key, reason=f"outside the layout (expected {folder}<id>.json)"
            )
        return decode(info)

    return checked
