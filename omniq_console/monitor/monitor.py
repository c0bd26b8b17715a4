"""Monitor: keeps a model of a bucket from its change sources and publishes ``Snapshot``s.

Two modes (``Snapshot.changes``), see ``docs/architecture.md`` ("Layers"):

- ``listing``: every poll lists each prefix of the layout (``sources/listing.py``) and tails
  ``events/``. Only objects whose generation changed are decoded. Cost per poll, with N objects
  in the listed prefixes: about ceil(N/1000) list requests (+1 for the event tail), plus one
  GET per new event object shown (at most ``BODIES_PER_POLL``), per changed schedule and per
  changed object without index metadata.
- ``pubsub`` (``subscription=`` or ``topic=`` given): one full listing at start, then changes
  come from GCS notifications pulled from the subscription (``sources/pubsub.py``; with
  ``topic=`` the monitor's own subscription); each poll applies them by generation, and lists
  one key range of the rolling reconcile (about ``ceil(N/1000 / (reconcile_s/interval))`` list
  requests, at least 1). A feed that fails, that stays silent while the reconcile finds changes
  older than ``feed_grace_s``, or that keeps missing changes (a subscription shared with
  another client), falls back to listing mode, and the snapshot says why (``feed_error``).

The model keeps running aggregates (``model.py``); building a snapshot only evaluates what
depends on the clock over the tasks that are not final (``builder.py``). Listing work yields to
the event loop every couple of thousand objects, so a 100,000-object listing does not hold the
console's loop. Polls never overlap (a lock). A failed or timed-out poll keeps the last good
snapshot and publishes a stale copy; before any poll succeeded it publishes a "connecting"
snapshot per attempt. The run loop backs off while polls fail and recovers by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import IO, Any, Protocol

from ..backend.layout import Layout
from ..backend.listing import BodyCache, BodyReader
from ..backend.objectstore import ObjectData, ObjectInfo
from ..backend.storeapi import ObjectStoreAPI
from ..checks import check_seconds
from ..clock import SYSTEM_CLOCK, Clock
from ..models import Task, TaskResult, utcnow
from ..stopping import event_or_timeout, set_from_any_thread
from .builder import SnapshotBuilder, Thresholds
from .detail import bodies, task_detail, task_keys
from .io import describe_error, read_many
from .model import BucketModel
from .records import decoders, kind_of, parse_body
from .requests import RequestMeter
from .snapshot import RequestFigures, Snapshot, TaskDetail, UnreadableRow, to_datetime
from .sources.events import EventTail
from .sources.listing import FullListing, Reconciler
from .sources.pubsub import QUIET_PULL_S, Change, MissedChanges, PubSubFeed, look_up
from .usage import StorageTally

log = logging.getLogger(__name__)

BODY_BATCH = 256
SLOW_POLL_S = 0.5
"""A poll slower than this stretches the interval (see ``Monitor.effective_interval``)."""
POLL_SHARE = 3.0
"""On a big bucket, the interval is at least this many times the last poll's duration."""
CHANGE_SLICE = 200
"""Feed changes applied between two yields to the event loop (~100 us each: ~20 ms)."""
FEED_GAP_S = 0.2
"""Least time between two polls woken by feed messages (they batch up meanwhile)."""
PAYLOADLESS_READS = 64
"""Changes without a payload (``payloadFormat`` ``NONE``) looked up one by one per poll at
most; more, and the poll lists everything instead."""
UNHEARD_MAX = 10_000
"""Corrected changes awaiting the feed's word at most; past it the oldest are forgotten (a
feed that far behind is overflowing, and its buffer's overflow re-lists anyway)."""
BODY_CACHE_ENTRIES = 5_000
BODY_CACHE_S = 300.0
"""Bodies read for search stay cached this long unused (and at most that many)."""
SEARCH_CONCURRENCY = 8

Subscriber = Callable[[Snapshot], Awaitable[Any] | Any]


class MonitoredBackend(Protocol):
    """What the monitor needs of a backend (``GCSBackend`` has it): an open ObjectStore."""

    @property
    def store(self) -> ObjectStoreAPI: ...

    @property
    def layout(self) -> Layout: ...

    @property
    def bucket_name(self) -> str: ...

    @property
    def prefix(self) -> str: ...


class Monitor:
    """Watches one backend's bucket; never two polls at once.

    ``interval``: seconds between timed polls in ``run()``. ``poll_timeout``: a poll's own time
    limit. ``recent_events``: how many events a snapshot keeps. ``clock``: the current UTC time
    (tests pass a fixed one). ``timer``: the clock ``run()`` schedules its polls on, monotonic
    time and sleeping (tests pass a ``FakeClock``; its ``now`` is then the default ``clock``).
    ``task_rows``: build ``Snapshot.task_rows``. ``subscription``:
    ``projects/P/subscriptions/S`` receiving this bucket's notifications (change-feed mode);
    ``topic``: ``projects/P/topics/T`` instead, for a subscription of the monitor's own.
    ``pubsub_service_file``: Pub/Sub's credentials file (the storage's: ``credentials.py``).
    ``pubsub_quiet_s``: the feed's pause after a pull that brought nothing.
    ``reconcile_s``: how long a whole reconcile pass takes in feed mode. ``feed_grace_s``: a
    change the feed has not delivered this long after it happened is drift.
    """

    def __init__(
        self,
        backend: MonitoredBackend,
        *,
        interval: float = 2.0,
        poll_timeout: float = 10.0,
        recent_events: int = 200,
        clock: Callable[[], datetime] | None = None,
        timer: Clock | None = None,
        task_rows: bool = True,
        max_backoff: float = 30.0,
        overdue_grace: float = 60.0,
        worker_timeout: float = 30.0,
        subscription: str | None = None,
        reconcile_s: float = 300.0,
        feed_grace_s: float = 30.0,
        pubsub_api_root: str | None = None,
        topic: str | None = None,
        pubsub_service_file: str | IO[str] | None = None,
        pubsub_quiet_s: float = QUIET_PULL_S,
    ) -> None:
        check_seconds("interval", interval)
        check_seconds("poll_timeout", poll_timeout)
        check_seconds("max_backoff", max_backoff)
        check_seconds("reconcile_s", reconcile_s)
        check_seconds("feed_grace_s", feed_grace_s, allow_zero=True)
        if recent_events < 1:
            raise ValueError("recent_events must be at least 1")
        self._backend = backend
        self._interval = float(interval)
        self.poll_timeout = float(poll_timeout)
        self.recent_events = int(recent_events)
        self._timer = timer or SYSTEM_CLOCK
        self._clock = clock or (timer.now if timer is not None else utcnow)
        self._max_backoff = float(max_backoff)
        self._overdue_grace = float(overdue_grace)
        self._worker_timeout = float(worker_timeout)
        if subscription is not None and topic is not None:
            raise ValueError("give a subscription or a topic, not both")
        self.subscription = subscription
        self.topic = topic
        self._pubsub_service_file = pubsub_service_file
        self._missed = MissedChanges()
        self._unheard: dict[str, float] = {}
        """Keys the reconcile corrected that the feed has not brought yet, with when they
        changed (``_reconcile`` judges them)."""
        self.feed_grace_s = float(feed_grace_s)
        self._pubsub_api_root = pubsub_api_root
        self._pubsub_quiet_s = check_seconds("pubsub_quiet_s", pubsub_quiet_s, allow_zero=True)

        layout = backend.layout
        self._decoders = decoders(layout)
        self.model = BucketModel(layout, task_rows=task_rows)
        self.usage = StorageTally(layout.prefix)
        self._listing = FullListing(layout, self._decoders, self.usage)
        self.reconciler = Reconciler(layout, self._decoders, float(reconcile_s), self.usage)
        self._tail = EventTail(layout, self._decoders["events"], self.recent_events)
        self._builder = SnapshotBuilder()
        # Bodies read for search: the backend's reader and cache, bounded in entries and age.
        self.body_cache = BodyCache(BODY_CACHE_S, max_entries=BODY_CACHE_ENTRIES)
        self._bodies = BodyReader(backend.store, self.body_cache, concurrency=SEARCH_CONCURRENCY)
        self.meter = RequestMeter(lambda: self._backend.store.stats)

        self.latest: Snapshot | None = None
        """The newest snapshot published (stale when the last poll failed), None before any."""
        self._last_good: Snapshot | None = None
        self._lock = asyncio.Lock()
        self._subscribers: list[Subscriber] = []
        self._failures = 0
        self._listed = False
        self._feed: PubSubFeed | None = None
        self.feed_error: str | None = None
        self._last_reconcile = -float("inf")
        self._last_poll_end = -float("inf")
        self._pending_events: list[str] = []

        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._requested = False
        self._feed_woke = False
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
        self._interval = check_seconds("interval", seconds)
        self._signal()

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        """Stop timed polls (``request_poll()`` still polls once)."""
        self._paused = True
        if self._feed is not None:
            self._feed.pause()
        self._signal()

    def resume(self) -> None:
        """Restart timed polls; the rate window starts again (a pause is not traffic)."""
        self._paused = False
        if self._feed is not None:
            self._feed.resume()
        self.meter.reset_window()
        self._signal()

    @property
    def failures(self) -> int:
        """Polls failed in a row (0 after a good one)."""
        return self._failures

    @property
    def feed(self) -> PubSubFeed | None:
        """The change feed while it runs (None in listing mode)."""
        return self._feed

    @property
    def _feed_wanted(self) -> bool:
        return self.subscription is not None or self.topic is not None

    @property
    def changes(self) -> str:
        """``"pubsub"`` while the change feed is live, ``"listing"`` otherwise."""
        return "pubsub" if self._feed is not None and self._feed.live else "listing"

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

    def _poll_requested(self) -> bool:
        # Set from other threads and callbacks while this loop waits: read it fresh.
        return self._requested

    def _on_feed_message(self) -> None:
        self._feed_woke = True
        self._signal()

    def _signal(self) -> None:
        if self._loop is not None:
            set_from_any_thread(self._loop, self._wake)

    # -- the run loop -----------------------------------------------------------------------

    @property
    def effective_interval(self) -> float:
        """The interval between polls, stretched on a big bucket in listing mode: a poll that
        took more than ``SLOW_POLL_S`` spaces the next one ``POLL_SHARE`` times its duration,
        so polling never takes more than a third of the console's time."""
        last = self.meter.last_poll_ms / 1000
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
        whenever ``request_poll()`` is called, and soon after feed messages arrive."""
        if self._loop is not None:
            raise RuntimeError("this monitor is already running")
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()  # bound to this loop; a monitor may run again elsewhere
        last_start: float | None = None
        last_end = 0.0
        try:
            while True:
                now = self._timer.monotonic()
                delay = self.next_delay()
                due = 0.0 if last_start is None else max(last_start + delay, last_end + delay / 2)
                feed_due = self._feed_woke and now - last_end >= FEED_GAP_S and not self._paused
                if self._requested or feed_due or (not self._paused and now >= due):
                    timed = self._requested or now >= due
                    self._requested = False
                    self._feed_woke = False
                    started = self._timer.monotonic()
                    await self.poll(reconcile=timed)
                    last_end = self._timer.monotonic()
                    if timed:
                        last_start = started
                    continue
                self._wake.clear()
                if self._poll_requested():
                    continue
                timeout = None if self._paused else due - now
                if self._feed_woke and not self._paused:
                    timeout = max(0.0, min(timeout or FEED_GAP_S, last_end + FEED_GAP_S - now))
                await event_or_timeout(self._wake, timeout, self._timer)
        finally:
            self._loop = None
            await self.aclose()

    async def aclose(self) -> None:
        """Stop the change feed's background pull (``run()`` does this when it ends)."""
        feed, self._feed = self._feed, None
        if feed is not None:
            await feed.close()

    # -- polling ----------------------------------------------------------------------------

    async def poll(self, *, raise_errors: bool = False, reconcile: bool = True) -> Snapshot:
        """Take one snapshot now (after any poll in flight) and publish it.

        On failure the last good snapshot is returned as a stale copy (``stale``, ``age_s``,
        ``error``), unless ``raise_errors``, which raises instead (a one-shot snapshot).
        ``reconcile=False``: a poll woken by feed messages skips the reconcile step.
        """
        async with self._lock:
            store = self._backend.store
            before = store.stats.copy()
            started = time.perf_counter()
            error: BaseException | None = None
            with self.meter.metered():
                try:
                    async with asyncio.timeout(self.poll_timeout):
                        snapshot = await self._poll_once(reconcile)
                except Exception as exc:
                    error = exc
            self.meter.last_poll_requests = store.stats.since(before).total
            self.meter.last_poll_ms = (time.perf_counter() - started) * 1000
            self.meter.sample()
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

    def request_figures(self) -> RequestFigures:
        """Requests this monitor made since it was created, and (once there is a window) their
        rate and price per hour."""
        cache = self.body_cache
        return self.meter.figures(
            paused=self._paused, cache_hits=cache.hits, cache_misses=cache.misses
        )

    def _stale(self, error: BaseException) -> Snapshot:
        now = self._clock()
        base = self._last_good
        connecting = base is None
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
                "connecting": connecting,
                "attempt": self._failures if connecting else 0,
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

    async def _ensure_feed(self) -> None:
        if self._feed is not None or self.feed_error is not None:
            return
        if self.subscription is None and self.topic is None:
            return
        feed = PubSubFeed(
            self.subscription,
            topic=self.topic,
            bucket=self._backend.bucket_name,
            on_message=self._on_feed_message,
            api_root=self._pubsub_api_root,
            service_file=self._pubsub_service_file,
            quiet_pull_s=self._pubsub_quiet_s,
        )
        self._feed = feed
        await feed.start()
        if self._paused:
            feed.pause()

    async def _fall_back(self, reason: str) -> None:
        log.warning("change feed not live, falling back to listing: %s", reason)
        self.feed_error = reason
        feed, self._feed = self._feed, None
        if feed is not None:
            feed.fail(reason)
            await feed.close()

    async def _poll_once(self, reconcile: bool) -> Snapshot:
        store = self._backend.store
        now = self._clock()
        # Subscribe before the first listing: a change landing in between is then in both.
        await self._ensure_feed()
        feed = self._feed
        if feed is not None and feed.error is not None:
            await self._fall_back(feed.error)
            feed = None
        if feed is not None and not self._listed:
            feed.listing_began(time.time())
        relist = False
        new_events: list[tuple[str, Mapping[str, str]]] = []
        if feed is not None and self._listed:
            relist, new_events = await self._apply_feed(store, feed)
        if feed is None or not self._listed or relist:
            applied, event_infos = await asyncio.gather(
                self._listing.run(store, self.model), self._tail.list_new(store, now)
            )
            await self._read_bodies(store, applied.need_body)
            if not self._listed:
                self.model.mark_outcomes_known(now.timestamp())
            self._listed = True
            new_events += [(i.key, i.metadata) for i in event_infos]
            if feed is not None:
                # Changes that arrived during the listing; an overflow meanwhile lists again.
                again, more = await self._apply_feed(store, feed)
                self._listed = not again
                new_events += more
        elif reconcile and time.monotonic() - self._last_reconcile >= self._interval * 0.9:
            await self._reconcile(store, feed)
        # Joined here in slices: what reads the aggregates next (an event's outcome, the
        # minute's forgetting) would otherwise join every changed task in one go (a cold load
        # of a million tasks held the loop 11 s, a 1% change ~100 ms).
        await self.model.settle_in_slices()
        await self._tail.read_new(store, self.model, new_events, now)
        self.model.forget_outcomes(now.timestamp())
        return await self._build(now)

    async def _apply_feed(
        self, store: ObjectStoreAPI, feed: PubSubFeed
    ) -> tuple[bool, list[tuple[str, Mapping[str, str]]]]:
        """Apply buffered notifications; returns whether a full listing must replace them
        (the buffer overflowed, or too many came without a payload) and new event keys."""
        batch = feed.take()
        need: list[ObjectInfo] = []
        unknown: dict[str, str] = {}
        event_keys: list[tuple[str, Mapping[str, str]]] = []
        layout = self._backend.layout
        for n, change in enumerate(batch.changes):
            self._apply_change(layout, change, need, event_keys, unknown)
            if n % CHANGE_SLICE == CHANGE_SLICE - 1:
                await asyncio.sleep(0)
        await self._read_bodies(store, need)
        self._tail.mark_seen(k for k, _ in event_keys)
        if len(unknown) > PAYLOADLESS_READS:
            return True, event_keys
        await self._read_bodies(store, await look_up(store, self.model, self._decoders, unknown))
        return batch.relist, event_keys

    def _apply_change(
        self,
        layout: Layout,
        change: Change,
        need: list[ObjectInfo],
        event_keys: list[tuple[str, Mapping[str, str]]],
        unknown: dict[str, str],
    ) -> None:
        self._unheard.pop(change.key, None)  # the feed brings this key: behind, not missing
        kind = kind_of(layout, change.key)
        if kind is None:
            return
        if kind == "events":
            if not change.deleted:
                event_keys.append((change.key, change.metadata or {}))
            return
        if change.deleted:
            self.model.withdraw(kind, change.key, change.generation)
            return
        if change.metadata is None:
            known = self.model.generation(kind, change.key)
            if known is None or known < change.generation:
                unknown[change.key] = kind
            return
        value = self._decoders[kind](change.key, change.metadata)
        if value is None:
            need.append(ObjectInfo(change.key, change.generation, 0, None, change.metadata))
        else:
            self.model.offer(kind, change.key, change.generation, value)

    async def _reconcile(self, store: ObjectStoreAPI, feed: PubSubFeed) -> None:
        self._last_reconcile = time.monotonic()
        objects = sum(len(self.model.objects[k]) for k in self.model.objects)
        pages = self.reconciler.pages_per_step(objects, self._interval)
        step = await self.reconciler.step(store, self.model, pages)
        await self._read_bodies(store, step.applied.need_body)
        # A change the feed has not brought is late once the feed has emptied the
        # subscription at least ``feed_grace_s`` (the time GCS takes to publish) after it;
        # until then it waits here, and a message for its key meanwhile clears it: a feed
        # working through a backlog is behind, not missing changes.
        found = time.time()
        for info in step.applied.stale:
            self._unheard[info.key] = info.updated.timestamp() if info.updated else found
        for key in step.applied.gone:
            self._unheard[key] = found
        while len(self._unheard) > UNHEARD_MAX:  # the oldest are forgotten, never judged
            del self._unheard[next(iter(self._unheard))]
        caught_up = feed.caught_up_at
        late: list[float] = []
        if caught_up is not None:
            cutoff = min(found, caught_up) - self.feed_grace_s
            late = [t for t in self._unheard.values() if t <= cutoff]
            self._unheard = {k: t for k, t in self._unheard.items() if t > cutoff}
        self.reconciler.count(len(late), step.pass_completed)
        if self._missed.add(len(late), self.reconciler.passes):
            await self._fall_back(self._missed.reason(feed.subscription))
            return
        if late:
            changed_at = min(late)
            heard = feed.last_message_at
            if heard is None or heard < changed_at:
                await self._fall_back(
                    f"the feed delivered nothing since {len(late)} change(s) the listing shows"
                    f" (feed silent for over {self.feed_grace_s:g} s)"
                )

    async def _read_bodies(self, store: ObjectStoreAPI, infos: Sequence[ObjectInfo]) -> None:
        """Read bodies the index could not answer for, in batches, into the model."""
        layout = self._backend.layout
        for start in range(0, len(infos), BODY_BATCH):
            batch = infos[start : start + BODY_BATCH]
            bodies = await read_many(store, [i.key for i in batch])
            for info in batch:
                got = bodies.get(info.key)
                kind = kind_of(layout, info.key)
                if got is None or kind is None:
                    continue
                if isinstance(got, UnreadableRow):
                    # A failed read is not a fact about a generation: the next listing retries.
                    self.model.unreadable[info.key] = got
                    continue
                self._offer_body(kind, got)
            await asyncio.sleep(0)

    def _offer_body(self, kind: str, got: ObjectData) -> None:
        value = parse_body(self._backend.layout, kind, got.key, got.data)
        self.model.unreadable.pop(got.key, None)
        self.model.offer(kind, got.key, got.generation, value)

    async def _build(self, now: datetime) -> Snapshot:
        thresholds = Thresholds(
            overdue_grace=timedelta(seconds=max(2 * self._interval, self._overdue_grace)),
            worker_timeout=timedelta(seconds=self._worker_timeout),
        )
        parts = await self._builder.build(self.model, now, thresholds)
        # The rows are the last big piece of a build (the changed rows built and placed,
        # then a copy of every task's row): on turns of the loop of their own. Only a poll
        # changes the model, and polls never overlap, so they describe the same model as the
        # parts.
        await asyncio.sleep(0)
        model = self.model
        rows = await model.task_rows_in_slices() if model.task_rows_enabled else ()
        unreadable = sorted(
            {**self._tail.unreadable, **model.unreadable}.values(), key=lambda u: u.key
        )
        failures = dict(sorted(model.failures.items(), key=lambda kv: (-kv[1], kv[0])))
        return Snapshot.model_construct(
            bucket=self._backend.bucket_name,
            prefix=self._backend.layout.prefix,
            taken_at=now,
            stale=False,
            age_s=0.0,
            error=None,
            poll_interval_s=self._interval,
            queues=parts.queues,
            tasks=dict(model.task_counts),
            results=dict(model.result_counts),
            results_without_task=dict(sorted(model.orphans.items())),
            results_per_minute=parts.results_per_minute,
            failures_by_type=failures,
            failure_rate=parts.failure_rate,
            window_outcomes=parts.window_outcomes,
            outcome_window_s=parts.outcome_window_s,
            outcomes_known_since=to_datetime(model.outcomes_known_from),
            outcome_source=parts.outcome_source,
            events=self._tail.rows(),
            schedules=parts.schedules,
            stuck=parts.stuck,
            workers=parts.workers,
            unreadable=tuple(unreadable),
            requests=RequestFigures(),
            storage=self.usage.rows(),
            task_rows=rows,
            changes=self.changes,
            feed_drift=self.reconciler.last_pass_drift if self._feed_wanted else None,
            feed_error=self.feed_error,
            connecting=False,
            attempt=0,
        )

    # -- on demand --------------------------------------------------------------------------

    async def task_detail(self, task_id: str) -> TaskDetail:
        """Read one task's body, its state record and its events (oldest first), now.

        Raises the store's errors or ``TimeoutError`` after ``poll_timeout``.
        """
        with self.meter.metered():
            async with asyncio.timeout(self.poll_timeout):
                return await task_detail(
                    self._backend.store, self._backend.layout, self.model, task_id
                )

    async def task_bodies(self, task_ids: Sequence[str]) -> dict[str, Task | None]:
        """Task bodies (for search across args and kwargs), from the cache when the model's
        generation matches, else read with bounded concurrency."""
        keys = task_keys(self._backend.layout, task_ids, result=False)
        with self.meter.metered():
            return await bodies(self._bodies, self.model, "tasks", keys, Task)

    async def result_bodies(self, task_ids: Sequence[str]) -> dict[str, TaskResult | None]:
        """Result bodies (for search across error text), as ``task_bodies``."""
        keys = task_keys(self._backend.layout, task_ids, result=True)
        with self.meter.metered():
            return await bodies(self._bodies, self.model, "results", keys, TaskResult)


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


__all__ = ["Monitor", "MonitoredBackend", "Subscriber", "describe_error", "take_snapshot"]
