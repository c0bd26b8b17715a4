"""Numbers, durations and times as the console writes them (compact, fixed width where it helps)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

DASH = "—"
_BARS = "▁▂▃▄▅▆▇█"


def count(value: int) -> str:
    """``100000`` as ``100,000``."""
    return f"{value:,}"


def plural(n: int, word: str, words: str | None = None) -> str:
    """``1 task``, ``2 tasks``, ``1,500 tasks`` (``words`` for irregular plurals)."""
    return f"{n:,} {word if n == 1 else (words or word + 's')}"


def every(seconds: float) -> str:
    """A poll interval as people write it: ``every 2 s``, ``every 3.3 s``, ``every 2 min``."""
    if seconds >= 120 and seconds % 60 == 0:
        return f"every {seconds / 60:g} min"
    shown = f"{seconds:.1f}".removesuffix(".0") if seconds < 100 else f"{seconds:.0f}"
    return f"every {shown} s"


def duration(seconds: float | None) -> str:
    """A compact duration: ``45s``, ``3m 05s``, ``2h 03m``, ``3d 04h``."""
    if seconds is None:
        return DASH
    s = int(abs(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


def ago(when: datetime | None, now: datetime) -> str:
    """How long before ``now`` that was: ``3m 05s ago``."""
    if when is None:
        return DASH
    return f"{duration((now - when).total_seconds())} ago"


def countdown(when: datetime | None, now: datetime) -> str:
    """Time until ``when``: ``in 3m 05s``, ``due now``, or ``late 2m 00s``."""
    if when is None:
        return DASH
    seconds = (when - now).total_seconds()
    if seconds >= 1:
        return f"in {duration(seconds)}"
    if seconds > -1:
        return "due now"
    return f"late {duration(-seconds)}"


def timestamp(when: datetime | None) -> str:
    """``2026-01-05 14:03:07`` (UTC, to the second)."""
    return DASH if when is None else when.strftime("%Y-%m-%d %H:%M:%S")


def short_timestamp(when: datetime | None) -> str:
    """``03-02 14:03:07`` (UTC, month-day and time: what a table column has room for)."""
    return DASH if when is None else when.strftime("%m-%d %H:%M:%S")


def clock_time(when: datetime | None) -> str:
    """``14:03:07`` (UTC)."""
    return DASH if when is None else when.strftime("%H:%M:%S")


def percent(ratio: float) -> str:
    """``0.125`` as ``12.5%``."""
    return f"{ratio * 100:.1f}%"


def sparkline(values: Sequence[float], width: int | None = None) -> str:
    """The last ``width`` values as a line of block characters, scaled from 0 to their max."""
    if width is not None:
        values = values[-width:]
    if not values:
        return ""
    top = max(values)
    if top <= 0:
        return _BARS[0] * len(values)
    last = len(_BARS) - 1
    return "".join(_BARS[round(max(v, 0) / top * last)] for v in values)
