"""The cheap claim path (issue 23.3): listing pages decoded leanly, ids checked cheaply, a pass
decoding only the entries it tries, and a claimer that backs off after lost races.

On the in-memory store (GCS's rules, injected time) and on plain bytes shaped like GCS's
listing pages.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from omniq_console.backend import claims, listing
from omniq_console.backend.gcs import GCSBackend
from omniq_console.backend.index import QueueEntryIndex, queue_entry_metadata
from omniq_console.backend.layout import check_id
from omniq_console.backend.listing import safe_name
from omniq_console.backend.listpage import decode_page
from omniq_console.backend.memstore import MemoryObjectStore, MemoryServer
from omniq_console.backend.objectstore import _parse_page
from omniq_console.backend.storeapi import ObjectInfo
from omniq_console.clock import FakeClock
from omniq_console.models import Task, TaskResult


def _item(name: str, **extra: Any) -> dict[str, Any]:
    """An object resource as GCS sends it in a listing (int64 values as strings)."""
    return {
        "kind": "storage#object",
        "name": name,
        "bucket": "b",
        "generation": "1765000000000001",
        "metageneration": "1",
        "size": "120",
        "updated": "2026-12-07T19:26:44.123Z",
        "md5Hash": "abc==",
        "metadata": {"omniq_index": "1", "priority": "3"},
        **extra,
    }


def test_a_listing_page_decodes_leanly_to_what_the_tolerant_decoder_gives() -> None:
    body = json.dumps(
        {"kind": "storage#objects", "items": [_item("a/1.json"), _item("a/2.json", metadata={})]}
        | {"nextPageToken": "tok"}
    ).encode()
    lean = decode_page(body)
    assert lean is not None
    infos, token = lean
    assert token == "tok"
    assert infos[0] == ObjectInfo(
        "a/1.json",
        1765000000000001,
        120,
        infos[0].updated,
        {"omniq_index": "1", "priority": "3"},
    )
    assert infos[0].updated is not None and infos[0].updated.isoformat() == (
        "2026-12-07T19:26:44.123000+00:00"
    )
    assert infos[1].metadata == {}
    assert _parse_page(body) == lean
    assert decode_page(b"") == ([], None)


def test_a_page_of_another_shape_is_left_to_the_tolerant_decoder() -> None:
    """A time that is not RFC 3339 or a null metadata: the whole page is decoded tolerantly
    (the bad time as None), nothing is lost."""
    body = json.dumps(
        {"items": [_item("a/1.json", updated="yesterday"), _item("a/2.json", metadata=None)]}
    ).encode()
    assert decode_page(body) is None
    infos, token = _parse_page(body)
    assert [i.key for i in infos] == ["a/1.json", "a/2.json"]
    assert infos[0].updated is None and infos[1].metadata == {} and token is None


@pytest.mark.parametrize(
    "name",
    [
        "abc",
        "0f3c2a9e-7b1d-4e8a-9c2f-1a2b3c4d5e6f",
        "a.b.c",
        "a..b",
        ".",
        "..",
        "a.",
        ".a",
        "-x_",
        "a b",
        " a",
        "a ",
        "a/b",
        "a\\b",
        "a*b",
        "a?b",
        "a#b",
        "a[b]",
        "a\x00b",
        "a\tb",
        "é",
        "a\u2028b",
        "x" * 64,
        "x" * 65,
        "x" * 200,
        "x" * 201,
        "",
    ],
)
def test_the_cheap_id_check_accepts_exactly_what_check_id_accepts(name: str) -> None:
    try:
        expected: str | None = check_id(name)
    except ValueError:
        expected = None
    assert safe_name(name) == expected


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server(clock: FakeClock) -> MemoryServer:
    server = MemoryServer(clock=lambda: clock.now().timestamp(), per_name_limit=True)
    server.create_bucket("claims")
    return server


class ListingStore(MemoryObjectStore):
    """The in-memory store, recording every listed prefix."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.listed: list[str] = []

    async def list(self, prefix: str, **kwargs: Any) -> list[ObjectInfo]:
        self.listed.append(prefix)
        return await super().list(prefix, **kwargs)


async def _backend(server: MemoryServer, clock: FakeClock) -> GCSBackend:
    backend = GCSBackend("claims", object_store=ListingStore("claims", server=server))
    await backend.aopen()
    backend.async_task_storage.clock = clock
    return backend


async def test_a_claim_pass_decodes_only_the_entries_it_tries(
    server: MemoryServer, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200 entries listed: the winner of the head decodes one index, not 200."""
    backend = await _backend(server, clock)
    q = backend.async_task_storage
    for _ in range(200):
        await q.enqueue(Task(func="m:f"))
    decoded: list[str] = []
    real = claims.queue_entry_index

    def counting(info: ObjectInfo, layout: Any) -> QueueEntryIndex | None:
        decoded.append(info.key)
        return real(info, layout)

    monkeypatch.setattr(claims, "queue_entry_index", counting)
    clock.advance(2)
    task = await q.claim_pass(["default"], "w1", 10.0, paused=())
    assert task is not None
    assert decoded == [backend.layout.queue_entry("default", task.id)]
    await backend.aclose()


async def test_a_claimer_behind_the_others_backs_off_and_lists_again(
    server: MemoryServer, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A's listing names tasks that B claimed since: after LOSSES_BEFORE_BACKOFF lost races A
    waits a moment and lists again before its next try, and still claims the free task."""
    a, b = await _backend(server, clock), await _backend(server, clock)
    qa, qb = a.async_task_storage, b.async_task_storage
    ids = []
    for _ in range(4):
        ids.append(await qa.enqueue(Task(func="m:f")))
        clock.advance(0.01)  # distinct ages: the head is the first enqueued
    clock.advance(2)
    await qa._ranked(("default",))
    taken = [await qb.dequeue(["default"], worker_id="b") for _ in range(3)]
    assert [t.id for t in taken if t is not None] == ids[:3]
    monkeypatch.setattr(claims.random, "randrange", lambda n: 0)  # always the head: no luck
    store = a.store
    assert isinstance(store, ListingStore)
    store.listed.clear()
    started = clock.monotonic()
    won = await qa.claim_pass(["default"], "a", 10.0, paused=())
    assert won is not None and won.id == ids[3]
    assert qa.claims.races_lost == 3
    assert store.listed.count(a.layout.queue("default")) == 1, "no listing after the losses"
    assert clock.monotonic() - started >= claims.BACKOFF_S[0]
    await a.aclose()
    await b.aclose()


async def test_an_entry_whose_index_does_not_decode_stops_no_claim(
    server: MemoryServer, clock: FakeClock
) -> None:
    """At the head of the queue, an entry with a bad ``run_at`` and one with a bad ``attempt``
    (found only by the full decode): both are passed over, the good task behind them claimed."""
    backend = await _backend(server, clock)
    q = backend.async_task_storage
    bad_ids = []
    for field, value in (("run_at", "soon"), ("attempt", "many")):
        task = Task(func="m:f", priority=9)
        metadata = {**queue_entry_metadata(task), field: value, "record_generation": "7"}
        key = backend.layout.queue_entry("default", task.id)
        await backend.store.write(key, b"{}", metadata=metadata)
        bad_ids.append(task.id)
    good = await q.enqueue(Task(func="m:f"))
    clock.advance(2)
    won = await q.claim_pass(["default"], "w1", 10.0, paused=())
    assert won is not None and won.id == good
    assert await q.claim_pass(["default"], "w1", 10.0, paused=()) is None
    assert [await q.get_record(i) for i in bad_ids] == [None, None]
    await backend.aclose()


async def test_a_written_body_is_cached_as_its_bytes_without_a_copy(
    server: MemoryServer, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writes are not deep-copied into the body cache; a hit parses the bytes written, and
    what it returns is the caller's own (changing it changes nothing cached)."""
    backend = await _backend(server, clock)
    copies: list[object] = []
    real_copy = listing._copy_at

    def counting_copy(value: Any, generation: int) -> Any:
        copies.append(value)
        return real_copy(value, generation)

    monkeypatch.setattr(listing, "_copy_at", counting_copy)
    task = Task(func="m:f", metadata={"owner": "ops"})
    key = backend.layout.task(task.id)
    info = await backend.async_task_storage.reader.write(key, task, {}, if_generation_match=0)
    assert copies == []
    got = backend.async_task_storage.reader.cache.get(key, info.generation, Task)
    assert got is not None and got.generation == info.generation
    assert got.model_dump() == task.model_dump()
    got.metadata["owner"] = "someone else"
    again = backend.async_task_storage.reader.cache.get(key, info.generation, Task)
    assert again is not None and again.metadata == {"owner": "ops"}
    assert backend.async_task_storage.reader.cache.get(key, info.generation, TaskResult) is None
    await backend.aclose()


async def test_an_entry_is_parsed_once_while_its_generation_holds(
    server: MemoryServer, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Listing after listing of 50 entries parses each once; an entry rewritten (a new
    generation, a new priority) is parsed again and ranked by what it says now."""
    backend = await _backend(server, clock)
    q = backend.async_task_storage
    ids = [await q.enqueue(Task(func="m:f")) for _ in range(50)]
    parsed: list[str] = []
    real = claims._listed

    def counting(folder: str, queue: str, info: ObjectInfo) -> claims.Listed | None:
        parsed.append(info.key)
        return real(folder, queue, info)

    monkeypatch.setattr(claims, "_listed", counting)
    for _ in range(3):
        await q._ranked(("default",), fresh=True)
    assert len(parsed) == 50
    last = backend.layout.queue_entry("default", ids[-1])
    info = (await backend.store.list(last))[0]
    clock.advance(2)  # the per-name gap
    await backend.store.write(
        last,
        b"{}",
        metadata={**info.metadata, "priority": "5"},
        if_generation_match=info.generation,
    )
    ranked = await q._ranked(("default",), fresh=True)
    assert parsed[50:] == [last]
    assert ranked[0].task_id == ids[-1]
    await backend.aclose()
