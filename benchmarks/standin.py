"""A GCS JSON-API stand-in for sizes the emulator cannot hold: objects in memory, in its own
process, on loopback. It answers what the monitor and the console send (bucket check, listings
with prefix / startOffset / endOffset / maxResults / pageToken and custom metadata, media GETs
with generation and md5 headers) and nothing else: no writes. It is a measuring instrument,
not an emulator: request counts through it are exact (1,000 objects per page, as GCS pages),
and its speed is a sorted list's, so the client's own cost shows. Listings are compact JSON,
as GCS sends with ``prettyPrint=false`` (the console asks for it).

Objects follow docs/architecture.md: a definition per task, a queue entry while the task is not
final, a state record once claimed (running) or final (half of the final ones are "deleted by
TTL", as a fleet's cleanup leaves them), events as batch objects of 20 events.

It also speaks the two Pub/Sub REST calls the change feed uses (``POST
/v1/projects/P/subscriptions/S:pull`` and ``:acknowledge``): every change made through
``POST /_bench/change?fraction=0.01`` (claims of pending tasks, completions of running ones,
and an event batch, as a fleet would between two polls) is published as a GCS notification
(``JSON_API_V1``: attributes and the object resource), including the delete of each
overwritten generation, as GCS does.

Run ``python -m benchmarks.standin --port P --tasks N``; it prints ``ready`` once built.
"""

from __future__ import annotations

import argparse
import asyncio
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
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from omniq_console.backend.layout import Layout
from omniq_console.models import TaskStatus, new_event_id, utcnow

from .seed import ERRORS, FUNCS, HISTORY, QUEUES, WORKERS, Mix, _schedules

PAGE = 1000
BATCH_EVENTS = 20
_FINAL = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.EXPIRED)
_STATUS_OF = {
    TaskStatus.COMPLETED: "success",
    TaskStatus.FAILED: "error",
    TaskStatus.CANCELLED: "cancelled",
    TaskStatus.EXPIRED: "expired",
}


@dataclass
class _Object:
    generation: int
    metadata: dict[str, str]
    body: bytes
    updated: str


@dataclass
class _Task:
    """What the stand-in remembers of a task to change it later."""

    id: str
    queue: str
    func: str
    status: TaskStatus
    created_at: str
    record_generation: int = 0


class Bucket:
    """Objects by key, the keys in order (GCS lists in lexicographic order), and the
    notifications of changes not yet pulled."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.objects: dict[str, _Object] = {}
        self.keys: list[str] = []
        self._generation = int(time.time() * 1e6)
        self.requests: dict[str, int] = {"list": 0, "get": 0, "bucket": 0, "pull": 0, "ack": 0}
        self.notify = False
        self.outbox: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()
        self._message_id = 0
        self.published = 0

    def put(self, key: str, body: bytes, metadata: dict[str, str], *, sort: bool = True) -> int:
        self._generation += 1
        old = self.objects.get(key)
        if old is None:
            if sort:
                bisect.insort(self.keys, key)
            else:
                self.keys.append(key)
        obj = _Object(self._generation, metadata, body, utcnow().isoformat())
        self.objects[key] = obj
        if self.notify:
            self._publish("OBJECT_FINALIZE", key, obj)
            if old is not None:
                self._publish("OBJECT_DELETE", key, old)
        return self._generation

    def delete(self, key: str) -> None:
        old = self.objects.pop(key, None)
        if old is not None:
            self.keys.pop(bisect.bisect_left(self.keys, key))
            if self.notify:
                self._publish("OBJECT_DELETE", key, old)

    def _resource(self, key: str, obj: _Object) -> dict[str, Any]:
        return {
            "kind": "storage#object", "name": key, "bucket": self.name,
            "generation": str(obj.generation), "size": str(len(obj.body)),
            "updated": obj.updated, "metadata": obj.metadata,
        }  # fmt: skip

    def _publish(self, event: str, key: str, obj: _Object) -> None:
        self._message_id += 1
        self.published += 1
        data = json.dumps(self._resource(key, obj), separators=(",", ":")).encode()
        self.outbox.append(
            {
                "ackId": str(self._message_id),
                "message": {
                    "messageId": str(self._message_id),
                    "publishTime": utcnow().isoformat().replace("+00:00", "Z"),
                    "data": base64.b64encode(data).decode(),
                    "attributes": {
                        "eventType": event,
                        "objectId": key,
                        "bucketId": self.name,
                        "objectGeneration": str(obj.generation),
                        "payloadFormat": "JSON_API_V1",
                    },
                },
            }
        )
        self.arrived.set()

    def page(
        self, prefix: str, start: str | None, end: str | None, token: str | None, limit: int
    ) -> dict[str, Any]:
        lo = bisect.bisect_left(self.keys, max(prefix, token or start or ""))
        hi = bisect.bisect_left(self.keys, prefix + "\U0010ffff")
        if end:
            hi = min(hi, bisect.bisect_left(self.keys, end))
        chosen = self.keys[lo : min(hi, lo + limit)]
        items = [self._resource(key, self.objects[key]) for key in chosen]
        out: dict[str, Any] = {"kind": "storage#objects", "items": items}
        if lo + limit < hi:
            out["nextPageToken"] = self.keys[lo + limit]
        return out


def _iso(value: datetime) -> str:
    return value.isoformat()


def _record(t: _Task, state: str, status: str, now: datetime, **extra: str) -> dict[str, str]:
    return {
        "omniq_index": "1", "status": status, "state": state, "queue": t.queue,
        "func": t.func, "attempt": "1", "created_at": t.created_at,
        "started_at": _iso(now - timedelta(seconds=2)), **extra,
    }  # fmt: skip


def _running_md(t: _Task, now: datetime, worker: str) -> dict[str, str]:
    return _record(t, "running", "pending", now, worker_id=worker, lease_s="30",
                   lease_expires_at=_iso(now + timedelta(seconds=30)))  # fmt: skip


def _final_md(t: _Task, now: datetime, rng: random.Random) -> dict[str, str]:
    status = _STATUS_OF[t.status]
    error = rng.choice(ERRORS) if status == "error" else ""
    return _record(t, t.status.value, status, now, completed_at=_iso(now), error_type=error,
                   worker_id=f"worker-{rng.randrange(WORKERS)}")  # fmt: skip


def _events_body(events: list[dict[str, Any]]) -> bytes:
    return json.dumps({"schema_version": 1, "events": events}, separators=(",", ":")).encode()


def _batch_md(events: list[dict[str, Any]], worker: str) -> dict[str, str]:
    return {
        "omniq_index": "1", "batch": "1", "count": str(len(events)),
        "first_ts": events[0]["timestamp"], "last_ts": events[-1]["timestamp"], "worker": worker,
        "types": ",".join(sorted({e["event_type"] for e in events})),
    } | _task_list(list(dict.fromkeys(e["task_id"] for e in events)))  # fmt: skip


def _task_list(ids: list[str], budget: int = 6000) -> dict[str, str]:
    """The batch's task ids cut at whole ids within GCS's 8 KiB of metadata (as the workers
    write them), saying how many were left out."""
    kept: list[str] = []
    used = 0
    for tid in ids:
        if used + len(tid) + 1 > budget:
            return {"tasks": ",".join(kept), "tasks_truncated": str(len(ids) - len(kept))}
        kept.append(tid)
        used += len(tid) + 1
    return {"tasks": ",".join(kept)}


_event_ids = iter(range(1, 1 << 62))


def _event(task: _Task, kind: str, at: datetime, worker: str) -> dict[str, Any]:
    # Ids inside a batch only need to be unique; the batch key is the time-ordered one.
    return {
        "schema_version": 1, "id": f"ev-{next(_event_ids):012d}", "task_id": task.id,
        "event_type": kind, "timestamp": _iso(at), "queue_name": task.queue, "worker_id": worker,
        "message": f"{kind} {task.func}",
    }  # fmt: skip


def fill(bucket: Bucket, mix: Mix, layout: Layout, seed_value: int = 7) -> list[_Task]:
    """A bucket of ``mix.tasks`` tasks in the object model of docs/architecture.md."""
    rng = random.Random(seed_value)
    now = utcnow()
    statuses = [s for s, count in mix.status_counts().items() for _ in range(count)]
    rng.shuffle(statuses)
    tasks: list[_Task] = []
    finals = 0
    for status in statuses:
        queue = rng.choice(tuple(QUEUES))
        created = now - HISTORY * rng.random()
        t = _Task(f"{rng.getrandbits(128):032x}", queue, rng.choice(FUNCS), status, _iso(created))
        tasks.append(t)
        run_at = ""
        if status == TaskStatus.PENDING and rng.random() < 2 / 15:
            run_at = _iso(now + timedelta(minutes=rng.randrange(1, 120)))
        md = {"omniq_index": "1", "status": "pending", "queue": queue,
              "priority": str(QUEUES[queue]), "func": t.func, "run_at": run_at,
              "expires_at": "", "created_at": t.created_at}  # fmt: skip
        doc = {"schema_version": 1, "id": t.id, "func": t.func, "queue_name": queue,
               "args": [rng.randrange(10**6)]}  # fmt: skip
        body = json.dumps(doc, separators=(",", ":")).encode()
        # Keys built directly: Layout's per-character id check would dominate a million puts.
        bucket.put(f"{layout.tasks}{t.id}.json", body, md, sort=False)
        if status not in _FINAL:
            entry = {k: md[k] for k in ("omniq_index", "priority", "run_at", "expires_at",
                                         "created_at")}  # fmt: skip
            bucket.put(f"{layout.queues}{queue}/{t.id}.json", b"{}", entry, sort=False)
        if status == TaskStatus.RUNNING:
            t.record_generation = bucket.put(
                f"{layout.results}{t.id}.json", b"{}", _running_md(t, now, "worker-0"), sort=False
            )
        elif status in _FINAL:
            finals += 1
            if finals % 2 == 0:  # the other half: deleted by the TTL cleanup
                done = now - timedelta(minutes=30) * rng.random()
                bucket.put(
                    f"{layout.results}{t.id}.json", b"{}", _final_md(t, done, rng), sort=False
                )
    for k in range(0, mix.events, BATCH_EVENTS):
        at = now - HISTORY * (1 - (k + 1) / max(1, mix.events))
        worker = f"worker-{rng.randrange(WORKERS)}"
        events = [
            _event(rng.choice(tasks), "executing", at, worker)
            for _ in range(min(BATCH_EVENTS, mix.events - k))
        ]
        key = f"{layout.events}{new_event_id(at)}.json"
        bucket.put(key, _events_body(events), _batch_md(events, worker), sort=False)
    for s in _schedules(rng, now)[: mix.schedules]:
        md = {"omniq_index": "1", "status": s.status.value, "next_run": _iso(s.next_run or now)}
        bucket.put(layout.schedule(s.id), s.to_json(), md, sort=False)
    for w in range(mix.workers):
        md = {"omniq_index": "1", "state": "running", "last_seen": _iso(now),
              "started_at": _iso(now - timedelta(hours=1)), "host": "bench", "pid": str(1000 + w),
              "queues": ",".join(QUEUES), "running": "", "processed": str(1000 * w),
              "failed": str(10 * w), "concurrency": "8"}  # fmt: skip
        bucket.put(layout.worker(f"worker-{w}"), b"{}", md, sort=False)
    bucket.keys.sort()
    return tasks


def change(bucket: Bucket, tasks: list[_Task], layout: Layout, fraction: float) -> int:
    """A fleet's work between two polls: claim pending tasks, complete running ones, and
    write one event batch; every write notifies (when notifications are on)."""
    rng = random.Random(11 + len(bucket.outbox))
    now = utcnow()
    movable = [
        i for i, t in enumerate(tasks) if t.status in (TaskStatus.PENDING, TaskStatus.RUNNING)
    ]
    k = min(len(movable), max(1, math.ceil(len(tasks) * fraction)))
    events = []
    for i in rng.sample(movable, k):
        t = tasks[i]
        if t.status == TaskStatus.PENDING:
            t.status = TaskStatus.RUNNING
            t.record_generation = bucket.put(
                layout.result(t.id), b"{}", _running_md(t, now, "worker-1")
            )
            events.append(_event(t, "executing", now, "worker-1"))
        else:
            t.status = TaskStatus.COMPLETED
            bucket.put(layout.result(t.id), b"{}", _final_md(t, now, rng))
            bucket.delete(layout.queue_entry(t.queue, t.id))
            events.append(_event(t, "completed", now, "worker-1"))
    for start in range(0, len(events), 500):
        part = events[start : start + 500]
        bucket.put(layout.event(new_event_id(now)), _events_body(part), _batch_md(part, "worker-1"))
    return k


def make_app(bucket: Bucket, tasks: list[_Task], layout: Layout) -> web.Application:
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
        body = json.dumps(page, separators=(",", ":")).encode()
        return web.Response(body=body, content_type="application/json")

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
        before = bucket.published
        changed = change(bucket, tasks, layout, fraction)
        return web.json_response({"changed": changed, "notified": bucket.published - before})

    async def post_notify(request: web.Request) -> web.Response:
        bucket.notify = request.query.get("on", "1") == "1"
        return web.json_response({"notify": bucket.notify})

    async def get_counts(request: web.Request) -> web.Response:
        return web.json_response(bucket.requests)

    async def pull(request: web.Request) -> web.Response:
        bucket.requests["pull"] += 1
        wanted = int((await request.json()).get("maxMessages", 1000))
        if not bucket.outbox:
            bucket.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(bucket.arrived.wait(), 2.0)
        out, bucket.outbox[:wanted] = bucket.outbox[:wanted], []
        return web.json_response({"receivedMessages": out})

    async def acknowledge(request: web.Request) -> web.Response:
        bucket.requests["ack"] += 1
        await request.read()
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/storage/v1/b/{bucket}", get_bucket)
    app.router.add_get("/storage/v1/b/{bucket}/o", list_objects)
    app.router.add_get("/storage/v1/b/{bucket}/o/{key:.+}", get_object)
    app.router.add_post("/_bench/change", post_change)
    app.router.add_post("/_bench/notify", post_notify)
    app.router.add_get("/_bench/requests", get_counts)
    app.router.add_post("/v1/projects/{project}/subscriptions/{sub}:pull", pull)
    app.router.add_post("/v1/projects/{project}/subscriptions/{sub}:acknowledge", acknowledge)
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
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # a million tasks take about a minute to build
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
    tasks = fill(bucket, Mix.for_tasks(args.tasks), layout)
    print(f"ready {len(bucket.keys)} {time.perf_counter() - started:.1f}", flush=True)
    web.run_app(make_app(bucket, tasks, layout), host="127.0.0.1", port=args.port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
