"""Refresh: what one monitor poll costs (requests, bodies read, wall and CPU time), cold and
warm, beside the naive poll (list every prefix, GET every body) on the same bucket, same run.

Sizes up to ``max_measured`` tasks are seeded on the emulator and measured. Larger sizes are
(1) measured on the in-memory GCS stand-in (standin.py) through the same Monitor and
ObjectStore, and (2) derived from the largest emulator run, as a cross-check: every listing
call the monitor made is recorded (prefix, objects returned); at the larger size each call
returns the same share of its prefix and costs ceil(objects / 1000) requests, as GCS pages.
Event bodies read grow with the events new since the last poll, up to the monitor's
``recent_events`` (200); schedule and heartbeat reads stay; others scale. The naive poll's
count is exact at any size: one listing request per 1,000 objects per prefix, one GET each.
"""

from __future__ import annotations

import asyncio
import math
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from omniq_console.backend.gcs import GCSBackend
from omniq_console.backend.objectstore import ObjectStore, RequestStats
from omniq_console.backend.storeapi import ObjectStoreAPI
from omniq_console.monitor.monitor import Monitor

from .common import Table, emulator, log, verdict
from .naive import naive_poll
from .seed import Mix, SeedReport, change, seed
from .ui import as_the_cli_runs

PAGE = 1000
TARGET_RATIO = 20.0
SCALED_KINDS = ("tasks", "queues", "results", "events")  # grow with n; schedules, workers don't
RECENT_EVENTS = 200
POLLS = ("cold", "warm, nothing changed", "warm, 1% changed")


@dataclass
class ListCall:
    kind: str
    objects: int
    ranged: bool


@dataclass
class PollFigures:
    name: str
    seconds: float
    lists: int
    gets: int
    total: int
    cpu: float = math.nan
    calls: list[ListCall] = field(default_factory=list)
    reads: Counter[str] = field(default_factory=Counter)
    derived: bool = False


@dataclass
class SizeFigures:
    n: int
    mix: Mix
    polls: list[PollFigures]
    naive_requests: int
    naive_lists: int
    naive_gets: int
    naive_seconds: float | None
    seed: SeedReport | None = None
    change_writes: int = 0
    derived_from: int | None = None
    tasks_list_seconds: float | None = None
    where: str = "emulator"


def _kind_of(prefix: str, layout_prefix: str) -> str:
    rest = prefix[len(layout_prefix) :]
    return rest.split("/", 1)[0]


class _Recorder:
    """Wraps one ObjectStore's ``list`` and ``read`` to note, per call, which prefix it served
    (and how many objects a listing returned): what the derivations scale."""

    def __init__(self, store: ObjectStoreAPI, layout_prefix: str) -> None:
        self.calls: list[ListCall] = []
        self.reads: Counter[str] = Counter()
        original_list, original_read = store.list, store.read

        async def recording_list(prefix: str, **kwargs: Any) -> Any:
            out = await original_list(prefix, **kwargs)
            ranged = kwargs.get("start_offset") is not None or kwargs.get("end_offset") is not None
            self.calls.append(ListCall(_kind_of(prefix, layout_prefix), len(out), ranged))
            return out

        async def recording_read(key: str) -> Any:
            self.reads[_kind_of(key, layout_prefix)] += 1
            return await original_read(key)

        store.list = recording_list  # type: ignore[method-assign]
        store.read = recording_read  # type: ignore[method-assign]

    def take(self) -> tuple[list[ListCall], Counter[str]]:
        calls, self.calls = self.calls, []
        reads, self.reads = self.reads, Counter()
        return calls, reads


async def _poll(
    monitor: Monitor, store: ObjectStoreAPI, recorder: _Recorder, name: str
) -> PollFigures:
    before = store.stats.copy()
    loop = asyncio.get_running_loop()
    # The console's collector thresholds (cli.run_console sets them): CPython's defaults
    # would add about 0.7 s of collections to a 100,000-task poll that the console never pays.
    with as_the_cli_runs():
        cpu = time.process_time()
        started = loop.time()
        await monitor.poll(raise_errors=True)
        seconds = loop.time() - started
        cpu = time.process_time() - cpu
    delta: RequestStats = store.stats.since(before)
    calls, reads = recorder.take()
    pages = sum(max(1, math.ceil(c.objects / PAGE)) for c in calls)
    if pages != delta.count["list"]:
        log(f"note: {name}: {delta.count['list']} list requests for {pages} expected pages")
    return PollFigures(
        name, seconds, delta.count["list"], delta.count["get"], delta.total, cpu, calls, reads
    )


def naive_counts(mix: Mix) -> tuple[int, int]:
    """(list requests, GETs) of one naive poll over a bucket holding ``mix`` (exact)."""
    objects = mix.objects_by_prefix()
    kinds = ("tasks", "queues", "results", "events", "schedules")
    lists = sum(max(1, math.ceil(objects[k] / PAGE)) for k in kinds)
    return lists, sum(objects[k] for k in kinds)


async def measure_size(
    n: int, *, storage: str, concurrency: int, progress: Callable[[str], None] = log
) -> SizeFigures:
    mix = Mix.for_tasks(n)
    with emulator(storage) as emu:
        bucket = f"refresh-{n}"
        emu.create_bucket(bucket)
        writer = GCSBackend(bucket, endpoint_url=emu.url, token="anon")
        reader = GCSBackend(bucket, endpoint_url=emu.url, token="anon")
        async with writer, reader:
            progress(f"refresh {n:,}: seeding {mix.total:,} objects on the {storage} emulator")
            report = await seed(writer, mix, concurrency=concurrency, progress=progress)
            progress(
                f"refresh {n:,}: seeded {report.writes:,} writes in {report.seconds:.1f} s "
                f"({report.rate:,.0f}/s)"
            )
            store = reader.store
            recorder = _Recorder(store, reader.layout.prefix)
            monitor = Monitor(reader, poll_timeout=3600.0, recent_events=RECENT_EVENTS)
            polls = [await _poll(monitor, store, recorder, POLLS[0])]
            progress(
                f"refresh {n:,}: cold poll {polls[0].seconds:.2f} s, {polls[0].total} requests"
            )
            polls.append(await _poll(monitor, store, recorder, POLLS[1]))
            changed = await change(writer, report, 0.01)
            progress(f"refresh {n:,}: changed {changed.changed} tasks ({changed.writes} writes)")
            polls.append(await _poll(monitor, store, recorder, POLLS[2]))
            t0 = asyncio.get_running_loop().time()
            await writer.store.list(writer.layout.tasks)
            tasks_list_seconds = asyncio.get_running_loop().time() - t0
            progress(f"refresh {n:,}: naive poll")
            naive_store = ObjectStore(bucket, endpoint_url=emu.url, token="anon")
            await naive_store.open()
            try:
                naive = await naive_poll(naive_store, reader.layout)
            finally:
                await naive_store.close()
            progress(
                f"refresh {n:,}: naive poll {naive.seconds:.1f} s, {naive.requests.total} requests"
            )
    return SizeFigures(
        n=n,
        mix=mix,
        polls=polls,
        naive_requests=naive.requests.total,
        naive_lists=naive.requests.count["list"],
        naive_gets=naive.requests.count["get"],
        naive_seconds=naive.seconds,
        seed=report,
        change_writes=changed.writes + changed.deletes,
        tasks_list_seconds=tasks_list_seconds,
    )


async def measure_standin(n: int, progress: Callable[[str], None] = log) -> SizeFigures:
    """The same three polls through the real Monitor and ObjectStore, against the in-memory
    GCS stand-in (standin.py) holding the same mix: counts exact, client CPU real."""
    from .standin import server

    mix = Mix.for_tasks(n)
    progress(f"refresh {n:,}: building {mix.total:,} objects in the GCS stand-in")
    with server(n, bucket="standin") as url:
        reader = GCSBackend("standin", endpoint_url=url, token="anon")
        async with reader:
            store = reader.store
            recorder = _Recorder(store, reader.layout.prefix)
            monitor = Monitor(reader, poll_timeout=3600.0, recent_events=RECENT_EVENTS)
            polls = [await _poll(monitor, store, recorder, POLLS[0])]
            polls.append(await _poll(monitor, store, recorder, POLLS[1]))
            request = urllib.request.Request(f"{url}/_bench/change?fraction=0.01", method="POST")
            await asyncio.to_thread(lambda: urllib.request.urlopen(request, timeout=60).read())
            polls.append(await _poll(monitor, store, recorder, POLLS[2]))
    for p in polls:
        progress(
            f"refresh {n:,} (stand-in): {p.name}: {p.total} requests, "
            f"{p.seconds:.2f} s, CPU {p.cpu:.2f} s"
        )
    lists, gets = naive_counts(mix)
    return SizeFigures(
        n=n,
        mix=mix,
        polls=polls,
        naive_requests=lists + gets,
        naive_lists=lists,
        naive_gets=gets,
        naive_seconds=None,
        where="stand-in",
    )


def derive_size(n: int, base: SizeFigures) -> SizeFigures:
    """Request counts at ``n`` tasks from the calls recorded at ``base.n`` (see module doc)."""
    mix = Mix.for_tasks(n)
    factors = {
        kind: (mix.objects_by_prefix()[kind] / base.mix.objects_by_prefix()[kind])
        if kind in SCALED_KINDS
        else 1.0
        for kind in ("tasks", "queues", "results", "events", "schedules", "workers")
    }
    polls = []
    for measured in base.polls:
        lists = sum(
            max(1, math.ceil(c.objects * factors.get(c.kind, 1.0) / PAGE)) for c in measured.calls
        )
        gets = 0
        for kind, count in measured.reads.items():
            scaled = round(count * factors.get(kind, 1.0))
            # Event bodies: only the newest ``recent_events`` new ones are read per poll.
            gets += min(RECENT_EVENTS, scaled) if kind == "events" else scaled
        polls.append(PollFigures(measured.name, math.nan, lists, gets, lists + gets, derived=True))
    lists, gets = naive_counts(mix)
    return SizeFigures(
        n=n,
        mix=mix,
        polls=polls,
        naive_requests=lists + gets,
        naive_lists=lists,
        naive_gets=gets,
        naive_seconds=None,
        derived_from=base.n,
        where="derived",
    )


def _how(f: SizeFigures, storage: str) -> str:
    if f.where == "derived":
        return f"derived from {f.derived_from:,}"
    if f.where == "stand-in":
        return "measured, in-memory GCS stand-in"
    return f"measured, emulator ({storage})"


def listed_objects(p: PollFigures, mix: Mix) -> int:
    """Objects the poll's listings returned outside the event tail (for a derived poll, which
    recorded no calls: the mix's objects outside ``events/``)."""
    listed = sum(c.objects for c in p.calls if c.kind != "events")
    return listed or max(1, mix.total - mix.objects_by_prefix()["events"])


def tables(figures: list[SizeFigures], storage: str) -> list[Table]:
    main = Table(
        "Refresh: one monitor poll vs the naive poll (list every prefix, GET every body)",
        [
            "tasks",
            "objects",
            "poll",
            "requests (list + get)",
            "wall s",
            "client CPU s",
            "naive requests (list + get)",
            "naive wall s",
            "fewer requests",
            "list req per 1,000 listed obj",
            "how",
        ],
    )
    verdicts = Table(
        "Refresh targets (warm poll, nothing changed, at the largest size)",
        ["tasks", "target", "figure", "how", "verdict"],
    )
    for f in figures:
        objects = f.mix.total
        for p in f.polls:
            ratio = f.naive_requests / p.total if p.total else math.inf
            main.add(
                f.n,
                objects,
                p.name,
                f"{p.total:,} ({p.lists:,} + {p.gets:,})",
                None if p.derived else p.seconds,
                None if p.derived else p.cpu,
                f"{f.naive_requests:,} ({f.naive_lists:,} + {f.naive_gets:,})",
                f.naive_seconds,
                f"{ratio:,.0f}x",
                round(p.lists / (listed_objects(p, f.mix) / PAGE), 2),
                _how(f, storage),
            )
    largest = max((f.n for f in figures), default=0)
    for f in [f for f in figures if f.n == largest]:
        warm = f.polls[1]
        # Per object actually listed: events are tailed, never re-listed, so dividing by all
        # objects (events included) understated the figure (0.46 where it is 1.01).
        per_k = warm.lists / (listed_objects(warm, f.mix) / PAGE)
        ratio = f.naive_requests / warm.total if warm.total else math.inf
        how = _how(f, storage)
        verdicts.add(
            f.n, "reads no bodies", f"{warm.gets} GETs", how, "met" if warm.gets == 0 else "MISSED"
        )
        verdicts.add(
            f.n, "<= 1 listing request per 1,000 objects", f"{per_k:.2f}", how, verdict(per_k, 1.0)
        )
        verdicts.add(
            f.n,
            f">= {TARGET_RATIO:.0f}x fewer requests than naive",
            f"{ratio:,.0f}x",
            how,
            verdict(ratio, TARGET_RATIO, lower_is_better=False, unit="x"),
        )
    main.notes.append(
        f"Emulator rows: fake-gcs-server `-backend {storage}`"
        + (" on tmpfs" if storage == "filesystem" else "")
        + ", seeded through the stores. Stand-in rows: the same mix held in memory by a small "
        "GCS JSON-API server (benchmarks/standin.py, its own process, loopback), polled by the "
        "same Monitor/ObjectStore/aiohttp code; it pages 1,000 objects per listing request as "
        "GCS does, so its counts are exact, and its wall time is mostly the client's. Objects per "
        "n tasks: n tasks, 0.15n queue entries, 0.5n results, 2n events, 20 schedules, 4 "
        "heartbeats. The monitor lists tasks/, queues/, results/, schedules/, workers/ whole and "
        "tails events/; the cold poll reads the newest 200 event bodies and the schedules; the 1% "
        "poll follows another client changing 1% of the tasks (task rewritten, entry deleted or "
        "result written, one event each). Client CPU: the benchmark process (the console's side), "
        "all threads."
    )
    main.notes.append(
        "Emulator wall times are the emulator's: its cost per request grows with the bucket "
        "(FIELD-NOTES), so only the counts carry over to GCS. Each listed prefix costs at least "
        "one request, so small buckets show more than one listing request per 1,000 objects."
    )
    seeds = [f for f in figures if f.seed is not None]
    if seeds:
        main.notes.append(
            "Seeding the emulator: "
            + "; ".join(
                f"{f.n:,} tasks = {f.seed.writes:,} writes in {f.seed.seconds:.0f} s "  # type: ignore[union-attr]
                f"({f.seed.rate:,.0f}/s, 64 in flight)"  # type: ignore[union-attr]
                for f in seeds
            )
            + ". Larger sizes are not seeded on the emulator: its memory backend scans the whole "
            "bucket on every write (~85 writes/s at 10,000 objects: 100,000 tasks and their "
            "objects would take hours) and its filesystem backend reads every object's metadata "
            "on every listing page."
        )
    timed = [f for f in figures if f.tasks_list_seconds]
    bigger = [f for f in figures if f.where != "emulator"]
    if timed and bigger:
        t = timed[-1]
        big = bigger[-1].n
        estimate = t.tasks_list_seconds * (big / t.n) ** 2  # type: ignore[operator]
        main.notes.append(
            f"Not run: a tasks-only bucket of {big:,} on the emulator. One listing of its "
            f"{t.n:,} tasks took {t.tasks_list_seconds:.1f} s, and each 1,000-object page reads "
            f"the metadata of every object under the prefix, so one listing of {big:,} would take "
            f"about {estimate:,.0f} s, per poll."
        )
    if any(f.where == "derived" for f in figures):
        main.notes.append(
            "Derived rows: each listing call of the largest emulator run returns the same share of "
            "its prefix at the larger size and costs ceil(objects / 1,000) requests; event bodies "
            "read grow with the new events up to the monitor's 200 (recent_events); the naive "
            "count is exact (ceil(objects / 1,000) per prefix + one GET per object)."
        )
    return [main, verdicts]


async def run(
    sizes: list[int],
    *,
    max_measured: int = 10_000,
    storage: str = "filesystem",
    concurrency: int = 64,
    standin: bool = True,
) -> tuple[list[Table], list[SizeFigures]]:
    """Emulator runs up to ``max_measured`` tasks; above it, a derivation from the largest
    emulator run and (``standin``) a measurement on the in-memory stand-in."""
    measured: list[SizeFigures] = []
    figures: list[SizeFigures] = []
    for n in sorted(sizes):
        if n <= max_measured or not measured:
            f = await measure_size(n, storage=storage, concurrency=concurrency)
            measured.append(f)
            figures.append(f)
            continue
        figures.append(derive_size(n, measured[-1]))
        if standin:
            figures.append(await measure_standin(n))
    return tables(figures, storage), figures
