"""The changes benchmark: what the runner passes it, and a warm poll that waits for exactly
the messages of its change."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from benchmarks import changes
from benchmarks.run import parse_args


def test_sizes_reach_the_changes_benchmark_unless_it_has_its_own() -> None:
    assert parse_args(["--sizes", "100000", "--only", "changes"]).changes_sizes == [100_000]
    both = parse_args(["--sizes", "1000", "--changes-sizes", "5000"])
    assert (both.sizes, both.changes_sizes) == ([1000], [5000])
    default = parse_args([])
    assert default.changes_sizes == [10_000, 100_000, 1_000_000]
    assert default.sizes == [1000, 10_000, 100_000]


class _Stats:
    def __init__(self) -> None:
        self.total = 0
        self.count = {"list": 0, "get": 0}

    def copy(self) -> _Stats:
        return self

    def since(self, _: object) -> _Stats:
        return self


class _Feed:
    """Pulls part of a change while the stand-in is still applying it (a big change goes in
    slices), the rest after its POST returned."""

    def __init__(self) -> None:
        self.received = 0
        self.pulls = self.ack_calls = 0

    async def wait_until(self, predicate: Callable[[Any], bool]) -> None:
        self.received += 400  # the rest of the change
        await asyncio.sleep(0)
        if not predicate(self):
            raise TimeoutError("waited for more messages than the change published")


class _Monitor:
    def __init__(self) -> None:
        self.feed = _Feed()
        self.polls = 0

    async def poll(self) -> None:
        self.polls += 1


async def test_a_warm_poll_counts_the_messages_its_change_published(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monitor = _Monitor()

    async def change(url: str, fraction: float) -> dict[str, Any]:
        monitor.feed.received += 600  # pulled before the POST returned
        return {"changed": 100, "notified": 1000}

    monkeypatch.setattr(changes, "_change", change)
    result = await changes._warm_poll(
        monitor, type("Store", (), {"stats": _Stats()})(), "url", probe=True
    )
    assert monitor.polls == 1 and result["messages"] == 1000
