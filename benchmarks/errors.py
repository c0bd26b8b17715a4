"""Errors and help: how long the command takes to say what is wrong, beside its target.

Each case runs ``python -m omniq_console ...`` as a user would (a fresh process: imports
included), checks that it ends as documented (exit 2 and one ``omniq-console: error:`` line;
``--help`` exit 0), and reports the median wall time of ``REPEAT`` runs with the target:
``--help`` under 1 s, every error under 3 s. The bare interpreter is the baseline. Run it with
``python -m benchmarks.errors``.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from omniq_console.cli import CREDENTIALS_DEADLINE, PROBE_DEADLINE

from .common import ROOT, Table, emulator, log, machine_line, verdict

REPEAT = 3
HELP_TARGET_S = 1.0
ERROR_TARGET_S = 3.0


@dataclass(frozen=True)
class Case:
    what: str
    args: Sequence[str]
    env: dict[str, str]
    target: float
    exit_code: int = 2


def _env(extra: dict[str, str]) -> dict[str, str]:
    drop = ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS", "OMNIQ_BUCKET")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def _refused_endpoint() -> str:
    # A port that was just free: nothing listens there, so a connection is refused.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def _run(case: Case) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "omniq_console", *case.args],
        env=case.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    took = time.perf_counter() - started
    if done.returncode != case.exit_code:
        raise RuntimeError(
            f"{case.what}: exit {done.returncode}, not {case.exit_code}: {done.stderr}"
        )
    said = done.stderr.strip().splitlines()
    if case.exit_code == 2 and (len(said) != 1 or not said[0].startswith("omniq-console: error:")):
        raise RuntimeError(f"{case.what}: not one error line: {done.stderr!r}")
    return took, said[0] if said else ""


def cases(endpoint: str, home: Path) -> list[Case]:
    bad_key = home / "key.json"
    bad_key.write_text('{"type": "service_account", "private_key": "not a key"}')
    emulated = _env({"STORAGE_EMULATOR_HOST": endpoint})
    # No key file, no gcloud login, no emulator: what a new user on this machine has.
    bare = _env({"HOME": str(home), "CLOUDSDK_CONFIG": str(home / "gcloud")})
    snapshot = ("snapshot", "--bucket")
    return [
        Case("`omniq-console --help`", ["--help"], bare, HELP_TARGET_S, 0),
        Case("`omniq-console metrics --help`", ["metrics", "--help"], bare, HELP_TARGET_S, 0),
        Case("no bucket given", ["snapshot"], bare, ERROR_TARGET_S),
        Case(
            "bad bucket (missing on the endpoint)",
            [*snapshot, "no-such-bucket"],
            emulated,
            ERROR_TARGET_S,
        ),
        Case(
            "refused endpoint",
            [*snapshot, "any-bucket"],
            _env({"STORAGE_EMULATOR_HOST": _refused_endpoint()}),
            ERROR_TARGET_S,
        ),
        Case(
            "bad key file", [*snapshot, "any-bucket", "--token", str(bad_key)], bare, ERROR_TARGET_S
        ),
        Case("no credentials", [*snapshot, "any-bucket"], bare, ERROR_TARGET_S),
    ]


def run() -> list[Table]:
    bare = statistics.median(_wall([sys.executable, "-c", "pass"]) for _ in range(REPEAT))
    table = Table(
        f"Errors and help: command to exit (fresh process, median of {REPEAT})",
        ["case", "seconds", "target", "verdict", "what it said"],
    )
    table.add("baseline: bare interpreter (python -c pass)", round(bare, 3), "", "", "")
    with emulator("memory") as emu, tempfile.TemporaryDirectory(prefix="omniq-errors-") as home:
        for case in cases(emu.url, Path(home)):
            runs = [_run(case) for _ in range(REPEAT)]
            seconds = statistics.median(took for took, _ in runs)
            log(f"errors: {case.what}: {seconds:.2f} s")
            said = runs[-1][1]
            table.add(
                case.what,
                round(seconds, 3),
                f"< {case.target:g} s",
                verdict(seconds, case.target, unit=" s"),
                said[:110] + ("…" if len(said) > 110 else ""),
            )
    table.notes.append(
        "Every error is one line on stderr and exit code 2. The refused endpoint is retried "
        f"for {PROBE_DEADLINE:g} s (the first probe's deadline); the search for application "
        f"default credentials is bounded at {CREDENTIALS_DEADLINE:g} s (it may ask the GCE "
        "metadata server). A loaded machine stretches every figure: compare with the bare "
        "interpreter of the same run."
    )
    return [table]


def _wall(argv: Sequence[str]) -> float:
    started = time.perf_counter()
    subprocess.run(list(argv), check=True, capture_output=True)
    return time.perf_counter() - started


if __name__ == "__main__":
    print(machine_line())
    for result in run():
        print(result.markdown())
