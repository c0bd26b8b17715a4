"""The model's key store (``KnownObjects``): a task's objects kept by id as packed ints behave
as the plain dict of ``Known`` by key that they replace, under any sequence of changes."""

from __future__ import annotations

import random
from typing import NamedTuple

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omniq_console.backend.layout import Layout
from omniq_console.monitor import model
from omniq_console.monitor.model import BucketModel, KnownObjects
from omniq_console.monitor.records import Entry, Record, StateRecord, TaskDef
from omniq_console.monitor.snapshot import UnreadableRow

LAYOUT = Layout("omniq/")
NOW = 1_800_000_000.0
IDS = ("a", "b")
QUEUES = ("q1", "q2")


def _value(kind: str, key: str, readable: bool) -> Record | UnreadableRow:
    """What a decoder makes of ``key``: its kind's record (id and queue from the key), or
    unreadable (always, for a key outside the usual form)."""
    name = Layout.name_of(key)
    odd = key.count("/") != (3 if kind == "queues" else 2)
    if not readable or odd:
        return UnreadableRow(key=key, reason="bad")
    if kind == "tasks":
        return TaskDef(name, "q1", "f", 0, None, NOW)
    if kind == "queues":
        queue = key.split("/")[2]
        return Entry(name, queue, 0, None, None, NOW, None, 0, None)
    return StateRecord(
        name, "pending", "running", "q1", "f", 1, "w", 30.0, NOW, None, 0, NOW, NOW, None,
        None, None, None,
    )  # fmt: skip


KEYS = {
    "tasks": [LAYOUT.task(t) for t in IDS] + ["omniq/tasks/x/a.json", "omniq/tasks/a.txt"],
    "results": [LAYOUT.result(t) for t in IDS] + ["omniq/results/.json"],
    "queues": [LAYOUT.queue_entry(q, t) for q in QUEUES for t in IDS] + ["omniq/queues/a.json"],
}


class Op(NamedTuple):
    kind: str
    key: int
    action: str  # offer, delete (a notice at a generation), unlist (absent from a listing)
    generation: int
    readable: bool
    before: int


ops = st.lists(
    st.builds(
        Op,
        st.sampled_from(sorted(KEYS)),
        st.integers(0, 5),
        st.sampled_from(["offer", "offer", "delete", "unlist"]),
        st.integers(1, 8),
        st.booleans(),
        st.integers(0, 40),
    ),
    max_size=60,
)


class Reference:
    """The rules of ``BucketModel.offer``/``withdraw`` over a plain dict, as they were."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, tuple[int, object, int]]] = {k: {} for k in KEYS}
        self.tombstones: dict[str, int] = {}
        self.seq = 0

    def offer(self, kind: str, key: str, generation: int, value: object) -> bool:
        known = self.objects[kind].get(key)
        if known is not None and known[0] >= generation:
            return False
        if self.tombstones.get(key, -1) >= generation:
            return False
        self.seq += 1
        self.objects[kind][key] = (generation, value, self.seq)
        return True

    def withdraw(self, kind: str, key: str, generation: int | None, before: int) -> bool:
        known = self.objects[kind].get(key)
        if generation is not None:
            self.tombstones[key] = max(generation, self.tombstones.get(key, -1))
            if known is None or generation < known[0]:
                return False
        elif known is None or known[2] > before:
            return False
        del self.objects[kind][key]
        self.seq += 1
        return True


@settings(max_examples=400, deadline=None)
@given(ops)
def test_the_key_store_answers_as_a_dict_of_every_key(steps: list[Op]) -> None:
    m = BucketModel(LAYOUT)
    ref = Reference()
    for op in steps:
        keys = KEYS[op.kind]
        key = keys[op.key % len(keys)]
        if op.action == "offer":
            value = _value(op.kind, key, op.readable)
            assert m.offer(op.kind, key, op.generation, value) == ref.offer(
                op.kind, key, op.generation, value
            )
        else:
            generation = op.generation if op.action == "delete" else None
            assert m.withdraw(op.kind, key, generation, before=op.before) == ref.withdraw(
                op.kind, key, generation, op.before
            )
        assert m.seq == ref.seq
        for kind, known in ref.objects.items():
            store = m.objects[kind]
            assert sorted(m.keys(kind)) == sorted(known)
            assert len(store) == len(known)
            for k in KEYS[kind]:
                want = known.get(k)
                assert m.generation(kind, k) == (want[0] if want else None)
                got = store.get(k)
                assert (tuple(got) if got else None) == want
                assert (k in store) == (want is not None)
    m.settle()
    # The records by task are what the keys hold: one entry per task, of its latest queue.
    assert set(m.defs) == {Layout.name_of(k) for k, (_, v, _) in ref.objects["tasks"].items()
                           if isinstance(v, TaskDef)}  # fmt: skip
    assert set(m.states) == {Layout.name_of(k) for k, (_, v, _) in ref.objects["results"].items()
                             if isinstance(v, StateRecord)}  # fmt: skip


def test_a_task_of_the_usual_form_costs_no_key_and_no_tuple() -> None:
    """The reason for the store: a task's three objects are three ints by id."""
    m = BucketModel(LAYOUT)
    m.offer("tasks", LAYOUT.task("a"), 1, _value("tasks", LAYOUT.task("a"), True))
    m.offer("results", LAYOUT.result("a"), 2, _value("results", LAYOUT.result("a"), True))
    entry_key = LAYOUT.queue_entry("q1", "a")
    m.offer("queues", entry_key, 3, _value("queues", entry_key, True))
    for kind in ("tasks", "results", "queues"):
        store = m.objects[kind]
        assert isinstance(store, KnownObjects)
        assert store._other == {} and len(store._packed) == 1
    assert list(m.keys("queues")) == [entry_key]
    # A second entry of the task, in another queue: both kept by key, both answer.
    other_key = LAYOUT.queue_entry("q2", "a")
    m.offer("queues", other_key, 4, _value("queues", other_key, True))
    assert m.generation("queues", entry_key) == 3 and m.generation("queues", other_key) == 4
    assert sorted(m.keys("queues")) == sorted([entry_key, other_key])


@pytest.mark.parametrize("bound", [0, 2, 10_000])
def test_shared_contributions_count_as_a_recount_whatever_the_sharing_bound(
    bound: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Contributions are shared to save memory and compared by identity to skip a recount:
    with the sharing forgotten at any moment (the bound), the counts are still a recount's."""
    monkeypatch.setattr(model, "SHARED_CONTRIBUTIONS", bound)
    rng = random.Random(bound)
    live = BucketModel(LAYOUT)
    latest: dict[tuple[str, str], tuple[int, Record | UnreadableRow]] = {}
    for gen in range(1, 400):
        tid = rng.choice("abcdef")
        kind = rng.choice(["tasks", "results", "queues"])
        key = {"tasks": LAYOUT.task(tid), "results": LAYOUT.result(tid)}.get(
            kind, LAYOUT.queue_entry("q1", tid)
        )
        if rng.random() < 0.2:
            live.withdraw(kind, key, latest.pop((kind, key), (gen, None))[0])
            continue
        value: Record | UnreadableRow = _value(kind, key, True)
        if kind == "results":
            st_, status, error = rng.choice(
                [("running", "pending", None), ("failed", "error", rng.choice("XYZ")),
                 ("completed", "success", None)]
            )  # fmt: skip
            value = msgspec.structs.replace(value, state=st_, status=status, error_type=error)
        live.offer(kind, key, gen, value)
        latest[(kind, key)] = (gen, value)
        live.settle()
    once = BucketModel(LAYOUT)
    for (kind, key), (gen, value) in latest.items():
        once.offer(kind, key, gen, value)
    assert live.task_counts == once.task_counts
    assert live.result_counts == once.result_counts
    assert live.failures == once.failures
    assert live.orphans == once.orphans
    assert live.queue_names == once.queue_names


def test_a_tasks_records_and_row_share_one_id_string_whatever_order_they_come_in() -> None:
    # Ids are not interned (a table of a million is ~40 MB): the model makes a task's records
    # hold one string, whichever of them it learned first, also across updates.
    from omniq_console.monitor.records import decoders

    decode = decoders(LAYOUT)
    md = {"omniq_index": "1", "queue": "q", "func": "f", "created_at": "2026-01-01T00:00:00+00:00",
          "status": "pending", "state": "running", "worker_id": "w"}  # fmt: skip
    m = BucketModel(LAYOUT)
    tid = "0123456789abcdef"
    keys = [("results", LAYOUT.result(tid)), ("tasks", LAYOUT.task(tid)),
            ("queues", LAYOUT.queue_entry("q", tid)), ("results", LAYOUT.result(tid))]  # fmt: skip
    for generation, (kind, key) in enumerate(keys, 1):
        value = decode[kind](key, dict(md))
        assert value is not None and not isinstance(value, UnreadableRow)
        m.offer(kind, key, generation, value)
    shared = m.states[tid].task_id
    assert m.defs[tid].id is shared and m.entries[tid].task_id is shared
    assert m.task_rows()[0].id is shared
    assert m.states[tid].state == "running"
