"""Run the benchmarks and print one markdown table per benchmark, each figure beside its baseline.

    python benchmarks/run.py [--sizes 1000,10000,100000]
        [--only refresh,claims,ui,memory,start,gcsrules,changes,errors,soak]

Progress goes to stderr; stdout holds the machine line and the tables (paste-ready). Raw
figures also land in benchmarks/results/ (git-ignored). Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

if __package__ in (None, ""):
    # Run as a script: make ``benchmarks`` and ``omniq_console`` importable from the repo root.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

from benchmarks.common import Table, log, machine_line, save_raw

Runner = Callable[[argparse.Namespace], list[Table]]


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"benchmarks.{name}")


def _refresh(args: argparse.Namespace) -> list[Table]:
    tables, _ = asyncio.run(
        _module("refresh").run(
            args.sizes,
            max_measured=args.max_measured,
            storage=args.emulator_storage,
            standin=not args.no_standin,
        )
    )
    return list(tables)


def _claims(args: argparse.Namespace) -> list[Table]:
    workers = [int(w) for w in args.claim_workers.split(",") if w.strip()]
    return list(_module("claims").run(tasks=args.claim_tasks, workers=workers))


def _changes(args: argparse.Namespace) -> list[Table]:
    modes = [m for m in args.changes_modes.split(",") if m.strip()]
    return list(
        _module("changes").run(
            args.changes_sizes, modes, args.changes_timeout, args.changes_baseline
        )
    )


RUNNERS: dict[str, Runner] = {
    "refresh": _refresh,
    "claims": _claims,
    "ui": lambda args: list(_module("ui").run(max(args.sizes), live=not args.no_live)),
    "memory": lambda args: list(_module("memory").run(max(args.sizes), live=not args.no_live)),
    "start": lambda args: list(_module("start").run()),
    "gcsrules": lambda args: list(_module("gcsrules").run()),
    "changes": _changes,
    "errors": lambda args: list(_module("errors").run()),
    "soak": lambda args: list(_module("soak").run(args.soak_minutes)),
}
ON_REQUEST = ("soak",)
"""Run only when named in --only (the soak takes ten minutes by itself)."""
# A benchmark whose module is not in this checkout (one written on another branch) is left out.
BENCHMARKS = tuple(
    name for name in RUNNERS if importlib.util.find_spec(f"benchmarks.{name}") is not None
)
DEFAULT_SIZES = "1000,10000,100000"
CHANGES_SIZES = "10000,100000,1000000"


def _sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(part.replace("_", "")) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--sizes wants numbers like 1000,10000: {text!r}"
        ) from None
    if not sizes or sizes[0] < 10:
        raise argparse.ArgumentTypeError("--sizes wants task counts of at least 10")
    return sizes


def _only(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"--only takes some of {','.join(BENCHMARKS)}; unknown: {','.join(unknown) or '(none)'}"
        )
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/run.py",
        description="omniq-console benchmarks: refresh, responsiveness, claims, memory, start.",
    )
    parser.add_argument(
        "--sizes",
        type=_sizes,
        default=None,
        help=f"task counts (default {DEFAULT_SIZES}); the largest is the UI/memory size; "
        f"changes runs these too unless --changes-sizes says otherwise",
    )
    parser.add_argument(
        "--only",
        type=_only,
        default=[name for name in BENCHMARKS if name not in ON_REQUEST],
        help=f"comma-separated subset of {','.join(BENCHMARKS)} (default: all but "
        f"{','.join(ON_REQUEST)})",
    )
    parser.add_argument(
        "--max-measured",
        type=int,
        default=10_000,
        help="refresh: sizes above this are derived from the largest measured one (default 10000)",
    )
    parser.add_argument(
        "--emulator-storage",
        choices=("filesystem", "memory"),
        default="filesystem",
        help="refresh: the emulator backend to seed (default filesystem: flat write cost)",
    )
    parser.add_argument(
        "--no-standin",
        action="store_true",
        help="refresh: above --max-measured, derive only (skip the in-memory GCS stand-in runs)",
    )
    parser.add_argument(
        "--no-live",
        action="store_true",
        help="ui, memory: skip the live console (real Monitor on the in-memory GCS stand-in)",
    )
    parser.add_argument(
        "--claim-tasks", type=int, default=600, help="claims: tasks in the prepared queue"
    )
    parser.add_argument(
        "--claim-workers",
        default="1,4,16",
        help="claims: worker process counts (default 1,4,16)",
    )
    parser.add_argument(
        "--changes-sizes",
        type=_sizes,
        default=None,
        help=f"changes: task counts (default --sizes if given, else {CHANGES_SIZES})",
    )
    parser.add_argument(
        "--changes-modes",
        default="listing,pubsub",
        help="changes: listing, pubsub or both (default both)",
    )
    parser.add_argument(
        "--changes-timeout",
        type=float,
        default=1800.0,
        help="changes: seconds for one size in one mode; a run stopped then reports what it "
        "measured by then (default 1800)",
    )
    parser.add_argument(
        "--changes-baseline",
        metavar="REF",
        help="changes: also run each size and mode with the monitor's code as of this git ref, "
        "in the row beside",
    )
    parser.add_argument(
        "--soak-minutes", type=float, default=10.0, help="soak: minutes (default 10)"
    )
    args = parser.parse_args(argv)
    if args.changes_sizes is None:
        args.changes_sizes = args.sizes or _sizes(CHANGES_SIZES)
    if args.sizes is None:
        args.sizes = _sizes(DEFAULT_SIZES)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Our traffic only ever goes to the emulators we start on loopback.
    os.environ.pop("STORAGE_EMULATOR_HOST", None)
    started = time.perf_counter()
    print(machine_line())
    print()
    all_tables: list[Table] = []
    raw: dict[str, object] = {"machine": machine_line(), "args": vars(args)}
    for name in args.only:
        log(f"--- {name} ---")
        load_before = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        t0 = time.perf_counter()
        tables = RUNNERS[name](args)
        if tables:
            load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
            tables[-1].notes.append(
                f"({name}: {time.perf_counter() - t0:.0f} s of benchmark time; load average "
                f"before it: {load_before}; after: {load})"
            )
        for table in tables:
            print(table.markdown())
            print(flush=True)
        all_tables.extend(tables)
        raw[name] = [t.as_dict() for t in tables]
    raw["seconds"] = time.perf_counter() - started
    path = save_raw("run", raw)
    log(f"done in {raw['seconds']:.0f} s; raw figures in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
