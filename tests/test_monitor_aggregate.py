"""The pure half of a poll: decoding listings with a memo, event keys, and aggregation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from omniq_console.backend.index import result_metadata, task_metadata
from omniq_console.backend.layout import Layout
from omniq_console.backend.objectstore import ObjectInfo
from omniq_console.models import ResultStatus, Task, TaskResult, TaskStatus, new_event_id
from omniq_console.monitor.aggregate import (
    TREND_LENGTH,
    TaskFacts,
    aggregate,
    decode_listing,
    entry_body_parser,
    event_id_ms,
    event_key_at,
    result_decoder,
    task_decoder,
)
from omniq_console.monitor.snapshot import UnreadableRow

LAYOUT = Layout("p/")
NOW = datetime(2026, 5, 4, 12, 0, 30, tzinfo=UTC)


def info(key: str, generation: int, metadata: dict[str, str] | None = None) -> ObjectInfo:
    return ObjectInfo(key, generation, 10, NOW, metadata or {})


def test_decode_reuses_unchanged_generations_and_names_bodies_to_read() -> None:
    task = Task(func="f", queue_name="q")
    calls: list[str] = []

    def decode(i: ObjectInfo) -> TaskFacts | None:
        calls.append(i.key)
        return task_decoder(i)

    listing = [
        info(LAYOUT.task(task.id), 1, task_metadata(task)),
        info(LAYOUT.task("plain"), 1),  # no index: its body must be read
        info(LAYOUT.tasks, 1),  # a folder placeholder made by some tool
    ]
    first = decode_listing(listing, decode, {})
    assert [i.key for i in first.need_body] == [LAYOUT.task("plain")]
    assert set(first.memo) == {LAYOUT.task(task.id)}
    assert first.memo[LAYOUT.task(task.id)][1][1] == "pending"  # facts: (id, status, ...)

    calls.clear()
    memo = {**first.memo, LAYOUT.task("plain"): (1, UnreadableRow(key="x", reason="bad"))}
    second = decode_listing(listing, decode, memo)
    assert calls == [] and second.need_body == []
    assert second.memo[LAYOUT.task(task.id)] is first.memo[LAYOUT.task(task.id)]

    changed = [info(LAYOUT.task(task.id), 2, task_metadata(task)), info(LAYOUT.task("plain"), 2)]
    third = decode_listing(changed, decode, memo)
    assert calls == [LAYOUT.task(task.id), LAYOUT.task("plain")]
    assert [i.key for i in third.need_body] == [LAYOUT.task("plain")]
    # Objects gone from the listing are forgotten.
    assert decode_listing([], decode, memo).memo == {}


def test_event_keys_bound_ids_of_their_millisecond() -> None:
    prefix = LAYOUT.events
    for offset_ms in (0, 1, 999, 123_456_789):
        at = NOW + timedelta(milliseconds=offset_ms)
        ms = int(at.timestamp() * 1000)
        key = LAYOUT.event(new_event_id(at))
        assert event_key_at(prefix, ms) <= key < event_key_at(prefix, ms + 1)
        assert event_id_ms(Layout.name_of(key)) == ms
    assert event_id_ms("not-a-uuid7") is None


def test_entry_body_forms() -> None:
    parse = entry_body_parser(LAYOUT)
    key = LAYOUT.queue_entry("q", "t1")
    claimed = parse(key, b'{"task_id": "t1", "queue": "q", "lease_owner": "w", '
                         b'"lease_expires_at": "2026-05-04T12:00:00+00:00"}')  # fmt: skip
    assert not isinstance(claimed, UnreadableRow)
    # Entry facts: (task_id, queue, priority, run_at, expires_at, created_at, owner, until).
    assert claimed[:3] == ("t1", "q", 0) and claimed[6:] == ("w", NOW.replace(second=0))
    whole = parse(key, Task(id="t1", func="f", queue_name="q", priority=5).to_json())
    assert not isinstance(whole, UnreadableRow) and whole[2] == 5
    wrong = parse(key, b'{"task_id": "t2", "queue": "q"}')
    assert isinstance(wrong, UnreadableRow) and "does not match" in wrong.reason


def test_aggregate_results_windows_and_trends() -> None:
    def result(
        i: int, status: ResultStatus, minutes_ago: float, kind: str | None = None
    ) -> tuple[str, tuple[int, object]]:
        r = TaskResult(
            task_id=f"t{i}",
            status=status,
            completed_at=NOW - timedelta(minutes=minutes_ago),
            error_type=kind,
        )
        facts = decode_listing(
            [info(LAYOUT.result(r.task_id), 1, result_metadata(r))], result_decoder, {}
        ).memo
        return next(iter(facts.items()))

    results = dict(
        [
            result(1, ResultStatus.SUCCESS, 0.1),
            result(2, ResultStatus.ERROR, 4, "Timeout"),
            result(3, ResultStatus.ERROR, 6, None),  # outside the 5-minute rate window
            result(4, ResultStatus.CANCELLED, 29),
            result(5, ResultStatus.EXPIRED, 31),  # outside the 30-minute chart
            result(6, ResultStatus.SUCCESS, -2),  # a clock ahead of ours: counted, not charted
        ]
    )
    agg = aggregate(
        now=NOW, tasks={}, entries={}, results=results, schedules={}, workers={}, trends={}
    )
    assert agg.results == {"pending": 0, "success": 2, "error": 2, "cancelled": 1, "expired": 1}
    assert agg.failures_by_type == {"Timeout": 1, "unknown": 1}
    assert agg.failure_rate == 0.5
    charted = [(m.success, m.error, m.cancelled, m.expired) for m in agg.results_per_minute]
    assert sum(map(sum, charted)) == 4 and charted[-1] == (1, 0, 0, 0)
    assert charted[0] == (0, 0, 1, 0)

    task = Task(func="f", queue_name="q", status=TaskStatus.PENDING)
    tasks = decode_listing([info(LAYOUT.task(task.id), 1, task_metadata(task))], task_decoder, {})
    trends = {"q": tuple(range(TREND_LENGTH))}
    agg = aggregate(
        now=NOW, tasks=tasks.memo, entries={}, results={}, schedules={}, workers={}, trends=trends
    )
    assert agg.queues[0].depth_trend == (*range(1, TREND_LENGTH), 0)
    assert agg.tasks["pending"] == 1 and agg.task_rows[0].id == task.id
