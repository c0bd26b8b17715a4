"""``serve`` lets in only the holder of its URL, from its own origin, and audits the browser.

Issue 16 item 7: a process of another local user fetched the page, opened a websocket with
``Origin: http://evil.example`` and deleted a task; the audit named the server's Unix user. Here
the page, its assets and its websocket refuse a missing or wrong token, the websocket refuses a
foreign origin even with the token, and an action taken in Chromium is audited as the served
actor. The servers are real (textual-serve in a subprocess), the clients plain aiohttp (what
another local process would use) or headless Chromium.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import waiting
from aiohttp import web as aioweb
from test_browser import (
    DASHBOARD_WORDS,
    QUEUE,
    QUEUE_ROW,
    Served,
    ServeFn,
    browser_page,
    log_tail,
    running_chromium,
    seed_queue,
    serving,
    wait_until,
)

from omniq_console import web
from omniq_console.demo.emulator import free_port
from omniq_console.models import EventType
from omniq_console.settings import default_actor

SERVER_CODE = (
    "import json, sys\n"
    "from omniq_console.web import serve_console\n"
    "args, port, options = json.loads(sys.argv[1])\n"
    "serve_console(args, port=port, **options)\n"
)
ASSET = re.compile(r'(?:src|href)="(http://127\.0\.0\.1:\d+/t/[^"]+)"')
WEBSOCKET_URL = re.compile(r'data-session-websocket-url="([^"]+)"')
TOKEN_ENV = "OMNIQ_SERVE_TOKEN"
ACTOR_ENV = "OMNIQ_SERVE_ACTOR"


def served_actor(token: str, address: str = "127.0.0.1") -> str:
    """The actor a served console audits as by default: ``serve:<token id>@<address>``."""
    return f"serve:{hashlib.sha256(token.encode()).hexdigest()[:8]}@{address}"


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[ServeFn]:
    with serving(tmp_path) as start:
        yield start


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[str]:
    with running_chromium(tmp_path) as devtools_url:
        yield devtools_url


def start_server(
    serve: ServeFn, console_args: list[str], *, token: str | None = None, **options: Any
) -> Served:
    """``serve_console(console_args, **options)`` in a subprocess, with ``token`` in
    ``OMNIQ_SERVE_TOKEN`` (none: the server makes one up)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in (TOKEN_ENV, ACTOR_ENV)}
    if token is not None:
        env[TOKEN_ENV] = token
    spec = json.dumps([console_args, port, options])
    return serve([sys.executable, "-c", SERVER_CODE, spec], port, env)


async def status_of(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> tuple[int, str]:
    async with session.request(kwargs.pop("method", "GET"), url, **kwargs) as response:
        return response.status, await response.text()


async def websocket_status(url: str, origin: str | None) -> int:
    """The HTTP status the server answers a websocket upgrade with (101 when accepted)."""
    headers = {} if origin is None else {"Origin": origin}
    async with aiohttp.ClientSession(skip_auto_headers=["Origin"]) as session:
        try:
            async with session.ws_connect(
                url, headers=headers, timeout=aiohttp.ClientWSTimeout(10)
            ):
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


def assert_refused(status: int, body: str, what: str) -> None:
    assert status == 403, f"{what}: answered {status}, not 403"
    assert body.count("\n") == 1 and body.strip(), f"{what}: not a one-line explanation: {body!r}"


async def test_the_page_its_assets_and_its_websocket_refuse_a_missing_or_wrong_token(
    serve: ServeFn,
) -> None:
    token = secrets.token_urlsafe(24)
    served = start_server(serve, ["--bucket", "no-such-bucket"], token=token)
    base = served.origin
    wrong = secrets.token_urlsafe(24)
    async with aiohttp.ClientSession() as session:
        for path in (
            "/",
            f"/?token={wrong}",
            f"/?token={token[:-1]}",
            f"/?token={token}x",
            f"/?tok={token}",
            "/static/js/textual.js",  # textual-serve's own asset path
            f"/t/{wrong}/static/js/textual.js",
            f"/t/{token[:-1]}/static/js/textual.js",
            "/favicon.ico",
            "/download/anything",
        ):
            status, body = await status_of(session, base + path)
            assert_refused(status, body, f"GET {path}")
            assert "token" in body, body
        for path in ("/ws", f"/t/{wrong}/ws", f"/ws?token={token}"):
            assert await websocket_status(base + path, base) == 403, f"websocket {path}"
        assert served.consoles() == [], "a refused websocket started a console"

        # The URL the server printed opens the page, and the page names everything it needs
        # under the token, so a browser needs nothing else.
        status, page = await status_of(session, served.url)
        assert status == 200, page
        assets = ASSET.findall(page)
        assert len(assets) >= 2, page
        for asset in assets:
            assert f"/t/{token}/" in asset
            assert (await status_of(session, asset))[0] == 200, asset
        (socket_url,) = WEBSOCKET_URL.findall(page)
        assert socket_url == f"ws://127.0.0.1:{served.port}/t/{token}/ws"


async def test_a_websocket_from_another_origin_is_refused_even_with_the_token(
    serve: ServeFn, bucket: str
) -> None:
    seed_queue(bucket)
    token = secrets.token_urlsafe(24)
    served = start_server(serve, ["--bucket", bucket, "--refresh", "0.5"], token=token)
    async with aiohttp.ClientSession() as session:
        (socket_url,) = WEBSOCKET_URL.findall((await status_of(session, served.url))[1])
    for origin in (
        "http://evil.example",
        f"http://evil.example:{served.port}",
        f"http://127.0.0.1:{served.port + 1}",
        f"https://127.0.0.1:{served.port}",
        f"http://localhost:{served.port}",
        "null",
        None,
    ):
        assert await websocket_status(socket_url, origin) == 403, f"Origin {origin!r}"
    assert served.consoles() == [], "a foreign origin's websocket started a console"

    async with aiohttp.ClientSession() as session:
        for method in ("POST", "PUT", "DELETE"):
            status, body = await status_of(
                session, served.url, method=method, headers={"Origin": "http://evil.example"}
            )
            assert_refused(status, body, f"{method} from a foreign origin")

    # The server's own origin gets a console, which audits as the served actor.
    actor = served_actor(token)
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(socket_url, headers={"Origin": served.origin}) as socket,
    ):
        await socket.send_json(["resize", {"width": 100, "height": 30}])
        await wait_until(lambda: len(served.consoles()) == 1, 60, "a console started")
        (console,) = served.consoles()
        assert console.cmdline()[-1] == f"--actor={actor}", console.cmdline()
    await wait_until(lambda: not served.consoles(), 60, "the console to end with its websocket")


async def test_a_made_up_token_is_printed_once_and_masked_in_the_log(serve: ServeFn) -> None:
    served = start_server(serve, ["--bucket", "no-such-bucket"])
    token = served.token
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", token), served.url
    async with aiohttp.ClientSession() as session:
        assert (await status_of(session, served.url))[0] == 200
        asset = f"{served.origin}/t/{token}/static/js/textual.js"
        assert (await status_of(session, asset, headers={"Referer": served.url}))[0] == 200
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(timeout=15) == 0
    log = log_tail(served.log, 1_000_000)
    # The banner shows it to the one who started the server; the access log must not.
    assert log.count(token) == 1, log
    assert "GET /?token=***" in log and "/t/***/static/js/textual.js" in log, log
    assert "--read-only" in log, "the banner does not suggest --read-only"


async def test_the_banner_says_how_to_reach_a_read_only_console(serve: ServeFn) -> None:
    served = start_server(serve, ["--bucket", "no-such-bucket", "--read-only"])

    def banner_ended() -> str | None:
        log = log_tail(served.log)
        return log if "Press Ctrl+C" in log else None

    log = await waiting.wait_until(
        banner_ended, "the banner's end", detail=lambda: log_tail(served.log)
    )
    assert "serve with --read-only" not in log, log
    assert f"Serving the OmniQ console on {served.url}\n" in log


async def test_metrics_answer_only_the_servers_token_as_a_bearer_token(
    serve: ServeFn, bucket: str
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    seed_queue(bucket)
    token = secrets.token_urlsafe(24)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != ACTOR_ENV} | {TOKEN_ENV: token}
    argv = [sys.executable, "-m", "omniq_console", "serve", "--bucket", bucket]
    served = serve([*argv, "--port", str(port), "--refresh", "0.5", "--metrics"], port, env)
    url = f"{served.origin}/metrics"
    bearer = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as session:
        for what, headers, query in (
            ("no token", {}, ""),
            ("a wrong token", {"Authorization": f"Bearer {secrets.token_urlsafe(24)}"}, ""),
            ("the token without its scheme", {"Authorization": token}, ""),
            ("the token as a password", {"Authorization": f"Basic {token}"}, ""),
            ("the token in the query", {}, f"?token={token}"),
        ):
            status, body = await status_of(session, url + query, headers=headers)
            assert_refused(status, body, what)
            assert "Bearer" in body
        status, body = await status_of(session, url, method="POST", headers=bearer)
        assert_refused(status, body, "a POST")

        async def one_pending() -> bool:
            status, body = await status_of(session, url, headers=bearer)
            assert status == 200, body
            families = {f.name: f for f in text_string_to_metric_families(body)}
            samples = (
                families["omniq_queue_pending"].samples if "omniq_queue_pending" in families else []
            )
            return next((s.value for s in samples if s.labels["queue"] == QUEUE), None) == 1

        await waiting.wait_until(
            one_pending, f"the figures of {QUEUE} at /metrics", within=60, every=0.2
        )
    assert served.consoles() == [], "a scrape started a console"
    assert f"Prometheus metrics: {served.origin}/metrics" in log_tail(served.log)


@pytest.mark.browser
async def test_an_action_taken_in_the_browser_is_audited_as_the_served_actor(
    bucket: str, chromium: str, serve: ServeFn, tmp_path: Path
) -> None:
    from omniq_console.backend.gcs import GCSBackend

    task_id = seed_queue(bucket)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != ACTOR_ENV}
    env[TOKEN_ENV] = token = secrets.token_urlsafe(24)
    served = serve(
        [sys.executable, "-m", "omniq_console", "serve", "--bucket", bucket,
         "--port", str(port), "--refresh", "0.5"],
        port,
        env,
    )  # fmt: skip
    async with browser_page(chromium) as page:
        await page.call("Page.navigate", url=served.url)
        await page.wait_for_dashboard(
            [*DASHBOARD_WORDS, bucket], QUEUE_ROW, served, tmp_path / "dashboard.png"
        )
        # The keys of the issue: the Tasks view, Delete, Yes.
        await page.press("3")
        await page.wait_for_dashboard(
            # The task's row: its queue, then its function without the module (proof:job).
            ["function contains"], re.compile(r"browser-proof\s+job"), served, tmp_path / "tasks.png"
        )
        await page.press("d")
        await page.wait_for_dashboard(
            ["Delete task"], re.compile(r"Delete .*\?", re.S), served, tmp_path / "confirm.png"
        )
        await page.press("y")

        async with GCSBackend(bucket) as backend:
            audits = await waiting.wait_until(
                lambda: backend.async_event_storage.get_events(
                    event_type=EventType.OPERATOR_ACTION
                ),
                "the audit event after y", every=0.2, detail=lambda: log_tail(served.log),
            )
    (audit,) = audits
    assert audit.task_id == task_id and audit.details["action"] == "delete_task", audit
    assert audit.actor == served_actor(token), audit.actor
    assert audit.actor != default_actor()


@contextlib.asynccontextmanager
async def page_server(html: str) -> AsyncIterator[str]:
    """A one-page web server on 127.0.0.1, for the browser to reach as another site; its URL
    with the host name ``localhost`` (127.0.0.1 and localhost are different sites)."""

    async def page(request: aioweb.Request) -> aioweb.Response:
        return aioweb.Response(text=html, content_type="text/html")

    app = aioweb.Application()
    app.router.add_get("/", page)
    runner = aioweb.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await aioweb.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://localhost:{port}/"
    finally:
        await runner.cleanup()


@pytest.mark.browser
async def test_the_console_runs_inside_a_cross_site_iframe_as_in_a_notebook(
    bucket: str, chromium: str, serve: ServeFn
) -> None:
    # A notebook shows the console in an iframe of another site (Jupyter on localhost, a VS Code
    # webview), where a SameSite cookie is neither stored nor sent: the token must be enough.
    seed_queue(bucket)
    token = secrets.token_urlsafe(24)
    served = start_server(serve, ["--bucket", bucket, "--refresh", "0.5"], token=token)
    frame = f'<iframe src="{served.url}" width="1200" height="800"></iframe>'
    async with page_server(frame) as notebook, browser_page(chromium) as page:
        await page.call("Page.navigate", url=notebook)
        # A console starts only once the framed page loaded its assets and its websocket
        # passed the token and origin checks.
        started = await wait_until(
            lambda: len(served.consoles()) == 1, 60, "a console for the framed page"
        )
        await page.close_page()
        ended = await wait_until(lambda: not served.consoles(), 60, "the console ending")
    print(
        f"framed console started {started:.1f} s after navigation, ended {ended:.1f} s after close"
    )
    assert "refused" not in log_tail(served.log, 1_000_000)


def test_the_token_comes_from_the_environment_or_is_made_up() -> None:
    made = {web.serve_token({}) for _ in range(20)}
    assert len(made) == 20 and all(len(token) == 32 for token in made)
    assert web.serve_token({TOKEN_ENV: "notebook-token-0123456789"}) == (
        "notebook-token-0123456789"
    )
    assert len(web.serve_token({TOKEN_ENV: ""})) == 32
    for bad in ("secretive", "secret value with spaces", "secretvalue/../x", "é" * 20):
        with pytest.raises(ValueError, match=TOKEN_ENV) as caught:
            web.serve_token({TOKEN_ENV: bad})
        assert bad not in str(caught.value), "the error echoes the token"


def test_the_served_actor_is_named_by_flag_then_environment_then_token() -> None:
    token = "t" * 32
    guard = web.serve_guard(["--bucket", "b"], host="127.0.0.1", port=8000, token=token)
    assert guard.actor("10.0.0.7") == served_actor(token, "10.0.0.7")
    assert web.token_id(token) not in token and len(web.token_id(token)) == 8

    def name(args: list[str], **kwargs: Any) -> str:
        return web.serve_guard(args, host="h", port=1, token=token, **kwargs).actor_name

    env = {ACTOR_ENV: "notebook:ana"}
    assert name([], environ=env) == "notebook:ana"
    assert name(["--actor", "bob"], environ=env) == "bob"
    assert name(["--actor=carol", "--read-only"], environ=env) == "carol"
    assert name(["--actor", "bob"], actor="dora", environ=env) == "dora"
    for bad in ("a\x1b[31mb", "x" * 101):
        with pytest.raises(ValueError, match="actor"):
            name([], actor=bad)


def test_origins_compare_by_scheme_host_and_port() -> None:
    assert web.origin_of("http://127.0.0.1") == "http://127.0.0.1:80"
    assert web.origin_of("HTTP://LocalHost:8000/x?y") == "http://localhost:8000"
    assert web.origin_of("https://example.com") == "https://example.com:443"
    assert web.origin_of("http://[::1]:8000") == "http://[::1]:8000"
    for bad in (None, "", "null", "javascript:alert(1)", "http://h:99999", "file:///etc"):
        assert web.origin_of(bad) is None, bad
    guard = web.serve_guard(
        [], host="0.0.0.0", port=8000, token="t" * 32, public_url="https://ops.example/omniq/"
    )
    assert guard.origins == {"https://ops.example:443"}
    with pytest.raises(ValueError, match="public URL"):
        web.serve_guard([], host="0.0.0.0", port=8000, token="t" * 32)
    local = web.serve_guard([], host="127.0.0.1", port=8000, token="t" * 32)
    assert local.origins == {"http://127.0.0.1:8000"}

    def verdict(origin: str | None, *, method: str = "GET", websocket: bool = True) -> str | None:
        return guard.refusal(
            method=method,
            path=f"/t/{'t' * 32}/ws",
            query_token=None,
            origin=origin,
            websocket=websocket,
        )

    assert verdict("https://ops.example") is None
    assert verdict("http://ops.example") is not None
    assert verdict(None, websocket=False) is None  # an asset: the token is enough
    assert verdict(None, method="POST", websocket=False) is not None
    with pytest.raises(ValueError, match="public_url"):
        web.serve_guard([], host="h", port=1, token="t" * 32, public_url="ops.example")


def test_serve_console_refuses_a_bad_token_before_serving() -> None:
    with pytest.raises(ValueError, match="token"):
        web.serve_console(["--bucket", "b"], port=free_port(), token="short")
