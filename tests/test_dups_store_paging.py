"""The listing's paging, now shared by both stores (``ObjectStoreAPI.list``), on the
in-memory store: page boundaries with offsets and limits give exactly the keys a sorted
filter gives, one counted request per page."""

from __future__ import annotations

import pytest

from omniq_console.backend.memstore import MemoryObjectStore
from omniq_console.backend.storeapi import LIST_PAGE_SIZE

KEYS = [f"p/{i:05d}.json" for i in range(2500)]


@pytest.fixture
async def store() -> MemoryObjectStore:
    store = MemoryObjectStore()
    await store.open()
    # Written out of order, with neighbours on both sides of the prefix.
    for key in [*reversed(KEYS), "o/last.json", "q/first.json"]:
        await store.write(key, b"{}")
    return store


@pytest.mark.parametrize(
    ("start", "end", "limit", "expected", "pages"),
    [
        (None, None, None, KEYS, 3),
        ("p/00500", "p/02100", None, KEYS[500:2100], 2),
        ("p/00999.json", None, None, KEYS[999:], 2),
        (None, None, 1500, KEYS[:1500], 2),
        (None, None, LIST_PAGE_SIZE, KEYS[:LIST_PAGE_SIZE], 1),
        ("p/02400", None, 1000, KEYS[2400:], 1),
        (None, None, 0, KEYS[:1], 1),  # at least one, as GCS's maxResults
        ("p/9", None, None, [], 1),
    ],
)
async def test_pages_join_into_the_sorted_filter(
    store: MemoryObjectStore,
    start: str | None,
    end: str | None,
    limit: int | None,
    expected: list[str],
    pages: int,
) -> None:
    before = store.stats.copy()
    listed = await store.list("p/", start_offset=start, end_offset=end, limit=limit)
    assert [info.key for info in listed] == expected
    assert store.stats.since(before).count["list"] == pages


async def test_a_listed_object_says_what_its_write_said(store: MemoryObjectStore) -> None:
    written = await store.write("p/00007.json", b"seven", metadata={"kind": "task"})
    (listed,) = await store.list("p/00007.json")
    assert listed == written
    assert (listed.size, dict(listed.metadata)) == (5, {"kind": "task"})
