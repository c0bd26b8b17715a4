"""ObjectStore against the real emulator: listing metadata, conditional writes, read-only."""

from __future__ import annotations

import asyncio

import pytest

from omniq_console.backend.errors import (
    BucketNotFoundError,
    ConflictError,
    ObjectNotFoundError,
    ReadOnlyError,
    StorageError,
)
from omniq_console.backend.objectstore import ObjectStore


async def test_write_list_read_delete(bucket: str) -> None:
    store = ObjectStore(bucket)
    await store.open()
    try:
        info = await store.write("p/a.json", b'{"a":1}', metadata={"status": "pending"})
        assert info.generation > 0
        await store.write("p/b.json", b'{"b":2}', metadata={"status": "running"})
        await store.write("other/c.json", b"{}")
        listed = await store.list("p/")
        assert [o.key for o in listed] == ["p/a.json", "p/b.json"]
        assert listed[0].metadata == {"status": "pending"}
        assert listed[0].generation == info.generation
        assert [o.key for o in await store.list("p/", start_offset="p/b")] == ["p/b.json"]
        got = await store.read("p/a.json")
        assert got.data == b'{"a":1}' and got.generation == info.generation
        assert got.metadata == {"status": "pending"}
        assert await store.delete("p/a.json") is True
        assert await store.delete("p/a.json") is False
        with pytest.raises(ObjectNotFoundError):
            await store.read("p/a.json")
    finally:
        await store.close()


async def test_listing_pages_past_one_thousand(bucket: str) -> None:
    store = ObjectStore(bucket)
    await store.open()
    try:
        sem = asyncio.Semaphore(32)

        async def put(i: int) -> None:
            async with sem:
                await store.write(f"many/{i:05d}.json", b"{}")

        await asyncio.gather(*(put(i) for i in range(1203)))
        before = store.stats.copy()
        listed = await store.list("many/")
        assert len(listed) == 1203
        assert store.stats.since(before).count["list"] == 2
        assert len(await store.list("many/", limit=10)) == 10
    finally:
        await store.close()


async def test_compare_and_swap(bucket: str) -> None:
    store = ObjectStore(bucket)
    await store.open()
    try:
        first = await store.write("k.json", b"1", if_generation_match=0)
        with pytest.raises(ConflictError):
            await store.write("k.json", b"2", if_generation_match=0)
        second = await store.write("k.json", b"3", if_generation_match=first.generation)
        with pytest.raises(ConflictError):
            await store.write("k.json", b"4", if_generation_match=first.generation)
        assert (await store.read("k.json")).data == b"3"
        assert second.generation != first.generation
    finally:
        await store.close()


async def test_read_only_sends_nothing(bucket: str) -> None:
    store = ObjectStore(bucket, access="read_only")
    await store.open()
    try:
        with pytest.raises(ReadOnlyError) as err:
            await store.write("x.json", b"{}")
        assert isinstance(err.value, PermissionError)
        with pytest.raises(ReadOnlyError):
            await store.delete("x.json")
        assert store.stats.total == 0
    finally:
        await store.close()


async def test_missing_bucket_is_clear(gcs_env: object) -> None:
    store = ObjectStore("no-such-bucket-here")
    await store.open()
    try:
        with pytest.raises(BucketNotFoundError, match="no-such-bucket-here"):
            await store.check_bucket()
        with pytest.raises(BucketNotFoundError):
            await store.list("x/")
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"access": "admin"}, "access must be one of"),
        ({"consistency": "sha1"}, "consistency must be one of"),
    ],
)
def test_bad_options_are_clear(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ObjectStore("bucket", **kwargs)


def test_empty_bucket_name_is_clear() -> None:
    with pytest.raises(ValueError, match="bucket_name"):
        ObjectStore("  ")


def test_use_from_another_event_loop_is_a_clear_error(bucket: str) -> None:
    store = ObjectStore(bucket)

    async def open_it() -> None:
        await store.open()

    async def use_it() -> None:
        await store.list("x/")

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(open_it())
        with pytest.raises(StorageError, match="another event loop"):
            asyncio.run(use_it())
    finally:
        loop.run_until_complete(store.close())
        loop.close()
