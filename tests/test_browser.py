"""The console served to a browser: textual-serve, loaded in headless Chromium, read back.

The page draws the console with xterm.js on a canvas, so its HTML holds no dashboard text. The
test drives Chromium through the DevTools protocol and reads the terminal's *buffer*: the rows
of cells xterm.js paints. textual-serve's script keeps its xterm ``Terminal`` in a closure, so
before the page loads we install a one-shot setter for the property it stores it in
(``this.terminal = new Terminal(...)``) that also hands it to ``window``.

The server machinery here (``serving``, ``running_chromium``, ``browser_page``, ``seed_queue``)
is shared with ``test_web_security.py``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
import waiting
from waiting import poll_sync, wait_until_sync

from omniq_console import web
from omniq_console.demo.emulator import Emulator, free_port
from omniq_console.models import Task

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # The page links a Google font: resolve nothing but loopback, so no request leaves the
    # machine and the font fails at once instead of holding back window.onload. (localhost is
    # another site than 127.0.0.1 on the same address: a cross-site page for a test.)
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE localhost",
    "--window-size=1400,900",
    "--remote-debugging-port=0",
]

# Runs in the page before textual.js; removes itself at the first assignment, so no other
# object is affected.
CAPTURE_TERMINAL_JS = """
Object.defineProperty(Object.prototype, "terminal", {
  configurable: true,
  set(value) {
    delete Object.prototype.terminal;
    Object.defineProperty(this, "terminal", {
      value, writable: true, configurable: true, enumerable: true,
    });
    window.__omniqTerminal = value;
  },
});
"""

READ_SCREEN_JS = """
(() => {
  const term = window.__omniqTerminal;
  const state = {captured: !!term, bodyClass: document.body ? document.body.className : "",
                 text: "", cols: 0, rows: 0};
  if (!term || !term.buffer) return state;
  const buffer = term.buffer.active;
  const lines = [];
  for (let y = 0; y < term.rows; y++) {
    const line = buffer.getLine(buffer.viewportY + y);
    lines.push(line ? line.translateToString(true) : "");
  }
  state.text = lines.join("\\n");
  state.cols = term.cols;
  state.rows = term.rows;
  return state;
})()
"""

QUEUE = "browser-proof"
DASHBOARD_WORDS = ["Overview", "Queues", "Live events"]
# The seeded queue's row with its one pending task: data read from the bucket, on screen.
QUEUE_ROW = re.compile(rf"{re.escape(QUEUE)}\s+1\s")
SCREEN_TIMEOUT = 30.0

ServeFn = Callable[[list[str], int, dict[str, str]], "Served"]
# The line the server prints once it listens, with the URL to open (token included).
BANNER = re.compile(r"Serving the OmniQ console on (\S+)")


def chromium_binary() -> str:
    """Debian's chromium; its absence fails the test (.ci/run installs it), never skips it."""
    found = shutil.which("chromium")
    if found is None and os.access("/usr/bin/chromium", os.X_OK):
        found = "/usr/bin/chromium"
    if found is None:
        pytest.fail(
            "chromium is not installed: run `apt-get update && apt-get install -y chromium` "
            "(.ci/run does this when it is missing)",
            pytrace=False,
        )
    return found


def group_members(pgid: int) -> list[psutil.Process]:
    """Live processes of a process group (zombies only await a reap by their parent)."""
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc)
        except (OSError, psutil.Error):
            continue
    return members


def stop_process_group(proc: subprocess.Popen[bytes]) -> None:
    """End a process started with start_new_session=True and everything it started."""
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        if poll_sync(lambda: not group_members(proc.pid), within=grace):
            break
    if proc.poll() is None:
        proc.wait(timeout=5)


def log_tail(path: Path, limit: int = 3000) -> str:
    return path.read_text(errors="replace")[-limit:] if path.exists() else ""


@dataclass
class Served:
    """A running textual-serve server, in a process group of its own.

    ``url`` is the URL to open (with the token): given when the test chose the token, else read
    from the banner by ``wait_until_up``.
    """

    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    url: str = ""

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        match = re.search(r"[?&]token=([^&]+)", self.url)
        assert match, f"no token in the printed URL {self.url!r}"
        return match.group(1)

    def consoles(self) -> list[psutil.Process]:
        """The console processes textual-serve started for browser connections."""
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        found = []
        for child in children:
            try:
                if child.status() == psutil.STATUS_ZOMBIE:
                    continue
                cmdline = child.cmdline()
            except psutil.Error:
                continue
            if "omniq_console" in cmdline and "serve" not in cmdline:
                found.append(child)
        return found

    def wait_until_up(self, timeout: float = 60.0) -> None:
        """Wait for the banner with the URL, then for the page to answer 200 at that URL."""

        def up() -> bool:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"server exited with {self.proc.returncode}:\n{log_tail(self.log)}",
                    pytrace=False,
                )
            if not self.url and (match := BANNER.search(log_tail(self.log, 100_000))):
                self.url = match.group(1)
            if self.url:
                try:
                    with urllib.request.urlopen(self.url, timeout=2) as response:
                        return bool(response.status == 200)
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
            return False

        wait_until_sync(
            up, f"the server's URL and a 200 there ({self.url or self.origin})", within=timeout,
            every=0.1, detail=lambda: log_tail(self.log),
        )


@contextmanager
def serving(tmp_path: Path) -> Iterator[ServeFn]:
    """Start servers (argv, port, env) in their own process groups; all stopped at the end."""
    started: list[Served] = []

    def start(argv: list[str], port: int, env: dict[str, str]) -> Served:
        log = tmp_path / f"server-{len(started)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        # With its token given, the URL is known without reading the banner.
        token = env.get("OMNIQ_SERVE_TOKEN")
        served = Served(proc, port, log, f"http://127.0.0.1:{port}/?token={token}" if token else "")
        started.append(served)
        served.wait_until_up()
        return served

    try:
        yield start
    finally:
        for served in started:
            stop_process_group(served.proc)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[ServeFn]:
    with serving(tmp_path) as start:
        yield start


@contextmanager
def running_chromium(tmp_path: Path) -> Iterator[str]:
    """A headless Chromium with a fresh profile; yields its DevTools HTTP address."""
    binary = chromium_binary()
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    log = tmp_path / "chromium.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        # Chromium writes the port it bound, then the browser's path, here once it is ready.
        active_port = profile / "DevToolsActivePort"

        def listening() -> bool:
            if proc.poll() is not None:
                pytest.fail(
                    f"chromium exited with {proc.returncode}:\n{log_tail(log)}", pytrace=False
                )
            return active_port.exists() and len(active_port.read_text().split()) >= 2

        wait_until_sync(
            listening, "chromium's DevTools port", within=60, detail=lambda: log_tail(log)
        )
        yield f"http://127.0.0.1:{active_port.read_text().split()[0]}"
    finally:
        stop_process_group(proc)


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[str]:
    with running_chromium(tmp_path) as devtools_url:
        yield devtools_url


class DevTools:
    """The few DevTools protocol calls the test needs, on one page target."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._last_id = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._last_id += 1
        call_id = self._last_id
        await self._ws.send_json({"id": call_id, "method": method, "params": params})
        async with asyncio.timeout(15):
            async for message in self._ws:
                data = json.loads(message.data)
                if data.get("id") != call_id:
                    continue  # an event of an enabled domain
                if "error" in data:
                    raise RuntimeError(f"DevTools {method}: {data['error']}")
                result: dict[str, Any] = data["result"]
                return result
        raise ConnectionError(f"DevTools connection closed during {method}")

    async def close_page(self) -> None:
        """Close the tab as a user would. (Navigating away is not the same: the back/forward
        cache may keep the page, and its websocket, alive.)"""
        # The page's DevTools connection may end before it answers.
        with contextlib.suppress(ConnectionError):
            await self.call("Page.close")

    async def press(self, *keys: str, click_first: bool = True) -> None:
        """Type printable keys into the page's terminal, as a user would: after focusing it
        (a click), or, with ``click_first=False``, into whatever the page focused itself."""
        if click_first:
            await self.call("Runtime.evaluate", expression="window.__omniqTerminal.focus()")
        for key in keys:
            await self.call("Input.dispatchKeyEvent", type="keyDown", key=key, text=key)
            await self.call("Input.dispatchKeyEvent", type="keyUp", key=key)

    async def screen(self) -> dict[str, Any]:
        """The page's terminal rows as text, plus the page's state classes."""
        reply = await self.call("Runtime.evaluate", expression=READ_SCREEN_JS, returnByValue=True)
        if "exceptionDetails" in reply:
            raise RuntimeError(f"reading the screen failed: {reply['exceptionDetails']}")
        state: dict[str, Any] = reply["result"]["value"]
        return state

    async def wait_for_dashboard(
        self, words: list[str], row: re.Pattern[str], served: Served, screenshot: Path
    ) -> tuple[dict[str, Any], float, float]:
        """Poll until the terminal shows every word and a line matching ``row``.

        Returns the final state, the seconds until then, and the seconds until the terminal
        first showed any text. Fails at once when the session ends (the console exited), or
        after SCREEN_TIMEOUT, with what the page showed, a screenshot and the server's log.
        """
        start = time.monotonic()
        first_text = float("nan")
        state: dict[str, Any] = {}
        shown = closed = False

        async def settled() -> bool:
            nonlocal state, first_text, shown, closed
            state = await self.screen()
            text = state["text"]
            if text.strip() and first_text != first_text:
                first_text = time.monotonic() - start
            shown = all(word in text for word in words) and row.search(text) is not None
            closed = "-closed" in state["bodyClass"]
            return shown or closed

        with contextlib.suppress(AssertionError):  # timed out: said below
            await waiting.wait_until(settled, "the dashboard", within=SCREEN_TIMEOUT, every=0.2)
        if shown:
            return state, time.monotonic() - start, first_text
        problem = (
            "shows 'Session ended': the console exited"
            if closed
            else f"did not show {words} and /{row.pattern}/ within {SCREEN_TIMEOUT:.0f} s"
        )
        shot = await self.call("Page.captureScreenshot", format="png")
        await asyncio.to_thread(screenshot.write_bytes, base64.b64decode(shot["data"]))
        pytest.fail(
            f"the page {problem} (terminal captured: {state.get('captured')}, body class: "
            f"{state.get('bodyClass')!r}, screenshot: {screenshot}).\nTerminal text:\n"
            f"{state.get('text', '')}\nServer log:\n{log_tail(served.log)}",
            pytrace=False,
        )


@asynccontextmanager
async def browser_page(devtools_url: str) -> AsyncIterator[DevTools]:
    """The browser's page, set up to expose textual-serve's terminal on its next load."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{devtools_url}/json/list") as response:
            targets = await response.json()
        page = next(t for t in targets if t["type"] == "page")
        async with session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            devtools = DevTools(ws)
            await devtools.call("Page.enable")
            # A tab a user just opened has focus; a headless page driven here has none unless
            # emulated (then document.hasFocus() is true, as in a real browser's front tab).
            await devtools.call("Emulation.setFocusEmulationEnabled", enabled=True)
            await devtools.call("Page.addScriptToEvaluateOnNewDocument", source=CAPTURE_TERMINAL_JS)
            yield devtools


async def wait_until(condition: Callable[[], bool], within: float, failure: str) -> float:
    """Poll ``condition`` until it holds (the seconds that took), failing after ``within``."""
    start = time.monotonic()
    await waiting.wait_until(condition, failure, within=within, every=0.1)
    return time.monotonic() - start


FOOTER_HELP = re.compile(r"\?\s+Help")
"""The footer's first key (the main screen's bindings start with help)."""
HELP_SCREEN = re.compile(r"Everywhere")
"""The help screen's first section."""


async def wait_until_shown(page: DevTools, pattern: re.Pattern[str], failure: str) -> None:
    """Poll the page's terminal until ``pattern`` shows on it (SCREEN_TIMEOUT at most)."""
    text = ""

    async def shown() -> bool:
        nonlocal text
        text = (await page.screen())["text"]
        return pattern.search(text) is not None

    await waiting.wait_until(
        shown, failure, within=SCREEN_TIMEOUT, every=0.2,
        detail=lambda: f"the terminal showed:\n{text}",
    )


def seed_queue(bucket: str) -> str:
    """Put one pending task in QUEUE of ``bucket``, for the dashboard to show; its id."""
    from omniq_console.backend.gcs import GCSBackend

    task = Task(func="proof:job", queue_name=QUEUE)
    with GCSBackend(bucket) as backend:
        backend.task_storage.enqueue_sync(task)
    return task.id


@pytest.fixture
def seeded_bucket(bucket: str) -> str:
    """The test bucket holding one pending task in QUEUE."""
    seed_queue(bucket)
    return bucket


@pytest.mark.browser
async def test_serve_command_shows_the_dashboard_in_chromium_and_leaves_no_process(
    seeded_bucket: str, chromium: str, serve: ServeFn, tmp_path: Path
) -> None:
    port = free_port()
    # The server inherits STORAGE_EMULATOR_HOST (gcs_env) and hands it to each console; it
    # makes up its token and prints the URL with it.
    server_env = {k: v for k, v in os.environ.items() if k != "OMNIQ_SERVE_TOKEN"}
    served = serve(
        [
            sys.executable,
            "-m",
            "omniq_console",
            "serve",
            "--bucket",
            seeded_bucket,
            "--port",
            str(port),
            "--refresh",
            "0.5",
        ],
        port,
        server_env,
    )
    assert served.consoles() == [], "a console ran before any browser connected"
    assert len(served.token) == 32, f"not a token_urlsafe(24): {served.url}"

    async with browser_page(chromium) as page:
        await page.call("Page.navigate", url=served.url)
        state, seconds, first_text = await page.wait_for_dashboard(
            [*DASHBOARD_WORDS, seeded_bucket], QUEUE_ROW, served, tmp_path / "page.png"
        )
        assert "-first-byte" in state["bodyClass"], "the terminal was never made visible"
        assert "-closed" not in state["bodyClass"], "the console's session ended"
        assert len(served.consoles()) == 1
        print(
            f"first text {first_text:.1f} s, dashboard with data {seconds:.1f} s after "
            f"navigation ({state['cols']}x{state['rows']} cells)"
        )

        # Nothing clicked yet: the footer already offers the keys, and a key works.
        await wait_until_shown(page, FOOTER_HELP, "the footer shows no keys before a click")
        await page.press("?", click_first=False)
        await wait_until_shown(page, HELP_SCREEN, "'?' before any click opened no help")

        # Closing the tab closes its websocket; textual-serve then tells that console to quit.
        await page.close_page()
        seconds = await wait_until(
            lambda: not served.consoles(), 15, "the console outlived its browser tab"
        )
        print(f"console ended {seconds:.1f} s after its tab closed")

    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(timeout=15) == 0, log_tail(served.log)
    assert group_members(served.proc.pid) == [], "the server left processes behind"


@pytest.mark.browser
async def test_serve_console_env_reaches_each_console(
    seeded_bucket: str, gcs_env: Emulator, chromium: str, serve: ServeFn, tmp_path: Path
) -> None:
    # The server itself does not know the emulator: only `env` can point the console at it.
    server_env = {k: v for k, v in os.environ.items() if k != "STORAGE_EMULATOR_HOST"}
    server_env["OMNIQ_SERVE_TOKEN"] = "env-token-0123456789abcdef"
    port = free_port()
    code = (
        "import json, sys\n"
        "from omniq_console.web import serve_console\n"
        "args, port, env = json.loads(sys.argv[1])\n"
        "serve_console(args, port=port, env=env)\n"
    )
    spec = [
        ["--bucket", seeded_bucket, "--refresh", "0.5"],
        port,
        {"STORAGE_EMULATOR_HOST": gcs_env.url},
    ]
    served = serve([sys.executable, "-c", code, json.dumps(spec)], port, server_env)
    assert served.token == "env-token-0123456789abcdef", "the server ignored OMNIQ_SERVE_TOKEN"

    async with browser_page(chromium) as page:
        await page.call("Page.navigate", url=served.url)
        await page.wait_for_dashboard(
            [*DASHBOARD_WORDS, seeded_bucket], QUEUE_ROW, served, tmp_path / "page.png"
        )
    async with aiohttp.ClientSession() as session, session.get(served.url) as response:
        assert "OmniQ console" in await response.text()


def test_console_command_quotes_every_argument() -> None:
    hostile = ["--bucket", "b; touch /tmp/pwned", "--prefix", "$(id) 'x' \"y\" `z`/"]
    command = web.console_command(hostile)
    assert shlex.split(command) == [sys.executable, "-m", "omniq_console", *hostile]
    with pytest.raises(ValueError, match="NUL"):
        web.console_command(["--bucket", "a\x00b"])


def test_web_module_imports_no_textual() -> None:
    check = (
        "import sys, omniq_console.web\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('textual', 'textual_serve', 'IPython'))\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr


def test_serve_console_without_textual_serve_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "textual_serve.server", None)
    with pytest.raises(ImportError, match=r"pip install 'omniq-console\[serve\]'"):
        web.serve_console(["--bucket", "b"], port=free_port())


@pytest.mark.parametrize("port", [0, -1, 65536, True, "8000"])
def test_serve_console_refuses_a_bad_port(port: Any) -> None:
    with pytest.raises(ValueError, match="port"):
        web.serve_console(["--bucket", "b"], port=port)


def test_notebook_iframe_without_ipython_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "IPython", None)
    monkeypatch.setitem(sys.modules, "IPython.display", None)
    with pytest.raises(ImportError, match="IPython"):
        web.notebook_iframe("http://127.0.0.1:8000/")
    with pytest.raises(ValueError, match="url"):
        web.notebook_iframe("javascript:alert(1)")
    with pytest.raises(ValueError, match="height"):
        web.notebook_iframe("http://127.0.0.1:8000/", height=0)
