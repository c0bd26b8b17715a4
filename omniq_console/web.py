"""The console in a browser (textual-serve) and in a Jupyter notebook.

textual-serve runs a small aiohttp web server. Each browser connection to its page opens a
websocket, and for each one it starts a *new process* running the console with Textual's web
driver; the page draws that process's output with xterm.js. So every browser tab gets its own
console, its own monitor and its own polling of the bucket.

A served console is a remote control of the bucket with this process's credentials, so the
server lets in only the holder of its URL (see ``ServeGuard``):

- every server has a secret token, and the URL it prints carries it
  (``http://127.0.0.1:8000/?token=...``). The page answers only with the token in its query; the
  page's assets and its websocket live under ``/t/<token>/``, so a page that was loaded can reach
  them and nothing else is served. Wrong or missing token: 403.
- a websocket upgrade (or any request other than GET/HEAD) must come from the server's own
  origin: a page of another site cannot drive a console even if it learnt the token.
- each console process audits its actions as the browser's actor (``serve:<token id>@<address>``
  or a given name), never as the server's Unix user.
- with ``metrics`` settings (``serve --metrics``), ``GET /metrics`` answers Prometheus scrapes
  that carry the token as a bearer token (``Authorization: Bearer <token>``, what a scrape
  config's ``authorization: {credentials_file: ...}`` sends); a token in its query is refused,
  since scrape URLs end up in Prometheus's logs and UI. The figures come from one Monitor in
  this process (see ``omniq_console.metrics``), not from the browsers' consoles.

The token travels in URLs, not in a cookie, on purpose: browsers send a host's cookies to every
port of it, so a cookie would reach any other local user's server the browser visits on
127.0.0.1; and a SameSite=Strict cookie is not stored inside a notebook's cross-site iframe
(Jupyter on ``localhost``, VS Code webviews), which would leave the embedded console blank.

Nothing here imports Textual or textual-serve at module import time: the CLI imports this module
for ``--help`` even where the ``serve`` extra is not installed.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import shlex
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from aiohttp import web
    from aiohttp.typedefs import Handler
    from IPython.display import IFrame
    from textual_serve.server import Server

    from .settings import BackendSettings

SERVE_INSTALL_HINT = "pip install 'omniq-console[serve]'"


def console_command(console_args: Sequence[str]) -> str:
    """The shell command line that runs ``python -m omniq_console <console_args>``.

    textual-serve starts the app through the shell, so every argument is quoted: a bucket name
    or prefix can never become shell syntax. ``sys.executable`` keeps the served console in this
    interpreter's virtual environment.
    """
    argv = [sys.executable, "-m", "omniq_console", *console_args]
    for arg in argv:
        if not isinstance(arg, str):
            raise TypeError(f"console arguments must be strings, got {arg!r}")
        if "\x00" in arg:
            raise ValueError(f"console argument contains a NUL character: {arg!r}")
    # The shell is cmd.exe on Windows, which does not understand POSIX quoting.
    return subprocess.list2cmdline(argv) if os.name == "nt" else shlex.join(argv)


@contextmanager
def _environment(env: Mapping[str, str] | None) -> Iterator[None]:
    """Add ``env`` to this process's environment while the server runs, then restore it.

    textual-serve gives each console process a copy of ``os.environ`` taken when the browser
    connects and has no parameter for extra variables, so this is the one place to put them.
    """
    if not env:
        yield
        return
    for key, value in env.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"environment entries must be str -> str, got {key!r}: {value!r}")
        if not key or "=" in key or "\x00" in key or "\x00" in value:
            raise ValueError(f"invalid environment variable {key!r}")
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


TOKEN_ENV = "OMNIQ_SERVE_TOKEN"
"""Environment variable holding the server's token (a new random one when unset)."""

ACTOR_ENV = "OMNIQ_SERVE_ACTOR"
"""Environment variable naming who a served console's actions are audited as."""

_TOKEN_PATTERN = re.compile(r"[A-Za-z0-9._~-]{16,256}")
# URL-unreserved characters only: the token goes into a query and a path without encoding.
_SESSION_PREFIX = "/t/"
_FOCUS_ON_LOAD = """<script>
// Keys reach the console without a click first. textual-serve starts each console blurred
// (no keys in its footer, keys ignored) and tells it "focus" only when the terminal's input
// gets focus: give it focus once the console answers, unless the page itself has no focus
// (an iframe in a notebook must not take the keyboard from the notebook).
(() => {
  const announce = () => {
    const input = document.querySelector("#terminal .xterm-helper-textarea");
    if (!input || !document.hasFocus()) return;
    input.blur();  // a focus event is sent even if the input had focus before the console ran
    input.focus({preventScroll: true});
  };
  const watch = new MutationObserver(() => {
    if (!document.body.classList.contains("-first-byte")) return;
    watch.disconnect();
    announce();
  });
  watch.observe(document.body, {attributes: true, attributeFilter: ["class"]});
})();
</script>
"""
_METRICS_PATH = "/metrics"  # omniq_console.metrics.METRICS_PATH, without importing prometheus
_BEARER = "bearer "
_SAFE_METHODS = frozenset({"GET", "HEAD"})
_ALL_INTERFACES = frozenset({"0.0.0.0", "::", "[::]"})
_ACTOR_LIMIT = 100
_REFUSED_TOKEN = (
    "403 Forbidden: open this console with its full URL, including the ?token=... that "
    "`omniq-console serve` printed when it started"
)

# The actor of the websocket being handled: textual-serve builds each console's command line
# inside its websocket handler, which runs in a task (and context) of its own per connection.
_CONNECTION_ACTOR: ContextVar[str | None] = ContextVar("omniq_serve_actor", default=None)


def serve_token(environ: Mapping[str, str] | None = None) -> str:
    """The server's secret: ``OMNIQ_SERVE_TOKEN`` when set and not empty, else a new random one.

    Raises ValueError (without echoing it) for a token that is not 16 to 256 characters of
    ``A-Z a-z 0-9 . _ ~ -``.
    """
    given = (os.environ if environ is None else environ).get(TOKEN_ENV)
    return check_token(given, TOKEN_ENV) if given else secrets.token_urlsafe(24)


def check_token(token: object, name: str = "token") -> str:
    """``token`` if it can serve as a server's secret, else ValueError naming ``name``."""
    if not isinstance(token, str) or not _TOKEN_PATTERN.fullmatch(token):
        size = f"{len(token)} characters" if isinstance(token, str) else type(token).__name__
        raise ValueError(f"{name} must be 16 to 256 characters of A-Z a-z 0-9 . _ ~ - (got {size})")
    return token


def token_id(token: str) -> str:
    """A short public name for ``token`` (audit, logs): its hash's first 8 hex digits."""
    return hashlib.sha256(token.encode()).hexdigest()[:8]


def origin_of(url: str | None) -> str | None:
    """``scheme://host:port`` of an http(s) URL or ``Origin`` header, the port always written
    (so ``http://h`` and ``http://h:80`` compare equal); None for anything else (``null``)."""
    if not url:
        return None
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in ("http", "https") or not host:
        return None
    if port is None:
        port = 443 if scheme == "https" else 80
    return f"{scheme}://{_url_host(host)}:{port}"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def page_url(public_url: str, token: str) -> str:
    """The URL to open: the server's public address with its token."""
    return f"{public_url.rstrip('/')}/?token={token}"


@dataclass(frozen=True)
class ServeGuard:
    """Who may use a served console, and whom its actions are audited as.

    ``token`` is the server's secret; ``origins`` the normalised origins (``origin_of``) its own
    pages are loaded from; ``actor_name`` prefixes each connection's actor.
    """

    token: str
    origins: frozenset[str]
    actor_name: str

    @property
    def session_prefix(self) -> str:
        """The path under which the page's assets and websocket are served."""
        return f"{_SESSION_PREFIX}{self.token}/"

    def refusal(
        self,
        *,
        method: str,
        path: str,
        query_token: str | None,
        origin: str | None,
        websocket: bool,
        authorization: str | None = None,
    ) -> str | None:
        """Why a request is refused (the one-line body of its 403), or None to let it in."""
        if path == _METRICS_PATH:
            return self._metrics_refusal(method, authorization)
        if path == "/":
            candidate = query_token
        elif path.startswith(_SESSION_PREFIX):
            candidate = path[len(_SESSION_PREFIX) :].partition("/")[0]
        else:
            candidate = None
        if candidate is None or not _same(candidate, self.token):
            return _REFUSED_TOKEN
        if (websocket or method.upper() not in _SAFE_METHODS) and (
            origin_of(origin) not in self.origins
        ):
            return (
                "403 Forbidden: only a page of this console may connect to it "
                f"(allowed origins: {', '.join(sorted(self.origins))})"
            )
        return None

    def _metrics_refusal(self, method: str, authorization: str | None) -> str | None:
        scheme = (authorization or "")[: len(_BEARER)].lower()
        candidate = (authorization or "")[len(_BEARER) :].strip() if scheme == _BEARER else ""
        if method.upper() not in _SAFE_METHODS or not _same(candidate, self.token):
            return (
                "403 Forbidden: scrape /metrics with the server's token as a bearer token "
                "(Authorization: Bearer <token>)"
            )
        return None

    def actor(self, remote: str | None) -> str:
        """The audit actor of a connection from the address ``remote``."""
        return f"{self.actor_name}@{remote or 'unknown'}"


def _same(candidate: str, token: str) -> bool:
    # Constant time, so the answer's timing tells nothing about how much of a guess was right.
    return hmac.compare_digest(candidate.encode(), token.encode())


def serve_guard(
    console_args: Sequence[str],
    *,
    host: str,
    port: int,
    public_url: str | None = None,
    token: str | None = None,
    actor: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> ServeGuard:
    """The guard of a server on ``host:port`` running ``console_args``.

    The token is ``token``, else ``OMNIQ_SERVE_TOKEN``, else random. The actor's name is
    ``actor``, else ``--actor`` in ``console_args``, else ``OMNIQ_SERVE_ACTOR``, else
    ``serve:<token id>``; each connection appends ``@<its address>``. Allowed origins: the
    address served on and ``public_url`` (required when ``host`` is all interfaces).
    """
    env = os.environ if environ is None else environ
    secret = check_token(token) if token is not None else serve_token(env)
    name = actor or _flag_value(console_args, "--actor") or env.get(ACTOR_ENV)
    if name is None or not name.strip():
        name = f"serve:{token_id(secret)}"
    name = name.strip()
    if len(name) > _ACTOR_LIMIT or not name.isprintable():
        raise ValueError(
            f"the served actor must be at most {_ACTOR_LIMIT} printable characters, got {name!r}"
        )
    origins: set[str | None] = set()
    if host in _ALL_INTERFACES:
        # No browser loads a page from 0.0.0.0: its address must be given.
        if public_url is None:
            raise ValueError(
                f"serving on all interfaces ({host}) needs the public URL browsers use "
                "(--public-url): only pages of that origin may connect"
            )
    else:
        origins.add(origin_of(_default_public_url(host, port)))
    if public_url is not None:
        origins.add(origin_of(public_url))
    if None in origins:
        raise ValueError(f"public_url must be an http(s) URL with a host, got {public_url!r}")
    return ServeGuard(secret, frozenset(o for o in origins if o is not None), name)


def _flag_value(args: Sequence[str], flag: str) -> str | None:
    """The last value given to ``flag`` in ``args`` (``--flag V`` or ``--flag=V``), as argparse
    would take it."""
    value = None
    for index, arg in enumerate(args):
        if arg == flag and index + 1 < len(args):
            value = args[index + 1]
        elif arg.startswith(f"{flag}="):
            value = arg[len(flag) + 1 :]
    return value


def _default_public_url(host: str, port: int) -> str:
    return f"http://{_url_host(host)}:{port}"


class _TokenMask(logging.Filter):
    """Replaces the token in log lines (the access log shows request paths and referrers)."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self._token = token

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self._token in message:
            record.msg, record.args = message.replace(self._token, "***"), None
        return True


def serve_console(
    console_args: list[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    title: str = "OmniQ console",
    env: dict[str, str] | None = None,
    public_url: str | None = None,
    token: str | None = None,
    actor: str | None = None,
    metrics: BackendSettings | None = None,
) -> None:
    """Serve the console to web browsers until Ctrl+C or SIGTERM; prints the URL to open.

    Each browser connection runs ``python -m omniq_console <console_args> --actor=<actor>``
    (with this interpreter) in a process of its own, with this process's environment plus
    ``env``; closing the tab ends that process. Call it from the main thread (it installs
    signal handlers) of a process with no running event loop, e.g. from the CLI, not from inside
    a Jupyter kernel.

    Only the holder of the printed URL gets in: it carries the server's token (``token``, else
    ``OMNIQ_SERVE_TOKEN``, else a random one), and websockets are accepted only from the
    server's own origin. Anyone who has the URL gets a console with the credentials of this
    process, so the default host is loopback only; on a shared host add ``--read-only`` to
    ``console_args``. Actions are audited as ``actor`` (see ``serve_guard``) at the browser's
    address.

    ``public_url`` is the address browsers use to reach the server (default
    ``http://host:port``); set it when serving on ``0.0.0.0`` or behind a proxy, since the
    page connects its websocket to that address and only that origin is let in.

    ``metrics``: the settings of a bucket to poll in this process for ``GET /metrics``
    (Prometheus, with the token as a bearer token); None serves no metrics.

    Raises ImportError (with the install command) when textual-serve is not installed, and
    ValueError for a port outside 1..65535, a bad token, actor or URL, or a malformed argument.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        # Port 0 ("any free port") cannot work: textual-serve writes the port into the
        # websocket URL of the page before the socket is bound.
        raise ValueError(f"port must be an integer in 1..65535, got {port!r}")
    if not host:
        raise ValueError("host must not be empty")
    console_command(console_args)
    guard = serve_guard(
        console_args, host=host, port=port, public_url=public_url, token=token, actor=actor
    )
    server = _guarded_server(
        console_args,
        guard,
        host=host,
        port=port,
        title=title,
        # textual-serve appends absolute paths to it.
        public_url=(public_url or _default_public_url(host, port)).rstrip("/"),
        metrics=metrics,
    )
    with _environment(env):
        server.serve()


def _guarded_server(
    console_args: Sequence[str],
    guard: ServeGuard,
    *,
    host: str,
    port: int,
    title: str,
    public_url: str,
    metrics: BackendSettings | None = None,
) -> Server:
    """A textual-serve ``Server`` that checks every request with ``guard`` and starts each
    console with its connection's actor. ImportError when textual-serve is not installed."""
    try:
        from textual_serve.server import Server
    except ImportError as exc:
        raise ImportError(
            f"serving the console to a browser needs textual-serve: {SERVE_INSTALL_HINT}"
        ) from exc
    # textual-serve's own dependencies.
    import aiohttp_jinja2
    import jinja2
    from aiohttp import web
    from rich.logging import RichHandler

    base_command = console_command(console_args)
    read_only = "--read-only" in console_args
    websocket_path = f"{guard.session_prefix}ws"

    @web.middleware
    async def check_request(request: web.Request, handler: Handler) -> web.StreamResponse:
        websocket = (
            request.path == websocket_path
            or request.headers.get("Upgrade", "").lower() == "websocket"
        )
        refusal = guard.refusal(
            method=request.method,
            path=request.path,
            query_token=request.query.get("token"),
            origin=request.headers.get("Origin"),
            websocket=websocket,
            authorization=request.headers.get("Authorization"),
        )
        if refusal is None:
            return await handler(request)
        if websocket or request.method not in _SAFE_METHODS:
            # An attempt to drive a console; a refused page or asset (a browser's favicon
            # request) shows in the access log already.
            logging.getLogger("omniq_console.web").warning(
                "refused a %s %s from %s: %s",
                "websocket" if websocket else request.method,
                "connection" if websocket else "request",
                request.remote,
                refusal,
            )
        return web.Response(status=403, text=f"{refusal}\n")

    async def harden(request: web.Request, response: web.StreamResponse) -> None:
        # The page and its asset URLs carry the token: never send them on as a referrer, and
        # never keep the page in a shared cache.
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-store"

    class GuardedServer(Server):
        @property
        def command(self) -> str:
            actor = _CONNECTION_ACTOR.get()
            if actor is None:
                return base_command
            return console_command([*console_args, f"--actor={actor}"])

        @command.setter
        def command(self, value: str) -> None:
            # Server.__init__ stores its command; the one used is built per connection above.
            pass

        def initialize_logging(self) -> None:
            super().initialize_logging()
            mask = _TokenMask(guard.token)
            for log_handler in logging.getLogger().handlers:
                log_handler.addFilter(mask)
                if isinstance(log_handler, RichHandler):
                    # Locals of a frame handling a request include the token.
                    log_handler.tracebacks_show_locals = False

        # textual-serve builds its aiohttp app in the private _make_app and offers no hook for
        # a middleware or for its routes: this override is the seam, pinned (textual-serve
        # <1.2 in pyproject.toml) and checked by tests/test_dependency_seams.py.
        async def _make_app(self) -> web.Application:
            app = web.Application(middlewares=[check_request])
            aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(self.templates_path))
            # textual-serve's routes, the session ones moved under the token. No download
            # route: the console delivers no files.
            app.add_routes(
                [
                    web.get("/", self.handle_index, name="index"),
                    web.get(websocket_path, self.handle_console, name="websocket"),
                    web.static(f"{guard.session_prefix}static", self.statics_path, name="static"),
                ]
            )
            app.on_response_prepare.append(harden)
            app.on_startup.append(self.on_startup)
            app.on_shutdown.append(self.on_shutdown)
            if metrics is not None:
                from .metrics import MonitorService

                MonitorService(metrics).add_to(app)
            return app

        async def handle_index(self, request: web.Request) -> web.StreamResponse:
            """textual-serve's page, with the terminal focused on load (``_FOCUS_ON_LOAD``)."""
            page = await super().handle_index(request)
            if isinstance(page, web.Response) and page.text is not None:
                page.text = page.text.replace("</body>", f"{_FOCUS_ON_LOAD}</body>", 1)
            return page

        async def handle_console(self, request: web.Request) -> web.StreamResponse:
            """textual-serve's websocket handler, with this connection's actor in context."""
            reset = _CONNECTION_ACTOR.set(guard.actor(request.remote))
            try:
                response: web.StreamResponse = await self.handle_websocket(request)
                return response
            finally:
                _CONNECTION_ACTOR.reset(reset)

        async def on_startup(self, app: web.Application) -> None:
            lines = [
                f"Serving the OmniQ console on {page_url(public_url, guard.token)}",
                "Anyone with this URL can use the console with this server's credentials; "
                "only pages of this origin may connect.",
                f"Actions are audited as {guard.actor('<browser address>')}.",
            ]
            if metrics is not None:
                lines.append(
                    f"Prometheus metrics: {public_url}{_METRICS_PATH} with the same token as "
                    "a bearer token (Authorization: Bearer <token>)."
                )
            if not read_only:
                lines.append(
                    "On a shared host, serve with --read-only: then no one with the URL can "
                    "change the bucket."
                )
            lines.append("Press Ctrl+C to quit")
            for line in lines:
                self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    server: Server = GuardedServer(
        base_command, host=host, port=port, title=title, public_url=public_url
    )
    return server


def notebook_iframe(url: str, height: int = 600) -> IFrame:
    """An IPython ``IFrame`` showing the console served at ``url`` (see ``serve_console``).

    Display it as the last expression of a notebook cell. The URL is loaded by the notebook's
    browser, so it must be reachable from there (not only from the kernel's machine).
    """
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValueError(f"url must be an http(s) URL, got {url!r}")
    if isinstance(height, bool) or not isinstance(height, int) or height <= 0:
        raise ValueError(f"height must be a positive number of pixels, got {height!r}")
    try:
        from IPython.display import IFrame
    except ImportError as exc:
        raise ImportError(
            "notebook_iframe needs IPython: run it inside Jupyter, or pip install ipython"
        ) from exc
    return IFrame(url, width="100%", height=height)
