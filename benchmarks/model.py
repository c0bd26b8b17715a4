"""The monitor's model alone: bytes per task, cold load, and microseconds per applied change.

A bucket of ``n`` tasks in the object model of docs/architecture.md (the change benchmark's
mix: a task object each, an entry per task not final, a state record per claimed task, half
the final ones already deleted) is decoded from listing-like pages (compact JSON decoded with
msgspec, so every metadata string is a fresh object, as from a real page) into a
``BucketModel``: settled, its rows read. Then rounds of 1% changes (claims: a running state
record; completions: a final record and the entry deleted), each decoded, applied, settled
and the rows read, as a feed poll does.

Each tree runs in a fresh process (``--child``), this one's and, with ``--baseline REF``, the
model of git ``REF`` (its ``omniq_console`` extracted to a temporary directory), one after
the other:

    python -m benchmarks.model --sizes 100000 --baseline main
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
QUEUES = {"default": 0, "emails": 5, "reports": 0, "webhooks": 10}
FUNCS = ("app.send_email", "app.resize", "app.report", "app.webhook", "app.sync", "app.noop")
ERRORS = ("TimeoutError", "ValueError", "ConnectionError", "KeyError", "PermissionError")
# pending, running, completed, failed, cancelled (shares of the tasks)
MIX = (("pending", 0.15), ("running", 0.05), ("completed", 0.7), ("failed", 0.08),
       ("cancelled", 0.02))  # fmt: skip
RESULT_OF = {"completed": "success", "failed": "error", "cancelled": "cancelled"}
PAGE = 1000
ROUNDS = 3


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _iso(t: datetime) -> str:
    return t.isoformat()


class Fleet:
    """The bucket's objects as (key, generation, metadata), and its tasks' statuses."""

    def __init__(self, n: int, prefix: str = "omniq/") -> None:
        self.rng = random.Random(7)
        self.now = datetime.now(UTC)
        self.prefix = prefix
        self.generation = 1_700_000_000_000_000
        self.tasks: list[tuple[str, str, str, str]] = []  # id, queue, func, created
        self.status: list[str] = []
        statuses = [s for s, share in MIX for _ in range(round(n * share))][:n]
        statuses += ["pending"] * (n - len(statuses))
        self.rng.shuffle(statuses)
        self.objects: list[tuple[str, int, dict[str, str]]] = []
        finals = 0
        for status in statuses:
            tid = f"{self.rng.getrandbits(128):032x}"
            queue = self.rng.choice(tuple(QUEUES))
            func = self.rng.choice(FUNCS)
            created = _iso(self.now - timedelta(hours=6) * self.rng.random())
            self.tasks.append((tid, queue, func, created))
            self.status.append(status)
            md = {"omniq_index": "1", "status": "pending", "queue": queue,
                  "priority": str(QUEUES[queue]), "func": func, "run_at": "",
                  "expires_at": "", "created_at": created}  # fmt: skip
            self._put(f"{prefix}tasks/{tid}.json", md)
            if status in ("pending", "running"):
                entry = {k: md[k] for k in ("omniq_index", "priority", "run_at", "expires_at",
                                             "created_at")}  # fmt: skip
                self._put(f"{prefix}queues/{queue}/{tid}.json", entry)
            if status == "running":
                self._put(f"{prefix}results/{tid}.json", self._running(len(self.tasks) - 1))
            elif status in RESULT_OF:
                finals += 1
                if finals % 2 == 0:
                    self._put(f"{prefix}results/{tid}.json", self._final(len(self.tasks) - 1))

    def _put(self, key: str, md: dict[str, str]) -> int:
        self.generation += 1
        self.objects.append((key, self.generation, md))
        return self.generation

    def _record(self, i: int, state: str, status: str, **extra: str) -> dict[str, str]:
        _, queue, func, created = self.tasks[i]
        return {"omniq_index": "1", "status": status, "state": state, "queue": queue,
                "func": func, "attempt": "1", "created_at": created,
                "started_at": _iso(self.now - timedelta(seconds=2)), **extra}  # fmt: skip

    def _running(self, i: int) -> dict[str, str]:
        return self._record(i, "running", "pending", worker_id="worker-1", lease_s="3600",
                            lease_expires_at=_iso(self.now + timedelta(hours=1)))  # fmt: skip

    def _final(self, i: int) -> dict[str, str]:
        status = "completed" if self.rng.random() < 0.9 else "failed"
        error = self.rng.choice(ERRORS) if status == "failed" else ""
        return self._record(i, status, RESULT_OF[status], completed_at=_iso(self.now),
                            error_type=error, execution_time="0.25",
                            worker_id=f"worker-{self.rng.randrange(4)}")  # fmt: skip

    def changes(self, fraction: float) -> list[tuple[str, int, dict[str, str] | None]]:
        """1% of the tasks move on: (key, generation, metadata), None metadata = deleted."""
        movable = [i for i, s in enumerate(self.status) if s in ("pending", "running")]
        out: list[tuple[str, int, dict[str, str] | None]] = []
        for i in self.rng.sample(movable, max(1, int(len(self.tasks) * fraction))):
            tid, queue = self.tasks[i][0], self.tasks[i][1]
            result = f"{self.prefix}results/{tid}.json"
            if self.status[i] == "pending":
                self.status[i] = "running"
                md = self._running(i)
                out.append((result, self._put(result, md), md))
            else:
                md = self._final(i)
                self.status[i] = md["state"]
                out.append((result, self._put(result, md), md))
                entry = f"{self.prefix}queues/{queue}/{tid}.json"
                self.generation += 1
                out.append((entry, self.generation, None))
        return out


def _pages(objects: list[Any]) -> Iterator[list[Any]]:
    """Objects as a listing page decodes them: fresh strings for every value."""
    import msgspec

    for start in range(0, len(objects), PAGE):
        raw = msgspec.json.encode(objects[start : start + PAGE])
        yield msgspec.json.decode(raw)


def child(n: int) -> dict[str, float]:
    from omniq_console.backend.layout import Layout
    from omniq_console.monitor.model import BucketModel
    from omniq_console.monitor.records import decoders, kind_of

    gc.freeze()  # what the fleet itself holds is not the model's
    fleet = Fleet(n)
    layout = Layout("omniq/")
    decode = decoders(layout)
    gc.collect()
    rss0 = _rss_mb()  # before the pages: the model may keep their key strings, or not
    pages = list(_pages(fleet.objects))
    cpu0 = time.process_time()
    model = BucketModel(layout)
    for page in pages:
        for key, generation, md in page:
            kind = kind_of(layout, key)
            assert kind is not None
            value = decode[kind](key, md)
            assert value is not None
            model.offer(kind, key, generation, value)
    decoded = time.process_time()
    model.settle()
    rows = model.task_rows()
    assert len(rows) == n, len(rows)
    cold = time.process_time() - cpu0
    del pages
    gc.collect()
    out = {
        "tasks": n,
        "cold_cpu_s": cold,
        "cold_apply_s": decoded - cpu0,
        "bytes_per_task": (_rss_mb() - rss0) * 2**20 / n,
        "rss_mb": _rss_mb(),
    }
    gc.unfreeze()
    out["tracked_objects"] = len(gc.get_objects())
    t = time.perf_counter()
    gc.collect()
    out["full_gc_s"] = time.perf_counter() - t
    # A collection untracks tuples that hold only atomic values: what is left is what every
    # later full collection walks.
    out["tracked_after_gc"] = len(gc.get_objects())
    per_change: list[float] = []
    for _ in range(ROUNDS):
        changes = fleet.changes(0.01)
        page = msgspec_roundtrip(changes)
        cpu = time.process_time()
        for key, generation, md in page:
            kind = kind_of(layout, key)
            assert kind is not None
            if md is None:
                model.withdraw(kind, key, generation)
            else:
                model.offer(kind, key, generation, decode[kind](key, md))  # type: ignore[arg-type]
        model.settle()
        rows = model.task_rows()
        rows[len(rows) // 2]
        per_change.append((time.process_time() - cpu) / len(page) * 1e6)
    out["us_per_change"] = min(per_change)
    return out


def msgspec_roundtrip(items: list[Any]) -> list[Any]:
    import msgspec

    return msgspec.json.decode(msgspec.json.encode(items))  # type: ignore[no-any-return]


def _run(n: int, tree: Path) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(n)],
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000")
    parser.add_argument("--baseline", metavar="REF", help="also run git REF's model")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child)))
        return
    fields = ("cold_cpu_s", "cold_apply_s", "bytes_per_task", "rss_mb", "tracked_objects",
              "full_gc_s", "tracked_after_gc", "us_per_change")  # fmt: skip
    print("| tree | tasks | " + " | ".join(fields) + " |")
    print("|---" * (len(fields) + 2) + "|")
    # Imported here: a child runs this file as a script, without the benchmarks package.
    from benchmarks.common import checkout

    for n in (int(s) for s in args.sizes.split(",")):
        runs = [("this tree", ROOT)]
        with checkout(args.baseline) if args.baseline else _nothing() as base:
            if base is not None:
                runs.insert(0, (args.baseline, base))
            for name, tree in runs:
                r = _run(n, tree)
                cells = [f"{r[f]:.3g}" if isinstance(r[f], float) else str(r[f]) for f in fields]
                print(f"| {name} | {n:,} | " + " | ".join(cells) + " |", flush=True)


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


if __name__ == "__main__":
    main()
