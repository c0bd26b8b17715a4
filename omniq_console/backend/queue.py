"""The task queue on GCS: atomic claims with leases (DESIGN decisions 3 to 5).

Objects
-------
``tasks/{id}.json`` holds the whole Task (status and claim fields: ``worker_id``,
``lease_expires_at``, ``started_at``). ``queues/{q}/{id}.json`` is the queue entry: a small body
(task id, queue) whose custom metadata carries the ranking fields (priority, run_at, expires_at,
created_at) and, while a worker claims it, ``lease_owner``/``lease_expires_at``. A PENDING task
has an entry; a RUNNING or final task has none, except for the moments between two writes below.

Order of writes (a crash between any two leaves a state that a later call finishes)
-------------------------------------------------------------------------------------
enqueue:  (1) task, create-only  (2) entry, create-only.
          Crash after 1: a PENDING task without entry; ``requeue_expired`` creates the entry
          once the task is older than its grace period.
dequeue:  (1) entry CAS on the listed generation, setting lease_owner/lease_expires_at: exactly
              one worker wins the entry
          (2) task CAS: PENDING (or RUNNING with an expired lease) -> RUNNING with worker_id,
              lease_expires_at, started_at: exactly one worker wins the task
          (3) entry delete.
          Crash after 1: the entry's claim expires with its lease; the entry is a candidate again.
          Crash after 2: the task is RUNNING and its entry left; a later claimer of the entry
          finds the task RUNNING: lease live -> it deletes the stale entry; lease expired ->
          it takes the task over.
          Crash after 3 (the worker died running it): ``requeue_expired`` puts it back.
requeue_expired, release, update_task to PENDING: (1) entry, create-only (an existing one is
          fine) (2) task CAS to PENDING. Crash after 1: an entry whose task is RUNNING with an
          expired lease, which a claimer takes over.
update_task leaving PENDING, cleanup_expired_tasks: (1) task CAS (2) entry delete. Crash after
          1: a stale entry, deleted by the next claimer that reads its task.

The emulator ignores preconditions on DELETE, so no step relies on a conditional delete: every
decision is a conditional (multipart) write.

Arguments are not changed by the methods that compute a new state (``dequeue``,
``renew_lease``, ``release``): they return a new Task. ``enqueue`` and ``update_task`` write the
task they are given and set its ``generation`` (and ``updated_at``) to what was stored.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ..models import SCHEMA_VERSION, Task, TaskStatus, as_utc, utcnow
from .bridge import SyncBridge
from .errors import ConflictError, CorruptObjectError, ObjectNotFoundError, StorageError
from .index import (
    TaskIndex,
    claimed_entry_metadata,
    queue_entry_index,
    queue_entry_metadata,
    task_index,
    task_index_of,
    task_metadata,
)
from .layout import Layout, check_id
from .listing import BodyReader, ItemList, StoreBase, bounded_gather
from .objectstore import ObjectInfo, ObjectStore
from .sync import sync_twin

log = logging.getLogger(__name__)

DEFAULT_LEASE_SECONDS = 30.0
REPAIR_GRACE_SECONDS = 30.0
"""A PENDING task without a queue entry is repaired once it is this old (enqueue's window)."""
BEST_FEW = 16
"""After a lost claim, the next candidate is drawn at random among this many of the best of the
same priority. Measured with 16 worker processes: a window of 4 left the losers racing each
other again; 16 spread them (benchmarks/claims.py)."""
POLL_INTERVAL = (0.2, 0.5)
"""Seconds between passes of a waiting ``dequeue`` (random in this range, so workers spread)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def default_worker_id() -> str:
    """An id unique to this process and backend: host, pid and a random suffix."""
    host = socket.gethostname().split(".")[0] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


def _iso(value: datetime | None) -> str:
    return as_utc(value).isoformat() if value is not None else ""


def _entry_body(
    task_id: str, queue: str, owner: str | None = None, until: datetime | None = None
) -> bytes:
    body: dict[str, object] = {"schema_version": SCHEMA_VERSION, "task_id": task_id, "queue": queue}
    if owner is not None:
        # The nonce makes every claim's bytes unique: ObjectStore settles a 412 by comparing the
        # stored bytes with its own, and two identical claims must never both look like wins.
        body.update(lease_owner=owner, lease_expires_at=_iso(until), claim=secrets.token_hex(8))
    return json.dumps(body, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class _Candidate:
    rank: tuple[int, datetime, str]
    info: ObjectInfo
    queue: str
    task_id: str


class AsyncGCSQueue(StoreBase):
    """Tasks in named queues, claimed atomically by workers that hold a renewable lease."""

    def __init__(
        self,
        store: ObjectStore,
        layout: Layout,
        reader: BodyReader,
        bridge: SyncBridge,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        worker_id: str | None = None,
    ) -> None:
        super().__init__(store, layout, reader, bridge)
        if lease_seconds <= 0:
            raise ValueError(f"lease_seconds must be positive, not {lease_seconds!r}")
        self.lease_seconds = float(lease_seconds)
        self.worker_id = worker_id or default_worker_id()

    # -- enqueue and read ---------------------------------------------------------------------

    async def enqueue(self, task: Task) -> str:
        """Store a PENDING task in its queue; return its id.

        ``ConflictError`` when a different task with this id exists already.
        """
        task_key = self.layout.task(task.id)
        entry_key = self.layout.queue_entry(task.queue_name, task.id)
        self._check_writable("enqueue", task_key)
        if task.status != TaskStatus.PENDING:
            raise ValueError(
                f"task {task.id} is {task.status.value}: only a pending task is enqueued"
            )
        try:
            await self.reader.write(task_key, task, task_metadata(task), if_generation_match=0)
        except ConflictError as exc:
            raise ConflictError(task_key, 0, f"a task with id {task.id} exists already") from exc
        await self._ensure_entry(task, entry_key)
        return task.id

    async def get_task(self, task_id: str) -> Task | None:
        """The task as stored now, or None; ``CorruptObjectError`` when its body is unreadable."""
        return await self.reader.read(self.layout.task(task_id), Task)

    async def get_queue_size(self, queue_name: str) -> int:
        """Pending tasks in the queue (delayed ones included): one listing, no body read."""
        return len(await self._list_entries(self.layout.queue(queue_name)))

    async def list_tasks(
        self,
        queue_name: str | None = None,
        status: TaskStatus | str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> ItemList[Task]:
        """Tasks oldest first (by ``created_at``), filtered on listing metadata.

        Only the bodies of the page asked for (``offset``, ``limit``) are read, plus those of
        tasks without index metadata. Unparseable tasks are named in ``.unreadable``.
        """
        if queue_name is not None:
            check_id(queue_name, "queue name")
        wanted = TaskStatus(status) if status is not None else None
        if offset < 0 or (limit is not None and limit < 0):
            raise ValueError("offset and limit must not be negative")

        def keep(queue: str, st: TaskStatus) -> bool:
            return (queue_name is None or queue == queue_name) and (wanted is None or st == wanted)

        infos = await self._list(self.layout.tasks)
        rows: list[tuple[datetime, str, ObjectInfo | Task]] = []
        unindexed: list[ObjectInfo] = []
        for info in infos:
            idx = task_index(info)
            if idx is None:
                unindexed.append(info)
            elif keep(idx.queue, idx.status):
                rows.append((idx.created_at or _EPOCH, info.key, info))
        bodies = await self.reader.read_listed(unindexed, Task)
        rows.extend(
            (t.created_at, self.layout.task(t.id), t)
            for t in bodies
            if keep(t.queue_name, t.status)
        )
        rows.sort(key=lambda row: (row[0], row[1]))
        page = rows[offset : None if limit is None else offset + limit]
        to_read = [item for _, _, item in page if isinstance(item, ObjectInfo)]
        read = await self.reader.read_listed(to_read, Task)
        by_id = {t.id: t for t in read}
        out: ItemList[Task] = ItemList(unreadable=[*bodies.unreadable, *read.unreadable])
        for _, key, item in page:
            task = item if isinstance(item, Task) else by_id.get(Layout.name_of(key))
            # The object may have changed between listing and read: the body decides.
            if task is not None and keep(task.queue_name, task.status):
                out.append(task)
        return out

    # -- claims -------------------------------------------------------------------------------

    async def dequeue(
        self,
        queues: Sequence[str] | str,
        timeout: float | None = None,
        *,
        worker_id: str | None = None,
        lease_seconds: float | None = None,
    ) -> Task | None:
        """Claim the best ready task of ``queues`` (highest priority, then oldest).

        The task returned is RUNNING, owned by ``worker_id`` until ``lease_expires_at`` (renew
        it with ``renew_lease``); exactly one worker gets each task. Delayed (``run_at`` in the
        future) and expired tasks are never handed out. ``timeout=None`` looks once and returns
        None when there is nothing; a positive ``timeout`` waits up to that many seconds.
        """
        names = [queues] if isinstance(queues, str) else list(dict.fromkeys(queues))
        if not names:
            raise ValueError("dequeue needs at least one queue name")
        prefixes = [self.layout.queue(name) for name in names]
        self._check_writable("dequeue", prefixes[0])
        # A worker id is also the key of its heartbeat (workers/{id}.json): same rules as ids.
        worker = check_id(worker_id or self.worker_id, "worker id")
        lease = self.lease_seconds if lease_seconds is None else float(lease_seconds)
        if lease <= 0:
            raise ValueError(f"lease_seconds must be positive, not {lease_seconds!r}")
        deadline = None if not timeout or timeout <= 0 else time.monotonic() + timeout
        while True:
            task = await self._dequeue_pass(prefixes, worker, lease)
            if task is not None or deadline is None:
                return task
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            await asyncio.sleep(min(remaining, random.uniform(*POLL_INTERVAL)))

    async def _dequeue_pass(self, prefixes: list[str], worker: str, lease: float) -> Task | None:
        now = utcnow()
        listings = await asyncio.gather(*(self._list_entries(prefix) for prefix in prefixes))
        candidates = sorted(
            (c for infos in listings for c in self._candidates(infos, now)), key=lambda c: c.rank
        )
        first = True
        while candidates:
            # The head first; after a lost race a random one of the best few, so that workers
            # that all lost the head do not race each other again for the next one.
            pick = 0 if first else random.randrange(_same_priority_window(candidates))
            first = False
            task = await self._claim(candidates.pop(pick), worker, lease)
            if task is not None:
                return task
        return None

    def _candidates(self, infos: Iterable[ObjectInfo], now: datetime) -> Iterable[_Candidate]:
        for info in infos:
            queue = self.layout.queue_of_entry(info.key)
            if queue is None:
                continue
            idx = queue_entry_index(info, self.layout)
            if idx is None:
                # No usable index: rank it as priority 0 by write time; step 2 reads the task.
                yield _Candidate(
                    (0, info.updated or _EPOCH, info.key), info, queue, Layout.name_of(info.key)
                )
                continue
            if idx.lease_owner and idx.lease_expires_at is not None and idx.lease_expires_at > now:
                continue  # another worker is claiming it
            if idx.run_at is not None and idx.run_at > now:
                continue
            if idx.expires_at is not None and idx.expires_at <= now:
                continue  # left for cleanup_expired_tasks
            rank = (-idx.priority, idx.created_at or info.updated or _EPOCH, info.key)
            yield _Candidate(rank, info, queue, idx.task_id)

    async def _claim(self, cand: _Candidate, worker: str, lease: float) -> Task | None:
        now = utcnow()
        until = now + timedelta(seconds=lease)
        entry_key = cand.info.key
        # Step 1: win the entry.
        try:
            claimed = await self.store.write(
                entry_key,
                _entry_body(cand.task_id, cand.queue, worker, until),
                metadata=claimed_entry_metadata(cand.info.metadata, worker, until),
                if_generation_match=cand.info.generation,
            )
        except ConflictError:
            return None
        task_key = self.layout.task(cand.task_id)
        for _ in range(2):
            # Step 2: win the task.
            try:
                task = await self.reader.read(task_key, Task)
            except CorruptObjectError as exc:
                log.warning("dropping the queue entry of an unreadable task: %s", exc)
                await self._drop_entry(entry_key)
                return None
            if (
                task is None
                or task.queue_name != cand.queue
                or task.status.is_final
                or (task.status == TaskStatus.RUNNING and not task.lease_expired(now))
            ):
                await self._drop_entry(entry_key)  # stale: the task is gone, moved, done or run
                return None
            if task.is_expired(now) or (
                task.status == TaskStatus.PENDING and not task.is_ready(now)
            ):
                # The entry's index was wrong or missing: put it back, unclaimed and corrected.
                await self._restore_entry(entry_key, claimed.generation, queue_entry_metadata(task))
                return None
            running = task.model_copy(deep=True)
            running.status = TaskStatus.RUNNING
            running.worker_id = worker
            running.lease_expires_at = until
            running.started_at = now
            running.updated_at = now
            try:
                await self.reader.write(
                    task_key, running, task_metadata(running), if_generation_match=task.generation
                )
            except ConflictError:
                continue  # changed meanwhile (cancelled, taken over...): re-read and decide again
            # Step 3: the entry has done its job.
            await self._drop_entry(entry_key)
            return running
        await self._restore_entry(entry_key, claimed.generation, cand.info.metadata)
        return None

    async def _drop_entry(self, entry_key: str) -> None:
        try:
            await self.store.delete(entry_key)
        except StorageError as exc:
            # Harmless if it stays: the next claimer reads the task and deletes it then.
            log.warning("could not delete queue entry %s: %s", entry_key, exc)

    async def _restore_entry(
        self, entry_key: str, generation: int, metadata: Mapping[str, str]
    ) -> None:
        task_id = Layout.name_of(entry_key)
        queue = self.layout.queue_of_entry(entry_key) or ""
        try:
            await self.store.write(
                entry_key,
                _entry_body(task_id, queue),
                metadata=claimed_entry_metadata(metadata, None, None),
                if_generation_match=generation,
            )
        except (ConflictError, StorageError) as exc:
            # Not fatal: our claim on the entry expires with its lease.
            log.info("queue entry %s not restored: %s", entry_key, exc)

    async def _ensure_entry(self, task: Task, entry_key: str | None = None) -> None:
        """Create the queue entry of a PENDING task; an existing one is fine."""
        key = entry_key or self.layout.queue_entry(task.queue_name, task.id)
        try:
            await self.store.write(
                key,
                _entry_body(task.id, task.queue_name),
                metadata=queue_entry_metadata(task),
                if_generation_match=0,
            )
        except ConflictError:
            pass

    # -- leases -------------------------------------------------------------------------------

    async def renew_lease(self, task: Task, lease_seconds: float | None = None) -> Task:
        """Extend the lease of a RUNNING task this worker holds; return the task as stored.

        ``ConflictError`` when the task changed since ``task`` was read (cancelled, released,
        taken over after the lease ran out): the worker no longer owns it.
        """
        key = self.layout.task(task.id)
        self._check_writable("renew lease", key)
        self._need_generation(task)
        if task.status != TaskStatus.RUNNING:
            raise ValueError(
                f"task {task.id} is {task.status.value}: only a running task has a lease"
            )
        lease = self.lease_seconds if lease_seconds is None else float(lease_seconds)
        if lease <= 0:
            raise ValueError(f"lease_seconds must be positive, not {lease_seconds!r}")
        now = utcnow()
        renewed = task.model_copy(deep=True)
        renewed.lease_expires_at = now + timedelta(seconds=lease)
        renewed.updated_at = now
        await self._cas_task(
            renewed, task.generation, "its lease was lost (cancelled, released or taken over)"
        )
        return renewed

    async def release(self, task: Task) -> Task:
        """Put a RUNNING task back in its queue as PENDING (say, on shutdown); return it."""
        key = self.layout.task(task.id)
        self._check_writable("release", key)
        self._need_generation(task)
        if task.status != TaskStatus.RUNNING:
            raise ValueError(
                f"task {task.id} is {task.status.value}: only a running task is released"
            )
        pending = self._as_pending(task, utcnow())
        await self._ensure_entry(pending)
        await self._cas_task(pending, task.generation, "it changed since it was claimed")
        return pending

    async def requeue_expired(
        self, now: datetime | None = None, *, grace_seconds: float = REPAIR_GRACE_SECONDS
    ) -> list[str]:
        """Return RUNNING tasks whose lease ran out to their queue; return their ids.

        At-least-once: ``retry_count`` is unchanged (the task did not fail, its worker
        vanished). The caller logs a ``lease_expired`` event for each id. Also repairs a
        PENDING task left without a queue entry (a crash inside ``enqueue``) once it is older
        than ``grace_seconds``; those are logged, not returned.
        """
        self._check_writable("requeue expired tasks", self.layout.tasks)
        now = as_utc(now) if now is not None else utcnow()
        task_infos, entry_infos = await asyncio.gather(
            self._list(self.layout.tasks), self._list_entries(self.layout.queues)
        )
        entries = self._entry_set(entry_infos)
        states = await self._task_states(task_infos)
        expired = [
            (info, st)
            for info, st in states
            if st.status == TaskStatus.RUNNING and _lease_over(st, now)
        ]
        cutoff = now - timedelta(seconds=grace_seconds)
        orphans = [
            (info, st)
            for info, st in states
            if st.status == TaskStatus.PENDING
            and (st.queue, st.id) not in entries
            and (info.updated or st.created_at or now) <= cutoff
        ]

        async def requeue(item: tuple[ObjectInfo, TaskIndex]) -> str | None:
            task = await self._body_at(item[0])
            if task is None or not task.lease_expired(now):
                return None
            pending = self._as_pending(task, utcnow())
            await self._ensure_entry(pending)
            try:
                await self.reader.write(
                    self.layout.task(task.id),
                    pending,
                    task_metadata(pending),
                    if_generation_match=task.generation,
                )
            except ConflictError:
                return None  # renewed, finished or requeued by someone else meanwhile
            return task.id

        async def repair(item: tuple[ObjectInfo, TaskIndex]) -> None:
            # Read fresh, not from the cache: a claimer may have taken the task (and deleted
            # its entry) between the two listings, and must not get a stale entry back.
            try:
                task = await self.reader.read(item[0].key, Task)
            except CorruptObjectError as exc:
                log.warning("skipping unreadable task: %s", exc)
                return
            if task is not None and task.status == TaskStatus.PENDING:
                log.info("re-creating the missing queue entry of pending task %s", task.id)
                await self._ensure_entry(task)

        requeued = await bounded_gather(expired, requeue)
        await bounded_gather(orphans, repair)
        return [task_id for task_id in requeued if task_id is not None]

    # -- updates ------------------------------------------------------------------------------

    async def update_task(self, task: Task) -> Task:
        """Write ``task`` if it is unchanged since it was read (compare-and-swap on its generation).

        Keeps the queue entry consistent: a task that becomes PENDING gets an entry (written
        before the task), one that leaves PENDING loses it (after). ``ConflictError`` when the
        stored task changed since ``task`` was read: re-read it and decide again.
        """
        key = self.layout.task(task.id)
        self.layout.queue(task.queue_name)
        self._check_writable("update", key)
        expected = self._need_generation(task)
        old = self.reader.cache.get(key, expected, Task)
        if old is None:
            old = await self.reader.read(key, Task)
            if old is None:
                raise ObjectNotFoundError(key, "task")
            if old.generation != expected:
                raise ConflictError(key, expected, f"task {task.id}: re-read it and decide again")
        was_pending = old.status == TaskStatus.PENDING
        is_pending = task.status == TaskStatus.PENDING
        moved = old.queue_name != task.queue_name
        if is_pending and (not was_pending or moved):
            await self._ensure_entry(task)
        task.updated_at = utcnow()
        await self._cas_task(task, expected, "re-read it and decide again")
        if was_pending and (not is_pending or moved):
            await self._drop_entry(self.layout.queue_entry(old.queue_name, old.id))
        elif was_pending and is_pending and queue_entry_metadata(old) != queue_entry_metadata(task):
            # Same queue, new ranking (priority, run_at, expiry): the entry's index follows.
            await self.store.write(
                self.layout.queue_entry(task.queue_name, task.id),
                _entry_body(task.id, task.queue_name),
                metadata=queue_entry_metadata(task),
            )
        return task

    async def delete_task(self, task_id: str) -> bool:
        """Delete a task, its queue entry and its result; False when the task did not exist."""
        key = self.layout.task(task_id)
        self._check_writable("delete", key)
        try:
            task = await self.reader.read(key, Task)
            exists = task is not None
        except CorruptObjectError:
            task, exists = None, True
        if task is not None:
            if task.status == TaskStatus.PENDING:
                await self.reader.delete(self.layout.queue_entry(task.queue_name, task_id))
        elif exists:
            # Unreadable body, unknown queue: find its entries by name.
            suffix = f"/{task_id}.json"
            for info in await self._list_entries(self.layout.queues):
                if info.key.endswith(suffix) and self.layout.queue_of_entry(info.key):
                    await self.store.delete(info.key)
        deleted = await self.reader.delete(key)
        await self.reader.delete(self.layout.result(task_id))
        return exists and deleted

    async def cleanup_expired_tasks(self) -> int:
        """Mark PENDING tasks past ``expires_at`` EXPIRED and drop their entries; return how many.

        A RUNNING task whose lease ran out and that has expired is marked EXPIRED too, and
        entries left behind by tasks that are gone or finished are deleted.
        """
        self._check_writable("clean up expired tasks", self.layout.tasks)
        now = utcnow()
        task_infos, entry_infos = await asyncio.gather(
            self._list(self.layout.tasks), self._list_entries(self.layout.queues)
        )
        entries = self._entry_set(entry_infos)
        states = await self._task_states(task_infos)
        due = [
            (info, st)
            for info, st in states
            if (st.status == TaskStatus.PENDING or _lease_over(st, now))
            and st.expires_at is not None
            and st.expires_at <= now
        ]

        async def expire(item: tuple[ObjectInfo, TaskIndex]) -> bool:
            task = await self._body_at(item[0])
            if task is None or not task.is_expired(now):
                return False
            if task.status != TaskStatus.PENDING and not task.lease_expired(now):
                return False
            expired = task.model_copy(deep=True)
            expired.status = TaskStatus.EXPIRED
            expired.lease_expires_at = None
            expired.updated_at = utcnow()
            try:
                await self.reader.write(
                    self.layout.task(task.id),
                    expired,
                    task_metadata(expired),
                    if_generation_match=task.generation,
                )
            except ConflictError:
                return False
            if (task.queue_name, task.id) in entries:
                await self._drop_entry(self.layout.queue_entry(task.queue_name, task.id))
            return True

        count = sum(await bounded_gather(due, expire))
        # Entries past their expiry are never handed out, so when their task is gone or no
        # longer waiting nobody else would delete them.
        listed = {Layout.name_of(info.key) for info in task_infos}
        known = {st.id: st for _, st in states}
        for info in entry_infos:
            idx = queue_entry_index(info, self.layout)
            if idx is None or idx.expires_at is None or idx.expires_at > now:
                continue
            st = known.get(idx.task_id)
            gone = idx.task_id not in listed
            done = st is not None and st.status != TaskStatus.PENDING and not _lease_over(st, now)
            if gone or done:
                await self._drop_entry(info.key)
        return count

    # -- helpers ------------------------------------------------------------------------------

    def _entry_set(self, entry_infos: Iterable[ObjectInfo]) -> set[tuple[str, str]]:
        out: set[tuple[str, str]] = set()
        for info in entry_infos:
            queue = self.layout.queue_of_entry(info.key)
            if queue is not None:
                out.add((queue, Layout.name_of(info.key)))
        return out

    async def _task_states(self, infos: Sequence[ObjectInfo]) -> list[tuple[ObjectInfo, TaskIndex]]:
        """The index of every listed task: from metadata, or from its body when it has none."""
        out: list[tuple[ObjectInfo, TaskIndex]] = []
        unindexed: list[ObjectInfo] = []
        for info in infos:
            idx = task_index(info)
            if idx is None:
                unindexed.append(info)
            else:
                out.append((info, idx))
        by_key = {info.key: info for info in unindexed}
        for task in await self.reader.read_listed(unindexed, Task):
            out.append((by_key[self.layout.task(task.id)], task_index_of(task)))
        return out

    async def _body_at(self, info: ObjectInfo) -> Task | None:
        """The task body as listed (from the cache when its generation is known), else now."""
        cached = self.reader.cache.get(info.key, info.generation, Task)
        if cached is not None:
            return cached
        try:
            return await self.reader.read(info.key, Task)
        except CorruptObjectError as exc:
            log.warning("skipping unreadable task: %s", exc)
            return None

    async def _cas_task(self, task: Task, expected: int | None, advice: str) -> None:
        key = self.layout.task(task.id)
        try:
            await self.reader.write(key, task, task_metadata(task), if_generation_match=expected)
        except ConflictError as exc:
            raise ConflictError(key, expected, f"task {task.id}: {advice}") from exc

    @staticmethod
    def _need_generation(task: Task) -> int:
        if task.generation is None:
            raise ValueError(
                f"task {task.id} was never read from or written to the bucket: "
                "get it with get_task first"
            )
        return task.generation

    @staticmethod
    def _as_pending(task: Task, now: datetime) -> Task:
        pending = task.model_copy(deep=True)
        pending.status = TaskStatus.PENDING
        pending.worker_id = None
        pending.lease_expires_at = None
        pending.started_at = None
        pending.updated_at = now
        return pending


def _lease_over(st: TaskIndex, now: datetime) -> bool:
    return (
        st.status == TaskStatus.RUNNING
        and st.lease_expires_at is not None
        and st.lease_expires_at <= now
    )


class GCSQueue(AsyncGCSQueue):
    """The task queue with blocking ``*_sync`` twins (open the backend with ``with backend:``)."""

    enqueue_sync = sync_twin(AsyncGCSQueue.enqueue)
    dequeue_sync = sync_twin(AsyncGCSQueue.dequeue)
    get_task_sync = sync_twin(AsyncGCSQueue.get_task)
    update_task_sync = sync_twin(AsyncGCSQueue.update_task)
    delete_task_sync = sync_twin(AsyncGCSQueue.delete_task)
    list_tasks_sync = sync_twin(AsyncGCSQueue.list_tasks)
    get_queue_size_sync = sync_twin(AsyncGCSQueue.get_queue_size)
    cleanup_expired_tasks_sync = sync_twin(AsyncGCSQueue.cleanup_expired_tasks)
    renew_lease_sync = sync_twin(AsyncGCSQueue.renew_lease)
    release_sync = sync_twin(AsyncGCSQueue.release)
    requeue_expired_sync = sync_twin(AsyncGCSQueue.requeue_expired)


def _same_priority_window(candidates: Sequence[_Candidate]) -> int:
    """How many of the best candidates share the head's priority, at most ``BEST_FEW``: a random
    pick among them never hands out a lower priority before a higher one."""
    head = candidates[0].rank[0]
    window = 1
    while window < min(BEST_FEW, len(candidates)) and candidates[window].rank[0] == head:
        window += 1
    return window
