"""Listings as a change source: a full listing of every prefix, and the rolling reconcile.

Both compare each listed object's generation with the model and decode only what changed, and
withdraw what they no longer show. The rolling reconcile lists one key range per poll (a cursor
over the prefixes, in key order) so that, beside a change feed, the whole bucket is re-listed
about every ``reconcile_s`` at a bounded cost per poll; what it corrects is the feed's drift.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ...backend.layout import Layout
from ...backend.objectstore import ObjectInfo
from ...backend.storeapi import ObjectStoreAPI
from ...gathering import bounded_gather
from ..model import BucketModel
from ..records import Decoder, folder_of
from ..usage import StorageTally, counted

LISTED_KINDS = ("tasks", "queues", "results", "schedules", "workers", "paused")
"""The prefixes a listing covers (events are tailed: ``sources/events.py``)."""
PAGE = 1000
"""Objects per list request (GCS's maximum)."""
LIST_CONCURRENCY = 4
"""List requests in flight per poll (each page is applied as it lands)."""
SPLIT_EVERY = 10_000
"""A prefix over this many objects is listed as concurrent key ranges (real GCS pages one
after another: 100,000 tasks would otherwise be 100 sequential requests)."""
SLICE = 250
"""Listed objects compared between two yields to the event loop (a changed one costs ~100 us
to decode and apply: at most ~25 ms per slice)."""
MAX_RECONCILE_PAGES = 8


@dataclass(slots=True)
class Applied:
    """What applying a listing (or one range of it) did."""

    changed: int = 0
    need_body: list[ObjectInfo] = field(default_factory=list)
    stale: list[ObjectInfo] = field(default_factory=list)
    """Objects the model had not heard of at all (for drift: their ``updated``)."""
    gone: list[str] = field(default_factory=list)
    """Keys the model had that the listing no longer shows (withdrawn)."""

    @property
    def removed(self) -> int:
        """How many keys were withdrawn."""
        return len(self.gone)


class SortedRuns:
    """Keys as sorted runs: what a key range of a listing should hold, found by a binary
    search in each run."""

    def __init__(self, runs: Sequence[Sequence[str]]) -> None:
        self._runs = runs

    def between(self, lo: str | None, hi: str | None) -> list[str]:
        """The keys in ``[lo, hi]`` (None: unbounded), run after run (not in one order)."""
        out: list[str] = []
        for run in self._runs:
            first = 0 if lo is None else bisect.bisect_left(run, lo)
            last = len(run) if hi is None else bisect.bisect_right(run, hi)
            out += run[first:last]
        return out


async def apply_listing(
    model: BucketModel,
    kind: str,
    infos: Sequence[ObjectInfo],
    decode: Decoder,
    *,
    before: int,
    lo: str | None = None,
    hi: str | None = None,
    known_keys: SortedRuns,
) -> Applied:
    """Apply a listing of ``kind`` that covered keys in ``[lo, hi]`` (None: unbounded) and
    was requested when the model's seq was ``before``. Yields to the loop every ``SLICE``.
    ``known_keys``: the model's keys of ``kind`` to check for removal."""
    out = Applied()
    listed: set[str] = set()
    await _apply_page(model, kind, infos, decode, out, listed.add, stale=True)
    candidates = known_keys.between(lo, hi)
    for n, key in enumerate(candidates):
        inside = (lo is None or key >= lo) and (hi is None or key <= hi)
        if inside and key not in listed and model.withdraw(kind, key, None, before=before):
            out.gone.append(key)
        if n % (SLICE * 8) == SLICE * 8 - 1:  # a membership test only: cheap
            await asyncio.sleep(0)
    return out


async def _apply_page(
    model: BucketModel,
    kind: str,
    infos: Sequence[ObjectInfo],
    decode: Decoder,
    out: Applied,
    shown: Callable[[str], object],
    *,
    stale: bool,
) -> None:
    """Compare each of ``infos`` with the model and apply what is newer, into ``out`` (with
    the changed objects in ``out.stale`` when ``stale``); ``shown(key)`` for every key
    listed but those it changed (learned now, their seq is newer than the listing: no
    listing withdraws them). Yields to the loop every ``SLICE``."""
    for start in range(0, len(infos), SLICE):
        for info in infos[start : start + SLICE]:
            key = info.key
            if key.endswith("/"):
                continue  # a console's "folder" marker, not part of the layout
            known = model.generation(kind, key)
            if known is None or known < info.generation:
                value = decode(key, info.metadata)
                if value is None:
                    out.need_body.append(info)
                elif model.offer(kind, key, info.generation, value):
                    out.changed += 1
                    if stale:
                        out.stale.append(info)
                    continue
            shown(key)
        await asyncio.sleep(0)


async def _withdraw_unmarked(model: BucketModel, kind: str, before: int) -> list[str]:
    """After a listing of all of ``kind`` requested when the model's seq was ``before``: the
    keys it did not mark, withdrawn in batches with the loop given back between them."""
    gone: list[str] = []
    for batch in model.unconfirmed(kind, before, SLICE * 8):
        gone += [k for k in batch if model.withdraw(kind, k, None, before=before)]
        await asyncio.sleep(0)
    return gone


class SplitPoints:
    """The keys at every ``SPLIT_EVERY``-th position of a prefix listed as concurrent key
    ranges (where its next listing splits it), found as the pages land.

    A page's positions are known once every range before its own has been listed whole; until
    then the page's keys (references to strings its objects hold anyway, not the objects)
    wait for it. Ranges are started in order, so that is the few ranges ahead of the
    earliest one still in flight."""

    def __init__(self, ranges: int) -> None:
        self._listed = [0] * ranges
        self._done = [False] * ranges
        self._waiting: list[list[str]] = [[] for _ in range(ranges)]
        self._next = 0
        """The first range not listed whole: every position before it is known."""
        self._offset = 0
        """Objects in the ranges before ``_next``."""
        self.keys: list[str] = []
        """The split points found so far, in key order."""

    def page(self, part: int, infos: Sequence[ObjectInfo]) -> None:
        """Range ``part`` listed ``infos`` (its next page)."""
        if part == self._next:
            self._pick(self._offset + self._listed[part], [info.key for info in infos])
        else:
            self._waiting[part] += [info.key for info in infos]
        self._listed[part] += len(infos)

    def done(self, part: int) -> None:
        """Range ``part`` has been listed whole."""
        self._done[part] = True
        while self._next < len(self._done) and self._done[self._next]:
            self._offset += self._listed[self._next]
            self._next += 1
            if self._next < len(self._done):
                self._pick(self._offset, self._waiting[self._next])
                self._waiting[self._next] = []

    def _pick(self, first: int, keys: Sequence[str]) -> None:
        """``keys`` sit at positions ``first``, ``first + 1``...: keep those at a multiple of
        ``SPLIT_EVERY`` (the first split after ``SPLIT_EVERY`` objects, none at 0)."""
        at = max(SPLIT_EVERY, -(-first // SPLIT_EVERY) * SPLIT_EVERY)
        self.keys += keys[at - first :: SPLIT_EVERY]


class FullListing:
    """Lists every prefix (big ones as concurrent key ranges) into the model, and their sizes
    into ``usage`` when given.

    Each page is applied as it lands (the objects of at most ``LIST_CONCURRENCY`` pages are
    alive at once, not the whole bucket's); each key listed is marked in the model
    (``BucketModel.confirm``), and once every range has been listed whole, the keys known
    before the listing that it did not mark are withdrawn. A listing that fails half way has
    applied what it saw (newer generations only) and withdrawn nothing."""

    def __init__(
        self, layout: Layout, decoders: dict[str, Decoder], usage: StorageTally | None = None
    ) -> None:
        self._layout = layout
        self._decoders = decoders
        self._usage = usage
        self._splits: dict[str, tuple[str, ...]] = {kind: () for kind in LISTED_KINDS}

    async def run(self, store: ObjectStoreAPI, model: BucketModel) -> Applied:
        before = model.seq
        mark = model.next_seq()
        # Every prefix as its key ranges (one range unless it was big last time), all listed
        # through one bound.
        parts = [
            (kind, n, lo, hi)
            for kind in LISTED_KINDS
            for n, (lo, hi) in enumerate(itertools.pairwise([None, *self._splits[kind], None]))
        ]
        splits = {kind: SplitPoints(len(self._splits[kind]) + 1) for kind in LISTED_KINDS}
        sizes = dict.fromkeys(LISTED_KINDS, (0, 0))
        total = Applied()

        async def part(at: tuple[str, int, str | None, str | None]) -> None:
            kind, n, lo, hi = at
            prefix = folder_of(self._layout, kind)
            shown = functools.partial(model.confirm, kind, seq=mark)
            pages = store.pages(prefix, start_offset=lo, end_offset=hi)
            async with contextlib.aclosing(pages):
                async for infos in pages:
                    await _apply_page(model, kind, infos, self._decoders[kind], total, shown,
                                      stale=False)  # fmt: skip
                    splits[kind].page(n, infos)
                    objects, size = counted(infos)
                    sizes[kind] = (sizes[kind][0] + objects, sizes[kind][1] + size)
                    del infos  # applied: let it go while the next page is fetched
            splits[kind].done(n)

        await bounded_gather(parts, part, limit=LIST_CONCURRENCY)
        # Every range listed whole: what the listing did not show is gone.
        for kind in LISTED_KINDS:
            total.gone += await _withdraw_unmarked(model, kind, before)
            if self._usage is not None:
                self._usage.walked(folder_of(self._layout, kind), *sizes[kind])
            self._splits[kind] = tuple(splits[kind].keys)
        return total


@dataclass(slots=True)
class ReconcileStep:
    """One poll's share of the rolling reconcile."""

    applied: Applied
    requests: int
    pass_completed: bool


class Reconciler:
    """A cursor over every listed prefix in key order; each step lists a few pages from it.

    Pages per step: enough that a pass over ``objects`` objects takes about ``reconcile_s``
    at one step per ``interval`` seconds, at least 1 and at most ``MAX_RECONCILE_PAGES``.

    A pass over a prefix is a full listing spread over polls, judged as ``FullListing``
    judges one: each key it shows is marked with the seq taken when the pass began
    (``BucketModel.confirm``), and once the prefix was listed to its end, the keys known
    before the pass that it did not mark are withdrawn (``unconfirmed``). No copy of the
    model's keys is made (at a million tasks a sorted copy of a prefix's keys was ~130 MB
    and a second of CPU at every pass). A key removed from the bucket with its notification
    lost is withdrawn at the end of the pass that no longer lists it; one learned during a
    pass waits for the next.
    """

    def __init__(
        self,
        layout: Layout,
        decoders: dict[str, Decoder],
        reconcile_s: float,
        usage: StorageTally | None = None,
    ) -> None:
        self._layout = layout
        self._decoders = decoders
        self._usage = usage
        self.reconcile_s = reconcile_s
        self._kind = 0
        self._cursor: str | None = None
        self._pass: tuple[int, int] | None = None
        """(model seq before this prefix's pass, its mark), taken when the pass began."""
        self.pass_drift = 0
        self.last_pass_drift: int | None = None
        self.passes = 0

    def pages_per_step(self, objects: int, interval: float) -> int:
        steps = max(1.0, self.reconcile_s / max(interval, 0.001))
        return max(1, min(MAX_RECONCILE_PAGES, math.ceil(objects / PAGE / steps)))

    async def step(self, store: ObjectStoreAPI, model: BucketModel, pages: int) -> ReconcileStep:
        kind = LISTED_KINDS[self._kind]
        if self._pass is None:
            before = model.seq
            self._pass = (before, model.next_seq())
        before, mark = self._pass
        prefix = folder_of(self._layout, kind)
        want = pages * PAGE
        infos = await store.list(prefix, start_offset=self._cursor, limit=want)
        requests = max(1, math.ceil(len(infos) / PAGE))
        at_end = len(infos) < want
        lo = self._cursor
        shown = functools.partial(model.confirm, kind, seq=mark)
        applied = Applied()
        await _apply_page(model, kind, infos, self._decoders[kind], applied, shown, stale=True)
        if self._usage is not None:
            self._usage.page(prefix, infos, first=lo is None, last=at_end)
        completed = False
        if at_end:
            # The prefix was listed to its end: what the pass did not show is gone.
            applied.gone += await _withdraw_unmarked(model, kind, before)
            self._kind = (self._kind + 1) % len(LISTED_KINDS)
            self._cursor = None
            self._pass = None
            completed = self._kind == 0
        else:
            self._cursor = infos[-1].key
        return ReconcileStep(applied, requests, completed)

    def count(self, corrected: int, completed: bool) -> None:
        self.pass_drift += corrected
        if completed:
            self.last_pass_drift = self.pass_drift
            self.pass_drift = 0
            self.passes += 1
