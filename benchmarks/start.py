"""Start: time from command to the console's first frame, and to its first data.

``python -m omniq_console --bucket B`` runs in a pseudo-terminal (160x50) against an emulator
bucket holding a small fleet's objects (STORAGE_EMULATOR_HOST); the screen output, stripped of
escape sequences, is read until the dashboard's tab bar shows (first frame) and until a queue
name from the bucket shows (first data: the first poll is drawn). Baselines in the same run and
measured the same way: the bare interpreter (``python -c pass``), and a minimal Textual app's
first frame. Each first frame is also counted in the process's CPU seconds by then (from
``/proc``), which a loaded machine distorts less than wall time, and with ``--instructions``
in instructions run (valgrind's callgrind), which load does not change at all. ``--baseline
REF`` runs the console as of a git ref too, alternating with this tree's in the same run. The
import cost of the console's modules is timed too (``-X importtime``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import os
import re
import select
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .common import ROOT, Table, checkout, emulator, log, verdict

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


TO_FIRST_FRAME = """
import importlib.abc, importlib.machinery, os, sys

class OnFirstFrame(importlib.abc.MetaPathFinder):
    # When the console's app module loads (where the CLI loads it: after reading the
    # settings), its first frame (Textual's Ready) ends the process at once.
    def find_spec(self, name, path, target=None):
        if name != "omniq_console.tui.app":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        load = spec.loader.exec_module
        def exec_module(module):
            load(module)
            module.ConsoleApp.on_ready = lambda self: os._exit(0)
        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, OnFirstFrame())
from omniq_console.cli import main
main(sys.argv[1:])
"""
"""``python -c TO_FIRST_FRAME ARGS`` runs ``omniq-console ARGS`` up to its first frame."""
MINIMAL_TO_FIRST_FRAME = MINIMAL_APP.replace(
    "Hello().run()", "import os\nHello.on_ready = lambda self: os._exit(0)\nHello().run()"
)


PYCACHE = Path(tempfile.gettempdir()) / "omniq-start-pycache"
"""Where the measured interpreters keep their bytecode: the console's modules start from
cached bytecode, as an installed package's do (pip compiles them), however this shell is set
(``PYTHONDONTWRITEBYTECODE`` made every run compile the console's ~150 modules, about 0.3 s
that the minimal app, whose Textual is compiled, never paid). The import timing warms it."""


def _env(extra: dict[str, str] | None = None, *, code: Path = ROOT) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("STORAGE_EMULATOR_HOST", "PYTHONDONTWRITEBYTECODE")
    }
    env.update(TERM="xterm-256color", COLUMNS=str(COLS), LINES=str(ROWS), PYTHONPATH=str(code))
    env.update(PYTHONPYCACHEPREFIX=str(PYCACHE))
    env.update(extra or {})
    return env


@dataclass(frozen=True)
class Shown:
    """When each marker appeared on screen: wall seconds from spawn, and the process's own
    CPU seconds (user + system) by then."""

    wall: dict[str, float]
    cpu: dict[str, float]


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (its children not counted)."""
    with open(f"/proc/{pid}/stat", "rb") as stat:
        # Fields after the command name (which may hold spaces): utime and stime are the
        # 12th and 13th of them.
        fields = stat.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def time_to_text(
    argv: Sequence[str],
    markers: Sequence[str],
    *,
    env: dict[str, str],
    cwd: Path = ROOT,
    timeout: float = 60.0,
) -> Shown:
    """Wall and CPU seconds from spawning ``argv`` on a fresh pty until each marker appears
    on screen (``cwd``: where ``python -m`` finds the package first)."""
    started = time.perf_counter()
    proc, master = _spawn_on_pty(argv, env=env, cwd=cwd)
    seen: dict[str, float] = {}
    cpu: dict[str, float] = {}
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
                    cpu[marker] = _cpu_seconds(proc.pid)
    finally:
        _stop(proc, master)
    return Shown(seen, cpu)


def _spawn_on_pty(
    argv: Sequence[str], *, env: dict[str, str], cwd: Path
) -> tuple[subprocess.Popen[bytes], int]:
    """``argv`` started in a session of its own on a fresh pty of ``COLS`` x ``ROWS``: the
    process, and the pty's end that reads its screen."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
    proc = subprocess.Popen(
        list(argv),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        cwd=cwd,
        start_new_session=True,
        close_fds=True,
    )
    os.close(slave)
    return proc, master


def _stop(proc: subprocess.Popen[bytes], master: int) -> None:
    """End ``proc``'s session if it still runs (SIGTERM, then SIGKILL), close its pty."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    os.close(master)


def instructions(
    argv: Sequence[str], *, env: dict[str, str], cwd: Path = ROOT, timeout: float = 600.0
) -> float:
    """Millions of instructions ``argv`` runs on a fresh pty until it exits, counted by
    valgrind's callgrind: the same figure however loaded the machine is (the run itself is
    ~50 times slower)."""
    with tempfile.TemporaryDirectory(prefix="omniq-callgrind-") as tmp:
        said = Path(tmp) / "valgrind.log"
        counted = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={tmp}/callgrind.out",
            f"--log-file={said}",
            *argv,
        ]
        proc, master = _spawn_on_pty(counted, env=env, cwd=cwd)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:  # drain the screen until the process exits
                ready, _, _ = select.select([master], [], [], 0.5)
                try:
                    if ready and not os.read(master, 65536):
                        break
                except OSError:  # the process closed the terminal: it exited
                    break
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            _stop(proc, master)
        found = re.search(r"Collected\s*:\s*(\d+)", said.read_text())
        if found is None:
            raise RuntimeError(f"callgrind counted nothing: {said.read_text()[-400:]!r}")
        return int(found.group(1)) / 1e6


def _wall(argv: Sequence[str], code: Path = ROOT) -> float:
    started = time.perf_counter()
    subprocess.run(list(argv), env=_env(code=code), cwd=code, check=True, capture_output=True)
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


@dataclass
class Runs:
    """One tree's figures over the repeats: seconds, each list one entry a repeat."""

    help: list[float]
    frame: list[float]
    frame_cpu: list[float]
    data: list[float]

    def medians(self) -> tuple[float, float, float, float]:
        """(--help, first frame, its CPU, first data): the median of each."""
        return (
            statistics.median(self.help),
            statistics.median(self.frame),
            statistics.median(self.frame_cpu),
            statistics.median(self.data),
        )


def _measure(code: Path, bucket: str, endpoint: str, into: Runs) -> None:
    """One run of ``--help`` and of the console of the tree ``code``, into ``into``."""
    python = sys.executable
    into.help.append(_wall([python, "-m", "omniq_console", "--help"], code))
    shown = time_to_text(
        [python, "-m", "omniq_console", "--bucket", bucket, "--read-only"],
        [FIRST_FRAME, FIRST_DATA],
        env=_env({"STORAGE_EMULATOR_HOST": endpoint}, code=code),
        cwd=code,
    )
    into.frame.append(shown.wall[FIRST_FRAME])
    into.frame_cpu.append(shown.cpu[FIRST_FRAME])
    into.data.append(shown.wall[FIRST_DATA])
    log(
        f"start ({'this tree' if code == ROOT else 'baseline'}): first frame "
        f"{shown.wall[FIRST_FRAME]:.2f} s (CPU {shown.cpu[FIRST_FRAME]:.2f} s), first data "
        f"{shown.wall[FIRST_DATA]:.2f} s, --help {into.help[-1]:.2f} s"
    )


@contextlib.contextmanager
def _trees(baseline: str | None) -> Iterator[list[tuple[str, Path]]]:
    """This tree, and with ``baseline`` the package as of that git ref (measured first)."""
    if baseline is None:
        yield [("this tree", ROOT)]
        return
    with checkout(baseline) as code:
        yield [(f"at {baseline}", code), ("this tree", ROOT)]


def _instructions_to_first_frame(
    trees: list[tuple[str, Path]], endpoint: str, bucket: str
) -> tuple[float, dict[str, float]]:
    """Millions of instructions to the first frame: (the minimal app, each tree's console)."""
    python = sys.executable
    minimal = instructions([python, "-c", MINIMAL_TO_FIRST_FRAME], env=_env())
    counted = {
        name: instructions(
            [python, "-c", TO_FIRST_FRAME, "--bucket", bucket, "--read-only"],
            env=_env({"STORAGE_EMULATOR_HOST": endpoint}, code=code),
            cwd=code,
        )
        for name, code in trees
    }
    log(f"start: instructions to the first frame (millions): minimal {minimal:.0f}, {counted}")
    return minimal, counted


def run(baseline: str | None = None, *, count_instructions: bool = False) -> list[Table]:
    if count_instructions and shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind (apt-get install valgrind)")
    bare, full, heaviest = import_times()
    log(f"start: imports {full:.2f} s (bare interpreter {bare:.2f} s); load {_load()}")
    minimal: list[float] = []
    minimal_cpu: list[float] = []
    with emulator("memory") as emu, _trees(baseline) as trees:
        bucket = "start-bench"
        emu.create_bucket(bucket)
        asyncio.run(_seed_small(emu.url, bucket))
        runs = {name: Runs([], [], [], []) for name, _ in trees}
        for _ in range(REPEAT):
            # Alternately, so that a change of the machine's load hits every tree alike.
            shown = time_to_text([sys.executable, "-c", MINIMAL_APP], [FIRST_FRAME], env=_env())
            minimal.append(shown.wall[FIRST_FRAME])
            minimal_cpu.append(shown.cpu[FIRST_FRAME])
            for name, code in trees:
                _measure(code, bucket, emu.url, runs[name])
        counts = (
            _instructions_to_first_frame(trees, emu.url, bucket) if count_instructions else None
        )
    load = _load()
    table = Table(
        f"Start: command to first frame (pty {COLS}x{ROWS}, median of {REPEAT}, load {load})",
        ["what", *(f"seconds ({name})" for name in runs), "target < 1 s"],
    )
    blank = [""] * (len(runs) - 1)
    mine = runs["this tree"].medians()
    table.add("baseline: bare interpreter (python -c pass)", round(bare, 3), *blank, "")
    table.add(
        "baseline: minimal Textual app, first frame (CPU)",
        f"{statistics.median(minimal):.3f} ({statistics.median(minimal_cpu):.2f})",
        *blank,
        "",
    )
    table.add(
        "import the console's modules (cli, tui, monitor, backend, operator)",
        round(full, 3),
        *blank,
        "",
    )
    medians = [r.medians() for r in runs.values()]
    table.add(
        "`python -m omniq_console --help`: to exit",
        *(round(m[0], 3) for m in medians),
        verdict(mine[0], TARGET_S, unit=" s"),
    )
    table.add(
        "`python -m omniq_console --bucket B`: first frame (tab bar drawn)",
        *(round(m[1], 3) for m in medians),
        verdict(mine[1], TARGET_S, unit=" s"),
    )
    table.add(
        "the same: the console's CPU seconds by its first frame",
        *(round(m[2], 3) for m in medians),
        "",
    )
    if counts is not None:
        minimal_count, counted = counts
        table.add(
            "baseline: minimal Textual app, instructions to first frame (millions, callgrind)",
            round(minimal_count),
            *blank,
            "",
        )
        table.add(
            "the console's instructions to its first frame (millions, callgrind)",
            *(round(counted[name]) for name in runs),
            "",
        )
    table.add(
        "`python -m omniq_console --bucket B`: first data (first poll drawn)",
        *(round(m[3], 3) for m in medians),
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


def _load() -> str:
    """The machine's 1-minute load average, which stretches every wall-clock figure here."""
    return Path("/proc/loadavg").read_text().split()[0]


if __name__ == "__main__":
    # ``python -m benchmarks.start``: this table alone (benchmarks/run.py runs it with the rest).
    parser = argparse.ArgumentParser(prog="python -m benchmarks.start")
    parser.add_argument(
        "--baseline",
        metavar="REF",
        help="also run the console as of this git ref, alternating with this tree's",
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="also count the instructions to the first frame with valgrind (load-independent; "
        "about a minute a tree)",
    )
    args = parser.parse_args()
    for table in run(args.baseline, count_instructions=args.instructions):
        print(table.markdown())
