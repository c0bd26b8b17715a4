"""A fault-injecting HTTP reverse proxy on loopback, between a GCS client and the emulator.

Tests point a client at ``proxy.url`` (``endpoint_url=`` or ``STORAGE_EMULATOR_HOST``) and add
rules that change what the next matching requests see:

- ``fail(status, times)``: answer 429/503/... without forwarding (the emulator never sees it);
- ``delay(seconds, times)``: wait before forwarding; a client that gave up meanwhile is not
  forwarded (so a timed-out request never lands later, which keeps assertions exact);
- ``drop(times, after_forward=False)``: close the connection without an answer, either before
  the request reaches the emulator or AFTER the emulator applied it (the "response lost" case);
- ``outage()``: fail everything until ``clear()``; ``outage(seconds=N)``: for N seconds;
- ``corrupt(times)``: change one byte of the next matching answers' bodies (a download
  corrupted in transit); ``corrupt_uploads(times)``: change the last byte of the media of the
  next matching multipart uploads on their way in; ``split_hash_headers = True`` sends
  ``x-goog-hash`` as one header per hash (``crc32c=...`` and ``md5=...`` apart), as GCS may.

``GCSRulesProxy`` (below) adds a model of the limits GCS enforces and the emulator does not;
see its docstring.

The proxy runs in its own thread with its own event loop, so it serves sync code, async tests
on their own loops, and subprocesses alike. It records every request it received (method, raw
path, kind, outcome) so tests can count what reached the wire, e.g. "no write request at all".
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Protocol, Self
from urllib.parse import parse_qs, quote, unquote, urlsplit

import aiohttp
import google_crc32c
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

Action = Literal["status", "delay", "drop_before", "drop_after", "corrupt", "corrupt_upload"]
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Hop-by-hop headers (RFC 9110 7.6.1) and those aiohttp recomputes for the forwarded message.
_HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


def kind_of(method: str, path: str) -> str:
    """What a GCS JSON-API request does: list, get, upload, delete, patch, bucket or other."""
    bare = path.split("?", 1)[0]
    if bare.startswith("/upload/"):
        return "upload"
    if not bare.startswith("/storage/v1/b"):
        return "other"
    parts = bare[len("/storage/v1/") :].split("/")
    # ["b"], ["b", bucket], ["b", bucket, "o"], ["b", bucket, "o", name...]
    if len(parts) <= 2:
        return "bucket"
    if len(parts) == 3 and parts[2] == "o":
        return "list" if method == "GET" else "other"
    if method == "DELETE":
        return "delete"
    if method in ("PATCH", "PUT"):
        return "patch"
    if method == "GET":
        return "get"
    return "other"


@dataclass(frozen=True, slots=True)
class ProxyRequest:
    """What a rule's ``where`` predicate sees of a request."""

    method: str
    path: str  # raw path with its query string, as sent (object names %-encoded)
    kind: str


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request the proxy received, and what it did with it."""

    method: str
    path: str
    kind: str
    # forwarded, injected-<status>, dropped-before, dropped-after, abandoned, upstream-error,
    # model-<status> (answered by the GCS rules model without forwarding)
    outcome: str
    status: int | None  # the status the client received, None when it received none
    authorized: bool  # the request carried an Authorization header


@dataclass
class Rule:
    """Affect the next ``times`` requests that match (``times=None``: every one until removed)."""

    action: Action
    times: int | None = 1
    method: str | None = None
    path: str | None = None
    where: Callable[[ProxyRequest], bool] | None = None
    status: int = 503
    seconds: float = 0.0
    message: str | None = None
    until: float | None = None  # time.monotonic() after which the rule no longer matches
    hits: int = field(default=0, init=False)

    def matches(self, request: ProxyRequest) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.until is not None and time.monotonic() >= self.until:
            return False
        if self.method is not None and request.method != self.method.upper():
            return False
        if self.path is not None and self.path not in request.path:
            return False
        return self.where is None or self.where(request)


class FaultProxy:
    """A reverse proxy to ``upstream`` (``http://127.0.0.1:PORT``) that injects faults by rule."""

    def __init__(self, upstream: str, *, host: str = "127.0.0.1", port: int = 0) -> None:
        if not upstream.startswith("http://127.0.0.1") and not upstream.startswith(
            "http://localhost"
        ):
            raise ValueError(f"the fault proxy only forwards to loopback, not {upstream!r}")
        self.upstream = upstream.rstrip("/")
        self.host = host
        self.port = port
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self._records: list[RequestRecord] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.ServerRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.split_hash_headers = False

    # -- life cycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> Self:
        """Start serving in a daemon thread; returns once the port is bound."""
        if self._loop is not None:
            return self
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._start_server())
            except BaseException as exc:  # reported to start()'s caller, not lost in a thread
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=serve, name="fault-proxy", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        self._loop = loop
        return self

    async def _start_server(self) -> None:
        self._session = aiohttp.ClientSession(
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=120),
            connector=aiohttp.TCPConnector(limit=200),
        )
        server = web.Server(self._handle, handler_cancellation=False)
        self._runner = web.ServerRunner(server, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        sockets = self._runner.addresses
        self.port = int(sockets[0][1])

    def stop(self) -> None:
        """Stop serving and close every connection."""
        loop, self._loop = self._loop, None
        if loop is None:
            return

        async def shutdown() -> None:
            if self._runner is not None:
                await self._runner.cleanup()
            if self._session is not None:
                await self._session.close()

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(15)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- rules --------------------------------------------------------------------------------

    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def fail(
        self,
        status: int = 503,
        times: int | None = 1,
        *,
        method: str | None = None,
        path: str | None = None,
        where: Callable[[ProxyRequest], bool] | None = None,
        message: str | None = None,
    ) -> Rule:
        """Answer ``status`` (no forwarding) to the next ``times`` matching requests, with a
        GCS-style JSON error body carrying ``message``."""
        return self.add(Rule("status", times, method, path, where, status=status, message=message))

    def delay(
        self,
        seconds: float,
        times: int | None = 1,
        *,
        method: str | None = None,
        path: str | None = None,
        where: Callable[[ProxyRequest], bool] | None = None,
    ) -> Rule:
        """Wait ``seconds`` before forwarding the next ``times`` matching requests."""
        return self.add(Rule("delay", times, method, path, where, seconds=seconds))

    def drop(
        self,
        times: int | None = 1,
        *,
        after_forward: bool = False,
        method: str | None = None,
        path: str | None = None,
        where: Callable[[ProxyRequest], bool] | None = None,
    ) -> Rule:
        """Close the connection without an answer; with ``after_forward`` once the emulator
        has applied the request (the client cannot know it succeeded)."""
        action: Action = "drop_after" if after_forward else "drop_before"
        return self.add(Rule(action, times, method, path, where))

    def outage(self, status: int = 503, *, seconds: float | None = None) -> Rule:
        """Fail every request until ``clear()`` (or ``remove(rule)``), or for ``seconds``."""
        rule = Rule("status", None, status=status)
        if seconds is not None:
            rule.until = time.monotonic() + seconds
        return self.add(rule)

    def corrupt(
        self,
        times: int | None = 1,
        *,
        method: str | None = None,
        path: str | None = None,
        where: Callable[[ProxyRequest], bool] | None = None,
    ) -> Rule:
        """Change one byte of the body of the next ``times`` matching forwarded answers."""
        return self.add(Rule("corrupt", times, method, path, where))

    def corrupt_uploads(
        self,
        times: int | None = 1,
        *,
        where: Callable[[ProxyRequest], bool] | None = None,
    ) -> Rule:
        """Change the last media byte of the next ``times`` multipart uploads on their way in."""
        return self.add(Rule("corrupt_upload", times, "POST", "uploadType=multipart", where))

    def remove(self, rule: Rule) -> None:
        with self._lock:
            if rule in self._rules:
                self._rules.remove(rule)

    def clear(self) -> None:
        """Remove every rule: the proxy forwards everything again."""
        with self._lock:
            self._rules.clear()

    # -- what happened ------------------------------------------------------------------------

    @property
    def records(self) -> list[RequestRecord]:
        """Every request received so far (a copy)."""
        with self._lock:
            return list(self._records)

    def reset_records(self) -> None:
        with self._lock:
            self._records.clear()

    def counts(self, outcome: str | None = "forwarded") -> Counter[tuple[str, str]]:
        """Requests by (method, kind), for one outcome (None: every request received)."""
        return Counter(
            (r.method, r.kind) for r in self.records if outcome is None or r.outcome == outcome
        )

    def write_requests(self) -> list[RequestRecord]:
        """Requests received with a method that could change something (POST/PUT/PATCH/DELETE)."""
        return [r for r in self.records if r.method in WRITE_METHODS]

    # -- serving ------------------------------------------------------------------------------

    def _plan(self, request: ProxyRequest) -> _Plan:
        """What the rules do to this request; counts their hits."""
        plan = _Plan()
        with self._lock:
            for rule in self._rules:
                if not rule.matches(request):
                    continue
                rule.hits += 1
                if rule.action == "delay":
                    plan.delay += rule.seconds
                elif rule.action == "corrupt":
                    plan.corrupt = True
                elif rule.action == "corrupt_upload":
                    plan.corrupt_upload = True
                else:
                    # The first terminal rule decides; later ones keep their hits for later.
                    plan.terminal = rule
                    break
        return plan

    def _record(self, request: ProxyRequest, outcome: str, status: int | None, auth: bool) -> None:
        with self._lock:
            self._records.append(
                RequestRecord(request.method, request.path, request.kind, outcome, status, auth)
            )

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        info = ProxyRequest(
            request.method, request.raw_path, kind_of(request.method, request.raw_path)
        )
        auth = "Authorization" in request.headers
        body = await request.read()
        plan = self._plan(info)
        rule = plan.terminal
        if plan.delay:
            # The injected delay is the fault under test (a slow GCS), not a wait.
            await asyncio.sleep(plan.delay)
            transport = request.transport
            if transport is None or transport.is_closing():
                self._record(info, "abandoned", None, auth)
                return web.Response(status=499)
        if rule is not None and rule.action == "status":
            self._record(info, f"injected-{rule.status}", rule.status, auth)
            message = rule.message or f"injected by fault proxy ({rule.status})"
            return gcs_error(rule.status, message, "backendError")
        if rule is not None and rule.action == "drop_before":
            self._record(info, "dropped-before", None, auth)
            return self._drop(request)

        if plan.corrupt_upload:
            # The media part ends just before the closing "\r\n--boundary--".
            end = body.rfind(b"\r\n--")
            if end > 0:
                body = body[: end - 1] + bytes([body[end - 1] ^ 0x01]) + body[end:]

        async def forward() -> Answer:
            return await self._forward(request, body)

        answer = await self._through_model(info, request.headers, body, forward)
        if answer.outcome == "forwarded" and rule is not None and rule.action == "drop_after":
            self._record(info, "dropped-after", None, auth)
            return self._drop(request)
        payload = answer.payload
        if plan.corrupt and answer.outcome == "forwarded" and payload:
            payload = bytes([payload[0] ^ 0x20]) + payload[1:]
        headers = answer.headers
        if self.split_hash_headers and "x-goog-hash" in headers:
            hashes = [p.strip() for v in headers.getall("x-goog-hash") for p in v.split(",")]
            headers.popall("x-goog-hash")
            for one in hashes:
                headers.add("X-Goog-Hash", one)
        self._record(info, answer.outcome, answer.status, auth)
        return web.Response(status=answer.status, headers=headers, body=payload)

    async def _through_model(
        self,
        info: ProxyRequest,
        headers: CIMultiDictProxy[str],
        body: bytes,
        forward: Callable[[], Awaitable[Answer]],
    ) -> Answer:
        """Decide whether the request reaches the emulator; the plain proxy always forwards."""
        return await forward()

    async def _forward(self, request: web.BaseRequest, body: bytes) -> Answer:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        try:
            async with self._session.request(
                request.method,
                self.upstream + request.raw_path,
                headers=headers,
                data=body if body else None,
                allow_redirects=False,
            ) as upstream:
                payload = await upstream.read()
                # A multidict keeps repeated headers (x-goog-hash may come twice); a dict would not.
                out_headers = CIMultiDict(
                    (k, v) for k, v in upstream.headers.items() if k.lower() not in _HOP_HEADERS
                )
                return Answer(upstream.status, out_headers, payload, "forwarded")
        except (aiohttp.ClientError, TimeoutError) as exc:
            text = f"fault proxy: upstream failed: {exc}".encode()
            return Answer(502, CIMultiDict(), text, "upstream-error")

    @staticmethod
    def _drop(request: web.BaseRequest) -> web.StreamResponse:
        # Closing the transport before a single byte of answer is what a lost connection looks
        # like to the client; the response returned here is never written.
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=499)


@dataclass
class _Plan:
    delay: float = 0.0
    terminal: Rule | None = None
    corrupt: bool = False
    corrupt_upload: bool = False


@dataclass
class Answer:
    """What the client is sent: from the emulator (``forwarded``) or from a model."""

    status: int
    headers: CIMultiDict[str]
    payload: bytes
    outcome: str


def gcs_error(status: int, message: str, reason: str) -> web.Response:
    """An error answer shaped as GCS's JSON API shapes them."""
    error = {
        "code": status,
        "message": message,
        "errors": [{"message": message, "domain": "global", "reason": reason}],
    }
    return web.json_response({"error": error}, status=status)


def _model_answer(status: int, message: str, reason: str) -> Answer:
    response = gcs_error(status, message, reason)
    assert isinstance(response.body, bytes)
    headers = CIMultiDict({"Content-Type": "application/json; charset=UTF-8"})
    return Answer(status, headers, response.body, f"model-{status}")


# -- the GCS rules model --------------------------------------------------------------------

ROLES = ("owner", "objectAdmin", "objectUser", "objectCreator", "objectViewer")
SCOPES = ("cloud-platform", "read-only")
_PRECONDITION_FAILED = "At least one of the pre-conditions you specified did not hold."


class MutationListener(Protocol):
    """Told of every object mutation the model forwarded (``gcs_notifier.GCSNotifier``)."""

    def mutated(
        self,
        bucket: str,
        name: str,
        before: Mapping[str, Any] | None,
        after: Mapping[str, Any] | None,
        *,
        metadata_only: bool = False,
    ) -> None: ...


@dataclass
class _NameState:
    last: float  # time.monotonic() of the last successful mutation
    exists: bool
    generation: int | None


@dataclass(frozen=True, slots=True)
class _Mutation:
    """A request that would create, update or delete one object (``name`` may be unknown)."""

    name: str | None
    precondition: int | None
    metadata: Mapping[str, Any] | None
    media: bytes | None
    declared_hashes: Mapping[str, str]


class GCSRulesProxy(FaultProxy):
    """The fault proxy, plus the limits GCS enforces that fake-gcs-server forgives.

    - **One mutation per object name per second.** A create, update or delete (multipart or
      media upload, ``PATCH``/``PUT``, ``DELETE`` of an object) of a name whose last
      successful mutation was less than ``hot_seconds`` (1.0) ago is answered
      ``429 rateLimitExceeded`` without reaching the emulator, except that when the proxy
      knows the request's ``ifGenerationMatch`` cannot hold (``0`` on a name it knows exists,
      another generation than the one it last saw) it answers ``412``, as a precondition
      failure is not a mutation. Mutations of one name are decided one at a time. Only a
      2xx answer counts as a mutation (a 412 or a 404 does not). What the proxy knows of a
      name comes from the mutations it forwarded; names written around it are not modelled.
    - **IAM roles** (``role``, changeable at any time): ``"owner"`` may do anything;
      ``"objectAdmin"`` and ``"objectUser"`` (list, get, create, delete, update) get 403 for
      bucket requests (``GET``/``PATCH``/list/create of ``/storage/v1/b...``:
      ``storage.buckets.*``); ``"objectViewer"`` also gets 403 for every object write and
      delete; ``"objectCreator"`` may only create: 403 for a listing, a read, a delete, a
      patch, and for an upload over an existing object (an overwrite needs
      ``storage.objects.delete``).
    - **Access scopes** (``scope``): ``"read-only"`` is a GCE instance's default
      (``devstorage.read_only``): reads pass, every write and delete gets 403.
    - **Delete preconditions**: a ``DELETE`` with ``ifGenerationMatch`` that does not name the
      object's live generation gets 412 (fake-gcs-server ignores it); of a missing object, 404.
    - **Notifications**: with ``notifier`` set, each forwarded mutation is reported to it with
      the object resource before and after (``gcs_notifier.GCSNotifier`` publishes what GCS
      would to Pub/Sub).
    - **8 KiB of custom metadata** (UTF-8 bytes of keys and values) per object: 400 above.
    - **Upload hashes**: a multipart upload whose ``md5Hash`` or ``crc32c`` does not match the
      body gets 400.
    - Outages (``outage(seconds=N)``), corrupted downloads (``corrupt()``) and split hash
      headers (``split_hash_headers``) come from ``FaultProxy``; its rules apply first.

    What it measured: ``mutations`` (object name -> the ``time.monotonic()`` of each
    successful mutation; the rules themselves are kept per bucket and name),
    ``mutation_counts()``, ``max_mutations_per_second()`` (the most mutations of one name
    within any window of one second), ``writes`` (mutation requests received),
    ``rate_limited`` (429s answered by the model). Resumable uploads are validated but their
    name is not tracked (OmniQ sends multipart uploads only).
    """

    def __init__(
        self,
        upstream: str,
        *,
        role: str = "owner",
        hot_seconds: float = 1.0,
        metadata_limit: int = 8 * 1024,
        bucket: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(upstream, host=host, port=port)
        # The bucket the test uses (informational: the rules apply to any bucket).
        self.bucket = bucket
        self.role = role
        self.scope = "cloud-platform"
        self.notifier: MutationListener | None = None
        self.hot_seconds = hot_seconds
        self.metadata_limit = metadata_limit
        self.writes = 0
        self.rate_limited = 0
        self.mutations: dict[str, list[float]] = {}
        # Keyed by (bucket, name): one proxy may serve many tests' buckets.
        self._names: dict[tuple[str, str], _NameState] = {}
        self._name_locks: dict[tuple[str, str], asyncio.Lock] = {}

    @property
    def role(self) -> str:
        return self._role

    @role.setter
    def role(self, role: str) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        self._role = role

    @property
    def scope(self) -> str:
        return self._scope

    @scope.setter
    def scope(self, scope: str) -> None:
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
        self._scope = scope

    # -- what happened ------------------------------------------------------------------------

    def mutation_counts(self) -> Counter[str]:
        """Successful mutations per object name."""
        with self._lock:
            return Counter({name: len(times) for name, times in self.mutations.items()})

    def max_mutations_per_second(self) -> int:
        """The most successful mutations of one name within any window of one second."""
        with self._lock:
            series = [list(times) for times in self.mutations.values()]
        best = 0
        for times in series:
            first = 0
            for last, at in enumerate(times):
                while at - times[first] >= 1.0:
                    first += 1
                best = max(best, last - first + 1)
        return best

    def reset_records(self) -> None:
        """Forget the requests and the measurements, but not what is known of each name."""
        super().reset_records()
        with self._lock:
            self.mutations.clear()
            self.writes = 0
            self.rate_limited = 0

    # -- the model ----------------------------------------------------------------------------

    async def _through_model(
        self,
        info: ProxyRequest,
        headers: CIMultiDictProxy[str],
        body: bytes,
        forward: Callable[[], Awaitable[Answer]],
    ) -> Answer:
        mutation = _parse_mutation(info, headers, body)
        object_write = mutation is not None or (
            info.method in WRITE_METHODS and info.kind == "other" and "/o/" in info.path
        )
        if self.scope == "read-only" and info.method in WRITE_METHODS:
            return _model_answer(
                403, "Provided scope(s) are not authorized", "insufficientPermissions"
            )
        if info.kind == "bucket" and self.role != "owner":
            return _forbidden(_bucket_permission(info))
        if object_write and self.role == "objectViewer":
            permission = (
                "storage.objects.delete" if info.method == "DELETE" else ("storage.objects.create")
            )
            return _forbidden(permission)
        if self.role == "objectCreator" and info.kind in _CREATOR_REFUSED:
            return _forbidden(_CREATOR_REFUSED[info.kind])
        if mutation is None:
            return await forward()
        invalid = self._invalid(mutation)
        if invalid is not None:
            return _model_answer(400, invalid, "invalid")
        with self._lock:
            self.writes += 1
        if mutation.name is None:
            return await forward()
        where = (_bucket_of(info.path), mutation.name)
        lock = self._name_locks.setdefault(where, asyncio.Lock())
        async with lock:
            return await self._mutate(info, where, mutation.precondition, forward)

    def _needs_prior(self, info: ProxyRequest, precondition: int | None) -> bool:
        return (
            self.notifier is not None
            or (info.kind == "delete" and precondition is not None)
            or (self.role == "objectCreator" and info.kind == "upload")
        )

    async def _prior(self, where: tuple[str, str]) -> dict[str, Any] | None:
        """The object's resource as the emulator holds it now (None: absent)."""
        assert self._session is not None
        bucket, name = where
        url = f"{self.upstream}/storage/v1/b/{quote(bucket, safe='')}/o/{quote(name, safe='')}"
        async with self._session.get(url) as response:
            if response.status != 200:
                return None
            return _json_object(await response.read())

    async def _mutate(
        self,
        info: ProxyRequest,
        where: tuple[str, str],
        precondition: int | None,
        forward: Callable[[], Awaitable[Answer]],
    ) -> Answer:
        prior = await self._prior(where) if self._needs_prior(info, precondition) else None
        stale = prior is not None and str(prior.get("generation")) != str(precondition)
        if info.kind == "delete" and precondition is not None and stale:
            return _model_answer(412, _PRECONDITION_FAILED, "conditionNotMet")
        if self.role == "objectCreator" and prior is not None:
            return _forbidden("storage.objects.delete")
        state = self._names.get(where)
        if state is not None and time.monotonic() - state.last < self.hot_seconds:
            if precondition is not None and _contradicts(state, precondition):
                return _model_answer(412, _PRECONDITION_FAILED, "conditionNotMet")
            with self._lock:
                self.rate_limited += 1
            return _model_answer(
                429,
                "The object exceeded the rate limit for object mutation operations "
                "(create, update, and delete). Please reduce your request rate.",
                "rateLimitExceeded",
            )
        answer = await forward()
        if answer.outcome != "forwarded" or not 200 <= answer.status < 300:
            return answer
        now = time.monotonic()
        if info.kind == "delete":
            self._names[where] = _NameState(now, exists=False, generation=None)
        else:
            self._names[where] = _NameState(now, exists=True, generation=_generation(answer))
        with self._lock:
            self.mutations.setdefault(where[1], []).append(now)
        if self.notifier is not None:
            after = None if info.kind == "delete" else _json_object(answer.payload)
            if info.kind == "patch":
                # Some emulator versions answer a patch without the resource: read it.
                after = after if after.get("generation") else await self._prior(where)
            self.notifier.mutated(
                where[0], where[1], prior, after, metadata_only=info.kind == "patch"
            )
        return answer

    def _invalid(self, mutation: _Mutation) -> str | None:
        """Why GCS would refuse this request with 400, if it would."""
        metadata = mutation.metadata or {}
        size = sum(len(str(k).encode()) + len(str(v).encode()) for k, v in metadata.items())
        if size > self.metadata_limit:
            return (
                f"Metadata of {size} bytes exceeds the limit of {self.metadata_limit} bytes "
                "for custom metadata."
            )
        if mutation.media is None:
            return None
        for algorithm, declared in mutation.declared_hashes.items():
            actual = gcs_hash(algorithm, mutation.media)
            if declared != actual:
                label = "MD5 hash" if algorithm == "md5" else "CRC32C"
                return (
                    f'Provided {label} "{declared}" doesn\'t match calculated {label} "{actual}".'
                )
        return None


_CREATOR_REFUSED = {
    "list": "storage.objects.list",
    "get": "storage.objects.get",
    "delete": "storage.objects.delete",
    "patch": "storage.objects.update",
}
"""What ``roles/storage.objectCreator`` lacks, by request kind (it may only create)."""


def _bucket_permission(info: ProxyRequest) -> str:
    """The IAM permission a bucket request (``/storage/v1/b[/<bucket>]``) needs."""
    one_bucket = urlsplit(info.path).path.rstrip("/") != "/storage/v1/b"
    if info.method == "GET":
        return "storage.buckets.get" if one_bucket else "storage.buckets.list"
    if info.method == "POST":
        return "storage.buckets.create"
    return "storage.buckets.delete" if info.method == "DELETE" else "storage.buckets.update"


def _forbidden(permission: str) -> Answer:
    return _model_answer(
        403,
        f"omniq-test@example.iam.gserviceaccount.com does not have {permission} access to the "
        f"Google Cloud Storage resource. Permission '{permission}' denied on resource (or it "
        "may not exist).",
        "forbidden",
    )


def _contradicts(state: _NameState, precondition: int) -> bool:
    if precondition == 0:
        return state.exists
    return not state.exists or (state.generation is not None and state.generation != precondition)


def _generation(answer: Answer) -> int | None:
    try:
        return int(json.loads(answer.payload)["generation"])
    except (ValueError, KeyError, TypeError):
        value = answer.headers.get("x-goog-generation")
        return int(value) if value and value.isdigit() else None


def gcs_hash(algorithm: str, data: bytes) -> str:
    """GCS's ``md5Hash``/``crc32c`` of ``data`` (base64; CRC32C big-endian).

    Computed here rather than with the backend's helpers on purpose: a model that shared the
    client's hashing code would accept the client's hashing mistakes.
    """
    if algorithm == "md5":
        digest = hashlib.md5(data, usedforsecurity=False).digest()
    else:
        digest = google_crc32c.value(data).to_bytes(4, "big")
    return base64.b64encode(digest).decode()


def _parse_mutation(
    info: ProxyRequest, headers: CIMultiDictProxy[str], body: bytes
) -> _Mutation | None:
    """The mutation this request asks for, or None when it mutates no object."""
    split = urlsplit(info.path)
    query = {k: v[-1] for k, v in parse_qs(split.query).items()}
    precondition = int(query["ifGenerationMatch"]) if "ifGenerationMatch" in query else None
    if info.kind in ("delete", "patch"):
        name = unquote(split.path.split("/o/", 1)[1])
        resource = _json_object(body) if info.kind == "patch" else {}
        return _Mutation(name, precondition, resource.get("metadata"), None, {})
    if info.kind != "upload" or info.method not in ("POST", "PUT"):
        return None
    upload_type = query.get("uploadType", "")
    if upload_type == "multipart":
        resource, media = _multipart(headers.get("Content-Type", ""), body)
        upload_name: str | None = resource.get("name") or query.get("name")
        declared = {
            algorithm: str(resource[field])
            for algorithm, field in (("md5", "md5Hash"), ("crc32c", "crc32c"))
            if resource.get(field)
        }
        return _Mutation(upload_name, precondition, resource.get("metadata"), media, declared)
    if upload_type == "media":
        return _Mutation(query.get("name"), precondition, None, body, {})
    if upload_type == "resumable" and info.method == "POST":
        resource = _json_object(body)
        return _Mutation(None, precondition, resource.get("metadata"), None, {})
    return None


def _bucket_of(path: str) -> str:
    """The bucket of an object request's path (``.../b/<bucket>/o...``)."""
    after = path.split("?", 1)[0].split("/b/", 1)[-1]
    return unquote(after.split("/", 1)[0])


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _multipart(content_type: str, body: bytes) -> tuple[dict[str, Any], bytes | None]:
    """The JSON resource and the media of a ``multipart/related`` upload body."""
    boundary = ""
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip('"')
    if not boundary:
        return {}, None
    parts = []
    for chunk in body.split(b"--" + boundary.encode())[1:]:
        if chunk.startswith(b"--"):
            break
        _, _, content = chunk.partition(b"\r\n\r\n")
        parts.append(content[:-2] if content.endswith(b"\r\n") else content)
    if len(parts) < 2:
        return (_json_object(parts[0]) if parts else {}), None
    return _json_object(parts[0]), parts[1]
