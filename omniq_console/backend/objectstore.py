"""ObjectStore: the one adapter between OmniQ's stores and a GCS bucket (through gcsfs).

It lists a prefix (generation, size, updated time and custom metadata of every object, one
request per 1,000 objects), reads, writes (plain, create-only, or compare-and-swap on a
generation) and deletes. It counts requests by kind with their latency and errors.

Why not gcsfs's high-level calls (``_ls``, ``_cat_file``, ``_pipe_file``):
- they serve listings from a cache, and monitoring must never see a stale listing;
- gcsfs has no argument for ``ifGenerationMatch=<generation>``, which every claim needs;
- gcsfs retries for about 35 s, hiding requests from the counters and freezing a poller.
So requests go through gcsfs's authenticated aiohttp session and endpoint, with a retry policy
of our own that is short, counted, and safe for conditional writes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import random
import re
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

from .errors import (
    AuthenticationError,
    BackendUnavailableError,
    BucketNotFoundError,
    ChecksumMismatchError,
    ConflictError,
    ObjectNotFoundError,
    ReadOnlyError,
    StorageError,
)

# gcsfs's default filesystem asks a gRPC API for the bucket type on first use; against an
# emulator (or any endpoint without that API) this waits about 60 s. We use the plain class
# below, and also turn the feature off for anyone importing gcsfs after us.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

try:
    import aiohttp
    from gcsfs.core import GCSFileSystem
except ImportError as exc:  # pragma: no cover - exercised only without the dependency
    raise ImportError(
        "The GCS backend needs gcsfs. Install it with: pip install gcsfs"
    ) from exc

ACCESS_MODES = ("read_only", "read_write", "full_control")
CONSISTENCY_MODES = ("md5", "crc32c", "size", "none")
REQUEST_KINDS = ("list", "get", "write", "delete", "bucket")
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_PAGE_SIZE = 1000
_PARSE_OFF_LOOP_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One object as a listing (or a write) describes it, without its body."""

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
    """How transient failures (429, 5xx, dropped connections, time-outs) are retried."""

    attempts: int = 5
    base_delay: float = 0.2
    max_delay: float = 4.0
    request_timeout: float = 30.0

    def delay(self, attempt: int) -> float:
        return min(self.max_delay, self.base_delay * 2**attempt) * (0.5 + random.random() / 2)


@dataclass
class RequestStats:
    """Requests sent, by kind (list/get/write/delete/bucket), with errors and latency."""

    count: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REQUEST_KINDS, 0))
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REQUEST_KINDS, 0))
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(REQUEST_KINDS, 0.0))
    retries: int = 0
    conflicts: int = 0

    def record(self, kind: str, seconds: float, error: bool) -> None:
        self.count[kind] += 1
        self.seconds[kind] += seconds
        if error:
            self.errors[kind] += 1

    @property
    def total(self) -> int:
        return sum(self.count.values())

    def copy(self) -> RequestStats:
        return RequestStats(
            dict(self.count), dict(self.errors), dict(self.seconds), self.retries, self.conflicts
        )

    def since(self, earlier: RequestStats) -> RequestStats:
        """The requests made after ``earlier`` was copied."""
        return RequestStats(
            {k: self.count[k] - earlier.count[k] for k in REQUEST_KINDS},
            {k: self.errors[k] - earlier.errors[k] for k in REQUEST_KINDS},
            {k: self.seconds[k] - earlier.seconds[k] for k in REQUEST_KINDS},
            self.retries - earlier.retries,
            self.conflicts - earlier.conflicts,
        )


class _HTTPFailure(Exception):
    def __init__(self, status: int, body: bytes, attempt: int = 0) -> None:
        self.status = status
        self.body = body
        # Which attempt got this answer: a 412 on a retry may be our own lost first attempt.
        self.attempt = attempt
        try:
            message = json.loads(body)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = body[:200].decode("utf-8", "replace")
        self.message = str(message)
        super().__init__(f"HTTP {status}: {self.message}")


def _parse_page(body: bytes) -> tuple[list[ObjectInfo], str | None]:
    """One page of an object listing: its objects and the next page's token."""
    page = json.loads(body or b"{}")
    infos = [
        ObjectInfo(
            key=item["name"],
            generation=int(item.get("generation", 0)),
            size=int(item.get("size", 0)),
            updated=_parse_time(item.get("updated")),
            metadata=item.get("metadata") or {},
        )
        for item in page.get("items", ())
    ]
    return infos, page.get("nextPageToken")


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


class ObjectStore:
    """Async access to one bucket. Open it (``await store.open()``) before use, close it after.

    ``access="read_only"`` refuses every write and delete before a request is sent.
    """

    def __init__(
        self,
        bucket: str,
        *,
        project: str | None = None,
        token: Any = None,
        access: str = "read_write",
        consistency: str = "md5",
        endpoint_url: str | None = None,
        retry: RetryPolicy | None = None,
        gcs_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(bucket, str) or not bucket.strip():
            raise ValueError("bucket_name must be a non-empty string")
        if "/" in bucket:
            raise ValueError(f"bucket_name {bucket!r} must not contain '/'")
        if access not in ACCESS_MODES:
            raise ValueError(f"access must be one of {', '.join(ACCESS_MODES)}, not {access!r}")
        if consistency not in CONSISTENCY_MODES:
            raise ValueError(
                f"consistency must be one of {', '.join(CONSISTENCY_MODES)}, not {consistency!r}"
            )
        self.bucket = bucket
        self.project = project
        self.access = access
        self.consistency = consistency
        self.endpoint_url = endpoint_url or _emulator_host()
        # An emulator needs no credentials; asking Google for default ones would fail or hang.
        self.token = "anon" if token is None and self.endpoint_url else token
        self.retry = retry or RetryPolicy()
        self.gcs_kwargs = dict(gcs_kwargs or {})
        self.stats = RequestStats()
        self._fs: GCSFileSystem | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _token_origin(self) -> str:
        """Where the credentials come from, in words that never include a secret."""
        if self.token is None:
            return "application default credentials"
        if self.token in ("anon", "google_default", "cloud", "cache", "browser"):
            return str(self.token)
        if isinstance(self.token, str) and os.path.exists(self.token):
            return f"file {self.token}"
        # A raw token string or a credentials object: it may be the secret itself.
        return "a token string" if isinstance(self.token, str) else type(self.token).__name__

    async def _refresh_credentials(self, fs: GCSFileSystem) -> None:
        creds = fs.credentials
        if creds.credentials is None or creds._credentials_valid(300):
            return
        try:
            # A token refresh is a blocking HTTP call in google-auth.
            await asyncio.to_thread(creds.maybe_refresh)
        except Exception as exc:
            raise AuthenticationError(
                f"GCS credentials ({self._token_origin()}) were refused: "
                f"{_describe(exc.__cause__ or exc)}"
            ) from None

    @property
    def read_only(self) -> bool:
        return self.access == "read_only"

    @property
    def is_open(self) -> bool:
        return self._fs is not None

    async def open(self) -> None:
        """Build the gcsfs filesystem and its HTTP session on the running event loop."""
        if self._fs is not None:
            return
        try:
            # Building it loads credentials (files, metadata server): blocking work, off the loop.
            fs = await asyncio.to_thread(
                _build_filesystem,
                project=self.project,
                token=self.token,
                access=self.access,
                consistency=self.consistency,
                endpoint_url=self.endpoint_url,
                asynchronous=True,
                skip_instance_cache=True,
                use_listings_cache=False,
                **self.gcs_kwargs,
            )
        except Exception as exc:
            # Building the filesystem does nothing but load credentials, and a malformed key
            # file surfaces as anything from OSError to KeyError. The message names the
            # exception type only: its text may quote the file's contents.
            raise AuthenticationError(
                f"cannot load GCS credentials ({self._token_origin()}): "
                f"{type(exc).__name__} {_describe(exc) if isinstance(exc, OSError) else ''}".rstrip()
            ) from None
        await fs._set_session()
        self._fs = fs
        self._loop = asyncio.get_running_loop()

    async def close(self) -> None:
        fs, self._fs = self._fs, None
        if fs is not None and fs._session is not None:
            await fs._session.close()

    # -- requests ---------------------------------------------------------------------------

    def _need_fs(self) -> GCSFileSystem:
        if self._fs is None:
            raise StorageError("the backend is not open: use 'async with backend:' first")
        if asyncio.get_running_loop() is not self._loop:
            # Its HTTP session belongs to the loop that opened it; aiohttp would fail obscurely.
            raise StorageError(
                "the backend was opened on another event loop (e.g. by a sync call such as "
                "enqueue(), which runs on the sync bridge): use one backend per event loop, "
                "or only the sync API (run_worker_sync) with it"
            )
        return self._fs

    def _object_url(self, key: str) -> str:
        fs = self._need_fs()
        return f"{fs.base}b/{quote(self.bucket, safe='')}/o/{quote(key, safe='')}"

    async def _send(
        self,
        kind: str,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
        ok_statuses: frozenset[int] = frozenset({200, 204}),
    ) -> tuple[int, Mapping[str, str], bytes, int]:
        """Send one request with retries; return status, headers, body and attempts made."""
        fs = self._need_fs()
        last: BaseException | None = None
        for attempt in range(self.retry.attempts):
            if attempt:
                self.stats.retries += 1
                await asyncio.sleep(self.retry.delay(attempt - 1))
            started = time.perf_counter()
            try:
                await self._refresh_credentials(fs)
                all_headers = fs._get_headers(dict(headers or {}))
                async with fs.session.request(
                    method,
                    url,
                    params={k: str(v) for k, v in (params or {}).items() if v is not None},
                    headers=all_headers,
                    data=data,
                    timeout=aiohttp.ClientTimeout(total=self.retry.request_timeout),
                ) as response:
                    body = await response.read()
                    status = response.status
                    resp_headers = dict(response.headers)
            except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) as exc:
                self.stats.record(kind, time.perf_counter() - started, error=True)
                last = exc
                continue
            except Exception as exc:
                self.stats.record(kind, time.perf_counter() - started, error=True)
                if type(exc).__module__.startswith("google"):
                    raise AuthenticationError(
                        f"GCS credentials were refused: {_describe(exc)}"
                    ) from exc
                raise
            failed = status not in ok_statuses
            self.stats.record(kind, time.perf_counter() - started, error=failed and status != 412)
            if status in _RETRY_STATUSES:
                last = _HTTPFailure(status, body)
                continue
            if failed:
                raise _HTTPFailure(status, body, attempt)
            return status, resp_headers, body, attempt + 1
        where = self.endpoint_url or "storage.googleapis.com"
        raise BackendUnavailableError(
            f"GCS at {where} did not answer a {kind} request after "
            f"{self.retry.attempts} attempts: {_describe(last)}"
        )

    def _raise_for(self, failure: _HTTPFailure, key: str) -> None:
        if failure.status in (401, 403):
            raise AuthenticationError(
                f"access to gs://{self.bucket}/{key} was refused ({failure.status}): "
                f"{failure.message}"
            ) from None
        raise StorageError(
            f"GCS answered {failure.status} for gs://{self.bucket}/{key}: {failure.message}"
        ) from None

    async def check_bucket(self) -> None:
        """Raise ``BucketNotFoundError`` or ``AuthenticationError`` unless the bucket is usable."""
        fs = self._need_fs()
        try:
            await self._send("bucket", "GET", f"{fs.base}b/{quote(self.bucket, safe='')}")
        except _HTTPFailure as failure:
            if failure.status == 404:
                raise BucketNotFoundError(self.bucket) from None
            self._raise_for(failure, "")

    async def create_bucket(self) -> None:
        """Create the bucket (used by the demo and tests on an emulator); exists already is fine."""
        self._refuse_if_read_only("create bucket", self.bucket)
        fs = self._need_fs()
        try:
            await self._send(
                "bucket",
                "POST",
                f"{fs.base}b",
                params={"project": self.project},
                headers={"Content-Type": "application/json"},
                data=json.dumps({"name": self.bucket}).encode(),
            )
        except _HTTPFailure as failure:
            if failure.status != 409:
                self._raise_for(failure, "")

    async def list(
        self,
        prefix: str,
        *,
        start_offset: str | None = None,
        end_offset: str | None = None,
        limit: int | None = None,
    ) -> list[ObjectInfo]:
        """Every object under ``prefix`` in key order, straight from GCS (never a cache).

        ``start_offset`` is inclusive and ``end_offset`` exclusive, as in GCS. One request per
        1,000 objects.
        """
        fs = self._need_fs()
        url = f"{fs.base}b/{quote(self.bucket, safe='')}/o"
        out: list[ObjectInfo] = []
        token: str | None = None
        while True:
            page_size = _PAGE_SIZE if limit is None else max(1, min(_PAGE_SIZE, limit - len(out)))
            params = {
                "prefix": prefix,
                "startOffset": start_offset,
                "endOffset": end_offset,
                "maxResults": page_size,
                "pageToken": token,
                "fields": "items(name,generation,size,updated,metadata),nextPageToken",
            }
            try:
                _, _, body, _ = await self._send("list", "GET", url, params=params)
            except _HTTPFailure as failure:
                if failure.status == 404:
                    raise BucketNotFoundError(self.bucket) from None
                self._raise_for(failure, prefix)
            if len(body) > _PARSE_OFF_LOOP_BYTES:
                # A full page is ~1 MB of JSON: ~10 ms of parsing that would stall the console.
                infos, token = await asyncio.to_thread(_parse_page, body)
            else:
                infos, token = _parse_page(body)
            out.extend(infos)
            if not token or (limit is not None and len(out) >= limit):
                return out

    async def read(self, key: str) -> ObjectData:
        """The body of ``key`` and its generation; ``ObjectNotFoundError`` when it is absent."""
        try:
            _, headers, body, _ = await self._send(
                "get", "GET", self._object_url(key), params={"alt": "media"}
            )
        except _HTTPFailure as failure:
            if failure.status == 404:
                raise ObjectNotFoundError(key) from None
            self._raise_for(failure, key)
        lower = {k.lower(): v for k, v in headers.items()}
        self._verify_read(key, body, lower.get("x-goog-hash", ""))
        metadata = {
            k[len("x-goog-meta-") :]: v for k, v in lower.items() if k.startswith("x-goog-meta-")
        }
        return ObjectData(key, body, int(lower.get("x-goog-generation", 0)), metadata)

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
        """
        self._refuse_if_read_only("write", key)
        fs = self._need_fs()
        resource: dict[str, Any] = {"name": key, "contentType": "application/json"}
        if metadata:
            resource["metadata"] = dict(metadata)
        boundary = "omniq-" + os.urandom(8).hex()
        body = (
            f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n"
            f"{json.dumps(resource)}\r\n--{boundary}\r\nContent-Type: application/json\r\n\r\n"
        ).encode() + data + f"\r\n--{boundary}--".encode()
        url = f"{fs._location}/upload/storage/v1/b/{quote(self.bucket, safe='')}/o"
        try:
            _, _, answer, _ = await self._send(
                "write",
                "POST",
                url,
                params={"uploadType": "multipart", "ifGenerationMatch": if_generation_match},
                headers={"Content-Type": f'multipart/related; boundary="{boundary}"'},
                data=body,
            )
        except _HTTPFailure as failure:
            if failure.status == 412 and failure.attempt > 0:
                return await self._settle_conflict(key, data, if_generation_match)
            if failure.status == 412:
                # Refused on the first attempt: nothing of ours landed, even if another writer
                # happened to store the very same bytes.
                self.stats.conflicts += 1
                raise ConflictError(key, if_generation_match) from None
            if failure.status == 404:
                raise BucketNotFoundError(self.bucket) from None
            self._raise_for(failure, key)
        item = json.loads(answer)
        self._verify_write(key, data, item)
        return ObjectInfo(
            key=key,
            generation=int(item.get("generation", 0)),
            size=int(item.get("size", len(data))),
            updated=_parse_time(item.get("updated")),
            metadata=item.get("metadata") or {},
        )

    async def _settle_conflict(
        self, key: str, data: bytes, expected: int | None
    ) -> ObjectInfo:
        """A 412 on a retry: someone else won, or our earlier attempt did and its answer was lost.

        Every body we write is unique to its writer (ids, timestamps, worker ids), so if the
        object now holds exactly our bytes, the write that won was ours.
        """
        try:
            current = await self.read(key)
        except ObjectNotFoundError:
            current = None
        if current is not None and current.data == data:
            return ObjectInfo(key, current.generation, len(data), None, current.metadata)
        self.stats.conflicts += 1
        raise ConflictError(key, expected)

    async def delete(self, key: str, *, if_generation_match: int | None = None) -> bool:
        """Delete ``key``; False when it was already absent."""
        self._refuse_if_read_only("delete", key)
        try:
            # An absent object is an answer, not an error: deleting what may not exist (a
            # task's result, a stale queue entry) is routine and must not count as a failure.
            status, _, _, _ = await self._send(
                "delete",
                "DELETE",
                self._object_url(key),
                params={"ifGenerationMatch": if_generation_match},
                ok_statuses=frozenset({200, 204, 404}),
            )
        except _HTTPFailure as failure:
            if failure.status == 412:
                self.stats.conflicts += 1
                raise ConflictError(key, if_generation_match) from None
            self._raise_for(failure, key)
        return status != 404

    # -- checks -----------------------------------------------------------------------------

    def _refuse_if_read_only(self, operation: str, key: str) -> None:
        if self.read_only:
            raise ReadOnlyError(operation, key)

    def _verify_write(self, key: str, data: bytes, item: Mapping[str, Any]) -> None:
        if self.consistency == "none":
            return
        if self.consistency == "size":
            if int(item.get("size", len(data))) != len(data):
                raise ChecksumMismatchError(f"size of {key} differs from what was sent")
            return
        if self.consistency == "md5" and item.get("md5Hash"):
            if item["md5Hash"] != _md5_b64(data):
                raise ChecksumMismatchError(f"md5 of {key} differs from what was sent")
        if self.consistency == "crc32c" and item.get("crc32c"):
            if item["crc32c"] != _crc32c_b64(data):
                raise ChecksumMismatchError(f"crc32c of {key} differs from what was sent")

    def _verify_read(self, key: str, data: bytes, hash_header: str) -> None:
        if self.consistency not in ("md5", "crc32c") or not hash_header:
            return
        hashes = dict(
            part.strip().split("=", 1) for part in hash_header.split(",") if "=" in part
        )
        expected = hashes.get(self.consistency)
        if expected is None:
            return
        actual = _md5_b64(data) if self.consistency == "md5" else _crc32c_b64(data)
        if actual != expected:
            raise ChecksumMismatchError(f"{self.consistency} of {key} does not match its body")


def _build_filesystem(**kwargs: Any) -> GCSFileSystem:
    with warnings.catch_warnings():
        # "project not set - cannot list or create buckets": we never list buckets.
        warnings.filterwarnings("ignore", message="GCS project not set")
        return GCSFileSystem(**kwargs)


def _crc32c_b64(data: bytes) -> str:
    import google_crc32c  # installed with gcsfs's google-cloud dependencies

    return base64.b64encode(google_crc32c.value(data).to_bytes(4, "big")).decode()


def _emulator_host() -> str | None:
    host = os.environ.get("STORAGE_EMULATOR_HOST", "").strip()
    if not host or host == "default":
        return None
    return host if host.startswith(("http://", "https://")) else f"http://{host}"


_SECRET_PARAM = re.compile(
    r"(access_token|refresh_token|client_secret|assertion|token|key)=[^&\s'\"]+", re.IGNORECASE
)
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._\-]+")


def _describe(exc: BaseException | None) -> str:
    """A one-line description of an exception, with anything that looks like a secret masked.

    Errors from google-auth and requests can quote URLs such as ``tokeninfo?access_token=...``.
    """
    if exc is None:
        return "unknown error"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    text = _SECRET_PARAM.sub(r"\1=***", text)
    text = _BEARER.sub(r"\1***", text)
    return text[:300]
