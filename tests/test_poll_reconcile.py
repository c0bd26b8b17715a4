"""The rolling reconcile's key ranges: found without holding the event loop (or the GIL) for
a sort of the whole model, and exactly the keys a range should hold."""

from __future__ import annotations

import asyncio
import gc
import random
import time
from collections.abc import Iterator
from typing import Any

from omniq_console.backend.layout import Layout
from omniq_console.monitor.records import decoders
from omniq_console.monitor.sources.listing import RUN, Reconciler, SortedRuns


def test_sorted_runs_give_exactly_the_keys_of_a_range() -> None:
    rng = random.Random(5)
    keys = [f"tasks/{rng.getrandbits(40):010x}.json" for _ in range(3 * RUN + 17)]
    runs = asyncio.run(SortedRuns.of(keys))
    ordered = sorted(keys)
    for _ in range(200):
        lo, hi = sorted(rng.sample(ordered, 2))
        want = [k for k in ordered if lo <= k <= hi]
        assert sorted(runs.between(lo, hi)) == want
    assert sorted(runs.between(None, ordered[100])) == ordered[:101]
    assert sorted(runs.between(ordered[-5], None)) == ordered[-5:]
    assert sorted(runs.between(None, None)) == ordered
    assert runs.between("z", None) == []


class _Keys:
    """What the reconcile reads of a model whose listing shows nothing new."""

    seq = 0

    def __init__(self, keys: list[str]) -> None:
        self._keys = dict.fromkeys(keys)

    def keys(self, kind: str) -> Iterator[str]:
        return iter(self._keys)

    def generation(self, kind: str, key: str) -> int | None:
        return 1

    def withdraw(self, kind: str, key: str, generation: int | None, *, before: int = 0) -> bool:
        return False


class _EmptyStore:
    async def list(self, prefix: str, **kwargs: Any) -> list[Any]:
        return []


def test_a_reconcile_step_never_holds_the_loop_for_a_sort_of_every_key() -> None:
    """Before: the step sorted every key of the kind in one call (in a thread, but holding
    the GIL throughout): ~70 ms at 100,000 tasks, ~1 s at a million, the console frozen."""
    rng = random.Random(7)
    keys = [f"tasks/{rng.getrandbits(64):016x}.json" for _ in range(400_000)]
    started = time.perf_counter()
    sorted(keys)
    whole_sort = time.perf_counter() - started
    layout = Layout("")
    reconciler = Reconciler(layout, decoders(layout), 300.0)
    model = _Keys(keys)

    async def main() -> float:
        worst = 0.0
        done = False

        async def ticker() -> None:
            nonlocal worst
            last = time.perf_counter()
            while not done:
                await asyncio.sleep(0)
                now = time.perf_counter()
                worst = max(worst, now - last)
                last = now

        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        step = await reconciler.step(_EmptyStore(), model, 1)  # type: ignore[arg-type]
        done = True
        await tick
        assert step.applied.gone == []
        return worst

    gc.disable()  # the collector's pauses are not the step's (and pytest holds many objects)
    try:
        worst = asyncio.run(main())
    finally:
        gc.enable()
    assert worst < whole_sort / 2, (worst, whole_sort)
