"""Run the benchmarks and print one markdown table per benchmark, each figure beside its baseline.

    python benchmarks/run.py [--sizes 1000,10000,100000]
        [--only refresh,claims,ui,memory,start,gcsrules,changes,soak] [--soak-minutes 10]

Progress goes to stderr; stdout holds the machine line and the tables (paste-ready). Raw
figures also land in benchmarks/results/ (git-ignored). Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: make ``benchmarks`` and ``omniq_console`` importable from the repo root.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

from benchmarks.common import Table, log, machine_line, save_raw  # noqa: E402

BENCHMARKS = ("refresh", "claims", "ui", "memory", "start", "gcsrules", "changes", "soak")
# Run only when asked for: the soak alone takes --soak-minutes (10).
DEFAULT = tuple(name for name in BENCHMARKS if name != "soak")
DEFAULT_SIZES = "1000,10000,100000"


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
        default=_sizes(DEFAULT_SIZES),
        help=f"task counts (default {DEFAULT_SIZES}); the largest is the UI/memory size",
    )
    parser.add_argument(
        "--only",
        type=_only,
        default=list(DEFAULT),
        help="comma-separated subset to run (soak only when named)",
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
        "--soak-minutes", type=float, default=10.0, help="soak: how long (default 10)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Our traffic only ever goes to the emulators we start on loopback.
    os.environ.pop("STORAGE_EMULATOR_HOST", None)
    started = time.perf_counter()
    print(machine_line())
    print()
    all_tables: list[Table] = []
    raw: dict[str, object] = {"machine": machine_line(), "args": vars(args)}
    largest = max(args.sizes)
    for name in args.only:
        log(f"--- {name} ---")
        load_before = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        t0 = time.perf_counter()
        tables: list[Table]
        if name == "refresh":
            from benchmarks import refresh

            tables, _ = asyncio.run(
                refresh.run(
                    args.sizes,
                    max_measured=args.max_measured,
                    storage=args.emulator_storage,
                    standin=not args.no_standin,
                )
            )
        elif name == "claims":
            from benchmarks import claims

            workers = [int(w) for w in args.claim_workers.split(",") if w.strip()]
            tables = claims.run(tasks=args.claim_tasks, workers=workers)
        elif name == "ui":
            from benchmarks import ui

            tables = ui.run(largest, live=not args.no_live)
        elif name == "memory":
            from benchmarks import memory

            tables = memory.run(largest, live=not args.no_live)
        elif name == "gcsrules":
            from benchmarks import gcsrules

            tables = gcsrules.run()
        elif name == "soak":
            from benchmarks import soak

            tables = soak.run(args.soak_minutes)
        elif name == "changes":
            from benchmarks import changes

            changes.main([])  # prints its own table (its sizes go to 1,000,000 tasks)
            tables = []
        else:
            from benchmarks import start

            tables = start.run()
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
