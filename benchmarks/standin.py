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
(``JSON_API_V1``: GCS's attributes and the whole object resource, about 1.5 KB a message as
measured on GCS; ack ids as long as Pub/Sub's), including the delete of each overwritten
generation, as GCS does. As Pub/Sub does, a delivered message not acknowledged
within the ack deadline (10 s) is delivered again under a new ack id.

Nothing it serves holds its loop for long, at a million tasks too: keys sit in sorted blocks
(an insert or a delete moves a thousand keys, not millions), a page is a bisect and a slice,
and a change is applied in slices with the loop given back between them.

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
import urllib.parse
from collections import deque
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
ACK_DEADLINE_S = 10.0
"""Pub/Sub's default ack deadline: a delivery not acknowledged by then is delivered again."""
LEASE_S = 3600
"""Leases outlast a run: the fleet stood for is alive. (With 30 s leases, which the stand-in
never renews, every running task was stuck from 30 s after the fill on: a dead fleet, reached
or not depending on how long the cold start took, and thousands of stuck rows a poll.)"""
PULL_HOLD_S = 2.0
"""How long a pull with nothing to deliver is held open (unless it asks ``returnImmediately``)."""
SCAN_SLICE = 50_000
CHANGE_SLICE = 200
"""Tasks scanned, and tasks changed, between two returns to the loop."""
_ACK_PAD = "x" * 160
"""Pub/Sub's ack ids are about 170 characters: acknowledging 1,000 sends about 170 KB."""
_FINAL = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.EXPIRED)
_STATUS_OF = {
    TaskStatus.COMPLETED: "success",
    TaskStatus.FAILED: "error",
    TaskStatus.CANCELLED: "cancelled",
    TaskStatus.EXPIRED: "expired",
}


class SortedKeys:
    """Keys in lexicographic order, kept as blocks of at most ``2 * load`` sorted keys.

    A single sorted list of 2.7 million keys (a million tasks) moves megabytes on every
    insert or delete, and a fleet's change between two polls inserts thousands: seconds with
    the loop held. Blocks keep an insert, a delete and a page's lookup at a bisect plus a
    short list move.
    """

    def __init__(self, ordered: list[str], load: int = 1000) -> None:
        self._load = load
        self._blocks = [ordered[i : i + load] for i in range(0, len(ordered), load)]
        self._maxes = [block[-1] for block in self._blocks]
        self._len = len(ordered)

    def __len__(self) -> int:
        return self._len

    def add(self, key: str) -> None:
        if not self._blocks:
            self._blocks, self._maxes = [[key]], [key]
        else:
            b = min(bisect.bisect_left(self._maxes, key), len(self._blocks) - 1)
            block = self._blocks[b]
            bisect.insort(block, key)
            self._maxes[b] = block[-1]
            if len(block) > 2 * self._load:
                self._blocks[b : b + 1] = [block[: self._load], block[self._load :]]
                self._maxes[b : b + 1] = [block[self._load - 1], block[-1]]
        self._len += 1

    def remove(self, key: str) -> None:
        b = bisect.bisect_left(self._maxes, key)
        block = self._blocks[b]
        del block[bisect.bisect_left(block, key)]
        if block:
            self._maxes[b] = block[-1]
        else:
            del self._blocks[b], self._maxes[b]
        self._len -= 1

    def take(self, lo: str, hi: str, limit: int) -> list[str]:
        """Up to ``limit`` keys ``k`` with ``lo <= k < hi``, in order."""
        out: list[str] = []
        b = bisect.bisect_left(self._maxes, lo)
        i = bisect.bisect_left(self._blocks[b], lo) if b < len(self._blocks) else 0
        while b < len(self._blocks) and len(out) < limit:
            block = self._blocks[b]
            j = min(len(block), i + limit - len(out))
            part = block[i:j]
            if part and part[-1] >= hi:
                out.extend(part[: bisect.bisect_left(part, hi)])
                break
            out.extend(part)
            b, i = b + 1, 0
        return out


@dataclass
class _Object:
    generation: int
    metadata: dict[str, str]
    body: bytes
    updated: str
    listed: bytes | None = None
    """Its resource as a listing shows it, compact JSON, made at its first listing (a page
    is then a join of bytes: encoding a page each time made the stand-in, not the client,
    the bottleneck of a cold start at a million objects)."""


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
    subscription: notifications not yet delivered, and those delivered but not acknowledged
    (redelivered once their ack deadline passes, as Pub/Sub does)."""

    def __init__(self, name: str, *, ack_deadline: float = ACK_DEADLINE_S) -> None:
        self.name = name
        self.objects: dict[str, _Object] = {}
        self.keys = SortedKeys([])
        self._filling: list[str] | None = []
        self._generation = int(time.time() * 1e6)
        self.requests: dict[str, int] = {"list": 0, "get": 0, "bucket": 0, "pull": 0, "ack": 0}
        self.notify = False
        self.ack_deadline = ack_deadline
        self.outbox: deque[dict[str, Any]] = deque()
        # ackId -> (deadline, message), in delivery order: deadlines only grow along it.
        self.outstanding: dict[str, tuple[float, dict[str, Any]]] = {}
        self.arrived = asyncio.Event()
        self._message_id = 0
        self._ack_id = 0
        self.published = 0
        self.redelivered = 0

    def seal(self) -> None:
        """End of the initial fill: the keys put so far are sorted once, later ones inserted."""
        if self._filling is not None:
            self.keys = SortedKeys(sorted(self._filling))
            self._filling = None

    def put(self, key: str, body: bytes, metadata: dict[str, str]) -> int:
        self._generation += 1
        old = self.objects.get(key)
        if old is None:
            if self._filling is not None:
                self._filling.append(key)
            else:
                self.keys.add(key)
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
            self.keys.remove(key)
            if self.notify:
                self._publish("OBJECT_DELETE", key, old)

    def _resource(self, key: str, obj: _Object) -> dict[str, Any]:
        return {
            "kind": "storage#object", "name": key, "bucket": self.name,
            "generation": str(obj.generation), "size": str(len(obj.body)),
            "updated": obj.updated, "metadata": obj.metadata,
        }  # fmt: skip

    def _notified(self, key: str, obj: _Object) -> bytes:
        """The object resource a notification carries: the whole resource, as GCS sends it
        (about 1 KB with an index; a listing's ``_resource`` is what the stand-in's pages hold),
        so a message costs its reader what a real one does."""
        quoted = urllib.parse.quote(key, safe="")
        digest = base64.b64encode(hashlib.md5(obj.body, usedforsecurity=False).digest()).decode()
        at = obj.updated.replace("+00:00", "Z")
        link = f"https://www.googleapis.com/storage/v1/b/{self.name}/o/{quoted}"
        media = f"https://storage.googleapis.com/download/storage/v1/b/{self.name}/o/{quoted}"
        resource = {
            "kind": "storage#object", "id": f"{self.name}/{key}/{obj.generation}",
            "selfLink": link, "mediaLink": f"{media}?generation={obj.generation}&alt=media",
            "name": key, "bucket": self.name, "generation": str(obj.generation),
            "metageneration": "1", "contentType": "application/json", "storageClass": "STANDARD",
            "size": str(len(obj.body)), "md5Hash": digest, "crc32c": "AAAAAA==",
            "etag": base64.b64encode(obj.generation.to_bytes(8, "big")).decode(),
            "timeCreated": at, "updated": at, "timeStorageClassUpdated": at,
            "metadata": obj.metadata,
        }  # fmt: skip
        return json.dumps(resource, separators=(",", ":")).encode()

    def _publish(self, event: str, key: str, obj: _Object) -> None:
        self._message_id += 1
        self.published += 1
        self.outbox.append(
            {
                "messageId": str(self._message_id),
                "publishTime": utcnow().isoformat().replace("+00:00", "Z"),
                "data": base64.b64encode(self._notified(key, obj)).decode(),
                "attributes": {
                    "eventType": event,
                    "objectId": key,
                    "bucketId": self.name,
                    "objectGeneration": str(obj.generation),
                    "eventTime": obj.updated.replace("+00:00", "Z"),
                    "notificationConfig": f"projects/_/buckets/{self.name}/notificationConfigs/1",
                    "payloadFormat": "JSON_API_V1",
                },
            }
        )
        self.arrived.set()

    def _requeue_expired(self, now: float) -> None:
        """Messages whose ack deadline passed go back to the front, to be delivered again."""
        expired: list[dict[str, Any]] = []
        while self.outstanding:
            ack_id = next(iter(self.outstanding))
            deadline, message = self.outstanding[ack_id]
            if deadline > now:
                break
            del self.outstanding[ack_id]
            expired.append(message)
        self.redelivered += len(expired)
        self.outbox.extendleft(reversed(expired))

    def next_expiry(self) -> float | None:
        """When the oldest unacknowledged delivery's deadline passes (monotonic clock)."""
        return next(iter(self.outstanding.values()))[0] if self.outstanding else None

    def deliver(self, wanted: int) -> list[dict[str, Any]]:
        """Up to ``wanted`` messages, each under a fresh ack id (a redelivery gets a new one,
        as in Pub/Sub), to be acknowledged within the ack deadline."""
        now = time.monotonic()
        self._requeue_expired(now)
        out: list[dict[str, Any]] = []
        while self.outbox and len(out) < wanted:
            message = self.outbox.popleft()
            self._ack_id += 1
            ack_id = f"ack-{self._ack_id:012d}-{_ACK_PAD}"
            self.outstanding[ack_id] = (now + self.ack_deadline, message)
            out.append({"ackId": ack_id, "message": message})
        return out

    def acknowledge(self, ack_ids: list[str]) -> None:
        for ack_id in ack_ids:
            self.outstanding.pop(ack_id, None)

    def _listed(self, key: str, obj: _Object) -> bytes:
        if obj.listed is None:
            obj.listed = json.dumps(self._resource(key, obj), separators=(",", ":")).encode()
        return obj.listed

    def page(
        self, prefix: str, start: str | None, end: str | None, token: str | None, limit: int
    ) -> bytes:
        """A listing page as GCS sends it with ``prettyPrint=false`` (compact JSON)."""
        hi = prefix + "\U0010ffff"
        if end:
            hi = min(hi, end)
        chosen = self.keys.take(max(prefix, token or start or ""), hi, limit + 1)
        items = b",".join(self._listed(key, self.objects[key]) for key in chosen[:limit])
        out = b'{"kind":"storage#objects","items":[' + items + b"]"
        if len(chosen) > limit:
            out += b',"nextPageToken":' + json.dumps(chosen[limit]).encode()
        return out + b"}"


def _iso(value: datetime) -> str:
    return value.isoformat()


def _record(t: _Task, state: str, status: str, now: datetime, **extra: str) -> dict[str, str]:
    return {
        "omniq_index": "1", "status": status, "state": state, "queue": t.queue,
        "func": t.func, "attempt": "1", "created_at": t.created_at,
        "started_at": _iso(now - timedelta(seconds=2)), **extra,
    }  # fmt: skip


def _running_md(t: _Task, now: datetime, worker: str) -> dict[str, str]:
    return _record(t, "running", "pending", now, worker_id=worker, lease_s=str(LEASE_S),
                   lease_expires_at=_iso(now + timedelta(seconds=LEASE_S)))  # fmt: skip


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
        bucket.put(f"{layout.tasks}{t.id}.json", body, md)
        if status not in _FINAL:
            entry = {k: md[k] for k in ("omniq_index", "priority", "run_at", "expires_at",
                                         "created_at")}  # fmt: skip
            bucket.put(f"{layout.queues}{queue}/{t.id}.json", b"{}", entry)
        if status == TaskStatus.RUNNING:
            t.record_generation = bucket.put(
                f"{layout.results}{t.id}.json", b"{}", _running_md(t, now, "worker-0")
            )
        elif status in _FINAL:
            finals += 1
            if finals % 2 == 0:  # the other half: deleted by the TTL cleanup
                done = now - timedelta(minutes=30) * rng.random()
                bucket.put(f"{layout.results}{t.id}.json", b"{}", _final_md(t, done, rng))
    for k in range(0, mix.events, BATCH_EVENTS):
        at = now - HISTORY * (1 - (k + 1) / max(1, mix.events))
        worker = f"worker-{rng.randrange(WORKERS)}"
        events = [
            _event(rng.choice(tasks), "executing", at, worker)
            for _ in range(min(BATCH_EVENTS, mix.events - k))
        ]
        key = f"{layout.events}{new_event_id(at)}.json"
        bucket.put(key, _events_body(events), _batch_md(events, worker))
    for s in _schedules(rng, now)[: mix.schedules]:
        md = {"omniq_index": "1", "status": s.status.value, "next_run": _iso(s.next_run or now)}
        bucket.put(layout.schedule(s.id), s.to_json(), md)
    for w in range(mix.workers):
        md = {"omniq_index": "1", "state": "running", "last_seen": _iso(now),
              "started_at": _iso(now - timedelta(hours=1)), "host": "bench", "pid": str(1000 + w),
              "queues": ",".join(QUEUES), "running": "", "processed": str(1000 * w),
              "failed": str(10 * w), "concurrency": "8"}  # fmt: skip
        bucket.put(layout.worker(f"worker-{w}"), b"{}", md)
    bucket.seal()
    return tasks


async def change(bucket: Bucket, tasks: list[_Task], layout: Layout, fraction: float) -> int:
    """A fleet's work between two polls: claim pending tasks, complete running ones, and
    write one event batch; every write notifies (when notifications are on). Done in slices
    with the loop given back between them (a 1% change of a million tasks is 10,000 tasks
    and 20,000+ notifications): listings and pulls are served meanwhile, seeing the change
    half made, as GCS's readers see a fleet's writes."""
    rng = random.Random(11 + bucket.published)
    now = utcnow()
    movable: list[int] = []
    for start in range(0, len(tasks), SCAN_SLICE):
        movable.extend(
            i
            for i in range(start, min(len(tasks), start + SCAN_SLICE))
            if tasks[i].status in (TaskStatus.PENDING, TaskStatus.RUNNING)
        )
        await asyncio.sleep(0)
    k = min(len(movable), max(1, math.ceil(len(tasks) * fraction)))
    events = []
    for done, i in enumerate(rng.sample(movable, k)):
        if done % CHANGE_SLICE == CHANGE_SLICE - 1:
            await asyncio.sleep(0)
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
        await asyncio.sleep(0)
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
        body = bucket.page(q.get("prefix", ""), q.get("startOffset"), q.get("endOffset"),
                           q.get("pageToken"), limit)  # fmt: skip
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

    changing = asyncio.Lock()  # one fleet change at a time: "notified" is that change's count

    async def post_change(request: web.Request) -> web.Response:
        fraction = float(request.query.get("fraction", "0.01"))
        async with changing:
            before = bucket.published
            changed = await change(bucket, tasks, layout, fraction)
            notified = bucket.published - before
        return web.json_response({"changed": changed, "notified": notified})

    async def post_notify(request: web.Request) -> web.Response:
        bucket.notify = request.query.get("on", "1") == "1"
        return web.json_response({"notify": bucket.notify})

    async def get_counts(request: web.Request) -> web.Response:
        return web.json_response(
            {**bucket.requests, "redelivered": bucket.redelivered,
             "unacknowledged": len(bucket.outstanding)}
        )  # fmt: skip

    async def pull(request: web.Request) -> web.Response:
        bucket.requests["pull"] += 1
        asked = await request.json()
        wanted = int(asked.get("maxMessages", 1000))
        out = bucket.deliver(wanted)
        if not out and not asked.get("returnImmediately"):
            # Held open until something is published or a delivery's deadline passes (as
            # Pub/Sub does unless asked to return at once, as the console's feed asks: then
            # its own pause between empty pulls is part of write-to-screen, as on GCP).
            hold = PULL_HOLD_S
            expiry = bucket.next_expiry()
            if expiry is not None:
                hold = max(0.0, min(hold, expiry - time.monotonic()))
            bucket.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(bucket.arrived.wait(), hold)
            out = bucket.deliver(wanted)
        return web.json_response({"receivedMessages": out})

    async def acknowledge(request: web.Request) -> web.Response:
        bucket.requests["ack"] += 1
        bucket.acknowledge(list((await request.json()).get("ackIds", [])))
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
    parser.add_argument("--ack-deadline", type=float, default=ACK_DEADLINE_S)
    args = parser.parse_args(argv)
    layout = Layout(args.prefix)
    bucket = Bucket(args.bucket, ack_deadline=args.ack_deadline)
    started = time.perf_counter()
    tasks = fill(bucket, Mix.for_tasks(args.tasks), layout)
    print(f"ready {len(bucket.keys)} {time.perf_counter() - started:.1f}", flush=True)
    web.run_app(make_app(bucket, tasks, layout), host="127.0.0.1", port=args.port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
