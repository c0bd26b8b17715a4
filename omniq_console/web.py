"""The console in a browser (textual-serve) and in a Jupyter notebook.

textual-serve runs a small aiohttp web server. Each browser connection to its page opens a
websocket, and for each one it starts a *new process* running the console with Textual's web
driver; the page draws that process's output with xterm.js. So every browser tab gets its own
console, its own monitor and its own polling of the bucket.

Nothing here imports Textual or textual-serve at module import time: the CLI imports this module
for ``--help`` even where the ``serve`` extra is not installed.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from IPython.display import IFrame

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


def serve_console(
    console_args: list[str],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    title: str = "OmniQ console",
    env: dict[str, str] | None = None,
    public_url: str | None = None,
) -> None:
    """Serve the console to web browsers at ``http://host:port/`` until Ctrl+C or SIGTERM.

    Each browser connection runs ``python -m omniq_console <console_args>`` (with this
    interpreter) in a process of its own, with this process's environment plus ``env``; closing
    the tab ends that process. Call it from the main thread (it installs signal handlers) of a
    process with no running event loop, e.g. from the CLI, not from inside a Jupyter kernel.

    Anyone who can reach the port gets a console with the credentials of this process: the
    default host is loopback only. Expose it wider only behind authentication, and consider
    ``--read-only`` in ``console_args``.

    ``public_url`` is the address browsers use to reach the server (default
    ``http://host:port``); set it when serving on ``0.0.0.0`` or behind a proxy, since the
    page connects its websocket to that address.

    Raises ImportError (with the install command) when textual-serve is not installed, and
    ValueError for a port outside 1..65535 or a malformed argument.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        # Port 0 ("any free port") cannot work: textual-serve writes the port into the
        # websocket URL of the page before the socket is bound.
        raise ValueError(f"port must be an integer in 1..65535, got {port!r}")
    if not host:
        raise ValueError("host must not be empty")
    command = console_command(console_args)
    try:
        from textual_serve.server import Server
    except ImportError as exc:
        raise ImportError(
            f"serving the console to a browser needs textual-serve: {SERVE_INSTALL_HINT}"
        ) from exc
    server = Server(command, host=host, port=port, title=title, public_url=public_url)
    with _environment(env):
        server.serve()


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
