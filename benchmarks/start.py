"""Start: time from command to the console's first frame, and to its first data.

``python -m omniq_console --bucket B`` runs in a pseudo-terminal (160x50) against an emulator
bucket holding a small fleet's objects (STORAGE_EMULATOR_HOST); the screen output, stripped of
escape sequences, is read until the dashboard's tab bar shows (first frame) and until a queue
name from the bucket shows (first data: the first poll is drawn). Baselines in the same run and
measured the same way: the bare interpreter (``python -c pass``), and a minimal Textual app's
first frame. The import cost of the console's modules is timed too (``-X importtime``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import select
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Sequence
from pathlib import Path

from .common import ROOT, Table, emulator, log, verdict

TARGET_S = 1.0
ROWS, COLS = 50, 160
REPEAT = 3
FIRST_FRAME = "Overview"  # the first tab's label: drawn with the first frame, before any data
FIRST_DATA = "webhooks"  # a queue of the seeded bucket: drawn once the first poll arrived
_ANSI = re.compile(rb"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-_]")
CONSOLE_MODULES = (
    "omniq_console.cli",
    "omniq_console.tui.app",
    "omniq_console.monitor.monitor",
    "omniq_console.backend.gcs",
    "omniq_console.runtime.operator",
)
MINIMAL_APP = """
from textual.app import App
from textual.widgets import Footer, Header, Static
class Hello(App):
    def compose(self):
        yield Header()
        yield Static("Overview")
        yield Footer()
Hello().run()
"""


PYCACHE = Path(tempfile.gettempdir()) / "omniq-start-pycache"
"""Where the measured interpreters keep their bytecode: the console's modules start from
cached bytecode, as an installed package's do (pip compiles them), however this shell is set
(``PYTHONDONTWRITEBYTECODE`` made every run compile the console's ~150 modules, about 0.3 s
that the minimal app, whose Textual is compiled, never paid). The import timing warms it."""


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("STORAGE_EMULATOR_HOST", "PYTHONDONTWRITEBYTECODE")
    }
    env.update(TERM="xterm-256color", COLUMNS=str(COLS), LINES=str(ROWS), PYTHONPATH=str(ROOT))
    env.update(PYTHONPYCACHEPREFIX=str(PYCACHE))
    env.update(extra or {})
    return env


def time_to_text(
    argv: Sequence[str], markers: Sequence[str], *, env: dict[str, str], timeout: float = 60.0
) -> dict[str, float]:
    """Seconds from spawning ``argv`` on a fresh pty until each marker appears on screen."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
    started = time.perf_counter()
    proc = subprocess.Popen(
        list(argv),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        cwd=ROOT,
        start_new_session=True,
        close_fds=True,
    )
    os.close(slave)
    seen: dict[str, float] = {}
    screen = b""
    try:
        while len(seen) < len(markers):
            if time.perf_counter() - started > timeout:
                tail = _ANSI.sub(b"", screen)[-400:].decode("utf-8", "replace")
                raise TimeoutError(f"{argv[-1]!r}: {set(markers) - set(seen)} not shown: {tail!r}")
            ready, _, _ = select.select([master], [], [], 0.05)
            if not ready:
                if proc.poll() is not None:
                    tail = _ANSI.sub(b"", screen)[-400:].decode("utf-8", "replace")
                    raise RuntimeError(f"{argv} exited with {proc.returncode}: {tail!r}")
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                continue
            screen += chunk
            text = _ANSI.sub(b"", screen).decode("utf-8", "replace")
            now = time.perf_counter() - started
            for marker in markers:
                if marker not in seen and marker in text:
                    seen[marker] = now
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        os.close(master)
    return seen


def _wall(argv: Sequence[str]) -> float:
    started = time.perf_counter()
    subprocess.run(list(argv), env=_env(), cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - started


def import_times() -> tuple[float, float, list[tuple[str, float]]]:
    """(bare interpreter s, interpreter + console modules s, heaviest top-level imports)."""
    bare = statistics.median(_wall([sys.executable, "-c", "pass"]) for _ in range(REPEAT))
    code = "import " + ", ".join(CONSOLE_MODULES)
    full = statistics.median(_wall([sys.executable, "-c", code]) for _ in range(REPEAT))
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        env=_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    packages: dict[str, float] = {}
    for line in done.stderr.splitlines():
        # "import time: self [us] | cumulative | imported package": each module's own time,
        # summed by top-level package (where the start-up time goes).
        parts = line.split("|")
        if len(parts) != 3 or not parts[0].startswith("import time:") or "self" in parts[0]:
            continue
        top = parts[2].strip().split(".")[0]
        packages[top] = packages.get(top, 0.0) + int(parts[0].split(":")[1]) / 1e6
    heaviest = sorted(packages.items(), key=lambda kv: -kv[1])[:8]
    return bare, full, heaviest


async def _seed_small(url: str, bucket: str) -> None:
    from omniq_console.backend.gcs import GCSBackend

    from .seed import Mix, seed

    async with GCSBackend(bucket, endpoint_url=url, token="anon") as backend:
        await seed(backend, Mix.for_tasks(100))


def help_seconds() -> float:
    """``python -m omniq_console --help`` from spawn to exit (median)."""
    argv = [sys.executable, "-m", "omniq_console", "--help"]
    return statistics.median(_wall(argv) for _ in range(REPEAT))


def run() -> list[Table]:
    bare, full, heaviest = import_times()
    log(f"start: imports {full:.2f} s (bare interpreter {bare:.2f} s)")
    helped = help_seconds()
    log(f"start: --help {helped:.2f} s")
    python = sys.executable
    minimal: list[float] = []
    console_frame: list[float] = []
    console_data: list[float] = []
    with emulator("memory") as emu:
        bucket = "start-bench"
        emu.create_bucket(bucket)
        asyncio.run(_seed_small(emu.url, bucket))
        env = _env({"STORAGE_EMULATOR_HOST": emu.url})
        for _ in range(REPEAT):
            seen = time_to_text([python, "-c", MINIMAL_APP], [FIRST_FRAME], env=_env())
            minimal.append(seen[FIRST_FRAME])
            seen = time_to_text(
                [python, "-m", "omniq_console", "--bucket", bucket, "--read-only"],
                [FIRST_FRAME, FIRST_DATA],
                env=env,
            )
            console_frame.append(seen[FIRST_FRAME])
            console_data.append(seen[FIRST_DATA])
            log(
                f"start: first frame {seen[FIRST_FRAME]:.2f} s, first data {seen[FIRST_DATA]:.2f} s"
            )
    table = Table(
        f"Start: command to first frame (pty {COLS}x{ROWS}, median of {REPEAT})",
        ["what", "seconds", "target < 1 s"],
    )
    frame = statistics.median(console_frame)
    table.add("baseline: bare interpreter (python -c pass)", round(bare, 3), "")
    table.add(
        "baseline: minimal Textual app, first frame", round(statistics.median(minimal), 3), ""
    )
    table.add(
        "import the console's modules (cli, tui, monitor, backend, operator)",
        round(full, 3),
        "",
    )
    table.add(
        "`python -m omniq_console --help`: to exit",
        round(helped, 3),
        verdict(helped, TARGET_S, unit=" s"),
    )
    table.add(
        "`python -m omniq_console --bucket B`: first frame (tab bar drawn)",
        round(frame, 3),
        verdict(frame, TARGET_S, unit=" s"),
    )
    table.add(
        "`python -m omniq_console --bucket B`: first data (first poll drawn)",
        round(statistics.median(console_data), 3),
        "",
    )
    table.notes.append(
        "Where import time goes (self time summed by top-level package, -X importtime): "
        + ", ".join(f"{name} {sec * 1000:.0f} ms" for name, sec in heaviest)
        + ". The console draws first and checks the bucket and opens the backend (gcsfs's "
        "import, credentials, the first request) meanwhile; the bucket is on a local emulator "
        "(100 tasks), so the network is near free here. A loaded machine stretches every "
        "figure: compare the console with the minimal Textual app of the same run."
    )
    return [table]


if __name__ == "__main__":
    # ``python -m benchmarks.start``: this table alone (benchmarks/run.py runs it with the rest).
    for table in run():
        print(table.markdown())
