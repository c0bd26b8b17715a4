"""The full Textual console in a notebook cell: ``omniq-console serve`` in an iframe.

The kernel starts the server itself, on a free loopback port, with a fresh secret
(``OMNIQ_SERVE_TOKEN``; the iframe's URL carries it), and stops it with the kernel: the
server runs in its own process group (so its per-browser console processes stop with it),
is killed by the OS if the kernel dies outright (Linux), and is stopped by ``close()``, by a
re-run of its cell, and at the kernel's exit.
"""

from __future__ import annotations

import os
import secrets
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TypedDict, Unpack

from ..checks import check_seconds, mask_secrets
from ..childproc import ChildProcess, free_port, port_open
from ..web import SERVE_INSTALL_HINT, TOKEN_ENV, notebook_iframe, page_url
from . import session

HOST = "127.0.0.1"
STOP_GRACE_S = 5.0
"""How long the server gets to stop its consoles after SIGTERM before the group is killed."""


class NotebookConsole:
    """A running ``omniq-console serve`` and the iframe that shows it (see ``console()``)."""

    def __init__(
        self,
        bucket: str | None = None,
        *,
        prefix: str | None = None,
        height: int = 600,
        read_only: bool = False,
        args: Sequence[str] = (),
        key: str | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        try:
            import textual_serve  # noqa: F401  (the server child needs it: say so here)
        except ImportError as exc:
            raise ImportError(
                "console() serves the console to the notebook with textual-serve, which is not "
                f"installed: {SERVE_INSTALL_HINT}"
            ) from exc
        if isinstance(height, bool) or not isinstance(height, int) or height <= 0:
            raise ValueError(f"height must be a positive number of pixels, got {height!r}")
        self.bucket = bucket
        self.height = height
        self.key = key or f"console:{session.cell_key()}"
        self.port = free_port(HOST)
        token = secrets.token_urlsafe(24)
        self.url = page_url(f"http://{HOST}:{self.port}", token)
        argv = [
            sys.executable, "-m", "omniq_console", "serve",
            *(["--bucket", bucket] if bucket else []),
            *(["--prefix", prefix] if prefix is not None else []),
            "--host", HOST, "--port", str(self.port),
            *(["--read-only"] if read_only else []),
            *args,
        ]  # fmt: skip
        self._logdir = tempfile.TemporaryDirectory(prefix="omniq-notebook-console-")
        self.log_path = Path(self._logdir.name) / "serve.log"
        self._closed = False
        self._displayed_in: int | None = None
        self.child = ChildProcess(
            argv,
            name="omniq-console serve",
            env={**os.environ, TOKEN_ENV: token},
            output=self.log_path,
            # Killed with the kernel however it dies (cells run on the kernel's main thread,
            # which lives as long as the kernel). Its own group: textual-serve's console
            # processes are stopped with it.
            tied_to_parent=True,
            stop_grace=STOP_GRACE_S,
        )
        try:
            self.child.start(
                lambda: port_open(self.port, HOST),
                timeout=check_seconds("startup_timeout", startup_timeout),
                hint=lambda: mask_secrets(self.child.output_tail()),
            )
        except BaseException:
            self.close()
            raise

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pid(self) -> int:
        """The server's process id (the leader of its process group)."""
        return self.child.pid

    def show(self) -> None:
        """Display the console's iframe in the current cell's output."""
        from IPython.display import display

        self._displayed_in = session.execution_count()
        display(notebook_iframe(self.url, height=self.height))  # type: ignore[no-untyped-call]

    def _ipython_display_(self) -> None:
        # ``console()`` displayed it already; a bare ``console(...)`` must not show it twice.
        if self._displayed_in is None or self._displayed_in != session.execution_count():
            self.show()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"serving on {HOST}:{self.port}"
        return f"<NotebookConsole {self.bucket or '$OMNIQ_BUCKET'}: {state}>"

    def close(self) -> None:
        """Stop the server and every console it started (SIGTERM, then SIGKILL)."""
        if self._closed:
            return
        self._closed = True
        session.unregister(self.key, self)
        self.child.stop()
        self._logdir.cleanup()

    def release(self) -> None:
        """Close (the cell was run again: its iframe is gone with the old output)."""
        self.close()


class ConsoleOptions(TypedDict, total=False):
    """What ``console()`` passes on to ``NotebookConsole``."""

    prefix: str | None
    height: int
    read_only: bool
    args: Sequence[str]
    key: str | None


def console(bucket: str | None = None, **options: Unpack[ConsoleOptions]) -> NotebookConsole:
    """Run the full console on ``bucket`` and show it in this cell (an iframe).

    ``bucket`` and ``prefix`` default to what the settings give (``OMNIQ_BUCKET``, the config
    file). Starts ``omniq-console serve`` on a free loopback port with this kernel's environment
    (credentials, ``STORAGE_EMULATOR_HOST``) and a secret token in the iframe's URL; ``args``
    are further ``serve`` flags (``--project``, ``--token FILE``, ...). Executing the cell
    again, ``close()`` or the kernel's shutdown stop the server. Raises ImportError with the
    install command when the ``serve`` extra is missing, and RuntimeError with the server's
    own message when it cannot start (say, the bucket does not exist). ``prefix``, ``height``
    (pixels, default 600), ``read_only``, ``args`` and ``key``: as ``NotebookConsole`` takes them.
    """
    served = NotebookConsole(bucket, **options)
    session.register(served.key, served)
    served.show()
    return served


__all__ = ["NotebookConsole", "console"]
