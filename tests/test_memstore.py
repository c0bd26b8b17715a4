"""MemoryObjectStore behaves as ObjectStore on the emulator: the same checks run on both.

Then what only the in-memory store can show quickly: the per-name limit under an injected
clock, preconditions on deletes (the emulator ignores them), many stores on one server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from omniq_console.backend.errors import (
    BucketNotFoundError,
    ConflictError,
    MetadataTooLargeError,
    ObjectNotFoundError,
    RateLimitedError,
    ReadOnlyError,
    StorageError,
)
from omniq_console.backend.memstore import MemoryObjectStore, MemoryServer
from omniq_console.backend.objectstore import ObjectStore
from omniq_console.backend.storeapi import ObjectStoreAPI
from omniq_console.demo.emulator import Emulator


@pytest.fixture(params=["emulator", "memory"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[ObjectStoreAPI]:
    """An open store on a fresh bucket: ObjectStore on the emulator, or MemoryObjectStore."""
    opened: ObjectStoreAPI
    if request.param == "emulator":
        # The emulator itself, even under --gcs-rules: these checks compare plain semantics.
        emulator: Emulator = request.getfixturevalue("emulator")
        opened = ObjectStore(request.getfixturevalue("bucket"), endpoint_url=emulator.url)
    else:
        opened = MemoryObjectStore("mem-bucket")
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


async def test_both_satisfy_the_protocol(store: ObjectStoreAPI) -> None:
    assert isinstance(store, ObjectStoreAPI)
    assert store.is_open and not store.read_only and store.access == "read_write"


async def test_write_list_read_delete(store: ObjectStoreAPI) -> None:
    info = await store.write("p/a.json", b'{"a":1}', metadata={"status": "pending"})
    assert info.key == "p/a.json" and info.size == 7 and info.generation > 0
    assert info.metadata == {"status": "pending"}
    assert isinstance(info.updated, datetime)
    await store.write("p/b.json", b'{"b":2}', metadata={"status": "running"})
    await store.write("p/c.json", b"{}")
    await store.write("q/d.json", b"{}")
    listed = await store.list("p/")
    assert [o.key for o in listed] == ["p/a.json", "p/b.json", "p/c.json"]
    assert listed[0].generation == info.generation and listed[0].metadata == {"status": "pending"}
    assert [o.key for o in await store.list("p/", start_offset="p/b")] == ["p/b.json", "p/c.json"]
    assert [o.key for o in await store.list("p/", end_offset="p/b")] == ["p/a.json"]
    assert [o.key for o in await store.list("p/", limit=2)] == ["p/a.json", "p/b.json"]
    got = await store.read("p/a.json")
    assert (got.data, got.generation, dict(got.metadata)) == (
        b'{"a":1}',
        info.generation,
        {"status": "pending"},
    )
    assert await store.delete("p/a.json") is True
    assert await store.delete("p/a.json") is False
    with pytest.raises(ObjectNotFoundError):
        await store.read("p/a.json")


async def test_generations_strictly_increase_and_preconditions_hold(
    store: ObjectStoreAPI,
) -> None:
    first = await store.write("k.json", b"1", if_generation_match=0)
    with pytest.raises(ConflictError) as err:
        await store.write("k.json", b"2", if_generation_match=0)
    assert err.value.expected_generation == 0
    second = await store.write("k.json", b"3", if_generation_match=first.generation)
    assert second.generation > first.generation
    with pytest.raises(ConflictError):
        await store.write("k.json", b"4", if_generation_match=first.generation)
    with pytest.raises(ConflictError):  # a compare-and-swap on an absent object
        await store.write("absent.json", b"5", if_generation_match=second.generation)
    third = await store.write("k.json", b"6")
    assert third.generation > second.generation
    assert (await store.read("k.json")).data == b"6"
    assert store.stats.conflicts == 3


async def test_exactly_one_of_many_concurrent_creates_wins(store: ObjectStoreAPI) -> None:
    async def claim(i: int) -> int | None:
        try:
            await store.write("claim.json", f'{{"w":{i}}}'.encode(), if_generation_match=0)
        except ConflictError:
            return None
        return i

    winners = [w for w in await asyncio.gather(*(claim(i) for i in range(16))) if w is not None]
    assert len(winners) == 1
    assert (await store.read("claim.json")).data == f'{{"w":{winners[0]}}}'.encode()


async def test_metadata_over_8_kib_is_refused_before_any_request(store: ObjectStoreAPI) -> None:
    before = store.stats.copy()
    with pytest.raises(MetadataTooLargeError, match="8193 bytes"):
        await store.write("m.json", b"{}", metadata={"k": "é" * 4096})
    assert store.stats.since(before).total == 0
    await store.write("m.json", b"{}", metadata={"k": "x" * 8191})  # exactly 8 KiB is fine


async def test_requests_are_counted_by_kind(store: ObjectStoreAPI) -> None:
    before = store.stats.copy()
    await store.write("c/1.json", b"{}")
    await store.list("c/")
    await store.read("c/1.json")
    await store.delete("c/1.json")
    await store.delete("c/1.json")
    counted = store.stats.since(before).count
    assert counted == {"list": 1, "get": 1, "write": 1, "delete": 2, "bucket": 0}


async def test_read_only_refuses_and_sends_nothing(request: pytest.FixtureRequest) -> None:
    for readonly in (
        ObjectStore(request.getfixturevalue("bucket"), access="read_only"),
        MemoryObjectStore(access="read_only"),
    ):
        await readonly.open()
        try:
            with pytest.raises(ReadOnlyError):
                await readonly.write("x.json", b"{}")
            with pytest.raises(ReadOnlyError):
                await readonly.delete("x.json")
            assert await readonly.list("") == []
            assert readonly.stats.count["write"] == readonly.stats.count["delete"] == 0
        finally:
            await readonly.close()


async def test_a_missing_bucket_is_bucket_not_found(request: pytest.FixtureRequest) -> None:
    request.getfixturevalue("gcs_env")
    for missing in (
        ObjectStore("no-such-bucket-mem"),
        MemoryObjectStore("no-such-bucket-mem", server=MemoryServer()),
    ):
        await missing.open()
        try:
            with pytest.raises(BucketNotFoundError, match="no-such-bucket-mem"):
                await missing.check_bucket()
            with pytest.raises(BucketNotFoundError):
                await missing.list("x/")
        finally:
            await missing.close()


# -- the in-memory store only ----------------------------------------------------------------


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_the_per_name_limit_follows_the_injected_clock() -> None:
    clock = FakeClock()
    store = MemoryObjectStore(clock=clock, per_name_limit=True)
    await store.open()
    first = await store.write("r.json", b"1", if_generation_match=0)
    assert first.updated == datetime.fromtimestamp(clock.now, UTC)
    with pytest.raises(RateLimitedError, match="one mutation of a name per second"):
        await store.write("r.json", b"2", if_generation_match=first.generation)
    # A precondition failure is a conflict, not a mutation, and is not rate limited.
    with pytest.raises(ConflictError):
        await store.write("r.json", b"3", if_generation_match=0)
    await store.write("other.json", b"1")  # another name is free
    clock.now += 0.999
    with pytest.raises(RateLimitedError):
        await store.delete("r.json")  # deletes count
    clock.now += 0.001
    second = await store.write("r.json", b"2", if_generation_match=first.generation)
    assert second.updated == datetime.fromtimestamp(clock.now, UTC)
    assert store.stats.rate_limited == 2 and store.stats.conflicts == 1
    assert store.stats.errors == {"list": 0, "get": 0, "write": 1, "delete": 1, "bucket": 0}


async def test_delete_preconditions_are_honoured() -> None:
    store = MemoryObjectStore()
    await store.open()
    info = await store.write("d.json", b"1")
    with pytest.raises(ConflictError):
        await store.delete("d.json", if_generation_match=info.generation + 1)
    assert await store.delete("d.json", if_generation_match=info.generation) is True


async def test_stores_on_one_server_see_each_other_and_share_the_limit() -> None:
    clock = FakeClock()
    server = MemoryServer(clock=clock, per_name_limit=True)
    server.create_bucket("shared")
    one, two = (
        MemoryObjectStore("shared", server=server),
        MemoryObjectStore("shared", server=server),
    )
    await one.open()
    await two.open()
    created = await one.write("s.json", b"1", if_generation_match=0)
    assert (await two.read("s.json")).generation == created.generation
    with pytest.raises(RateLimitedError):
        await two.write("s.json", b"2", if_generation_match=created.generation)
    with pytest.raises(ValueError, match="shared server"):
        MemoryObjectStore("shared", server=server, per_name_limit=True)


async def test_listings_are_counted_per_page_of_one_thousand() -> None:
    store = MemoryObjectStore()
    await store.open()
    for i in range(2001):
        await store.write(f"many/{i:05d}.json", b"{}")
    before = store.stats.copy()
    assert len(await store.list("many/")) == 2001
    assert store.stats.since(before).count["list"] == 3
    assert len(await store.list("many/", limit=10)) == 10


async def test_a_closed_store_refuses_requests() -> None:
    store = MemoryObjectStore()
    with pytest.raises(StorageError, match="not open"):
        await store.list("")
