"""What every object store offers the stores above it: records, counters, retries, the API.

Two implementations subclass :class:`ObjectStoreAPI`: ``ObjectStore`` (a GCS bucket through
gcsfs's session) and ``MemoryObjectStore`` (the same rules in memory, for fast tests). This
module imports neither gcsfs nor aiohttp, so the in-memory store and plain-Python layers can
use these types without the GCS dependencies.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from datetime import datetime

import msgspec

from ..checks import check_seconds
from .errors import MetadataTooLargeError, ReadOnlyError

REQUEST_KINDS = ("list", "get", "write", "delete", "bucket")
FAILURE_CLASSES = ("412", "429", "5xx", "4xx", "network")
"""How a failed attempt is counted: a lost precondition, rate limited, a server error, another
client error, or no answer at all (refused, reset, timed out)."""
LATENCY_SAMPLES = 4096
"""Latest attempts whose duration is kept (for percentiles by kind)."""
METADATA_LIMIT_BYTES = 8 * 1024
"""GCS's limit on an object's custom metadata: UTF-8 bytes of every key and value together."""
LIST_PAGE_SIZE = 1000
"""Objects in one page of a listing (GCS's largest): one request each."""


class ObjectInfo(msgspec.Struct, frozen=True, gc=False):
    """One object as a listing (or a write) describes it, without its body.

    A msgspec struct: a listing of a million objects makes a million of them, and a frozen
    dataclass's ``__init__`` took ~0.6 µs each (0.07 here); never tracked by the collector
    (it holds strings, numbers, a datetime and a dict of strings: no cycle)."""

    key: str
    generation: int
    size: int
    updated: datetime | None
    metadata: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class ObjectData:
    """A body read from the bucket with the generation it was read at."""

    key: str
    data: bytes
    generation: int
    metadata: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How transient failures (408, 429, 5xx, dropped connections, time-outs) are retried.

    Google's recommendation for Cloud Storage: exponential backoff with full jitter (retry
    ``n`` sleeps ``uniform(0, min(max_delay, base_delay * multiplier**n))``), starting at 1 s,
    doubling, capped at 32 s, within an overall ``deadline`` (120 s). No retry starts whose
    sleep would end after the deadline, so a call gives up within ``deadline`` plus one
    ``request_timeout``. ``attempts`` optionally caps the number of attempts as well (``None``:
    the deadline alone decides). Only idempotent requests are retried; see ``ObjectStore``.
    """

    base_delay: float = 1.0
    max_delay: float = 32.0
    multiplier: float = 2.0
    deadline: float = 120.0
    request_timeout: float = 30.0
    attempts: int | None = None

    def __post_init__(self) -> None:
        for name in ("base_delay", "max_delay", "deadline", "request_timeout"):
            check_seconds(f"RetryPolicy.{name}", getattr(self, name))
        if self.multiplier < 1:
            raise ValueError(f"RetryPolicy.multiplier must be 1 or more, not {self.multiplier!r}")
        if self.attempts is not None and self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be 1 or more, not {self.attempts!r}")

    def ceiling(self, retry: int) -> float:
        """The longest sleep before retry number ``retry`` (0 for the first retry)."""
        try:
            grown = self.base_delay * self.multiplier**retry
        except OverflowError:  # hours into an outage: long past the cap anyway
            return float(self.max_delay)
        return float(min(self.max_delay, grown))

    def delay(self, retry: int, rand: float | None = None) -> float:
        """The sleep before retry number ``retry``: full jitter below :meth:`ceiling`.

        ``rand`` (in [0, 1)) replaces the random draw, for tests of the numbers.
        """
        draw = random.random() if rand is None else rand
        return self.ceiling(retry) * draw


@dataclass(frozen=True, slots=True)
class RetryNotice:
    """A retry about to happen: what failed, which attempt comes next, after what pause.

    For a caller that shows progress ("connecting to ... (attempt 3)") while it waits.
    """

    kind: str
    attempt: int  # the attempt about to be made, counting from 1
    delay: float  # seconds of backoff before it
    reason: str  # why the previous attempt failed, in words, secrets masked
    endpoint: str


@dataclass
class RequestStats:
    """Requests sent, by kind (list/get/write/delete/bucket), with errors and latency.

    Every attempt counts: a request retried twice is three in ``count``. ``retries`` is the
    number of those attempts that were retries, ``rate_limited`` the 429 answers among them,
    ``conflicts`` the preconditions lost (412, not counted as errors). ``failures`` counts
    failed attempts by :data:`FAILURE_CLASSES` (412 included); ``latencies`` holds the latest
    :data:`LATENCY_SAMPLES` attempts as ``(kind, seconds)`` and ``sampled`` how many were ever
    recorded, so that :meth:`since` can hand over the ones recorded after a copy.
    """

    count: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REQUEST_KINDS, 0))
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REQUEST_KINDS, 0))
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(REQUEST_KINDS, 0.0))
    retries: int = 0
    conflicts: int = 0
    rate_limited: int = 0
    failures: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAILURE_CLASSES, 0))
    latencies: deque[tuple[str, float]] = field(
        default_factory=lambda: deque(maxlen=LATENCY_SAMPLES)
    )
    sampled: int = 0

    def record(self, kind: str, seconds: float, error: bool, failure: str | None = None) -> None:
        """Count one attempt of kind ``kind`` that took ``seconds``; ``failure``: its class in
        :data:`FAILURE_CLASSES` when it failed (see :func:`failure_class`)."""
        self.count[kind] += 1
        self.seconds[kind] += seconds
        if error:
            self.errors[kind] += 1
        if failure is not None:
            self.failures[failure] += 1
        self.latencies.append((kind, seconds))
        self.sampled += 1

    @property
    def total(self) -> int:
        return sum(self.count.values())

    def copy(self) -> RequestStats:
        """The counters as they are now (the latency samples stay here: ``since`` reads them)."""
        return RequestStats(
            dict(self.count),
            dict(self.errors),
            dict(self.seconds),
            self.retries,
            self.conflicts,
            self.rate_limited,
            dict(self.failures),
            sampled=self.sampled,
        )

    def since(self, earlier: RequestStats) -> RequestStats:
        """The requests made after ``earlier`` was copied (with their latency samples, as far
        as :data:`LATENCY_SAMPLES` reaches back)."""
        new = min(self.sampled - earlier.sampled, len(self.latencies))
        recent = list(self.latencies)[len(self.latencies) - new :] if new > 0 else []
        return RequestStats(
            {k: self.count[k] - earlier.count[k] for k in REQUEST_KINDS},
            {k: self.errors[k] - earlier.errors[k] for k in REQUEST_KINDS},
            {k: self.seconds[k] - earlier.seconds[k] for k in REQUEST_KINDS},
            self.retries - earlier.retries,
            self.conflicts - earlier.conflicts,
            self.rate_limited - earlier.rate_limited,
            {k: self.failures[k] - earlier.failures[k] for k in FAILURE_CLASSES},
            deque(recent, maxlen=LATENCY_SAMPLES),
            len(recent),
        )


def failure_class(status: int | None) -> str:
    """The :data:`FAILURE_CLASSES` entry of a failed attempt: ``None`` when no answer came."""
    if status is None:
        return "network"
    if status in (412, 429):
        return str(status)
    return "5xx" if status >= 500 else "4xx"


def metadata_bytes(metadata: Mapping[str, str]) -> int:
    """The size GCS counts against :data:`METADATA_LIMIT_BYTES`: UTF-8 of keys and values."""
    return sum(len(k.encode()) + len(v.encode()) for k, v in metadata.items())


def check_metadata(key: str, metadata: Mapping[str, str]) -> None:
    """Refuse metadata GCS would refuse (400), before a request is sent.

    ``ValueError`` for a key or value that is not text, ``MetadataTooLargeError`` over 8 KiB.
    """
    for name, value in metadata.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise ValueError(f"metadata of {key}: keys and values must be text, got {name!r}")
    size = metadata_bytes(metadata)
    if size > METADATA_LIMIT_BYTES:
        raise MetadataTooLargeError(key, size, METADATA_LIMIT_BYTES)


@dataclass(frozen=True, slots=True)
class PageRequest:
    """One page of a listing, as asked of a store: keys under ``prefix`` from
    ``start_offset`` (inclusive) to ``end_offset`` (exclusive), after the page ``token`` names
    (None: the first), at most ``size`` of them."""

    prefix: str
    start_offset: str | None
    end_offset: str | None
    size: int
    token: str | None


Page = tuple[list[ObjectInfo], str | None]
"""One page of a listing: its objects in key order, and the next page's token (None: the last)."""


class ObjectStoreAPI(ABC):
    """What the stores use of an object store, said once for both implementations
    (``ObjectStore``: a GCS bucket; ``MemoryObjectStore``: GCS's rules in memory).

    The rules every store keeps live here: a read-only store refuses every write and delete
    before a request is sent, metadata GCS would refuse is refused first, and a listing is
    paged the same way (``limit`` sizes the last page). An implementation sends the requests
    (the abstract methods below).
    """

    bucket: str
    project: str | None
    access: str
    consistency: str
    stats: RequestStats

    @property
    def read_only(self) -> bool:
        """Whether writes and deletes are refused before anything is sent."""
        return self.access == "read_only"

    def _refuse_if_read_only(self, operation: str, key: str) -> None:
        if self.read_only:
            raise ReadOnlyError(operation, key)

    @property
    @abstractmethod
    def is_open(self) -> bool:
        """Whether ``open()`` has run (and ``close()`` has not since): requests are accepted."""

    @abstractmethod
    async def open(self) -> None:
        """Get ready to send requests, on the running event loop."""

    @abstractmethod
    async def close(self) -> None:
        """Stop sending requests; ``open()`` may be called again afterwards."""

    @abstractmethod
    async def check_bucket(self, prefix: str = "") -> None:
        """Raise ``BucketNotFoundError`` (or ``AuthenticationError``) unless the bucket is
        usable: one listing request under ``prefix``."""

    @abstractmethod
    async def create_bucket(self) -> None:
        """Create the bucket (the demo and tests); one that exists already is fine."""

    async def pages(
        self,
        prefix: str,
        *,
        start_offset: str | None = None,
        end_offset: str | None = None,
        limit: int | None = None,
    ) -> AsyncGenerator[list[ObjectInfo], None]:
        """The objects of ``list``, one page (one request) at a time as it lands: a
        caller that applies each page before asking for the next holds one page, not the
        whole listing. The next request is sent only when the next page is asked for."""
        listed = 0
        token: str | None = None
        while True:
            left = LIST_PAGE_SIZE if limit is None else limit - listed
            size = max(1, min(LIST_PAGE_SIZE, left))
            infos, token = await self._list_page(
                PageRequest(prefix, start_offset, end_offset, size, token)
            )
            listed += len(infos)
            yield infos
            del infos  # let the page go before the next one is asked for
            if not token or (limit is not None and listed >= limit):
                return

    async def list(
        self,
        prefix: str,
        *,
        start_offset: str | None = None,
        end_offset: str | None = None,
        limit: int | None = None,
    ) -> list[ObjectInfo]:
        """Every object under ``prefix`` in key order, straight from the store (never a cache).

        ``start_offset`` is inclusive and ``end_offset`` exclusive, as in GCS; ``limit``: at
        most that many objects (at least one). One request per page of 1,000 objects.
        """
        out: list[ObjectInfo] = []
        async for infos in self.pages(
            prefix, start_offset=start_offset, end_offset=end_offset, limit=limit
        ):
            out.extend(infos)
        return out

    @abstractmethod
    async def _list_page(self, page: PageRequest) -> Page:
        """One counted listing request."""

    @abstractmethod
    async def read(self, key: str) -> ObjectData:
        """The body of ``key``, its generation and metadata; ``ObjectNotFoundError`` when it
        is absent."""

    async def write(
        self,
        key: str,
        data: bytes,
        *,
        metadata: Mapping[str, str] | None = None,
        if_generation_match: int | None = None,
    ) -> ObjectInfo:
        """Write ``data`` (and custom metadata) in one request.

        ``if_generation_match=0`` creates only if absent; a positive generation replaces only
        that exact version (compare-and-swap). A lost precondition raises ``ConflictError``.
        Metadata over GCS's 8 KiB raises ``MetadataTooLargeError`` before anything is sent.
        """
        self._refuse_if_read_only("write", key)
        if metadata:
            check_metadata(key, metadata)
        return await self._write(key, data, metadata or {}, if_generation_match)

    @abstractmethod
    async def _write(
        self, key: str, data: bytes, metadata: Mapping[str, str], expected: int | None
    ) -> ObjectInfo:
        """Send the write of :meth:`write` (its checks passed)."""

    async def delete(self, key: str, *, if_generation_match: int | None = None) -> bool:
        """Delete ``key``; False when it was already absent.

        ``if_generation_match`` deletes only that version (``ConflictError`` otherwise).
        """
        self._refuse_if_read_only("delete", key)
        return await self._delete(key, if_generation_match)

    @abstractmethod
    async def _delete(self, key: str, expected: int | None) -> bool:
        """Send the delete of :meth:`delete` (its checks passed)."""
