"""ObjectStore: the one adapter between OmniQ's stores and a GCS bucket (through gcsfs).

It lists a prefix (generation, size, updated time and custom metadata of every object, one
request per 1,000 objects), reads, writes (plain, create-only, or compare-and-swap on a
generation) and deletes. It counts every attempt by kind with its latency and errors.

Why not gcsfs's high-level calls (``_ls``, ``_cat_file``, ``_pipe_file``):
- they serve listings from a cache, and monitoring must never see a stale listing;
- gcsfs has no argument for ``ifGenerationMatch=<generation>``, which every claim needs;
- gcsfs retries every request, plain writes included, hiding attempts from the counters.
So requests go through gcsfs's aiohttp session and endpoint (``base``), authorized with its
google-auth credentials, with the retry policy Google recommends (see ``RetryPolicy`` and
``docs/architecture.md``, "GCS's per-name limit"): only idempotent requests are retried:
reads, listings, deletes and writes with a precondition. A write without one is never
retried after it may have reached GCS.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import quote

import aiohttp
from google.auth.credentials import TokenState
from multidict import CIMultiDictProxy

from .. import __version__
from ..checks import describe_exception, mask_secrets
from . import credentials
from .config import check_access, check_bucket_name, check_consistency
from .errors import (
    AuthenticationError,
    BackendUnavailableError,
    BucketNotFoundError,
    ChecksumMismatchError,
    ConflictError,
    ObjectNotFoundError,
    RateLimitedError,
    StorageError,
)
from .listpage import decode_page
from .storeapi import (
    REQUEST_KINDS,
    ObjectData,
    ObjectInfo,
    ObjectStoreAPI,
    Page,
    PageRequest,
    RequestStats,
    RetryNotice,
    RetryPolicy,
    failure_class,
)

# gcsfs's default filesystem asks a gRPC API for the bucket type on first use; against an
# emulator (or any endpoint without that API) this waits about 60 s. We use the plain class
# (see ``_build_filesystem``), and also turn the feature off for anyone importing gcsfs after us.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

if TYPE_CHECKING:
    # Imported when a store opens (``_build_filesystem``): gcsfs pulls google.cloud.storage and
    # grpc (~300 ms), which a command that fails on its settings, or --help, never needs.
    from gcsfs.core import GCSFileSystem

__all__ = [
    "REQUEST_KINDS",
    "ObjectData",
    "ObjectInfo",
    "ObjectStore",
    "RequestStats",
    "RetryNotice",
    "RetryPolicy",
]

_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_PARSE_OFF_LOOP_BYTES = 64 * 1024
_GCS_URL = "https://storage.googleapis.com"
_USER_AGENT = f"omniq-console/{__version__}"


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
    """One page of an object listing, decoded tolerantly (a bad time is None): its objects and
    the next page's token. Pages of GCS's shape take ``decode_page`` first."""
    page = json.loads(body or b"{}")
    infos = [_info_of(item) for item in page.get("items", ())]
    return infos, page.get("nextPageToken")


def _info_of(item: Mapping[str, Any], size: int = 0) -> ObjectInfo:
    return ObjectInfo(
        key=item["name"],
        generation=int(item.get("generation", 0)),
        size=int(item.get("size", size)),
        updated=_parse_time(item.get("updated")),
        metadata=item.get("metadata") or {},
    )


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def md5_b64(data: bytes) -> str:
    """Base64 of the MD5 of ``data``: GCS's ``md5Hash``."""
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


def crc32c_b64(data: bytes) -> str:
    """Base64 of the big-endian CRC32C of ``data``: GCS's ``crc32c``."""
    import google_crc32c  # installed with gcsfs's google-cloud dependencies

    return base64.b64encode(google_crc32c.value(data).to_bytes(4, "big")).decode()


_HASHERS = {"md5": md5_b64, "crc32c": crc32c_b64}


def parse_hash_headers(values: Sequence[str]) -> dict[str, str]:
    """Every ``algorithm=value`` in the ``x-goog-hash`` headers, however GCS split them."""
    hashes: dict[str, str] = {}
    for value in values:
        for part in value.split(","):
            name, sep, digest = part.strip().partition("=")
            if sep:
                hashes[name.strip().lower()] = digest.strip()
    return hashes


class ObjectStore(ObjectStoreAPI):
    """Async access to one bucket. Open it (``await store.open()``) before use, close it after.

    ``access="read_only"`` refuses every write and delete before a request is sent.
    ``consistency``: ``md5`` or ``crc32c`` sends that hash with every upload (GCS refuses a
    body that does not match it) and checks every hash GCS sends with a download; ``size``
    checks the stored size of a write; ``none`` checks nothing.

    Retries follow ``retry`` (a ``RetryPolicy``) for idempotent requests only; ``on_retry``,
    when set, is called with a ``RetryNotice`` before each backoff. A write without
    ``if_generation_match`` is never retried once it may have reached GCS: its first
    transient failure raises ``BackendUnavailableError`` (the write may or may not have
    landed). Every write of OmniQ's protocol carries a precondition.
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
        # The settings model's own checks (one place), for a store built without it.
        self.bucket = check_bucket_name(bucket)
        checked_access: str = check_access(access)
        checked_consistency: str = check_consistency(consistency)
        self.project = project
        self.access = checked_access
        self.consistency = checked_consistency
        self.endpoint_url = endpoint_url or _emulator_host()
        # An emulator needs no credentials; asking Google for default ones would fail or hang.
        self.token = "anon" if token is None and self.endpoint_url else token
        self.retry = retry or RetryPolicy()
        self.gcs_kwargs = dict(gcs_kwargs or {})
        self.stats = RequestStats()
        # Told of every retry before its backoff (a console shows "attempt n" meanwhile).
        self.on_retry: Callable[[RetryNotice], None] | None = None
        self._fs: GCSFileSystem | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def where(self) -> str:
        """The endpoint requests go to, as a URL."""
        return self.endpoint_url or _GCS_URL

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

    async def _authorize(
        self, fs: GCSFileSystem, headers: Mapping[str, str] | None
    ) -> dict[str, str]:
        """``headers`` with the user agent and the credentials' ``Authorization`` header (none
        for anonymous access), after refreshing a token that is stale or not yet fetched."""
        out = {"User-Agent": _USER_AGENT, **(headers or {})}
        creds = fs.credentials.credentials  # google-auth's, loaded by gcsfs; None: anonymous
        if creds is None:
            return out
        if creds.token_state is not TokenState.FRESH:
            await self._refresh_credentials(fs)
        creds.apply(out)
        return out

    async def _refresh_credentials(self, fs: GCSFileSystem) -> None:
        try:
            # A token refresh is a blocking HTTP call in google-auth; gcsfs's maybe_refresh
            # holds a lock so that concurrent requests refresh once.
            await asyncio.to_thread(fs.credentials.maybe_refresh)
        except Exception as exc:
            raise AuthenticationError(
                f"GCS credentials ({self._token_origin()}) were refused: "
                f"{describe_exception(exc.__cause__ or exc)}"
            ) from None

    @property
    def is_open(self) -> bool:
        """Whether ``open()`` has built the HTTP session (and ``close()`` has not yet run)."""
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
        except ImportError:
            raise  # gcsfs is missing: not a fact about the credentials
        except Exception as exc:
            # gcsfs swallows the reason a key is unusable and re-raises something unrelated
            # (a KeyError for 'refresh_token'); say what is wrong with the key instead. The
            # exception's own text is never quoted: it may contain the file's contents.
            reason = await asyncio.to_thread(credentials.diagnose, self.token, exc)
            raise AuthenticationError(
                f"cannot load GCS credentials ({self._token_origin()}): {reason}"
            ) from None
        # gcsfs has no public coroutine that builds its session (set_session is its blocking
        # twin): the one private call left, pinned in pyproject.toml and checked by
        # tests/test_dependency_seams.py. Its session carries gcsfs's options (session_kwargs,
        # a client certificate for mTLS), which a session of our own would lose.
        await fs._set_session()
        self._fs = fs
        self._loop = asyncio.get_running_loop()

    async def close(self) -> None:
        """Close the HTTP session; ``open()`` may be called again afterwards."""
        fs, self._fs = self._fs, None
        if fs is not None:
            await fs.session.close()

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
        idempotent: bool = True,
    ) -> tuple[int, CIMultiDictProxy[str], bytes]:
        """Send one request, retrying transient failures per the policy.

        Returns status, headers and body; raises ``_HTTPFailure`` for any other status. A
        request that is not ``idempotent`` is retried only when it cannot have been sent (no
        connection could be made).
        """
        fs = self._need_fs()
        policy = self.retry
        query = {k: str(v) for k, v in (params or {}).items() if v is not None}
        # GCS indents its JSON unless told not to: about 30% more bytes per listing page.
        query["prettyPrint"] = "false"
        began = time.monotonic()
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                async with fs.session.request(
                    method,
                    url,
                    params=query,
                    headers=await self._authorize(fs, headers),
                    data=data,
                    timeout=aiohttp.ClientTimeout(total=policy.request_timeout),
                ) as response:
                    body = await response.read()
                    status = response.status
                    resp_headers = response.headers
            except (aiohttp.ClientConnectorDNSError, aiohttp.ClientSSLError, UnicodeError) as exc:
                # A name that does not resolve, or a certificate refused, will not heal in
                # the next two minutes: say so at once.
                self.stats.record(kind, time.perf_counter() - started, True, "network")
                raise BackendUnavailableError(self._transport_failure(exc)) from None
            except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
                self.stats.record(kind, time.perf_counter() - started, True, "network")
                last: BaseException = exc
                if not idempotent and not isinstance(exc, aiohttp.ClientConnectorError):
                    self._refuse_blind_retry(kind, exc)
            except AuthenticationError:
                self.stats.record(kind, time.perf_counter() - started, error=True)
                raise
            except Exception as exc:
                self.stats.record(kind, time.perf_counter() - started, error=True)
                if type(exc).__module__.startswith("google"):
                    raise AuthenticationError(
                        f"GCS credentials were refused: {describe_exception(exc)}"
                    ) from None
                raise
            else:
                failed = status not in ok_statuses
                elapsed = time.perf_counter() - started
                self.stats.record(
                    kind,
                    elapsed,
                    failed and status != 412,
                    failure_class(status) if failed else None,
                )
                if status not in _RETRY_STATUSES:
                    if failed:
                        raise _HTTPFailure(status, body, attempt)
                    return status, resp_headers, body
                if status == 429:
                    self.stats.rate_limited += 1
                last = _HTTPFailure(status, body, attempt)
                if not idempotent:
                    self._refuse_blind_retry(kind, last)
            attempt += 1
            pause = policy.delay(attempt - 1)
            out_of_attempts = policy.attempts is not None and attempt >= policy.attempts
            if out_of_attempts or time.monotonic() - began + pause > policy.deadline:
                self._give_up(kind, attempt, time.monotonic() - began, last)
            self.stats.retries += 1
            if self.on_retry is not None:
                reason = mask_secrets(self._transport_failure(last))
                self.on_retry(RetryNotice(kind, attempt + 1, pause, reason, self.where))
            await asyncio.sleep(pause)

    def _transport_failure(self, exc: BaseException) -> str:
        """What went wrong on the way to the endpoint, in words (never aiohttp's internals)."""
        if isinstance(exc, _HTTPFailure):
            return str(exc)
        if isinstance(exc, aiohttp.ClientConnectorDNSError):
            reason = exc.os_error.strerror or describe_exception(exc.os_error)
            return f"cannot connect to {self.where}: its host name does not resolve ({reason})"
        if isinstance(exc, UnicodeError):
            # Python's IDNA codec refuses the name (an empty or over-long label).
            return f"cannot connect to {self.where}: not a valid host name"
        if isinstance(exc, aiohttp.ClientSSLError):
            return f"cannot connect to {self.where}: TLS failed ({describe_exception(exc)})"
        if isinstance(exc, aiohttp.ClientConnectorError):
            os_error = exc.os_error
            if isinstance(os_error, ConnectionRefusedError):
                reason = "connection refused"
            elif isinstance(os_error, TimeoutError):
                reason = "connection timed out"
            else:
                reason = (os_error.strerror or describe_exception(os_error)).lower()
            return f"cannot connect to {self.where}: {reason}"
        if isinstance(exc, aiohttp.ServerDisconnectedError | ConnectionResetError):
            return "the connection was closed before an answer"
        if isinstance(exc, TimeoutError):
            return f"no answer within {self.retry.request_timeout:g} s"
        return describe_exception(exc)

    def _give_up(self, kind: str, attempts: int, seconds: float, last: BaseException) -> NoReturn:
        error = (
            RateLimitedError
            if isinstance(last, _HTTPFailure) and last.status == 429
            else BackendUnavailableError
        )
        raise error(
            f"GCS at {self.where} did not answer a {kind} request after {attempts} attempts "
            f"in {seconds:.1f} s: {self._transport_failure(last)}"
        ) from None

    def _refuse_blind_retry(self, kind: str, last: BaseException) -> NoReturn:
        raise BackendUnavailableError(
            f"GCS at {self.where} failed a {kind} request without a precondition "
            f"({self._transport_failure(last)}); it is not retried, since it may have landed "
            "and a blind retry could overwrite a newer version (write with "
            "if_generation_match to make it safe to retry)"
        ) from None

    def _raise_for(self, failure: _HTTPFailure, key: str) -> NoReturn:
        if failure.status in (401, 403):
            raise AuthenticationError(
                f"access to gs://{self.bucket}/{key} was refused ({failure.status}): "
                f"{failure.message}"
            ) from None
        raise StorageError(
            f"GCS answered {failure.status} for gs://{self.bucket}/{key}: {failure.message}"
        ) from None

    async def check_bucket(self, prefix: str = "") -> None:
        """Raise ``BucketNotFoundError`` or ``AuthenticationError`` unless the bucket is usable.

        The probe is a one-object listing under ``prefix``: it needs ``storage.objects.list``
        only, which object-only roles have, where ``GET`` of the bucket would need
        ``storage.buckets.get``.
        """
        fs = self._need_fs()
        url = f"{fs.base}b/{quote(self.bucket, safe='')}/o"
        params = {"prefix": prefix, "maxResults": 1, "fields": "items(name),nextPageToken"}
        try:
            await self._send("list", "GET", url, params=params)
        except _HTTPFailure as failure:
            if failure.status == 404:
                raise BucketNotFoundError(self.bucket) from None
            if failure.status == 401:
                raise AuthenticationError(
                    f"GCS refused the credentials ({self._token_origin()}): {failure.message}"
                ) from None
            if failure.status == 403:
                raise AuthenticationError(
                    f"the credentials may not list gs://{self.bucket}/{prefix} "
                    f"({failure.status}: {failure.message}); they need storage.objects.list "
                    "(roles/storage.objectViewer, or objectAdmin for workers)"
                ) from None
            self._raise_for(failure, prefix)

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

    async def _list_page(self, page: PageRequest) -> Page:
        fs = self._need_fs()
        params = {
            "prefix": page.prefix,
            "startOffset": page.start_offset,
            "endOffset": page.end_offset,
            "maxResults": page.size,
            "pageToken": page.token,
            "fields": "items(name,generation,size,updated,metadata),nextPageToken",
        }
        try:
            _, _, body = await self._send(
                "list", "GET", f"{fs.base}b/{quote(self.bucket, safe='')}/o", params=params
            )
        except _HTTPFailure as failure:
            if failure.status == 404:
                raise BucketNotFoundError(self.bucket) from None
            self._raise_for(failure, page.prefix)
        # Typed decoding takes a full page (1,000 objects) in 1-3 ms: on the loop, cheaper
        # than a thread's hand-off. A page of another shape is decoded tolerantly.
        lean = decode_page(body)
        if lean is not None:
            return lean
        if len(body) > _PARSE_OFF_LOOP_BYTES:
            # ~10 ms of json.loads for a full page would stall the console.
            return await asyncio.to_thread(_parse_page, body)
        return _parse_page(body)

    async def read(self, key: str) -> ObjectData:
        """The body of ``key`` and its generation; ``ObjectNotFoundError`` when it is absent.

        With ``md5``/``crc32c`` consistency every hash GCS sends is checked against the body
        (``ChecksumMismatchError``).
        """
        try:
            _, headers, body = await self._send(
                "get", "GET", self._object_url(key), params={"alt": "media"}
            )
        except _HTTPFailure as failure:
            if failure.status == 404:
                raise ObjectNotFoundError(key) from None
            self._raise_for(failure, key)
        # GCS may send md5 and crc32c as one header or as two; a dict would keep only one.
        self._verify_read(key, body, headers.getall("x-goog-hash", []))
        metadata = {
            k.lower()[len("x-goog-meta-") :]: v
            for k, v in headers.items()
            if k.lower().startswith("x-goog-meta-")
        }
        return ObjectData(key, body, int(headers.get("x-goog-generation", 0)), metadata)

    async def _write(
        self, key: str, data: bytes, metadata: Mapping[str, str], expected: int | None
    ) -> ObjectInfo:
        """Without a precondition (``expected``) the write is not retried (see the class
        docstring)."""
        fs = self._need_fs()
        resource: dict[str, Any] = {"name": key, "contentType": "application/json"}
        if metadata:
            resource["metadata"] = dict(metadata)
        if self.consistency == "md5":
            resource["md5Hash"] = md5_b64(data)
        elif self.consistency == "crc32c":
            resource["crc32c"] = crc32c_b64(data)
        boundary = "omniq-" + os.urandom(8).hex()
        body = (
            (
                f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n"
                f"{json.dumps(resource)}\r\n--{boundary}\r\nContent-Type: application/json\r\n\r\n"
            ).encode()
            + data
            + f"\r\n--{boundary}--".encode()
        )
        # fs.base is "<endpoint>/storage/v1/"; uploads go to "<endpoint>/upload/storage/v1/".
        upload = fs.base.removesuffix("storage/v1/") + "upload/storage/v1/"
        url = f"{upload}b/{quote(self.bucket, safe='')}/o"
        try:
            _, _, answer = await self._send(
                "write",
                "POST",
                url,
                params={"uploadType": "multipart", "ifGenerationMatch": expected},
                headers={"Content-Type": f'multipart/related; boundary="{boundary}"'},
                data=body,
                idempotent=expected is not None,
            )
        except _HTTPFailure as failure:
            if failure.status == 412 and failure.attempt > 0:
                return await self._settle_conflict(key, data, expected)
            if failure.status == 412:
                # Refused on the first attempt: nothing of ours landed, even if another writer
                # happened to store the very same bytes.
                self.stats.conflicts += 1
                raise ConflictError(key, expected) from None
            if failure.status == 404:
                raise BucketNotFoundError(self.bucket) from None
            if failure.status == 400 and self.consistency in _HASHERS:
                raise ChecksumMismatchError(
                    f"GCS refused the upload of {key} (400: {failure.message}); a body that "
                    f"does not match its {self.consistency} was sent, or the request is invalid"
                ) from None
            self._raise_for(failure, key)
        item = json.loads(answer)
        self._verify_write(key, data, item)
        return _info_of(item, len(data))

    async def _settle_conflict(self, key: str, data: bytes, expected: int | None) -> ObjectInfo:
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

    async def _delete(self, key: str, expected: int | None) -> bool:
        """A precondition (``expected``) makes the delete safe to retry: a 412 is settled by
        looking at the object (gone: an earlier sending landed; still there: someone else's
        newer version, refused). Every delete of OmniQ's protocol carries it."""
        try:
            # An absent object is an answer, not an error: deleting what may not exist (a
            # task's result, a stale queue entry) is routine and must not count as a failure.
            status, _, _ = await self._send(
                "delete",
                "DELETE",
                self._object_url(key),
                params={"ifGenerationMatch": expected},
                ok_statuses=frozenset({200, 204, 404}),
                # GCS counts a delete as idempotent only with a generation precondition.
                idempotent=expected is not None,
            )
        except _HTTPFailure as failure:
            if failure.status == 412:
                # Even a first attempt's 412 may follow our own landed delete: aiohttp re-sends
                # a request whose keep-alive connection dropped, without telling us.
                return await self._settle_delete(key, expected)
            self._raise_for(failure, key)
        return status != 404

    async def _settle_delete(self, key: str, expected: int | None) -> bool:
        """A 412 on a delete: an earlier sending of it deleted the object and its answer was
        lost (the object is gone: True), or the object is newer than the generation we saw
        (``ConflictError``: someone else's version, left alone)."""
        listed = [info for info in await self.list(key, limit=1) if info.key == key]
        if not listed:
            return True
        self.stats.conflicts += 1
        raise ConflictError(key, expected)

    # -- checks -----------------------------------------------------------------------------

    def _verify_write(self, key: str, data: bytes, item: Mapping[str, Any]) -> None:
        if self.consistency == "none":
            return
        if self.consistency == "size":
            if int(item.get("size", len(data))) != len(data):
                raise ChecksumMismatchError(f"size of {key} differs from what was sent")
            return
        field = "md5Hash" if self.consistency == "md5" else "crc32c"
        stored = item.get(field)
        if stored and stored != _HASHERS[self.consistency](data):
            raise ChecksumMismatchError(f"{self.consistency} of {key} differs from what was sent")

    def _verify_read(self, key: str, data: bytes, hash_headers: Sequence[str]) -> None:
        if self.consistency not in _HASHERS:
            return
        for algorithm, expected in parse_hash_headers(hash_headers).items():
            hasher = _HASHERS.get(algorithm)
            if hasher is not None and hasher(data) != expected:
                raise ChecksumMismatchError(
                    f"{algorithm} of {key} does not match its body: it was corrupted in transit"
                )


def _build_filesystem(**kwargs: Any) -> GCSFileSystem:
    try:
        from gcsfs.core import GCSFileSystem
    except ImportError as exc:  # pragma: no cover - exercised only without the dependency
        raise ImportError(
            "The GCS backend needs gcsfs. Install it with: pip install gcsfs"
        ) from exc
    # Loaded here, not by gcsfs: it would fall back to anonymous access without a word.
    kwargs["token"] = credentials.resolve(kwargs["token"], kwargs["access"])
    with warnings.catch_warnings():
        # "project not set - cannot list or create buckets": we never list buckets.
        warnings.filterwarnings("ignore", message="GCS project not set")
        return GCSFileSystem(**kwargs)


def _emulator_host() -> str | None:
    host = os.environ.get("STORAGE_EMULATOR_HOST", "").strip()
    if not host or host == "default":
        return None
    return host if host.startswith(("http://", "https://")) else f"http://{host}"
