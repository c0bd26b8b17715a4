"""MemoryObjectStore: ``ObjectStore``'s API and GCS's rules, in memory, for fast tests.

Lifecycle and store tests run against it in milliseconds, with time under the test's control:
generations strictly increase, ``if_generation_match`` is honoured on writes and deletes
(``0``: create only; a generation: compare-and-swap) and a lost precondition is a
``ConflictError``, absent objects are ``ObjectNotFoundError``, custom metadata over 8 KiB of
UTF-8 is refused, listings come in key order in pages of 1,000 (each page one counted
request), and, with ``per_name_limit=True``, a second mutation of one name within a second of
the injected clock raises ``RateLimitedError`` (a precondition failure is not a mutation), as
GCS answers 429. The emulator stays the place for integration tests and races between
processes.

Several stores can share one :class:`MemoryServer` (one "GCS"), as workers share a bucket.
This module does not import gcsfs.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .config import check_access, check_consistency
from .errors import (
    BucketNotFoundError,
    ConflictError,
    ObjectNotFoundError,
    RateLimitedError,
    StorageError,
)
from .storeapi import ObjectData, ObjectInfo, ObjectStoreAPI, Page, PageRequest, RequestStats


@dataclass(frozen=True, slots=True)
class _Stored:
    """An object as the server holds it: what a listing says of it (made once, at its
    write), and its body."""

    info: ObjectInfo
    data: bytes


class MemoryServer:
    """Buckets held in memory, shared by every ``MemoryObjectStore`` built on it.

    ``clock`` (seconds since the epoch, ``time.time`` by default) stamps ``updated`` and
    decides the per-name rule; ``per_name_limit`` turns on GCS's one mutation per name per
    ``hot_seconds``.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        per_name_limit: bool = False,
        hot_seconds: float = 1.0,
    ) -> None:
        self.clock = clock
        self.per_name_limit = per_name_limit
        self.hot_seconds = hot_seconds
        self.buckets: dict[str, dict[str, _Stored]] = {}
        self._generation = 0
        # (bucket, name) -> clock() of its last successful mutation.
        self._last_mutation: dict[tuple[str, str], float] = {}

    def create_bucket(self, name: str) -> None:
        """Create bucket ``name``; an existing one is kept as it is."""
        self.buckets.setdefault(name, {})

    def objects(self, bucket: str) -> dict[str, _Stored]:
        """The objects of ``bucket`` (``BucketNotFoundError`` when it does not exist)."""
        try:
            return self.buckets[bucket]
        except KeyError:
            raise BucketNotFoundError(bucket) from None

    def next_generation(self) -> int:
        """A generation greater than every one handed out before (GCS's are unique too)."""
        self._generation += 1
        return self._generation

    def check_rate(self, bucket: str, key: str) -> None:
        """``RateLimitedError`` if ``key`` was mutated less than ``hot_seconds`` ago."""
        if not self.per_name_limit:
            return
        last = self._last_mutation.get((bucket, key))
        if last is not None and self.clock() - last < self.hot_seconds:
            raise RateLimitedError(
                f"gs://{bucket}/{key} was mutated {self.clock() - last:.3f} s ago: GCS takes "
                f"about one mutation of a name per second (429 rateLimitExceeded)"
            )

    def mutated(self, bucket: str, key: str) -> None:
        """Note a successful mutation of ``key`` now, for the per-name rule."""
        self._last_mutation[(bucket, key)] = self.clock()


class MemoryObjectStore(ObjectStoreAPI):
    """The same API as ``ObjectStore`` (``ObjectStoreAPI``), over a :class:`MemoryServer`.

    Without ``server`` it builds its own, with ``bucket`` created, ``clock`` and
    ``per_name_limit``; with one, those two come from the server. Requests are counted in
    ``stats`` as ``ObjectStore`` counts them (one per request, a page of a listing each).
    """

    def __init__(
        self,
        bucket: str = "memory",
        *,
        server: MemoryServer | None = None,
        access: str = "read_write",
        consistency: str = "md5",
        clock: Callable[[], float] | None = None,
        per_name_limit: bool = False,
        project: str | None = None,
    ) -> None:
        # The settings model's own checks (one place), for a store built without it.
        checked_access: str = check_access(access)
        checked_consistency: str = check_consistency(consistency)
        if server is None:
            server = MemoryServer(clock=clock or time.time, per_name_limit=per_name_limit)
            server.create_bucket(bucket)
        elif clock is not None or per_name_limit:
            raise ValueError("clock and per_name_limit belong to the shared server")
        self.server = server
        self.bucket = bucket
        self.project = project
        self.access = checked_access
        self.consistency = checked_consistency
        # What GCSBackend reads of an ObjectStore besides the API: no credentials here.
        self.token: Any = None
        self.gcs_kwargs: dict[str, Any] = {}
        self.stats = RequestStats()
        self._open = False

    @property
    def is_open(self) -> bool:
        return self._open

    async def open(self) -> None:
        """Start accepting requests (nothing to connect to)."""
        self._open = True

    async def close(self) -> None:
        """Refuse requests until opened again; the server keeps the objects."""
        self._open = False

    async def _request(self, kind: str) -> None:
        if not self._open:
            raise StorageError("the backend is not open: use 'async with backend:' first")
        # Let other tasks run between requests, as a real round trip would.
        await asyncio.sleep(0)
        self.stats.record(kind, 0.0, error=False)

    async def check_bucket(self, prefix: str = "") -> None:
        """``BucketNotFoundError`` unless the bucket exists (one listing request)."""
        await self._request("list")
        self.server.objects(self.bucket)

    async def create_bucket(self) -> None:
        """Create this store's bucket on its server; an existing one is fine."""
        self._refuse_if_read_only("create bucket", self.bucket)
        await self._request("bucket")
        self.server.create_bucket(self.bucket)

    async def _list_page(self, page: PageRequest) -> Page:
        """A page's keys in order; the token is the page's last key, when more follow."""
        await self._request("list")
        objects = self.server.objects(self.bucket)
        keys = heapq.nsmallest(
            page.size + 1,
            (
                key
                for key in objects
                if key.startswith(page.prefix)
                and (page.start_offset is None or key >= page.start_offset)
                and (page.end_offset is None or key < page.end_offset)
                and (page.token is None or key > page.token)
            ),
        )
        more = len(keys) > page.size
        del keys[page.size :]
        return [objects[key].info for key in keys], keys[-1] if more else None

    async def read(self, key: str) -> ObjectData:
        """The body of ``key`` and its generation; ``ObjectNotFoundError`` when it is absent."""
        await self._request("get")
        stored = self.server.objects(self.bucket).get(key)
        if stored is None:
            raise ObjectNotFoundError(key)
        return ObjectData(key, stored.data, stored.info.generation, stored.info.metadata)

    def _check_precondition(self, key: str, current: _Stored | None, expected: int | None) -> None:
        if expected is None:
            return
        holds = (
            current is None
            if expected == 0
            else (current is not None and current.info.generation == expected)
        )
        if not holds:
            self.stats.conflicts += 1
            raise ConflictError(key, expected)

    async def _write(
        self, key: str, data: bytes, metadata: Mapping[str, str], expected: int | None
    ) -> ObjectInfo:
        await self._request("write")
        objects = self.server.objects(self.bucket)
        self._check_precondition(key, objects.get(key), expected)
        self._check_rate(key, "write")
        body = bytes(data)
        info = ObjectInfo(
            key,
            self.server.next_generation(),
            len(body),
            datetime.fromtimestamp(self.server.clock(), UTC),
            dict(metadata),
        )
        objects[key] = _Stored(info, body)
        self.server.mutated(self.bucket, key)
        return info

    async def _delete(self, key: str, expected: int | None) -> bool:
        await self._request("delete")
        objects = self.server.objects(self.bucket)
        current = objects.get(key)
        if current is None:
            return False
        self._check_precondition(key, current, expected)
        self._check_rate(key, "delete")
        del objects[key]
        self.server.mutated(self.bucket, key)
        return True

    def _check_rate(self, key: str, kind: str) -> None:
        try:
            self.server.check_rate(self.bucket, key)
        except RateLimitedError:
            self.stats.rate_limited += 1
            self.stats.errors[kind] += 1
            raise
