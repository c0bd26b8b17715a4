"""A GCS JSON-API stand-in for sizes the emulator cannot hold: objects in memory, in its own
process, on loopback. It answers what the monitor and the console send (bucket check, listings
with prefix / startOffset / endOffset / maxResults / pageToken and custom metadata, media GETs
with generation and md5 headers) and nothing else: no writes. It is a measuring instrument,
not an emulator: request counts through it are exact (1,000 objects per page, as GCS pages),
and its speed is a sorted list's, so the client's own cost shows.

Run ``python -m benchmarks.standin --port P --tasks N``; it prints ``ready`` once the bucket
is built (the same mix as seed.py). ``POST /_bench/change?fraction=0.01`` changes a share of the
tasks the way seed.change does (another client's work between two polls).
"""

from __future__ import annotations

import argparse
import base64
import bisect
import contextlib
import hashlib
import json
import math
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from aiohttp import web

from omniq_console.backend.index import (
    event_metadata,
    queue_entry_metadata,
    result_metadata,
    schedule_metadata,
    task_metadata,
    worker_metadata,
)
from omniq_console.backend.layout import Layout
from omniq_console.models import (
    SCHEMA_VERSION,
    EventType,
    ResultStatus,
    Task,
    TaskEvent,
    TaskResult,
    TaskStatus,
    utcnow,
)

from .seed import HISTORY, Mix, SeededTask, _event_for, _result_for, _schedules, _task_for, _worker

PAGE = 1000


@dataclass
class _Object:
    generation: int
    metadata: dict[str, str]
    body: bytes
    updated: str


class Bucket:
    """Objects by key, and the keys in order (GCS lists in lexicographic order)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.objects: dict[str, _Object] = {}
        self.keys: list[str] = []
        self._generation = int(time.time() * 1e6)
        self.requests: dict[str, int] = {"list": 0, "get": 0, "bucket": 0}

    def put(self, key: str, body: bytes, metadata: dict[str, str], *, sort: bool = True) -> None:
        self._generation += 1
        if key not in self.objects:
            if sort:
                bisect.insort(self.keys, key)
            else:
                self.keys.append(key)
        self.objects[key] = _Object(self._generation, metadata, body, utcnow().isoformat())

    def delete(self, key: str) -> None:
        if self.objects.pop(key, None) is not None:
            self.keys.pop(bisect.bisect_left(self.keys, key))

    def page(
        self, prefix: str, start: str | None, end: str | None, token: str | None, limit: int
    ) -> dict[str, Any]:
        lo = bisect.bisect_left(self.keys, max(prefix, token or start or ""))
        hi = bisect.bisect_left(self.keys, prefix + "\U0010ffff")
        if end:
            hi = min(hi, bisect.bisect_left(self.keys, end))
        chosen = self.keys[lo : min(hi, lo + limit)]
        items = []
        for key in chosen:
            obj = self.objects[key]
            items.append(
                {
                    "name": key,
                    "generation": str(obj.generation),
                    "size": str(len(obj.body)),
                    "updated": obj.updated,
                    "metadata": obj.metadata,
                }
            )
        out: dict[str, Any] = {"kind": "storage#objects", "items": items}
        if lo + limit < hi:
            out["nextPageToken"] = self.keys[lo + limit]
        return out


def fill(bucket: Bucket, mix: Mix, layout: Layout, seed_value: int = 7) -> list[SeededTask]:
    """The objects seed.seed writes for ``mix``, built in memory."""
    rng = random.Random(seed_value)
    now = utcnow()
    statuses = [s for s, count in mix.status_counts().items() for _ in range(count)]
    rng.shuffle(statuses)
    seeded: list[SeededTask] = []
    results_left = mix.results
    for status in sorted(statuses, key=lambda s: s != TaskStatus.FAILED):
        task = _task_for(rng, status, now)
        seeded.append(
            SeededTask(task.id, task.queue_name, status, task.func, task.priority, task.created_at)
        )
        bucket.put(layout.task(task.id), task.to_json(), task_metadata(task), sort=False)
        if status == TaskStatus.PENDING:
            entry = {"schema_version": SCHEMA_VERSION, "task_id": task.id, "queue": task.queue_name}
            bucket.put(
                layout.queue_entry(task.queue_name, task.id),
                json.dumps(entry, separators=(",", ":")).encode(),
                queue_entry_metadata(task),
                sort=False,
            )
        if results_left > 0 and status in (TaskStatus.FAILED, TaskStatus.COMPLETED):
            results_left -= 1
            result = _result_for(rng, task, now)
            bucket.put(
                layout.result(task.id), result.to_json(), result_metadata(result), sort=False
            )
    for k in range(mix.events):
        at = now - HISTORY * (1 - (k + 1) / mix.events)
        event = _event_for(rng, rng.choice(seeded), at)
        bucket.put(layout.event(event.id), event.to_json(), event_metadata(event), sort=False)
    for s in _schedules(rng, now)[: mix.schedules]:
        bucket.put(layout.schedule(s.id), s.to_json(), schedule_metadata(s), sort=False)
    for w in range(mix.workers):
        index = _worker(w, now)
        body = json.dumps({"worker_id": index.id, "state": index.state}).encode()
        bucket.put(layout.worker(index.id), body, worker_metadata(index), sort=False)
    bucket.keys.sort()
    return seeded


def change(bucket: Bucket, seeded: list[SeededTask], layout: Layout, fraction: float) -> int:
    """What seed.change does, in memory: claim pending tasks, finish running ones."""
    rng = random.Random(11)
    now = utcnow()
    movable = [
        i for i, t in enumerate(seeded) if t.status in (TaskStatus.PENDING, TaskStatus.RUNNING)
    ]
    k = min(len(movable), max(1, math.ceil(len(seeded) * fraction)))
    for i in rng.sample(movable, k):
        old = seeded[i]
        pending = old.status == TaskStatus.PENDING
        status = TaskStatus.RUNNING if pending else TaskStatus.COMPLETED
        task = Task(
            id=old.id, func=old.func, queue_name=old.queue, priority=old.priority,
            created_at=old.created_at, status=status, worker_id="worker-0", started_at=now,
            lease_expires_at=now + timedelta(seconds=30) if pending else None, updated_at=now,
        )  # fmt: skip
        seeded[i] = SeededTask(old.id, old.queue, status, old.func, old.priority, old.created_at)
        bucket.put(layout.task(task.id), task.to_json(), task_metadata(task))
        if pending:
            bucket.delete(layout.queue_entry(task.queue_name, task.id))
        else:
            result = TaskResult(
                task_id=task.id, status=ResultStatus.SUCCESS, completed_at=now, result=1
            )
            bucket.put(layout.result(task.id), result.to_json(), result_metadata(result))
        kind = EventType.DEQUEUED if pending else EventType.COMPLETED
        event = TaskEvent(task_id=task.id, event_type=kind, queue_name=task.queue_name)
        bucket.put(layout.event(event.id), event.to_json(), event_metadata(event))
    return k


def make_app(bucket: Bucket, seeded: list[SeededTask], layout: Layout) -> web.Application:
    async def get_bucket(request: web.Request) -> web.Response:
        bucket.requests["bucket"] += 1
        if request.match_info["bucket"] != bucket.name:
            return web.json_response(
                {"error": {"code": 404, "message": "no such bucket"}}, status=404
            )
        return web.json_response({"kind": "storage#bucket", "name": bucket.name})

    async def list_objects(request: web.Request) -> web.Response:
        bucket.requests["list"] += 1
        q = request.query
        limit = min(PAGE, int(q.get("maxResults", PAGE)))
        page = bucket.page(q.get("prefix", ""), q.get("startOffset"), q.get("endOffset"),
                           q.get("pageToken"), limit)  # fmt: skip
        return web.Response(body=json.dumps(page).encode(), content_type="application/json")

    async def get_object(request: web.Request) -> web.Response:
        bucket.requests["get"] += 1
        obj = bucket.objects.get(request.match_info["key"])
        if obj is None:
            return web.json_response({"error": {"code": 404, "message": "not found"}}, status=404)
        md5 = base64.b64encode(hashlib.md5(obj.body, usedforsecurity=False).digest()).decode()
        headers = {"x-goog-generation": str(obj.generation), "x-goog-hash": f"md5={md5}"}
        headers.update({f"x-goog-meta-{k}": v for k, v in obj.metadata.items()})
        return web.Response(body=obj.body, headers=headers, content_type="application/json")

    async def post_change(request: web.Request) -> web.Response:
        fraction = float(request.query.get("fraction", "0.01"))
        return web.json_response({"changed": change(bucket, seeded, layout, fraction)})

    async def get_counts(request: web.Request) -> web.Response:
        return web.json_response(bucket.requests)

    app = web.Application()
    app.router.add_get("/storage/v1/b/{bucket}", get_bucket)
    app.router.add_get("/storage/v1/b/{bucket}/o", list_objects)
    app.router.add_get("/storage/v1/b/{bucket}/o/{key:.+}", get_object)
    app.router.add_post("/_bench/change", post_change)
    app.router.add_get("/_bench/requests", get_counts)
    return app


@contextlib.contextmanager
def server(n: int, *, bucket: str = "standin") -> Iterator[str]:
    """Run a stand-in holding the mix of ``n`` tasks in a child process; yield its URL."""
    from omniq_console.demo.emulator import free_port

    from .common import ROOT

    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks.standin",
            "--port",
            str(port),
            "--tasks",
            str(n),
            "--bucket",
            bucket,
        ],  # fmt: skip
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("ready"):
            raise RuntimeError(f"the GCS stand-in did not start: {line!r}")
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        import urllib.request

        while True:
            try:
                with urllib.request.urlopen(f"{url}/storage/v1/b/{bucket}", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tasks", type=int, required=True)
    parser.add_argument("--bucket", default="standin")
    parser.add_argument("--prefix", default="omniq/")
    args = parser.parse_args(argv)
    layout = Layout(args.prefix)
    bucket = Bucket(args.bucket)
    started = time.perf_counter()
    seeded = fill(bucket, Mix.for_tasks(args.tasks), layout)
    print(f"ready {len(bucket.keys)} {time.perf_counter() - started:.1f}", flush=True)
    web.run_app(make_app(bucket, seeded, layout), host="127.0.0.1", port=args.port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
