"""A fault-injecting HTTP reverse proxy on loopback, between a GCS client and the emulator.

Tests point a client at ``proxy.url`` (``endpoint_url=`` or ``STORAGE_EMULATOR_HOST``) and add
rules that change what the next matching requests see:

- ``fail(status, times)``: answer 429/503/... without forwarding (the emulator never sees it);
- ``delay(seconds, times)``: wait before forwarding; a client that gave up meanwhile is not
  forwarded (so a timed-out request never lands later, which keeps assertions exact);
- ``drop(times, after_forward=False)``: close the connection without an answer, either before
  the request reaches the emulator or AFTER the emulator applied it (the "response lost" case);
- ``outage()``: fail everything until ``clear()``.

The proxy runs in its own thread with its own event loop, so it serves sync code, async tests
on their own loops, and subprocesses alike. It records every request it received (method, raw
path, kind, outcome) so tests can count what reached the wire, e.g. "no write request at all".
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal

import aiohttp
from aiohttp import web

Action = Literal["status", "delay", "drop_before", "drop_after"]
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
    # forwarded, injected-<status>, dropped-before, dropped-after, abandoned, upstream-error
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
    hits: int = field(default=0, init=False)

    def matches(self, request: ProxyRequest) -> bool:
        if self.times is not None and self.hits >= self.times:
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

    # -- life cycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> FaultProxy:
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

    def __enter__(self) -> FaultProxy:
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
    ) -> Rule:
        """Answer ``status`` (no forwarding) to the next ``times`` matching requests."""
        return self.add(Rule("status", times, method, path, where, status=status))

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

    def outage(self, status: int = 503) -> Rule:
        """Fail every request until ``clear()`` (or ``remove(rule)``)."""
        return self.fail(status, times=None)

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

    def _plan(self, request: ProxyRequest) -> tuple[float, Rule | None]:
        """Total delay to apply and the terminal rule (status/drop), if any; counts hits."""
        delay = 0.0
        with self._lock:
            for rule in self._rules:
                if not rule.matches(request):
                    continue
                rule.hits += 1
                if rule.action == "delay":
                    delay += rule.seconds
                    continue
                return delay, rule
        return delay, None

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
        delay, rule = self._plan(info)
        if delay:
            await asyncio.sleep(delay)
            transport = request.transport
            if transport is None or transport.is_closing():
                self._record(info, "abandoned", None, auth)
                return web.Response(status=499)
        if rule is not None and rule.action == "status":
            self._record(info, f"injected-{rule.status}", rule.status, auth)
            message = f"injected by fault proxy ({rule.status})"
            return web.json_response(
                {"error": {"code": rule.status, "message": message}}, status=rule.status
            )
        if rule is not None and rule.action == "drop_before":
            self._record(info, "dropped-before", None, auth)
            return self._drop(request)
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
                status = upstream.status
                out_headers = {
                    k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_HEADERS
                }
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._record(info, "upstream-error", 502, auth)
            return web.Response(status=502, text=f"fault proxy: upstream failed: {exc}")
        if rule is not None and rule.action == "drop_after":
            self._record(info, "dropped-after", None, auth)
            return self._drop(request)
        self._record(info, "forwarded", status, auth)
        return web.Response(status=status, headers=out_headers, body=payload)

    @staticmethod
    def _drop(request: web.BaseRequest) -> web.StreamResponse:
        # Closing the transport before a single byte of answer is what a lost connection looks
        # like to the client; the response returned here is never written.
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=499)
