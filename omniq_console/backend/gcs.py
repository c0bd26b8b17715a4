"""OmniQ's Google Cloud Storage backend: ``GCSBackend`` and its four stores.

Everything ``docs/gcs-backend.md`` names is importable from here::

    from omniq_console.backend.gcs import GCSBackend, create_gcs_backend_from_config

``async with backend:`` opens it on the caller's event loop; ``with backend:`` starts the one
sync bridge (a background loop) and opens it there, for the ``*_sync`` methods. Opening checks
that the bucket exists (``BucketNotFoundError``) and that the credentials work
(``AuthenticationError``). Options are checked once, by ``BackendSettings``
(``backend/config.py``), before anything is built.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self

from .bridge import SyncBridge
from .config import CONFIG_KEYS, BackendSettings
from .errors import AuthenticationError
from .events import AsyncGCSEventStorage, GCSEventStorage
from .layout import Layout
from .listing import BodyCache, BodyReader, ItemList
from .objectstore import ObjectStore, RetryPolicy
from .queue import DEFAULT_LEASE_SECONDS, AsyncGCSQueue, GCSQueue, default_worker_id
from .results import AsyncGCSResultStorage, GCSResultStorage
from .schedules import AsyncGCSScheduleStorage, GCSScheduleStorage

if TYPE_CHECKING:
    from .storeapi import ObjectStoreAPI

__all__ = [
    "CONFIG_KEYS",
    "AsyncGCSEventStorage",
    "AsyncGCSQueue",
    "AsyncGCSResultStorage",
    "AsyncGCSScheduleStorage",
    "BackendSettings",
    "GCSBackend",
    "GCSEventStorage",
    "GCSQueue",
    "GCSResultStorage",
    "GCSScheduleStorage",
    "ItemList",
    "RetryPolicy",
    "create_gcs_backend_from_config",
]


# The settings ObjectStore takes as keywords, besides the bucket and the retry policy.
_STORE_OPTIONS = ("project", "token", "access", "consistency", "endpoint_url", "gcs_kwargs")


class GCSBackend:
    """OmniQ storage (task queue, results, events, schedules) in one GCS bucket under a prefix.

    ``access``: ``read_only`` refuses every write before a request is sent; ``read_write`` and
    ``full_control`` allow writes. ``consistency``: how each write (and read) is verified:
    ``md5``, ``crc32c``, ``size`` or ``none``. ``cache_timeout``: seconds a parsed body stays
    cached, keyed by its generation, so it is never stale (``0`` disables the cache); listings
    are never cached. Extra keyword arguments go to gcsfs (``block_size=...``), except the
    test and tuning options ``endpoint_url``, ``retry`` (a ``RetryPolicy``), ``lease_seconds``
    (a claimed task's default lease) and ``object_store``: an object with ``ObjectStore``'s API
    (say, the in-memory store) to use instead of building one for the bucket.

    A bad option is a ``ValueError`` (``SettingsError``) here, before any request.
    """

    def __init__(
        self,
        bucket_name: str,
        prefix: str = "omniq/",
        project: str | None = None,
        token: Any = None,
        access: str = "read_write",
        consistency: str = "md5",
        cache_timeout: float = 300,
        *,
        endpoint_url: str | None = None,
        retry: RetryPolicy | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        object_store: ObjectStoreAPI | None = None,
        **gcs_kwargs: Any,
    ) -> None:
        options = {
            "bucket_name": bucket_name,
            "prefix": prefix,
            "project": project,
            "token": token,
            "access": access,
            "consistency": consistency,
            "cache_timeout": cache_timeout,
            "endpoint_url": endpoint_url,
            "lease_seconds": lease_seconds,
            "gcs_kwargs": gcs_kwargs,
        }
        self._build(BackendSettings.given(options), retry, object_store)

    @classmethod
    def from_settings(
        cls,
        settings: BackendSettings,
        *,
        retry: RetryPolicy | None = None,
        object_store: ObjectStoreAPI | None = None,
    ) -> GCSBackend:
        """The backend for already validated settings (``settings.load_settings()``)."""
        backend = cls.__new__(cls)
        backend._build(settings, retry, object_store)
        return backend

    def _build(
        self,
        settings: BackendSettings,
        retry: RetryPolicy | None,
        object_store: ObjectStoreAPI | None,
    ) -> None:
        self.settings = settings
        self.layout = Layout(settings.prefix)
        store_options = {name: getattr(settings, name) for name in _STORE_OPTIONS}
        self.store: ObjectStoreAPI = object_store or ObjectStore(
            settings.bucket_name, retry=retry, **store_options
        )
        self.cache_timeout = settings.cache_timeout
        self.cache = BodyCache(self.cache_timeout)
        self.lease_seconds = settings.lease_seconds or DEFAULT_LEASE_SECONDS
        self.bridge = SyncBridge(name=f"omniq-sync-{settings.bucket_name}")
        self._opens = 0
        self._mode: str | None = None
        reader = BodyReader(self.store, self.cache)
        parts = (self.store, self.layout, reader, self.bridge)
        worker_id = default_worker_id()
        lease = self.lease_seconds
        self._async_event_storage = AsyncGCSEventStorage(*parts)
        self._event_storage = GCSEventStorage(*parts)
        # Each queue logs its claims' events in the event log of its own (async or sync) side.
        self._async_task_storage = AsyncGCSQueue(
            *parts, lease_seconds=lease, worker_id=worker_id, events=self._async_event_storage
        )
        self._task_storage = GCSQueue(
            *parts, lease_seconds=lease, worker_id=worker_id, events=self._event_storage
        )
        self._async_result_storage = AsyncGCSResultStorage(*parts)
        self._result_storage = GCSResultStorage(*parts)
        self._async_schedule_storage = AsyncGCSScheduleStorage(*parts)
        self._schedule_storage = GCSScheduleStorage(*parts)

    # -- options ------------------------------------------------------------------------------

    @property
    def bucket_name(self) -> str:
        """The bucket's name."""
        return self.store.bucket

    @property
    def prefix(self) -> str:
        """The key prefix, normalised (``"omniq/"``; ``""`` for the bucket's root)."""
        return self.layout.prefix

    @property
    def project(self) -> str | None:
        """The GCP project id, if one was given."""
        return self.store.project

    @property
    def access(self) -> str:
        """``read_only``, ``read_write`` or ``full_control``."""
        return self.store.access

    @property
    def consistency(self) -> str:
        """How writes and reads are verified: ``md5``, ``crc32c``, ``size`` or ``none``."""
        return self.store.consistency

    @property
    def gcs_kwargs(self) -> dict[str, Any]:
        """The extra gcsfs options (a copy)."""
        return dict(self.settings.gcs_kwargs)

    @property
    def read_only(self) -> bool:
        """True when every write is refused before a request is sent."""
        return self.store.read_only

    @property
    def is_open(self) -> bool:
        """True between opening (``with``/``async with``/``aopen``) and the last close."""
        return self._opens > 0

    def __repr__(self) -> str:
        return (
            f"GCSBackend(bucket_name={self.bucket_name!r}, prefix={self.prefix!r}, "
            f"access={self.access!r})"
        )

    # -- stores -------------------------------------------------------------------------------

    @property
    def async_task_storage(self) -> AsyncGCSQueue:
        """The task queue (async methods)."""
        return self._async_task_storage

    @property
    def async_result_storage(self) -> AsyncGCSResultStorage:
        """The result store (async methods)."""
        return self._async_result_storage

    @property
    def async_event_storage(self) -> AsyncGCSEventStorage:
        """The event log (async methods)."""
        return self._async_event_storage

    @property
    def async_schedule_storage(self) -> AsyncGCSScheduleStorage:
        """The schedule store (async methods)."""
        return self._async_schedule_storage

    @property
    def task_storage(self) -> GCSQueue:
        """The queue with ``*_sync`` methods (inside ``with backend:``)."""
        return self._task_storage

    @property
    def result_storage(self) -> GCSResultStorage:
        """The result store with ``*_sync`` methods (inside ``with backend:``)."""
        return self._result_storage

    @property
    def event_storage(self) -> GCSEventStorage:
        """The event log with ``*_sync`` methods (inside ``with backend:``)."""
        return self._event_storage

    @property
    def schedule_storage(self) -> GCSScheduleStorage:
        """The schedule store with ``*_sync`` methods (inside ``with backend:``)."""
        return self._schedule_storage

    # -- opening and closing ------------------------------------------------------------------

    async def aopen(self) -> None:
        """Open on the running loop (for long-lived use; pair with ``aclose``).

        Nested opens are counted; the last ``aclose`` closes.
        """
        await self._open("async")

    async def aclose(self) -> None:
        """Close what ``aopen`` opened (the last of nested opens closes the session)."""
        await self._close()

    async def _open(self, mode: str) -> None:
        if self._opens:
            if mode != self._mode:
                raise RuntimeError(
                    f"the backend is already open for {self._mode} use; close it first"
                )
            self._opens += 1
            return
        await self._check_token_file()
        await self.store.open()
        try:
            await self.store.check_bucket()
        except BaseException:
            await self.store.close()
            raise
        self._opens, self._mode = 1, mode

    async def _check_token_file(self) -> None:
        # gcsfs takes a string it cannot open as a raw access token and asks Google about it:
        # a mistyped service-account path would fail with a network error naming no file.
        token = self.settings.token
        looks_like_file = isinstance(token, str) and token.lower().endswith(".json")
        if looks_like_file and not await asyncio.to_thread(os.path.isfile, token):
            raise AuthenticationError(f"service-account file {token!r} does not exist")

    async def _close(self) -> None:
        if self._opens == 0:
            return
        self._opens -= 1
        if self._opens == 0:
            self._mode = None
            try:
                # Events recorded for the next batch are written before the session goes.
                for events in (self._async_event_storage, self._event_storage):
                    await events.aclose()
            finally:
                await self.store.close()

    async def __aenter__(self) -> Self:
        await self.aopen()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __enter__(self) -> Self:
        if self._opens and self._mode != "sync":
            raise RuntimeError("the backend is already open for async use; close it first")
        first = self._opens == 0
        if first:
            self.bridge.start()
        try:
            self.bridge.run(self._open("sync"))
        except BaseException:
            if first:
                self.bridge.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.bridge.run(self._close())
        finally:
            if self._opens == 0:
                self.bridge.stop()


def create_gcs_backend_from_config(config: Mapping[str, Any]) -> GCSBackend:
    """A ``GCSBackend`` from a dict (say, a parsed config file), read as it is.

    Keys: ``bucket_name`` (required), ``prefix``, ``project``, ``token``, ``access``,
    ``consistency``, ``cache_timeout``, ``endpoint_url``, ``lease_seconds``, and ``gcs_kwargs``
    (a dict of extra gcsfs options); the console's keys (``subscription``, ``refresh``,
    ``actor``) are allowed, so one file serves both. An unknown key is a ``ValueError``. The
    environment is not read: ``settings.load_settings`` is what adds it.
    """
    return GCSBackend.from_settings(BackendSettings.given(config))
