"""The full listing applied page by page: bounded memory, nothing withdrawn by a listing that
failed half way, the same split points as a listing held whole."""

from __future__ import annotations

import asyncio
import random
from typing import ClassVar

import pytest

from omniq_console.backend.errors import StorageError
from omniq_console.backend.index import task_metadata
from omniq_console.backend.layout import Layout
from omniq_console.backend.memstore import MemoryObjectStore
from omniq_console.backend.storeapi import ObjectInfo, Page, PageRequest
from omniq_console.models import Task
from omniq_console.monitor.model import BucketModel
from omniq_console.monitor.records import decoders
from omniq_console.monitor.sources import listing as listing_module
from omniq_console.monitor.sources.listing import LIST_CONCURRENCY, PAGE, FullListing, SplitPoints
from omniq_console.monitor.usage import StorageTally


class _Counted(dict[str, str]):
    """The metadata of a listed object, counting how many are alive: a listed object's own
    metadata lives exactly as long as it does (decoders read it, nothing keeps it)."""

    alive: ClassVar[int] = 0

    def __del__(self) -> None:
        type(self).alive -= 1


class _Store(MemoryObjectStore):
    """Hands out listed objects as copies whose lifetime is counted (the memory store's own
    are held by its server), and fails a listing of ``fail_prefix`` at its ``fail_at``-th
    page when told to."""

    peak = 0
    fail_prefix = ""
    fail_at: int | None = None

    async def _list_page(self, page: PageRequest) -> Page:
        if self.fail_at is not None and page.prefix == self.fail_prefix:
            self.fail_at -= 1
            if self.fail_at == 0:
                raise StorageError("the connection dropped")
        infos, token = await super()._list_page(page)
        copies = [
            ObjectInfo(i.key, i.generation, i.size, i.updated, _Counted(i.metadata)) for i in infos
        ]
        _Counted.alive += len(copies)
        self.peak = max(self.peak, _Counted.alive)
        return copies, token


async def _seeded(tasks: int) -> tuple[_Store, Layout, list[str]]:
    store = _Store()
    await store.open()
    layout = Layout("")
    keys = []
    for i in range(tasks):
        task = Task(func="f", queue_name=f"q{i % 3}")
        keys.append(layout.task(task.id))
        await store.write(keys[-1], task.to_json(), metadata=task_metadata(task))
    return store, layout, keys


async def test_objects_alive_during_a_listing_are_bounded_by_the_pages_in_flight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: every page of every prefix was gathered before any was applied (at a million
    tasks 2.65M objects with their metadata, ~1.5 GB): here all 12,000 alive at once."""
    monkeypatch.setattr(listing_module, "SPLIT_EVERY", 2_500)
    store, layout, keys = await _seeded(12 * PAGE)
    model = BucketModel(layout)
    listing = FullListing(layout, decoders(layout))
    await listing.run(store, model)  # one range: a page at a time
    cold = store.peak
    store.peak = 0
    await store.delete(keys[0])
    applied = await listing.run(store, model)  # five ranges of 2,500, four at once
    assert applied.gone == [keys[0]] and len(model.objects["tasks"]) == len(keys) - 1
    assert cold <= PAGE and store.peak <= LIST_CONCURRENCY * PAGE, (cold, store.peak)
    assert store.peak > PAGE  # the ranges were listed concurrently
    await store.close()


async def test_a_listing_that_fails_half_way_withdraws_nothing() -> None:
    store, layout, keys = await _seeded(3 * PAGE)
    model = BucketModel(layout)
    listing = FullListing(layout, decoders(layout))
    await listing.run(store, model)
    deleted = keys[::5]
    for key in deleted:
        await store.delete(key)
    store.fail_prefix, store.fail_at = layout.tasks, 2  # after the first page is applied
    with pytest.raises(StorageError):
        await listing.run(store, model)
    assert len(model.objects["tasks"]) == len(keys)
    assert model.task_counts["pending"] == len(keys)
    store.fail_at = None
    applied = await listing.run(store, model)
    assert sorted(applied.gone) == sorted(deleted)
    assert model.task_counts["pending"] == len(keys) - len(deleted)
    await store.close()


async def test_a_key_learned_while_the_listing_runs_is_not_withdrawn() -> None:
    """The listing's mark says what it showed; a key learned after it was requested is newer
    than the listing, whatever the listing shows."""
    store, layout, keys = await _seeded(2 * PAGE)
    model = BucketModel(layout)
    listing = FullListing(layout, decoders(layout))
    await listing.run(store, model)
    late = Task(func="f", queue_name="q0")
    decode = decoders(layout)["tasks"]
    value = decode(layout.task(late.id), task_metadata(late))
    assert value is not None
    running = asyncio.create_task(listing.run(store, model))
    await asyncio.sleep(0)  # the listing was requested: now the feed brings a new task
    assert model.offer("tasks", layout.task(late.id), 1, value)
    applied = await running
    assert applied.gone == [] and len(model.objects["tasks"]) == len(keys) + 1
    await store.close()


def test_split_points_are_those_of_the_whole_listing_in_any_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ranges listed concurrently land in any order; the split points are the keys at every
    ``SPLIT_EVERY``-th position of the prefix, as when the listing was held whole."""
    monkeypatch.setattr(listing_module, "SPLIT_EVERY", 7)
    rng = random.Random(3)
    for _ in range(200):
        sizes = [rng.randrange(0, 30) for _ in range(rng.randrange(1, 6))]
        keys = [f"k{i:04d}" for i in range(sum(sizes))]
        ranges, start = [], 0
        for size in sizes:
            infos = [ObjectInfo(k, 1, 0, None, {}) for k in keys[start : start + size]]
            pages = [infos[i : i + 4] for i in range(0, len(infos), 4)]
            ranges.append(pages)
            start += size
        # Each range's pages in order, the ranges interleaved at random.
        events = [(n, page) for n, pages in enumerate(ranges) for page in [*pages, None]]
        cursors = [0] * len(ranges)
        points = SplitPoints(len(ranges))
        pending = list(range(len(ranges)))
        while pending:
            n = rng.choice(pending)
            step = [e for e in events if e[0] == n][cursors[n]]
            cursors[n] += 1
            if step[1] is None:
                points.done(n)
                pending.remove(n)
            else:
                points.page(n, step[1])
        assert points.keys == [keys[i] for i in range(7, len(keys), 7)], sizes


async def test_usage_is_counted_from_the_pages_as_they_land(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(listing_module, "SPLIT_EVERY", 700)
    store, layout, keys = await _seeded(2_100)
    await store.write(layout.tasks, b"")  # a console's "folder" marker: not stored data
    usage = StorageTally(layout.prefix)
    listing = FullListing(layout, decoders(layout), usage)
    model = BucketModel(layout)
    size = sum([len((await store.read(key)).data) for key in keys])
    for _ in range(2):  # one range, then four landing in any order
        await listing.run(store, model)
        rows = {row.prefix: (row.objects, row.bytes) for row in usage.rows()}
        assert rows["tasks/"] == (len(keys), size) and rows["results/"] == (0, 0)
    await store.close()
