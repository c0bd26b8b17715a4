"""Time as the protocol sees it: wall time for what is stored, a monotonic clock for decisions.

Injected into the queue and the worker so that tests advance time instead of sleeping
(``FakeClock``): a lease that must die, a retry that must come due, a per-name gap to wait out.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class Clock(Protocol):
    """Wall time, monotonic time and sleeping, from one source."""

    def now(self) -> datetime:
        """The current wall time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (the base of every lease decision)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


class SystemClock:
    """The machine's clocks."""

    def now(self) -> datetime:
        return utcnow()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """A clock that moves only when told (``advance``) or when something sleeps on it.

    ``sleep`` advances the clock at once and yields to the loop, so code that waits out a
    per-name gap or a retry delay runs in microseconds of real time.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._wall = start or utcnow()
        self._mono = 1_000.0

    def now(self) -> datetime:
        return self._wall

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by ``seconds``."""
        self._mono += seconds
        self._wall += timedelta(seconds=seconds)

    async def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)


SYSTEM_CLOCK = SystemClock()
