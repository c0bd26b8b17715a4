"""The monitor's model: generation rules for mixed, repeated and reordered change sources,
running aggregates that equal a recount, and request rates that wait for a window."""

from __future__ import annotations

import asyncio
import gc
import random
import time

import pytest

from omniq_console.backend.layout import Layout
from omniq_console.backend.objectstore import RequestStats
from omniq_console.monitor.model import BucketModel
from omniq_console.monitor.records import Entry, StateRecord, TaskDef, decoders, parse_body
from omniq_console.monitor.requests import RequestMeter
from omniq_console.monitor.snapshot import TaskRow, UnreadableRow

LAYOUT = Layout("omniq/")
NOW = 1_800_000_000.0


def task(tid: str, queue: str = "q", created: float = NOW - 60) -> TaskDef:
    return TaskDef(tid, queue, "f", 0, None, created)


def entry(tid: str, queue: str = "q") -> Entry:
    return Entry(tid, queue, 0, None, None, NOW - 60, None, 0, None)


def state(
    tid: str, st: str, status: str, *, done: float | None = None, error: str | None = None
) -> StateRecord:
    return StateRecord(
        tid, status, st, "q", "f", 1, "w" if st == "running" else None, 30.0, NOW + 30, None,
        0, NOW - 60, NOW - 30, done, error, None, 0.1,
    )  # fmt: skip


def test_newer_generations_replace_and_older_or_equal_change_nothing() -> None:
    m = BucketModel(LAYOUT)
    key = LAYOUT.result("t1")
    m.offer("tasks", LAYOUT.task("t1"), 1, task("t1"))
    assert m.offer("results", key, 5, state("t1", "running", "pending"))
    assert not m.offer("results", key, 5, state("t1", "running", "pending"))  # duplicate
    assert not m.offer("results", key, 3, state("t1", "failed", "error", done=NOW))  # older
    assert m.task_counts["running"] == 1
    assert m.offer("results", key, 9, state("t1", "completed", "success", done=NOW))
    assert (m.task_counts["running"], m.task_counts["completed"]) == (0, 1)


def test_a_delete_removes_only_the_generation_it_names_and_stays_deleted() -> None:
    m = BucketModel(LAYOUT)
    key = LAYOUT.task("t1")
    m.offer("tasks", key, 7, task("t1"))
    # An overwrite's notice about the generation it replaced changes nothing.
    assert not m.withdraw("tasks", key, 6)
    assert m.task_counts["pending"] == 1
    assert m.withdraw("tasks", key, 7)
    assert m.task_counts["pending"] == 0
    # The finalize of that generation arriving late does not bring it back.
    assert not m.offer("tasks", key, 7, task("t1"))
    # A delete that overtook its own finalize: the finalize is refused when it comes.
    assert not m.withdraw("tasks", LAYOUT.task("t2"), 4)
    assert not m.offer("tasks", LAYOUT.task("t2"), 4, task("t2"))
    assert m.offer("tasks", LAYOUT.task("t2"), 5, task("t2"))  # a newer object is new


def test_a_listing_removes_only_what_the_model_knew_before_it_was_requested() -> None:
    m = BucketModel(LAYOUT)
    m.offer("tasks", LAYOUT.task("old"), 1, task("old"))
    before = m.seq
    m.offer("tasks", LAYOUT.task("new"), 1, task("new"))  # arrived while the listing ran
    assert not m.withdraw("tasks", LAYOUT.task("new"), None, before=before)
    assert m.withdraw("tasks", LAYOUT.task("old"), None, before=before)
    assert set(m.defs) == {"new"}


def _final_state(
    events: list[tuple[str, str, int, object]],
) -> dict[tuple[str, str], tuple[int, object]]:
    out: dict[tuple[str, str], tuple[int, object]] = {}
    for kind, key, gen, value in events:
        cur = out.get((kind, key))
        if cur is None or gen > cur[0]:
            out[(kind, key)] = (gen, value)
    return out


@pytest.mark.parametrize("seed", range(8))
def test_running_aggregates_equal_a_recount_whatever_the_order(seed: int) -> None:
    rng = random.Random(seed)
    history: list[tuple[str, str, int, object]] = []
    gen = 0
    for i in range(60):
        tid = f"t{i:03d}"
        queue = rng.choice(["a", "b"])
        gen += 1
        history.append(("tasks", LAYOUT.task(tid), gen, task(tid, queue)))
        gen += 1
        history.append(("queues", LAYOUT.queue_entry(queue, tid), gen, entry(tid, queue)))
        steps = rng.randint(0, 3)
        if steps >= 1:
            gen += 1
            history.append(("results", LAYOUT.result(tid), gen, state(tid, "running", "pending")))
        if steps >= 2:
            gen += 1
            outcome = rng.choice([("completed", "success", None), ("failed", "error", "E")])
            history.append(("results", LAYOUT.result(tid), gen,
                            state(tid, outcome[0], outcome[1], done=NOW - rng.randint(0, 900),
                                  error=outcome[2])))  # fmt: skip
            gen += 1
            history.append(("queues", LAYOUT.queue_entry(queue, tid), gen, None))  # deleted
    shuffled = history + rng.sample(history, 40)  # duplicates
    rng.shuffle(shuffled)

    live = BucketModel(LAYOUT)
    for kind, key, g, value in shuffled:
        if value is None:
            live.withdraw(kind, key, _created_gen(history, kind, key))
        else:
            live.offer(kind, key, g, value)  # type: ignore[arg-type]
    once = BucketModel(LAYOUT)
    for (kind, key), (g, value) in sorted(_final_state(history).items()):
        if value is not None:
            once.offer(kind, key, g, value)  # type: ignore[arg-type]
    assert live.task_counts == once.task_counts
    assert live.result_counts == once.result_counts
    assert live.failures == once.failures
    assert +live.minutes == +once.minutes
    assert sorted(live.running) == sorted(once.running)
    assert set(live.entries) == set(once.entries)
    assert (live.running.by_queue, live.running.claimed, live.running.held) == (
        once.running.by_queue, once.running.claimed, once.running.held)  # fmt: skip
    assert live.waiting.counts == once.waiting.counts
    assert live.task_rows() == once.task_rows()
    later = NOW + 3600
    assert live.throughput.windows(later, live.oldest_outcome()) == once.throughput.windows(
        later, once.oldest_outcome()
    )


def _created_gen(history: list[tuple[str, str, int, object]], kind: str, key: str) -> int:
    return next(g for k, name, g, v in history if k == kind and name == key and v is not None)


def test_outcomes_outlive_deleted_result_records() -> None:
    m = BucketModel(LAYOUT)
    m.offer("tasks", LAYOUT.task("t"), 1, task("t"))
    m.offer("results", LAYOUT.result("t"), 2, state("t", "completed", "success", done=NOW))
    m.withdraw("results", LAYOUT.result("t"), 2)  # the TTL cleanup
    assert m.result_counts["success"] == 0
    assert sum(n for (_, s), n in m.minutes.items() if s == "success") == 1
    m.forget_outcomes(NOW + 7 * 3600)
    assert not m.outcomes and not +m.minutes


def test_metadata_the_stores_would_refuse_is_reported_with_its_reason() -> None:
    decode = decoders(LAYOUT)
    bad_ids = ["esc\x1bape", "rtl\u202eevil", "x" * 201, "nul\x00id"]
    for ident in bad_ids:
        row = decode["tasks"](f"{LAYOUT.tasks}{ident}.json", {"omniq_index": "1", "queue": "q"})
        assert isinstance(row, UnreadableRow) and "refused by the stores" in row.reason, ident
        assert "\x1b" not in row.reason and "\u202e" not in row.reason and "\x00" not in row.reason
    # An out-of-range date (it overflows when made UTC) is this object's problem only: its
    # body decides (read next), and is reported if it is bad too.
    md = {"omniq_index": "1", "queue": "q", "created_at": "0001-01-01T00:00:00+01:00"}
    assert decode["tasks"](LAYOUT.task("t"), md) is None
    body = b'{"id": "t", "func": "f", "created_at": "9999-12-31T23:59:59-01:00"}'
    row = parse_body(LAYOUT, "tasks", LAYOUT.task("t"), body)
    assert isinstance(row, UnreadableRow), row


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_rate_needs_a_window_and_a_paused_monitor_has_no_live_cost() -> None:
    stats = RequestStats()
    clock = Clock()
    meter = RequestMeter(lambda: stats, clock)
    meter.sample()
    with meter.metered():  # requests count while the monitor has work in flight
        stats.count["list"] += 600
    clock.now += 10
    meter.sample()
    first = meter.figures(paused=False)
    assert first.requests_per_minute is None and first.cost_per_hour_usd is None
    with meter.metered():
        stats.count["list"] += 600
    clock.now += 20
    meter.sample()  # 3 polls over 30 s: a window
    figures = meter.figures(paused=False)
    assert figures.requests_per_minute == pytest.approx(2400)
    assert figures.cost_per_hour_usd == pytest.approx(2400 * 60 * 0.05 / 10_000)
    assert figures.window_s == 30
    paused = meter.figures(paused=True)
    assert paused.paused and paused.requests_per_minute is None


def test_what_the_model_remembers_beside_the_bucket_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Outcomes of tasks long deleted, tombstones of deleted generations and event keys seen
    # through the feed: each has a bound, so a long-running console does not grow with time.
    from omniq_console.monitor import model as model_module
    from omniq_console.monitor.model import Outcome
    from omniq_console.monitor.sources import events as events_module
    from omniq_console.monitor.sources.events import EventTail

    monkeypatch.setattr(model_module, "MAX_OUTCOMES", 100)
    monkeypatch.setattr(model_module, "TOMBSTONES", 50)
    monkeypatch.setattr(events_module, "SEEN_KEEP", 30)
    m = BucketModel(LAYOUT)
    for n in range(1_000):
        m.add_outcome(f"t{n}", Outcome("success", "q", None, None, NOW - 1_000 + n, "events"))
        m.withdraw("tasks", LAYOUT.task(f"t{n}"), n + 1)
    m.forget_outcomes(NOW)
    assert len(m.outcomes) == 100 and len(m.detached) == 100
    assert m.outcomes_known_from == NOW - 100  # the minutes before are no longer whole
    assert sum(m.minutes.values()) == 100
    assert len(m._tombstones) == 50
    tail = EventTail(LAYOUT, decoders(LAYOUT)["events"], keep=10)
    for n in range(1_000):
        tail.mark_seen([LAYOUT.event(f"{n:08x}-0000-7000-8000-000000000000")])
    assert len(tail._seen) == 30


@pytest.mark.parametrize("seed", range(6))
def test_task_rows_stay_newest_first_through_any_changes_read_at_any_time(seed: int) -> None:
    rng = random.Random(seed)
    m = BucketModel(LAYOUT)
    gens: dict[str, int] = {}
    for step in range(600):
        tid = f"t{rng.randrange(80):02d}"
        gen = gens.get(tid, 0) + 1
        gens[tid] = gen
        op = rng.random()
        if op < 0.5:  # new or re-created, perhaps at another time (ties included)
            m.offer("tasks", LAYOUT.task(tid), gen, task(tid, created=NOW - rng.randrange(30)))
        elif op < 0.8:  # a new state, same key
            st = rng.choice([("running", "pending"), ("completed", "success")])
            m.offer("results", LAYOUT.result(tid), gen, state(tid, *st, done=NOW))
        elif m.generation("tasks", LAYOUT.task(tid)) is not None:
            m.withdraw("tasks", LAYOUT.task(tid), m.generation("tasks", LAYOUT.task(tid)))
        if step % rng.choice([1, 7, 50]) == 0:
            rows = m.task_rows()
            # Every task's row as built afresh from its records, in order.
            fresh = [m._row(t, d, m.states.get(t)) for t, d in m.defs.items()]
            expected = sorted(fresh, key=lambda r: (-r.created_at.timestamp(), r.id))  # type: ignore[union-attr]
            assert rows == tuple(expected)
    assert len(m.task_rows()) == len(m.defs)


def test_rows_are_placed_again_after_every_task_went() -> None:
    # While nothing is placed the model marks no task (a cold load places all at once); a
    # bucket emptied and filled again must come back whole, in order, with its states.
    m = BucketModel(LAYOUT)
    for i in range(5):
        m.offer("tasks", LAYOUT.task(f"a{i}"), 1, task(f"a{i}", created=NOW - i))
    assert [r.id for r in m.task_rows()] == [f"a{i}" for i in range(5)]
    for i in range(5):
        m.withdraw("tasks", LAYOUT.task(f"a{i}"), 1)
    assert m.task_rows() == ()
    for i in range(3):
        m.offer("tasks", LAYOUT.task(f"b{i}"), 2, task(f"b{i}", created=NOW + i))
    m.offer("results", LAYOUT.result("b1"), 3, state("b1", "running", "pending"))
    rows = m.task_rows()
    assert [(r.id, r.status) for r in rows] == [
        ("b2", "pending"),
        ("b1", "running"),
        ("b0", "pending"),
    ]
    m.offer("results", LAYOUT.result("b0"), 4, state("b0", "completed", "success", done=NOW))
    assert [(r.id, r.status) for r in m.task_rows()][2] == ("b0", "completed")


def test_rows_built_in_slices_give_the_loop_back_and_equal_the_rows_built_at_once() -> None:
    # A 1% change at a million tasks is ten thousand rows to build and place (~50 ms): the
    # poll builds them in slices, the loop given back between them.
    sliced, whole = BucketModel(LAYOUT), BucketModel(LAYOUT)
    for m in (sliced, whole):
        for i in range(3_000):
            m.offer("tasks", LAYOUT.task(f"t{i:04d}"), 1, task(f"t{i:04d}", created=NOW - i))
        m.task_rows()
        for i in range(0, 3_000, 2):
            m.offer("results", LAYOUT.result(f"t{i:04d}"), 2, state(f"t{i:04d}", "running", "pending"))
        m.offer("tasks", LAYOUT.task("new"), 3, task("new", created=NOW + 1))

    async def build() -> tuple[tuple[TaskRow, ...], int]:
        turns = 0
        done = False

        async def count() -> None:
            nonlocal turns
            while not done:
                turns += 1
                await asyncio.sleep(0)

        counter = asyncio.create_task(count())
        rows = await sliced.task_rows_in_slices(size=100)
        done = True
        await counter
        return rows, turns

    rows, turns = asyncio.run(build())
    assert turns >= 15  # 1,501 rows in slices of 100
    assert rows == whole.task_rows()
    assert rows[0].id == "new" and rows[1].status == "running"


@pytest.mark.parametrize("placed_before", [False, True])
def test_rows_built_in_slices_and_cancelled_half_way_are_built_whole_by_the_next_read(
    placed_before: bool,
) -> None:
    # A poll's time-out cancels it at any pause, the row merge's included: what it had done
    # must not leave the model thinking the rows are up to date.
    m = BucketModel(LAYOUT)
    for i in range(1_000):
        m.offer("tasks", LAYOUT.task(f"t{i:04d}"), 1, task(f"t{i:04d}", created=NOW - i))
    if placed_before:
        m.task_rows()
        for i in range(0, 1_000, 2):
            m.offer("results", LAYOUT.result(f"t{i:04d}"), 2, state(f"t{i:04d}", "running", "pending"))
        m.offer("tasks", LAYOUT.task("new"), 3, task("new", created=NOW + 1))

    async def cancelled_half_way() -> None:
        building = asyncio.create_task(m.task_rows_in_slices(size=100))
        for _ in range(4):
            await asyncio.sleep(0)
        building.cancel()
        with pytest.raises(asyncio.CancelledError):
            await building

    asyncio.run(cancelled_half_way())
    rows = m.task_rows()
    fresh = sorted(
        (m._row(t, d, m.states.get(t)) for t, d in m.defs.items()),
        key=lambda r: (-(r.created_ts or 0.0), r.id),
    )
    assert rows == tuple(fresh)
    assert len(rows) == (1_001 if placed_before else 1_000)


def test_the_placed_rows_are_nothing_the_collector_walks() -> None:
    # At a million tasks the collector walked the list of every row (and the tuple copied
    # from it) at each collection that saw them: ~100 ms pauses in the poll. The rows are
    # kept as one tuple of untracked rows, which the collector untracks at its first pass.
    m = BucketModel(LAYOUT)
    for i in range(1_000):
        m.offer("tasks", LAYOUT.task(f"t{i:04d}"), 1, task(f"t{i:04d}", created=NOW - i))
    m.task_rows()
    m.offer("results", LAYOUT.result("t0001"), 2, state("t0001", "running", "pending"))
    rows = m.task_rows()
    gc.collect()
    assert not gc.is_tracked(rows)
    assert not [v for v in vars(m).values() if isinstance(v, list) and len(v) >= 1_000]


def test_a_cold_load_of_many_tasks_sorts_once() -> None:
    """Inserting each row into sorted lists costs O(n) a row (the newest, listed last, goes
    first): 200,000 rows took minutes. Marked dirty and sorted once when read: well under a
    second (five allowed for a loaded machine)."""
    n = 200_000
    m = BucketModel(LAYOUT)
    defs = [task(f"t{i:06d}", created=NOW - n + i) for i in range(n)]
    started = time.process_time()
    for d in defs:
        m.defs[d.id] = d
        m._set_row(d.id)
    rows = m.task_rows()
    took = time.process_time() - started
    assert [r.id for r in rows[:2]] == [f"t{n - 1:06d}", f"t{n - 2:06d}"]
    assert len(rows) == n
    assert took < 5.0, took


def test_final_tasks_whose_records_are_gone_leave_the_live_set() -> None:
    m = BucketModel(LAYOUT)
    for tid in ("done", "waits", "runs"):
        m.offer("tasks", LAYOUT.task(tid), 1, task(tid))
    m.offer("queues", LAYOUT.queue_entry("q", "waits"), 2, entry("waits"))
    m.offer("results", LAYOUT.result("runs"), 3, state("runs", "running", "pending"))
    m.offer("results", LAYOUT.result("done"), 4, state("done", "completed", "success", done=NOW))
    assert set(m.running) == {"runs"} and "waits" in m.waiting and len(m.waiting) == 1
    # Retention deletes the result record: the definition alone derives as pending, but
    # without an entry the task waits nowhere, and no clock-dependent figure counts it.
    m.withdraw("results", LAYOUT.result("done"), 4)
    assert set(m.running) == {"runs"} and "waits" in m.waiting and len(m.waiting) == 1
    assert m.task_counts["pending"] == 2  # as get_task derives it


def test_a_task_whose_objects_change_together_is_joined_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A cold listing brings each task's definition, entry and state record one by one, a
    # completion changes the record and deletes the entry: the task is joined again once when
    # the aggregates are read, not per object.
    m = BucketModel(LAYOUT)
    joined: list[str] = []
    refresh = m._refresh_task
    monkeypatch.setattr(
        m, "_refresh_task", lambda tid, old: (joined.append(tid), refresh(tid, old))
    )
    for i in range(10):
        tid = f"t{i}"
        m.offer("tasks", LAYOUT.task(tid), 1, task(tid))
        m.offer("queues", LAYOUT.queue_entry("q", tid), 2, entry(tid))
        m.offer("results", LAYOUT.result(tid), 3, state(tid, "running", "pending"))
    assert m.task_counts["running"] == 10 and len(m.running) == 10
    assert sorted(joined) == sorted(f"t{i}" for i in range(10))


def test_an_outcome_whose_record_goes_before_the_model_is_read_is_kept() -> None:
    # Completed and deleted by the TTL cleanup between two reads: the outcome outlives its
    # record as when each change was joined at once.
    m = BucketModel(LAYOUT)
    m.offer("tasks", LAYOUT.task("t"), 1, task("t"))
    m.offer("results", LAYOUT.result("t"), 2, state("t", "completed", "success", done=NOW))
    m.withdraw("results", LAYOUT.result("t"), 2)
    assert set(m.outcomes) == {"t"} and m.outcomes["t"].status == "success"
    assert sum(n for (_, s), n in m.minutes.items() if s == "success") == 1
