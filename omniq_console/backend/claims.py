"""Claim ranking: which queue entry a claimer tries next, and what it remembers between passes.

A claim pass lists the queues' entries and ranks them by priority, then age, from their metadata
alone (docs/architecture.md, "How claimers find work without reading records"). This module
holds what one process knows between passes: its last listing (reused for a short while), the
entries it won or lost (skipped until they change), whether it lost a race lately (then it
spreads its picks over the best few) and the entry it won last (a spread pick takes the one
ranked just before it: each claimer works through a run of its own toward the head). Nothing
here sends a request.

The path is lean because a busy worker ranks a listing about twice a second: an entry is ranked
from two metadata fields and judged ready from two more; its whole index is decoded only when a
pass tries it.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from ..models import as_utc
from .index import INDEX_VERSION, QueueEntryIndex, queue_entry_index
from .layout import Layout
from .listing import safe_name
from .storeapi import ObjectInfo

BEST_FEW = 256
"""After a lost claim, the next candidate is drawn at random among this many of the best of the
same priority (then, after each win, the one ranked just before the win: ``pick``). Measured
with 16 worker processes: a window of 4 left the losers racing each other again; 16 spread them
(benchmarks/claims.py), yet 4 workers of 8 slots still lost 2.6 races a task at 16. Entries of
tasks other processes hold stay listed until those finish, about a second, so at 26 tasks/s a
window of 64 was half taken: 4 workers lost 452 races over 600 tasks with 64, 208 with 256, at
28 tasks/s instead of 26 (order within a priority is then approximate over the 256 oldest; a
lone claimer, never contended, still takes the head)."""
LISTING_REUSE_S = 0.5
"""A claim pass within this long of the last listing of the same queues claims from that
listing (the entries it won or lost are skipped): a busy worker lists a queue about twice a
second, not once per task, which is what its CPU went to."""
CONTENTION_MEMORY_S = 5.0
"""A claim race lost makes the next passes of this process spread their first pick over the
best few for this long (benchmarks/gcsrules.py: 4 workers of 8 slots lost 2.4 races a task
always taking the head first)."""
LOSSES_BEFORE_BACKOFF = 2
"""A pass that loses this many claim races on one listing is working from it behind the other
claimers (the entries they took, or finished since): it backs off for a moment
(``BACKOFF_S``) and lists again before its next try."""
BACKOFF_S = (0.02, 0.1)
"""The back-off after lost races, in seconds: random in this range, so claimers drift apart."""
MAX_PASS_AGE_S = 10.0
"""A claim pass stops trying candidates of a listing older than this: the task behind an old
entry may have been deleted, cancelled or claimed since (the next pass lists again)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Rank = tuple[int, datetime, str]
"""How an entry ranks: (minus its priority, its age, its key); lower is better."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """A queue entry a claimer tries: its listing, queue and index."""

    info: ObjectInfo
    queue: str
    index: QueueEntryIndex


@dataclass(slots=True)
class Listed:
    """An entry of a ranked listing: ranked from two metadata fields, judged ready from two
    more (parsed once: an entry is kept from listing to listing while its generation holds);
    its whole index is decoded only for the entry a pass tries."""

    rank: Rank
    info: ObjectInfo
    queue: str
    task_id: str
    run_at: datetime | None = None
    expires_at: datetime | None = None
    decoded: Candidate | None = None
    unusable: bool = False  # its index does not decode

    def due(self, now: datetime) -> bool:
        """Whether the entry may be claimed at ``now``: its ``run_at`` has come and its
        ``expires_at`` has not (an expired task is left for the reaper to expire)."""
        if self.run_at is not None and self.run_at > now:
            return False
        return self.expires_at is None or self.expires_at > now

    def candidate(self, layout: Layout) -> Candidate | None:
        """The entry as a candidate (decoded once); None when its index is not usable."""
        if self.decoded is None and not self.unusable:
            index = queue_entry_index(self.info, layout)
            if index is None:
                self.unusable = True
            else:
                self.decoded = Candidate(self.info, self.queue, index)
        return self.decoded


def _listed(folder: str, queue: str, info: ObjectInfo) -> Listed | None:
    """``info`` as a rankable entry of ``queue`` (listed under ``folder``), or None when it is
    not an entry of the layout or its rank or times do not decode: not ours to rank (the
    reaper reports or repairs it)."""
    key = info.key
    if not key.startswith(folder) or not key.endswith(".json"):
        return None
    task_id = safe_name(key[len(folder) : -len(".json")])
    md = info.metadata
    if task_id is None or md.get("omniq_index") != INDEX_VERSION:
        return None
    try:
        priority = int(md.get("priority") or 0)
        created, run_at, expires_at = (
            as_utc(datetime.fromisoformat(text)) if (text := md.get(name)) else None
            for name in ("created_at", "run_at", "expires_at")
        )
    except (ValueError, OverflowError):
        return None
    rank = (-priority, created or info.updated or _EPOCH, key)
    return Listed(rank, info, queue, task_id, run_at, expires_at)


class ClaimMemory:
    """One process's claim state: the last listing, the entries it tried, recent contention.

    The entries remembered are bounded by the listing they came from: an entry that is not in
    the latest listing of its queues is forgotten (its task finished or was deleted), so the
    memory never holds more than the queues' current entries.
    """

    def __init__(self, layout: Layout, monotonic: Callable[[], float]) -> None:
        self.layout = layout
        self._monotonic = monotonic
        # task id -> (queue, entry generation, monotonic time until which it is skipped).
        self._skip: dict[str, tuple[str, int, float]] = {}
        self._listing: tuple[tuple[str, ...], float, list[Listed]] | None = None
        # The entries of the last listing by key, None for those not rankable: an entry seen
        # again at the same generation is taken as it was, not parsed again.
        self._known: dict[str, Listed | None] = {}
        self._contended_until = 0.0
        self.cursor: Rank | None = None
        """The rank of the entry this process won last: a contended pick takes the one ranked
        just before it (``pick``); None after a lost race (this run met another claimer's:
        start elsewhere)."""
        self.races_lost = 0
        """Claim races this process lost, in all."""

    def __len__(self) -> int:
        """How many entries are remembered as tried."""
        return len(self._skip)

    def recent(self, queues: tuple[str, ...]) -> list[Listed] | None:
        """The last ranked listing of ``queues`` if it is recent and still holds an entry this
        process has not tried; else None (list again)."""
        if self._listing is None:
            return None
        listed_for, at, ranked = self._listing
        fresh = self._monotonic() - at < LISTING_REUSE_S and listed_for == queues
        if fresh and any(not e.unusable and e.task_id not in self._skip for e in ranked):
            return ranked
        return None

    def rank(
        self, queues: tuple[str, ...], listings: Iterable[tuple[str, Iterable[ObjectInfo]]]
    ) -> None:
        """Rank a fresh listing of ``queues`` (``(queue, its objects)`` pairs; best first) and
        keep it; entries of these queues that it no longer holds leave the memory.

        A busy claimer lists its queues about twice a second and the listings differ by a few
        entries: an entry already known at its generation costs a dictionary look-up, a new
        one is checked and parsed once (that parsing was most of a claimer's CPU).
        """
        known, fresh = self._known, {}
        for queue, infos in listings:
            folder = self.layout.queue(queue)
            for info in infos:
                entry = known.get(info.key)
                if entry is None or entry.info.generation != info.generation:
                    entry = _listed(folder, queue, info)
                fresh[info.key] = entry
        self._known = fresh
        ranked = sorted(
            (entry for entry in fresh.values() if entry is not None), key=lambda e: e.rank
        )
        self._listing = (queues, self._monotonic(), ranked)
        listed = {entry.task_id for entry in ranked}
        gone = [t for t, (q, _, _) in self._skip.items() if q in queues and t not in listed]
        for task_id in gone:
            del self._skip[task_id]

    def listing_age(self) -> float:
        """Seconds since the listing being claimed from was made."""
        return float("inf") if self._listing is None else self._monotonic() - self._listing[1]

    def ranked(self) -> list[Listed]:
        """The entries of the last listing, best first."""
        return [] if self._listing is None else self._listing[2]

    def ready(
        self, ranked: Sequence[Listed], now: datetime, *, limit: int = BEST_FEW
    ) -> list[Listed]:
        """The best entries (at most ``limit``) that may be claimed now and that this process
        has not tried, best first."""
        mono = self._monotonic()
        out: list[Listed] = []
        for entry in ranked:
            if entry.unusable:
                continue
            skip = self._skip.get(entry.task_id)
            if skip is not None:
                if skip[1] == entry.info.generation and mono < skip[2]:
                    continue  # its task is taken and nothing has changed since
                del self._skip[entry.task_id]
            if entry.due(now):
                out.append(entry)
                if len(out) == limit:
                    break
        return out

    def skip(self, entry: Listed, lease: float) -> None:
        """Do not try ``entry`` again until it changes or ``lease`` seconds have passed."""
        until = self._monotonic() + lease
        self._skip[entry.task_id] = (entry.queue, entry.info.generation, until)

    def won(self, entry: Listed) -> None:
        """A claim of ``entry`` won: the next contended pick is the entry ranked before it."""
        self.cursor = entry.rank

    def lost_race(self) -> None:
        """A claim lost to another claimer: spread the next picks for a while, from a random
        place (this run met entries someone else holds)."""
        self._contended_until = self._monotonic() + CONTENTION_MEMORY_S
        self.cursor = None
        self.races_lost += 1

    def contended(self) -> bool:
        """Whether this process lost a race lately."""
        return self._monotonic() < self._contended_until


def pick(candidates: Sequence[Listed], spread: bool, after: Rank | None = None) -> int:
    """The index of the entry to try: the head, or with ``spread`` one of the best few of the
    head's priority (never a lower priority before a higher one): the one ranked just before
    ``after`` (the entry this process won last) while there is one, else a random one.

    Contended claimers each work through a run of consecutive entries toward the head, from a
    random place: the entries another claimer holds are the run it has just taken, so a
    claimer meets them only when it catches up with that run, not at every pick (a random
    pick each time kept hitting them: a queue's head is full of running tasks, whose entries
    stay until their outcome, a second or more after the claim). Walking toward the head,
    not away from it, the oldest entries are taken first: every run ends there.

    Measured (tests/test_worker_claim_races.py, four claimers on the in-memory store): a drain
    of 160 tasks lost 0.33-0.53 races a task (0.76-0.84 with a random pick each time); on a
    queue kept 400 deep, 0.04-0.06 a claim (0.29-0.33), and no task came more than 419 places
    after its turn (904).
    """
    if not spread:
        return 0
    head = candidates[0].rank[0]
    window = 1
    while window < min(BEST_FEW, len(candidates)) and candidates[window].rank[0] == head:
        window += 1
    if after is not None:
        before = bisect.bisect_left(candidates, after, hi=window, key=_rank_of) - 1
        if before >= 0:
            return before
    return random.randrange(window)


def _rank_of(entry: Listed) -> Rank:
    return entry.rank
