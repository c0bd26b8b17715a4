"""The console's garbage-collector settings must not let cyclic garbage pile up (issue 20,
item 5: the console's memory grew for as long as it ran)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from omniq_console.cli import tune_gc


class Cycle:
    """A node of a reference cycle: freed only by the cyclic collector."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def console_gc() -> Iterator[None]:
    """The console's thresholds for the test, CPython's again after it. What the test process
    holds already is frozen, as the console freezes what exists at its first snapshot: CPython
    defers a full collection until a quarter of the long-lived objects are new, and a long
    test session's objects would otherwise decide when that is."""
    saved = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.collect()  # the oldest generation is now empty: its size is the quarter's base
    tune_gc()
    try:
        yield
    finally:
        gc.set_threshold(*saved)
        gc.unfreeze()
        gc.collect()


POLLS = 200
CYCLES_PER_POLL = 50
ALLOCATIONS_PER_POLL = 60_000  # container objects alive during a poll: 3 young collections


def test_cycles_that_outlive_young_collections_are_freed(console_gc: None) -> None:
    """Each simulated poll makes cycles that live until the next poll (so they survive young
    collections into the oldest generation, as a poll's messages and results do), then drops
    them. Only full collections free them: with the console's thresholds they must come, so
    what is left stays a few polls' worth, not every poll's (200 polls: 10,000 cycles)."""
    alive: weakref.WeakSet[Cycle] = weakref.WeakSet()
    held: list[Cycle] = []
    for _ in range(POLLS):
        made = [Cycle() for _ in range(CYCLES_PER_POLL)]
        alive.update(made)
        held = made  # the previous poll's cycles become garbage here
        churn: list[list[None]] = [[] for _ in range(ALLOCATIONS_PER_POLL)]  # the poll's work
        del churn
    del held
    assert len(alive) <= 20 * CYCLES_PER_POLL, (
        f"{len(alive):,} of {POLLS * CYCLES_PER_POLL:,} garbage cycles never collected"
    )
