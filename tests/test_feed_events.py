"""Event objects as the monitor reads them: the typed decoding of batches (``records.
parse_event_body``) reads every body as ``TaskEvent`` validation event by event did, bad
events and bad batches included; the live tail keeps the newest events, and the newest keys
seen through the feed."""

from __future__ import annotations

import asyncio
import json
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

from hypothesis import example, given, settings
from hypothesis import strategies as st

from omniq_console.backend.gcs import GCSBackend
from omniq_console.backend.index import event_batch_metadata
from omniq_console.backend.layout import Layout
from omniq_console.backend.listing import TOO_DEEP
from omniq_console.backend.memstore import MemoryObjectStore
from omniq_console.checks import describe_exception
from omniq_console.models import EventBatch, EventType, TaskEvent, new_event_id, utcnow
from omniq_console.monitor import Monitor
from omniq_console.monitor.records import EventRecord, decoders, parse_event_body
from omniq_console.monitor.snapshot import UnreadableRow
from omniq_console.monitor.sources.events import SEEN_KEEP, EventTail

KEY = "omniq/events/batch.json"
FIELDS = (
    "id", "timestamp", "event_type", "task_id", "queue_name", "schedule_id", "worker_id",
    "actor", "message", "error_type", "error_message",
)  # fmt: skip


def reference(data: bytes) -> list[TaskEvent] | UnreadableRow:
    """How event bodies were read before the typed decoding: ``json.loads``, then
    ``TaskEvent.model_validate`` event by event (the bar the new decoder must meet)."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return UnreadableRow(key=KEY, reason="not valid JSON")
    if isinstance(doc, dict) and isinstance(doc.get("events"), list):
        out: list[TaskEvent] = []
        for item in doc["events"]:
            try:
                out.append(TaskEvent.model_validate(item))
            except Exception:
                continue
        if doc["events"] and not out:
            return UnreadableRow(key=KEY, reason="an event batch with no valid event")
        return out
    try:
        return [TaskEvent.model_validate(doc)]
    except Exception as exc:
        return UnreadableRow(
            key=KEY, reason=f"not a valid TaskEvent: {describe_exception(exc, 200)}"
        )


def _made_id(at: datetime | None = None) -> str:
    """A stand-in for ``new_event_id`` in these tests: the id an event stored without one
    gets, the same in both readings, so ids compare exactly."""
    return f"made-{at.isoformat() if at else None}"


def assert_same(data: bytes) -> None:
    """The new decoder and the reference agree on ``data``: the same report, or the same
    events field by field (an event stored without a timestamp gets the time it was read, in
    each reading: those are compared within a minute)."""
    with (
        mock.patch("omniq_console.models.new_event_id", _made_id),
        mock.patch("omniq_console.monitor.records.new_event_id", _made_id),
    ):
        old, new = reference(data), parse_event_body(KEY, data)
    if isinstance(old, UnreadableRow):
        assert new == old
        return
    assert isinstance(new, list), new
    assert len(new) == len(old)
    for was, got in zip(old, new, strict=True):
        assert isinstance(got, EventRecord)
        assert got.timestamp.tzinfo is UTC
        if "timestamp" in was.model_fields_set:
            assert got.timestamp == was.timestamp
        else:
            assert abs(got.timestamp - was.timestamp) < timedelta(minutes=1)
        if "timestamp" in was.model_fields_set or not was.id.startswith("made-"):
            assert got.id == was.id
        else:
            assert got.id.startswith("made-")
        assert got.event_type == was.event_type.value
        for name in FIELDS[3:]:
            assert getattr(got, name) == getattr(was, name), name


# -- generated events: what workers write, and every way a value can be off ----------------

TIMES = st.one_of(
    st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
    ).map(datetime.isoformat),
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)).map(
        datetime.isoformat
    ),
    st.sampled_from(
        [
            "2026-12-08T02:00:00Z",
            "2026-12-08T02:00:00.1234567Z",  # past microseconds: truncated, never rounded
            "2026-12-08T02:00:00.9999995+00:00",
            "2026-12-08T02:00:00+05:30",
            "2026-12-08T02:00:00-00:00",
            "2026-12-08T02:00:00+0100",
            "2026-12-08 02:00:00Z",
            "2026-12-08t02:00:00z",
            "2026-12-08T02:00:60Z",
            "2026-12-08T24:00:00Z",
            "2026-12-08T02:00Z",
            "2026-12-08",
            "2026-13-08T02:00:00Z",
            "2026-12-08T02:00:00+24:00",
            "2026-12-08T02:00:00+23:59",
            "0001-01-01T00:00:00+01:00",  # no UTC form
            "9999-12-31T23:59:59-01:00",
            "0000-01-01T00:00:00Z",
            "1765159200",
            "",
        ]
    ),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=False, allow_infinity=False),
    st.none(),
    st.booleans(),
)
TEXT = st.one_of(st.none(), st.text(max_size=12), st.integers(), st.booleans(), st.just([]))
ODD = st.one_of(
    st.none(), st.integers(), st.floats(allow_nan=False), st.text(max_size=5), st.booleans()
)


@st.composite
def stored_events(draw: st.DrawFn) -> Any:
    """An event as a worker writes it (``TaskEvent.to_json``), then perhaps bent: a field
    dropped, or given another type or value."""
    event = TaskEvent(
        task_id=draw(st.one_of(st.none(), st.text(max_size=8))),
        event_type=draw(st.sampled_from(EventType)),
        timestamp=draw(
            st.datetimes(
                min_value=datetime(2000, 1, 1),
                max_value=datetime(2100, 1, 1),
                timezones=st.just(UTC),
            )
        ),
        message=draw(st.one_of(st.none(), st.text(max_size=12))),
        worker_id=draw(st.one_of(st.none(), st.just("w-1"))),
        queue_name=draw(st.one_of(st.none(), st.just("q"))),
        execution_time=draw(st.one_of(st.none(), st.floats(0, 1e6))),
    )
    item: dict[str, Any] = json.loads(event.to_json())
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from([*sorted(item), "extra"]))
        change = draw(st.sampled_from(["drop", "time", "text", "odd", "type", "version"]))
        if change == "drop":
            item.pop(name, None)
        elif change == "time":
            item["timestamp"] = draw(TIMES)
        elif change == "text":
            item[name] = draw(TEXT)
        elif change == "odd":
            item[name] = draw(ODD)
        elif change == "type":
            item["event_type"] = draw(st.sampled_from(["completed", "COMPLETED", "nope", 3]))
        else:
            item["schema_version"] = draw(st.sampled_from([0, 1, 2, 1.0, "1", True, None, 10**30]))
    return draw(st.one_of(st.just(item), st.just(item), ODD))


@settings(max_examples=400, deadline=None)
@given(st.lists(stored_events(), max_size=6), st.sampled_from(["batch", "single", "odd"]))
@example([{"event_type": "completed", "timestamp": "2026-12-08T02:00:00.1234567Z"}], "batch")
@example([{"event_type": "completed", "timestamp": None}], "single")
@example([{"event_type": "completed", "id": "a", "id ": "b", "details": None}], "batch")
@example([{"event_type": "completed", "message": "\ud800"}, {"event_type": "failed"}], "batch")
def test_typed_decoding_reads_every_body_as_taskevent_did(items: list[Any], form: str) -> None:
    if form == "batch":
        body: Any = {"schema_version": 1, "events": items}
    elif form == "single":
        body = items[0] if items else {}
    else:
        body = {"events": items[0] if items else None, **(items[1] if len(items) > 1 and
                isinstance(items[1], dict) else {})}  # fmt: skip
    assert_same(json.dumps(body).encode())


def test_bodies_that_are_no_json_or_too_deep_are_reported_as_before() -> None:
    for data in (b"", b"\xfe\xfe", b"<html>", b'{"events": [', b"[1, 2]", b"null", b"{}"):
        assert_same(data)
    # Duplicate keys: the last one counts, in both readings.
    assert_same(b'{"events": [{"event_type": "failed", "event_type": "completed"}]}')
    deep = b'{"events": [{"event_type": "failed", "details": ' + b"[" * 100_000 + b"]" * 100_000
    # json.loads cannot read this one (RecursionError): reported, where it stopped the poll.
    got = parse_event_body(KEY, deep + b"}]}")
    assert got == UnreadableRow(key=KEY, reason=TOO_DEEP)


def test_one_bad_event_costs_only_itself_and_a_batch_of_bad_ones_is_reported() -> None:
    good = [TaskEvent(task_id=f"t{n}", event_type=EventType.COMPLETED) for n in range(3)]
    items: list[Any] = [json.loads(e.to_json()) for e in good]
    items.insert(1, {"event_type": "completed", "timestamp": "yesterday"})
    items.insert(3, "not an event")
    got = parse_event_body(KEY, json.dumps({"events": items}).encode())
    assert isinstance(got, list)
    assert [(e.id, e.task_id, e.timestamp) for e in got] == [
        (e.id, e.task_id, e.timestamp) for e in good
    ]
    bad = parse_event_body(KEY, json.dumps({"events": items[1:2] + items[3:4]}).encode())
    assert bad == UnreadableRow(key=KEY, reason="an event batch with no valid event")
    assert parse_event_body(KEY, b'{"events": []}') == []


# -- through the monitor --------------------------------------------------------------------


async def _write_batch(backend: GCSBackend, items: list[Any], events: list[TaskEvent]) -> str:
    batch_id = new_event_id()
    key = backend.layout.event(batch_id)
    body = json.loads(EventBatch(events=events).to_json()) | {"events": items}
    metadata = event_batch_metadata(batch_id, events)
    await backend.store.write(key, json.dumps(body).encode(), metadata=metadata)
    return key


def test_the_console_shows_the_good_events_of_a_batch_and_reports_a_batch_of_bad_ones() -> None:
    async def run() -> None:
        store = MemoryObjectStore("ev-bad")
        async with GCSBackend("ev-bad", object_store=store, cache_timeout=0) as b:
            now = utcnow()
            good = [
                TaskEvent(
                    task_id=f"t{n}",
                    event_type=EventType.FAILED,
                    message=f"m{n}",
                    timestamp=now - timedelta(seconds=10 - n),
                    queue_name="q",
                )
                for n in range(4)
            ]
            items: list[Any] = [json.loads(e.to_json()) for e in good]
            items[2] = {**items[2], "timestamp": "not a time"}
            await _write_batch(b, items, good)
            bad_key = await _write_batch(b, [{"event_type": "nope"}, 7], good[:1])
            monitor = Monitor(b, recent_events=10)
            try:
                snap = await monitor.poll()
            finally:
                await monitor.aclose()
            assert [e.message for e in snap.events] == ["m3", "m1", "m0"]
            assert [(u.key, u.reason) for u in snap.unreadable] == [
                (bad_key, "an event batch with no valid event")
            ]
            # The failed events of tasks without a result record are their outcomes.
            outcomes = {t: o.status for t, o in monitor.model.outcomes.items()}
            assert outcomes == {"t0": "error", "t1": "error", "t3": "error"}
            assert not snap.stale and snap.error is None

    asyncio.run(run())


def test_the_live_tail_keeps_the_newest_events_of_a_big_batch_and_the_rows_it_had() -> None:
    async def run() -> None:
        store = MemoryObjectStore("ev-tail")
        async with GCSBackend("ev-tail", object_store=store, cache_timeout=0) as b:
            now = utcnow()

            def made(n: int, at: datetime) -> TaskEvent:
                return TaskEvent(task_id=f"t{n}", event_type=EventType.ENQUEUED, message=f"m{n}",
                                 timestamp=at)  # fmt: skip

            older = [made(n, now - timedelta(seconds=30 - n)) for n in range(3)]
            await _write_batch(b, [json.loads(e.to_json()) for e in older], older)
            monitor = Monitor(b, recent_events=5)
            try:
                first = await monitor.poll()
                assert [e.message for e in first.events] == ["m2", "m1", "m0"]
                # A batch of 400, stamped in no order, two of them older than what is shown.
                at = [now - timedelta(seconds=40 if n < 2 else 20 - (n * 7919 % 400) / 100)
                      for n in range(400)]  # fmt: skip
                big = [made(100 + n, at[n]) for n in range(400)]
                await _write_batch(b, [json.loads(e.to_json()) for e in big], big)
                snap = await monitor.poll()
            finally:
                await monitor.aclose()
            expected = sorted([*older, *big], key=lambda e: (e.timestamp, e.id))[-5:][::-1]
            assert [e.id for e in snap.events] == [e.id for e in expected]
            assert [e.message for e in snap.events] == [e.message for e in expected]

    asyncio.run(run())


def test_event_keys_marked_through_the_feed_keep_the_newest_at_a_small_cost_each() -> None:
    layout = Layout("omniq/")
    tail = EventTail(layout, decoders(layout)["events"], keep=10)
    total = SEEN_KEEP * 2
    keys = [layout.event(f"{n:08x}-0000-7000-8000-000000000000") for n in range(total)]
    # Batches arrive a few at a time and not quite in key order, as a fleet's flushes do.
    rng = random.Random(5)
    arriving = [k for _, k in sorted((n + rng.randrange(50), k) for n, k in enumerate(keys))]
    started = time.process_time()
    for n in range(0, total, 2):
        tail.mark_seen(arriving[n : n + 2])
    # Sorting the whole set at each mark past the bound took ~20 s of CPU here.
    assert time.process_time() - started < 3.0
    assert tail._seen == set(keys[-SEEN_KEEP:])
