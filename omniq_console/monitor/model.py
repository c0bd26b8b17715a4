"""The monitor's in-memory model of a bucket, with running aggregates.

Every change source (a listing, a reconcile page, a change-feed message) ends in ``offer`` (an
object at a generation) or ``withdraw`` (an object gone). The rules make the sources safe to
mix and to repeat (``docs/architecture.md``, "Layout of a bucket"):

- a newer generation replaces an older one; an older or equal one changes nothing;
- a delete removes only the generation it names (an overwrite's notice about the generation it
  replaced changes nothing), and leaves a tombstone so a late notice of that generation does not
  bring it back;
- a listing that no longer shows a key removes it only if the model learned that key before the
  listing was requested (``seq``): a change that arrived meanwhile is newer than the listing.
  A full listing, applied page by page, marks each key it shows (``confirm``) and, once every
  page has landed, withdraws the keys it did not mark (``unconfirmed``).

Each task's contribution to the counts, depths, outcome series and failure groups is kept, and
replaced when one of its objects changes: a change costs O(1), not O(bucket). A change only
marks its task stale; the task is joined again when the aggregates are next read (``settle``,
which every reader calls), once however many of its objects changed meanwhile. What depends on
the clock is evaluated at snapshot time: stuck tasks from the running set's lease heap
(``running.py``), pending, delayed, expired and ages from the waiting set's heaps
(``waiting.py``), throughput from per-minute histograms (``throughput.py``).

Memory is per task, and a bucket may hold a million: a task's three objects are kept by id as
packed ints (``KnownObjects``), not by key; its records are structs the collector never
tracks, sharing one id string (``offer``); the few distinct queues, functions, statuses and
worker ids are interned strings (``records.py``); a task's contribution is kept only while it
is stale; rows are structs with times as floats, placed by an array of floats
(``benchmarks/model.py`` measures bytes a task, cold load and a change's cost).
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
from array import array
from collections import Counter, OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple, TypeVar

import msgspec

from ..backend import lifecycle
from ..backend.layout import Layout
from ..models import ResultStatus, TaskStatus
from .records import (
    Entry,
    Heartbeat,
    PausedQueue,
    Record,
    ScheduleRecord,
    StateRecord,
    TaskDef,
)
from .running import LiveTask, RunningSet
from .snapshot import TaskRow, UnreadableRow
from .throughput import Throughput
from .waiting import Waiter, WaitingSet

S = TypeVar("S", list[TaskRow], "array[float]")

MINUTE = 60.0
OUTCOME_KEEP_S = 6 * 3600.0
"""Outcomes are remembered this long after completion (the longest throughput window), also
after their result records are deleted."""
TOMBSTONES = 50_000
"""Deleted generations remembered (oldest forgotten first): enough for the feed's reordering
and redelivery window (minutes) at hundreds of deletes a second; the reconcile corrects the
rest."""
SETTLE_SLICE = 500
"""Stale tasks joined between two yields to the event loop (tens of microseconds each)."""
ROW_SLICE = 2_000
"""Rows built and placed between two yields to the event loop (a few microseconds each)."""
SHARED_CONTRIBUTIONS = 10_000
"""Distinct contributions kept for sharing (status x queue x error type: a few hundred in a
real bucket); beyond, the memory starts again (sharing saves memory, it decides nothing)."""
MAX_OUTCOMES = 200_000
"""Outcomes remembered at most (the oldest forgotten first, beside ``OUTCOME_KEEP_S``): a
fleet finishing more than ~10 tasks a second keeps its charts' last hours, not unbounded."""

# The wire values of final statuses, for the hot path's string compares (models.py says which).
_FINAL = frozenset(s.value for s in TaskStatus if s.is_final)
_ERROR = ResultStatus.ERROR.value
_SUCCESS = ResultStatus.SUCCESS.value
_RUNNING = TaskStatus.RUNNING.value
_PENDING = TaskStatus.PENDING.value


class Known(NamedTuple):
    """What the model holds for one key: the generation, what it means, when it was learned
    (or last shown by a full listing: ``BucketModel.confirm``)."""

    generation: int
    value: Record | UnreadableRow
    seq: int


SEQ_BITS = 40
"""Bits of a packed (generation, seq) kept for the seq: a trillion changes."""
_SEQ_MASK = (1 << SEQ_BITS) - 1


class KnownObjects(Mapping[str, Known]):
    """The keys of one kind of object the model knows, each at its generation and seq.

    A task's objects (definition, queue entry, state record) are nearly all of a bucket. A
    key of their usual form (``{folder}{id}.json``; an entry ``{queues}{queue}/{id}.json``)
    whose value is its kind's record of that id is kept by task id as one int (generation and
    seq packed), its value being the model's record of that task (``values``: ``defs``,
    ``entries``, ``states``): no key string and no tuple per object, a million tasks ~450 MB
    less. Any other key (an unreadable object, a key of another form, a task with entries in
    two queues) is kept as it is, by key."""

    def __init__(
        self,
        kind: str,
        folder: str | None = None,
        values: Mapping[str, Record] | None = None,
        record: type[TaskDef | Entry | StateRecord] | None = None,
    ) -> None:
        self.kind = kind
        self._record = record
        self._folder = folder or ""
        self._values = values
        self._entries = kind == "queues"
        self._packed: dict[str, int] = {}
        self._other: dict[str, Known] = {}
        self._split_ids: set[str] = set()
        """Tasks with entries under more than one key: kept by key."""
        self._last_key: str | None = None
        self._last_split: tuple[str, str] | None = None

    def _split(self, key: str) -> tuple[str, str] | None:
        """(id, queue) of a key of the usual form (queue "" but for entries). An offer asks
        for the same key two or three times in a row: the last answer is kept."""
        if key is self._last_key:
            return self._last_split
        split: tuple[str, str] | None = None
        folder = self._folder
        if self._values is not None and key.startswith(folder) and key.endswith(".json"):
            name = key[len(folder) : -5]
            queue, sep = "", "/"
            if self._entries:
                queue, sep, name = name.partition("/")
            if queue or not self._entries:
                split = (name, queue) if sep and name and "/" not in name else None
        self._last_key, self._last_split = key, split
        return split

    def _packed_of(self, split: tuple[str, str]) -> int | None:
        tid, queue = split
        packed = self._packed.get(tid)
        if packed is not None and queue and self._values[tid].queue != queue:  # type: ignore[index,union-attr]
            return None
        return packed

    def get(self, key: str, default: Known | None = None) -> Known | None:  # type: ignore[override]
        split = self._split(key)
        if split is not None:
            packed = self._packed_of(split)
            if packed is not None:
                value = self._values[split[0]]  # type: ignore[index]
                return Known(packed >> SEQ_BITS, value, packed & _SEQ_MASK)
        return self._other.get(key, default)

    def __getitem__(self, key: str) -> Known:
        known = self.get(key)
        if known is None:
            raise KeyError(key)
        return known

    def generation(self, key: str) -> int | None:
        split = self._split(key)
        if split is not None:
            packed = self._packed_of(split)
            if packed is not None:
                return packed >> SEQ_BITS
        known = self._other.get(key)
        return known.generation if known is not None else None

    def put(self, key: str, known: Known) -> None:
        """``key`` is ``known`` (not known before: the caller removed what it was). Its value
        is placed in ``values`` by the caller, before the next read."""
        split = self._split(key)
        value = known.value
        if split is not None and self._record is not None and isinstance(value, self._record):
            tid, queue = split
            ident = value.id if isinstance(value, TaskDef) else value.task_id
            if ident == tid and (not queue or getattr(value, "queue", None) == queue):
                if tid not in self._split_ids and tid not in self._packed:
                    # Keyed by the record's own id string: one string a task (``offer``).
                    self._packed[ident] = known.generation << SEQ_BITS | known.seq
                    return
                if tid in self._packed:  # an entry of this task in another queue
                    old = self._packed.pop(tid)
                    was = self._values[tid]  # type: ignore[index]
                    moved = f"{self._folder}{was.queue}/{tid}.json"  # type: ignore[union-attr]
                    self._other[moved] = Known(old >> SEQ_BITS, was, old & _SEQ_MASK)
                    self._split_ids.add(tid)
        self._other[key] = known

    def remove(self, key: str) -> None:
        split = self._split(key)
        if split is not None and self._packed_of(split) is not None:
            del self._packed[split[0]]
        else:
            self._other.pop(key, None)

    def confirm(self, key: str, seq: int) -> None:
        """A listing shows ``key`` (at whatever generation): its seq is raised to ``seq``, so
        that the listing marked by ``seq`` does not withdraw it (unknown keys: nothing)."""
        split = self._split(key)
        if split is not None:
            packed = self._packed_of(split)
            if packed is not None:
                if packed & _SEQ_MASK < seq:
                    self._packed[split[0]] = packed >> SEQ_BITS << SEQ_BITS | seq
                return
        known = self._other.get(key)
        if known is not None and known.seq < seq:
            self._other[key] = known._replace(seq=seq)

    def unconfirmed(self, before: int, batch: int) -> Iterator[list[str]]:
        """The keys whose seq is ``before`` or less (neither learned nor confirmed since), in
        lists, one per ``batch`` keys looked at: a caller gives the loop back between them.
        The keys are copied at once (references to the ids the records hold: no key string is made
        but for a match); each is looked up as its batch is made, so a change in between
        counts."""
        other = list(self._other)
        for start in range(0, len(other), batch):
            yield [
                key
                for key in other[start : start + batch]
                if (known := self._other.get(key)) is not None and known.seq <= before
            ]
        ids = list(self._packed)
        packed, folder, values = self._packed, self._folder, self._values
        for start in range(0, len(ids), batch):
            old = [
                tid
                for tid in ids[start : start + batch]
                if (p := packed.get(tid)) is not None and p & _SEQ_MASK <= before
            ]
            if not self._entries:
                yield [f"{folder}{tid}.json" for tid in old]
                continue
            assert values is not None
            yield [
                f"{folder}{entry.queue}/{tid}.json"  # type: ignore[union-attr]
                for tid in old
                if (entry := values.get(tid)) is not None
            ]

    def __len__(self) -> int:
        return len(self._packed) + len(self._other)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.generation(key) is not None

    def __iter__(self) -> Iterator[str]:
        """The keys as of this call (copied at once; the key strings are made as read, so a
        thread may read them)."""
        return self._keys(list(self._other), list(self._packed))

    def _keys(self, other: list[str], ids: list[str]) -> Iterator[str]:
        yield from other
        folder, values = self._folder, self._values
        if not self._entries:
            for tid in ids:
                yield f"{folder}{tid}.json"
            return
        assert values is not None
        for tid in ids:
            entry = values.get(tid)
            if entry is not None:
                yield f"{folder}{entry.queue}/{tid}.json"  # type: ignore[union-attr]


class Outcome(msgspec.Struct, frozen=True, gc=False):
    """A final task, for the outcome series and throughput (outlives its result record;
    untracked by the collector, as the records)."""

    status: str  # ResultStatus value
    queue: str | None
    created_at: float | None
    started_at: float | None
    completed_at: float
    source: str  # "results" or "events"
    # Seconds the function ran, as its worker measured it (None: not recorded). The record's
    # completed_at is later: the outcome waits out the per-name second before it is written.
    run_s: float | None = None


class Contribution(NamedTuple):
    """What one task adds to the running aggregates (subtracted when it changes)."""

    status: str | None  # counted in Snapshot.tasks (tasks with a definition)
    # Snapshot.results and failure groups count the same tasks (those with a definition); a
    # state record whose task is gone counts in ``orphan`` only.
    result_status: str | None
    error_type: str | None  # failure groups: error results only
    queue: str | None
    live: bool
    orphan: str | None = None


class BucketModel:
    """All objects of one layout (events excepted: see ``sources/events.py``)."""

    def __init__(self, layout: Layout, *, task_rows: bool = True) -> None:
        self.layout = layout
        self.task_rows_enabled = task_rows
        self.seq = 0
        self._tombstones: OrderedDict[str, int] = OrderedDict()
        self.unreadable: dict[str, UnreadableRow] = {}

        self.defs: dict[str, TaskDef] = {}
        self.states: dict[str, StateRecord] = {}
        self.entries: dict[str, Entry] = {}
        self.objects: dict[str, KnownObjects] = {
            "tasks": KnownObjects("tasks", layout.tasks, self.defs, TaskDef),
            "queues": KnownObjects("queues", layout.queues, self.entries, Entry),
            "results": KnownObjects("results", layout.results, self.states, StateRecord),
            **{kind: KnownObjects(kind) for kind in ("schedules", "workers", "paused")},
        }
        """Every key known, by kind."""
        self.workers: dict[str, Heartbeat] = {}
        self.paused: dict[str, PausedQueue] = {}
        self.schedules: dict[str, tuple[int, ScheduleRecord]] = {}

        # Equal contributions are one object: there are a few hundred distinct ones (status x
        # queue x error type), not one per task.
        self._shared: dict[Contribution, Contribution] = {}
        self._stale: dict[str, Contribution | None] = {}
        """Tasks whose objects changed since the aggregates were last brought up to date,
        each with what it counted then (None: nothing). A settled task's contribution is a
        function of its objects, so it is worked out when the task goes stale, not kept for
        every task (a dict of a million entries, ~50 MB)."""
        self._task_counts: Counter[str] = Counter({s.value: 0 for s in TaskStatus})
        self._result_counts: Counter[str] = Counter({s.value: 0 for s in ResultStatus})
        self._failures: Counter[str] = Counter()
        self._orphans: Counter[str] = Counter()
        self._queue_names: Counter[str] = Counter()
        self._running = RunningSet()
        self._waiting = WaitingSet()

        self._outcomes: dict[str, Outcome] = {}
        self._minutes: Counter[tuple[int, str]] = Counter()
        self._throughput = Throughput()
        # (completed_at, tid) of the outcomes, oldest first: what to forget is popped. An
        # entry whose outcome changed or went is dropped when it comes up.
        self._outcome_times: list[tuple[float, str]] = []
        self.outcome_changes = 0
        self._detached: set[str] = set()
        self._forget_after = -1.0
        self.outcomes_known_from: float | None = None
        """Outcomes completed before this time may be missing (their records were deleted
        before the monitor's first listing): see ``mark_outcomes_known``."""

        # Rows newest first: a tuple of them is then one C-level copy (100,000 rows in well
        # under a millisecond). Built and sorted lazily: a change only marks its task dirty,
        # and ``task_rows`` builds the dirty ones' rows and merges them in, so a cold load of
        # n tasks is one sort (O(n log n)), not n insertions into a list (O(n^2)), and a task
        # changed several times between two reads is built once. While nothing is placed, no
        # task is marked: the first read places them all. The placed rows are kept as the tuple
        # a snapshot takes (a list is copied for a merge, then frozen again): the collector
        # untracks a tuple of untracked rows at its first pass, where it walked a list of a
        # million rows, and the copy before it, at every collection that saw them.
        self._rows: tuple[TaskRow, ...] = ()
        self._place_all_pending = False
        self._row_keys: array[float] = array("d")
        """Each row's primary sort key (``-created``), at the row's position: 8 bytes a row,
        untracked by the collector; ties are ordered by id. Every task with a definition has
        its row placed at a merge, by its definition's ``created_at``."""
        self._placed: dict[str, TaskDef | None] = {}
        """The definition as placed (None: no row) of each task whose definition changed since
        the last merge; a task not here is placed by its definition as it is."""
        self._dirty: set[str] = set()
        self.changes = 0
        """Applied changes since the model was made (a change counter for cheap 'dirty')."""

    # -- the change rules -------------------------------------------------------------------

    def generation(self, kind: str, key: str) -> int | None:
        return self.objects[kind].generation(key)

    def keys(self, kind: str) -> Iterator[str]:
        return iter(self.objects[kind])

    def confirm(self, kind: str, key: str, seq: int) -> None:
        """A listing marked ``seq`` (``next_seq()`` when it was requested) shows ``key``: a
        key's seq is when the model last learned it or a listing showed it, so that a
        listing judges what it no longer shows from the model alone (``unconfirmed``), not
        from a copy of every key it listed."""
        self.objects[kind].confirm(key, seq)

    def unconfirmed(self, kind: str, before: int, batch: int) -> Iterator[list[str]]:
        """Keys of ``kind`` neither learned nor shown by a listing since ``seq`` was
        ``before``, in batches (see ``KnownObjects.unconfirmed``): after a listing of all of
        ``kind`` requested then, those it no longer shows."""
        return self.objects[kind].unconfirmed(before, batch)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def offer(self, kind: str, key: str, generation: int, value: Record | UnreadableRow) -> bool:
        """Take ``value`` as ``key``'s content at ``generation`` if that is newer than what is
        known (and was not deleted already). True when the model changed."""
        objects = self.objects[kind]
        known = objects.get(key)
        if known is not None and known.generation >= generation:
            return False
        if self._tombstones.get(key, -1) >= generation:
            return False
        if known is not None:
            objects.remove(key)
        value = self._shared_id(value)
        objects.put(key, Known(generation, value, self.next_seq()))
        self._replace(kind, key, known.value if known else None, value)
        return True

    def _shared_id(self, value: Record | UnreadableRow) -> Record | UnreadableRow:
        """``value``, holding the same id string as the model's other records of its task:
        each decoded record has a string of its own, and a task's three records, the model's
        maps and its row then share one (interning them instead would keep a table of every
        id, ~40 MB at a million tasks)."""
        # One class at a time: isinstance of a union is several times slower, and a cold
        # load of a million tasks comes through here 1.6 million times.
        if isinstance(value, TaskDef):
            tid = value.id
        elif isinstance(value, StateRecord) or isinstance(value, Entry):  # noqa: SIM101
            tid = value.task_id
        else:
            return value
        d = self.defs.get(tid)
        if d is not None:
            shared = d.id
        else:
            same = self.states.get(tid) or self.entries.get(tid)
            if same is None:
                return value
            shared = same.task_id
        if shared is tid:
            return value
        if isinstance(value, TaskDef):
            return msgspec.structs.replace(value, id=shared)
        return msgspec.structs.replace(value, task_id=shared)

    def withdraw(self, kind: str, key: str, generation: int | None, *, before: int = 0) -> bool:
        """``key`` is gone: at ``generation`` (a delete notice), or, with ``generation=None``,
        absent from a listing requested when the model's ``seq`` was ``before``."""
        known = self.objects[kind].get(key)
        if generation is not None:
            self._bury(key, generation)
            if known is None or generation < known.generation:
                return False
        elif known is None or known.seq > before:
            return False
        self.objects[kind].remove(key)
        self.seq += 1
        self._replace(kind, key, known.value, None)
        return True

    def _bury(self, key: str, generation: int) -> None:
        self._tombstones[key] = max(generation, self._tombstones.get(key, -1))
        self._tombstones.move_to_end(key)
        while len(self._tombstones) > TOMBSTONES:
            self._tombstones.popitem(last=False)

    # -- aggregates -------------------------------------------------------------------------

    def _replace(
        self,
        kind: str,
        key: str,
        old: Record | UnreadableRow | None,
        new: Record | UnreadableRow | None,
    ) -> None:
        self.changes += 1
        if isinstance(old, UnreadableRow):
            self.unreadable.pop(key, None)
        if isinstance(new, UnreadableRow):
            self.unreadable[key] = new
        # A task's id is its record's (which its key named, in the usual form): an object at
        # a key of another form is never a task's, and changes no task.
        tid: str | None = None
        if kind == "tasks":
            if self._rows:  # something is placed: what this task's row is placed by
                changed = new if isinstance(new, TaskDef) else old
                if isinstance(changed, TaskDef) and changed.id not in self._placed:
                    self._placed[changed.id] = self.defs.get(changed.id)
            if isinstance(new, TaskDef):
                tid = new.id
                self._mark(tid)
                self.defs[tid] = new
            elif isinstance(old, TaskDef):
                tid = old.id
                self._mark(tid)
                self.defs.pop(tid, None)
        elif kind == "results":
            if isinstance(new, StateRecord):
                tid = new.task_id
                self._mark(tid)
                self.states[tid] = new
            elif isinstance(old, StateRecord):
                tid = old.task_id
                if tid in self._stale:
                    # The record goes: what it meant (an outcome, which outlives it) is taken
                    # before it is lost.
                    self._refresh_task(tid, self._stale.pop(tid))
                self._mark(tid)
                self.states.pop(tid, None)
        elif kind == "queues":
            if isinstance(new, Entry):
                tid = new.task_id
                self._mark(tid)
                self.entries[tid] = new
            elif isinstance(old, Entry):
                tid = old.task_id
                if self.entries.get(tid) == old:
                    self._mark(tid)
                    del self.entries[tid]
        elif kind == "workers":
            ident = Layout.name_of(key)
            if isinstance(new, Heartbeat):
                self.workers[ident] = new
            else:
                self.workers.pop(ident, None)
        elif kind == "paused":
            ident = Layout.name_of(key)
            if isinstance(new, PausedQueue):
                self.paused[ident] = new
            else:
                self.paused.pop(ident, None)
        elif kind == "schedules":
            if isinstance(new, ScheduleRecord):
                self.schedules[key] = (self.objects[kind][key].generation, new)
            else:
                self.schedules.pop(key, None)

    def _mark(self, tid: str) -> None:
        """``tid``'s objects are about to change: unless it is stale already, what it counts
        now (before the change) is noted, to be taken back when it is settled."""
        if tid not in self._stale:
            self._stale[tid] = self._contribution(tid)

    def settle(self) -> None:
        """Bring the aggregates up to date with the changes since the last call: each task
        changed is joined again once, however many of its objects changed (a claim or a
        completion changes two or three; a cold listing brings each task's objects one by
        one). Every reader of the aggregates calls it first."""
        while self._stale:
            stale, self._stale = self._stale, {}
            for tid, old in stale.items():
                self._refresh_task(tid, old)

    async def settle_in_slices(self, size: int = SETTLE_SLICE) -> None:
        """``settle``, giving the event loop back every ``size`` tasks (a cold listing or a
        big change leaves tens of thousands stale)."""
        while self._stale:
            for _ in range(min(size, len(self._stale))):
                self._refresh_task(*self._stale.popitem())
            await asyncio.sleep(0)

    def _contribution(self, tid: str) -> Contribution | None:
        """What ``tid`` adds to the aggregates, from its objects as they are now."""
        return self._contribution_of(
            self.defs.get(tid), self.states.get(tid), self.entries.get(tid)
        )

    def _contribution_of(
        self, d: TaskDef | None, r: StateRecord | None, e: Entry | None
    ) -> Contribution | None:
        """What a task of these objects adds to the aggregates (None: it has none)."""
        if d is None and r is None and e is None:
            return None
        # Derived as ``get_task`` derives it: no state record means pending, whatever the
        # definition said when it was written.
        status = r.state if r is not None else (_PENDING if d is not None else None)
        queue = (d.queue if d else None) or (r.queue if r else None) or (e.queue if e else None)
        # The clock-dependent figures count a running task or one waiting in a queue. A task
        # waiting without an entry counts nowhere (the reaper re-creates the entry), and that
        # is also every final task whose result record was deleted (its definition alone
        # derives as pending): tens of thousands the builder walked a poll.
        live = (d is not None or e is not None) and status not in _FINAL
        counted = d is not None
        new = Contribution(  # positional: a third of the cost of keywords
            status if counted else None,  # status
            r.status if r is not None and counted else None,  # result_status
            (r.error_type or "unknown")  # error_type
            if r is not None and counted and r.status == _ERROR
            else None,
            queue,
            live,
            r.status if r is not None and not counted else None,  # orphan
        )
        if len(self._shared) > SHARED_CONTRIBUTIONS:  # free-text error types: stay bounded
            self._shared.clear()
        return self._shared.setdefault(new, new)

    def _refresh_task(self, tid: str, old: Contribution | None) -> None:
        """Join ``tid`` again from its objects; ``old`` is what it counted before they
        changed (``_mark``)."""
        d = self.defs.get(tid)
        r = self.states.get(tid)
        e = self.entries.get(tid)
        new = self._contribution_of(d, r, e)
        if new is not old:  # shared: an unchanged contribution is the same object
            if old is not None:
                self._count(old, -1)
            if new is not None:
                self._count(new, 1)
        if new is None:
            self._running.discard(tid)
            self._waiting.discard(tid)
            self._set_row(tid)
            self._detach(tid)
            return
        status = r.state if r is not None else _PENDING
        live, queue = new.live, new.queue
        if live and r is not None and status == _RUNNING:
            self._running.put(_live_task(tid, d, r, e))
        else:
            self._running.discard(tid)
        if live and status != _RUNNING and e is not None:
            self._waiting.put(tid, _waiter(d, r, e))
        else:
            self._waiting.discard(tid)
        if r is not None and r.error_type == lifecycle.DELETING:
            # A delete's fence: the task is about to be gone, which is no outcome.
            self._drop_outcome(tid)
        elif r is not None and r.state in _FINAL and r.completed_at is not None:
            created = (d.created_at if d else None) or r.created_at
            self._add_outcome(
                tid,
                Outcome(
                    r.status,
                    queue,
                    created,
                    r.started_at,
                    r.completed_at,
                    "results",
                    r.execution_time,
                ),
            )
        elif r is not None and r.state not in _FINAL:
            # A retried (operator retry) task is no longer an outcome.
            self._drop_outcome(tid)
        self._set_row(tid)
        self._detach(tid)

    def _detach(self, tid: str) -> None:
        o = self._outcomes.get(tid)
        if o is not None and (o.source != "results" or tid not in self.states):
            self._detached.add(tid)
        else:
            self._detached.discard(tid)

    def _count(self, c: Contribution, sign: int) -> None:
        if c.status is not None:
            self._task_counts[c.status] += sign
        if c.result_status is not None:
            self._result_counts[c.result_status] += sign
        if c.orphan is not None:
            self._orphans[c.orphan] += sign
            if self._orphans[c.orphan] <= 0:
                del self._orphans[c.orphan]
        if c.error_type is not None:
            self._failures[c.error_type] += sign
            if self._failures[c.error_type] <= 0:
                del self._failures[c.error_type]
        if c.queue is not None:
            self._queue_names[c.queue] += sign
            if self._queue_names[c.queue] <= 0:
                del self._queue_names[c.queue]

    # -- outcomes ---------------------------------------------------------------------------

    def add_outcome(self, tid: str, outcome: Outcome, *, only_if_new: bool = False) -> None:
        """Remember a final outcome (from a result record, or from an event when the record
        is gone; a record's outcome wins over an event's)."""
        self.settle()
        self._add_outcome(tid, outcome, only_if_new=only_if_new)

    def _add_outcome(self, tid: str, outcome: Outcome, *, only_if_new: bool = False) -> None:
        old = self._outcomes.get(tid)
        if old is not None and (only_if_new or old == outcome):
            return
        if old is not None:
            self._count_outcome(old, -1)
        self._outcomes[tid] = outcome
        self._count_outcome(outcome, 1)
        if old is None or old.completed_at != outcome.completed_at:
            heapq.heappush(self._outcome_times, (outcome.completed_at, tid))
            if len(self._outcome_times) > 2 * len(self._outcomes) + 4096:
                self._outcome_times = [(o.completed_at, t) for t, o in self._outcomes.items()]
                heapq.heapify(self._outcome_times)
        self.outcome_changes += 1
        self._detach(tid)

    def _count_outcome(self, o: Outcome, sign: int) -> None:
        self._minutes[(int(o.completed_at // MINUTE), o.status)] += sign
        wait = o.started_at - o.created_at if o.started_at and o.created_at else None
        # As the function ran; completed - started also holds the outcome's per-name wait.
        self._throughput.count(o.queue, o.completed_at, wait, o.run_s, o.status, sign)

    def oldest_outcome(self) -> float | None:
        """When the earliest outcome remembered completed."""
        self.settle()
        times = self._outcome_times
        while times:
            at, tid = times[0]
            o = self._outcomes.get(tid)
            if o is not None and o.completed_at == at:
                return at
            heapq.heappop(times)
        return None

    def _drop_outcome(self, tid: str) -> None:
        old = self._outcomes.pop(tid, None)
        if old is not None:
            self._count_outcome(old, -1)
            self.outcome_changes += 1
            self._detached.discard(tid)

    def mark_outcomes_known(self, now: float) -> None:
        """After the first listing: from when on every success and every failure is known.

        Retention deletes records by age, and often keeps failures longer than successes:
        before the oldest success still listed, successes may be gone while failures are
        not (a chart of only red bars). Both kinds are complete from the later of the two
        oldest outcomes listed (``now`` for a kind with none listed); from then on the
        monitor sees every outcome as it lands."""
        oldest: dict[str, float] = {}
        for r in self.states.values():
            if r.completed_at is not None and r.status in (_SUCCESS, _ERROR):
                oldest[r.status] = min(oldest.get(r.status, r.completed_at), r.completed_at)
        self.outcomes_known_from = max(oldest.get(_SUCCESS, now), oldest.get(_ERROR, now))

    def forget_outcomes(self, now: float, *, every: float = MINUTE) -> None:
        """Drop outcomes older than ``OUTCOME_KEEP_S`` (their minutes are off every chart) and
        the oldest beyond ``MAX_OUTCOMES``, popped oldest first; at most once per ``every``
        seconds (the minutes' sweep walks every minute counter)."""
        if now < self._forget_after:
            return
        self._forget_after = now + every
        self.settle()
        floor = now - OUTCOME_KEEP_S
        over = len(self._outcomes) > MAX_OUTCOMES
        while (oldest := self.oldest_outcome()) is not None and (
            oldest < floor or len(self._outcomes) > MAX_OUTCOMES
        ):
            self._drop_outcome(heapq.heappop(self._outcome_times)[1])
        if over and oldest is not None:
            # Minutes before the oldest kept are no longer whole: say so on the chart.
            floor = max(floor, oldest)
            self.outcomes_known_from = max(self.outcomes_known_from or floor, floor)
        for minute in [
            m for m, n in self._minutes.items() if n <= 0 or (m[0] + 1) * MINUTE <= floor
        ]:
            del self._minutes[minute]

    # -- task rows --------------------------------------------------------------------------

    def _row(self, tid: str, d: TaskDef, r: StateRecord | None) -> TaskRow:
        """A task's row: status, worker, attempt and retries from its state record (the one
        derived path, as ``get_task``), the definition's fields from the task object. The
        worker is the lease holder while it runs, who ran it last once it is final."""
        if r is None:
            return TaskRow(
                tid, d.queue, d.func, _PENDING, d.priority, d.created_at, d.run_at, 0, None,
                None, None, None, 0,
            )  # fmt: skip
        run_at = r.run_at if r.run_at is not None else d.run_at
        # As ``lifecycle.overlay``: nobody runs a task while it waits (a retry, a release).
        worker = r.worker_id if r.state != _PENDING else None
        return TaskRow(
            tid, d.queue, d.func, r.state, d.priority, d.created_at, run_at, r.retry_count,
            worker, r.error_type, r.started_at, r.completed_at, r.attempt,
        )  # fmt: skip

    def _set_row(self, tid: str) -> None:
        if not self.task_rows_enabled:
            return
        if not self._rows:
            # Nothing placed (a cold load): the next read places every task's row at once,
            # with no set of a million dirty ids meanwhile.
            self._place_all_pending = True
        elif tid in self.defs or tid in self._placed:
            self._dirty.add(tid)

    def task_rows(self) -> tuple[TaskRow, ...]:
        """Every task's row, newest first (copied only after a change)."""
        self.settle()
        for _ in self._update_rows(ROW_SLICE):
            pass
        return self._rows

    async def task_rows_in_slices(self, size: int = ROW_SLICE) -> tuple[TaskRow, ...]:
        """``task_rows``, giving the event loop back every ``size`` rows built (a 1% change
        of a million tasks is ten thousand rows to build and place: ~50 ms in one go)."""
        await self.settle_in_slices()
        for _ in self._update_rows(size):
            await asyncio.sleep(0)
        return self._rows

    def _update_rows(self, size: int) -> Iterator[None]:
        """Bring the rows up to date, pausing (a yield) every ``size`` rows built."""
        if not self._rows:
            if self._place_all_pending:
                yield from self._place_all(size)
        elif self._dirty:
            yield from self._merge_dirty(size)

    def _place_all(self, size: int) -> Iterator[None]:
        """Every task's row, sorted (nothing was placed). The model's state changes only
        after the last pause: a caller cancelled at a pause (a poll's time-out) leaves it as
        it was, for the next read to do again."""
        defs, states = self.defs, self.states
        ids = list(defs)
        rows: list[TaskRow] = []
        for start in range(0, len(ids), size):
            rows += [
                self._row(tid, d, states.get(tid))
                for tid in ids[start : start + size]
                if (d := defs.get(tid)) is not None
            ]
            yield
        self._place_all_pending = False
        self._dirty.clear()
        self._placed.clear()
        self._row_keys = _sorted_rows(rows)
        self._rows = tuple(rows)

    def _merge_dirty(self, size: int) -> Iterator[None]:
        """Bring the rows up to date with the dirty tasks: a row whose sort key is unchanged
        is replaced where it sits (a binary search); the rows that went are cut out and the new
        ones sorted and spliced in, the rows rebuilt once from slices (C-level copies, O(n),
        however many rows changed). As ``_place_all``, nothing of the model changes before the
        last pause."""
        defs, states, placed = self.defs, self.states, self._placed
        gone: list[int] = []
        new: list[TaskRow] = []
        replaced: list[tuple[int, TaskRow]] = []
        rows = self._rows
        dirty = list(self._dirty)
        for n, tid in enumerate(dirty, 1):
            if n % size == 0:
                yield
            d = defs.get(tid)
            row = self._row(tid, d, states.get(tid)) if d is not None else None
            before = placed.get(tid, d)
            if before is not None:
                at = self._position(rows, _sort_key(before.created_at, tid))
                if d is not None and row is not None and d.created_at == before.created_at:
                    replaced.append((at, row))
                    continue
                gone.append(at)
            if row is not None:
                new.append(row)
        self._dirty.difference_update(dirty)
        for tid in dirty:
            placed.pop(tid, None)
        # The rows are rebuilt in one go, with no yield: a list of every row alive across the
        # slices above was walked by each collection meanwhile (~5 ms a walk at a million).
        listed = list(rows)
        for at, row in replaced:
            listed[at] = row
        if gone:
            gone.sort()
            listed = _without(listed, gone, [])
            self._row_keys = _without(self._row_keys, gone, array("d"))
        if new:
            keys = _sorted_rows(new)
            if not listed:  # every row went: the new ones are the order
                listed, self._row_keys = new, keys
            else:
                places = [
                    self._position(listed, (key, row.id))
                    for key, row in zip(keys, new, strict=True)
                ]
                listed = _spliced(listed, places, new, [])
                self._row_keys = _spliced(self._row_keys, places, keys, array("d"))
        self._rows = tuple(listed)

    def _position(self, rows: Sequence[TaskRow], key: tuple[float, str]) -> int:
        """Where the row of sort key ``key`` sits (or would) in ``rows`` (the placed rows,
        whose primary keys ``_row_keys`` holds)."""
        first, tid = key
        keys = self._row_keys
        lo = bisect.bisect_left(keys, first)
        hi = bisect.bisect_right(keys, first, lo)
        if hi - lo <= 1 and (lo == hi or rows[lo].id >= tid):
            return lo
        return bisect.bisect_left(rows, tid, lo, hi, key=_row_id)

    # -- the aggregates, up to date ---------------------------------------------------------

    @property
    def task_counts(self) -> Counter[str]:
        """Tasks with a definition, by derived status."""
        self.settle()
        return self._task_counts

    @property
    def result_counts(self) -> Counter[str]:
        """State records of tasks with a definition, by result status."""
        self.settle()
        return self._result_counts

    @property
    def failures(self) -> Counter[str]:
        """Error results by error type (failure groups)."""
        self.settle()
        return self._failures

    @property
    def orphans(self) -> Counter[str]:
        """State records whose task is gone, by result status (not in ``result_counts``)."""
        self.settle()
        return self._orphans

    @property
    def queue_names(self) -> Counter[str]:
        """Tasks by queue."""
        self.settle()
        return self._queue_names

    @property
    def running(self) -> RunningSet:
        """Running tasks, joined from their objects."""
        self.settle()
        return self._running

    @property
    def waiting(self) -> WaitingSet:
        """Tasks waiting in a queue (with an entry), classed by the clock."""
        self.settle()
        return self._waiting

    @property
    def outcomes(self) -> dict[str, Outcome]:
        """Final outcomes by task (outliving their result records)."""
        self.settle()
        return self._outcomes

    @property
    def minutes(self) -> Counter[tuple[int, str]]:
        """Outcomes by (minute, status)."""
        self.settle()
        return self._minutes

    @property
    def throughput(self) -> Throughput:
        """Per-queue throughput windows, kept per outcome."""
        self.settle()
        return self._throughput

    @property
    def detached(self) -> set[str]:
        """Outcomes known from events, or whose result record is gone (``outcome_source``)."""
        self.settle()
        return self._detached

    @property
    def rows(self) -> dict[str, TaskRow]:
        """Each task's row (with a definition), by id (built: for tests and tools)."""
        return {row.id: row for row in self.task_rows()}

    # -- the clock-dependent part -----------------------------------------------------------

    def running_tasks(self) -> Iterator[LiveTask]:
        """Tasks running (their leases' holders)."""
        self.settle()
        return self._running.values()


def _waiter(d: TaskDef | None, r: StateRecord | None, e: Entry) -> Waiter:
    if r is not None and r.run_at is not None:
        run_at: float | None = r.run_at  # a retry's due time
    else:
        run_at = e.run_at
    created = e.created_at or (d.created_at if d else None)
    # A delayed task has waited since its run_at, not since it was enqueued.
    since = max((t for t in (created, run_at) if t is not None), default=None)
    return Waiter(e.queue, run_at, e.expires_at, since)


def _live_task(tid: str, d: TaskDef | None, r: StateRecord, e: Entry | None) -> LiveTask:
    return LiveTask(
        tid,
        (d.queue if d else None) or (e.queue if e else None) or "",  # queue
        (d.func if d else None) or r.func or "",  # func
        e,
        r.worker_id,
        r.lease_expires_at,
    )


def _sort_key(created: float | None, tid: str) -> tuple[float, str]:
    """Newest first; ties in id order (a stable, listing-like order)."""
    return (-(created if created is not None else 0.0), tid)


def _sorted_rows(rows: list[TaskRow]) -> array[float]:
    """Sort ``rows`` in place, newest first, ties in id order; their primary keys. Two
    stable sorts by single keys the rows hold: no key tuple per row (a cold load sorts a
    million)."""
    rows.sort(key=_row_id)
    rows.sort(key=_created, reverse=True)
    return array("d", map(_first_key, rows))


def _created(row: TaskRow) -> float:
    created = row.created_ts
    return created if created is not None else 0.0


def _first_key(row: TaskRow) -> float:
    """A row's primary sort key (``_sort_key``'s first part)."""
    return -_created(row)


def _row_id(row: TaskRow) -> str:
    return row.id


def _without(items: S, cuts: list[int], out: S) -> S:
    """``items`` without the positions ``cuts`` (sorted, distinct), built from slices into
    ``out`` (empty)."""
    start = 0
    for at in cuts:
        out += items[start:at]
        start = at + 1
    out += items[start:]
    return out


def _spliced(items: S, at: list[int], inserted: S, out: S) -> S:
    """``items`` with ``inserted[i]`` placed before ``items[at[i]]`` (``at`` ascending, so
    ``inserted`` keeps its order), built from slices into ``out`` (empty)."""
    start = 0
    for pos, item in zip(at, inserted, strict=True):
        out += items[start:pos]
        out.append(item)
        start = pos
    out += items[start:]
    return out
