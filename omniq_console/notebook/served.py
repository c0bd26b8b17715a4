"""The full Textual console in a notebook cell: ``omniq-console serve`` in an iframe.

The kernel starts the server itself, on a free loopback port, with a fresh secret
(``OMNIQ_SERVE_TOKEN``; the iframe's URL carries it), and stops it with the kernel: the
server runs in its own process group (so its per-browser console processes stop with it),
is killed by the OS if the kernel dies outright (Linux), and is stopped by ``close()``, by a
re-run of its cell, and at the kernel's exit.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from ..checks import check_seconds, mask_secrets
from ..demo.emulator import die_with_parent, free_port
from ..web import SERVE_INSTALL_HINT, TOKEN_ENV, notebook_iframe, page_url
from . import session

HOST = "127.0.0.1"
STOP_GRACE_S = 5.0
"""How long the server gets to stop its consoles after SIGTERM before the group is killed."""
_LOG_TAIL = 2000


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((HOST, port)) == 0


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
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, TOKEN_ENV: token},
                # Its own group: textual-serve's console processes are stopped with it.
                start_new_session=True,
                # Killed with the kernel however it dies (cells run on the kernel's main
                # thread, which lives as long as the kernel).
                preexec_fn=die_with_parent,
            )
        try:
            self._wait_ready(check_seconds("startup_timeout", startup_timeout))
        except BaseException:
            self.close()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not _port_open(self.port):
            code = self.process.poll()
            if code is not None:
                raise RuntimeError(
                    f"omniq-console serve exited with code {code} before serving: "
                    f"{self._log_tail() or 'no output'}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"omniq-console serve did not listen on {HOST}:{self.port} within "
                    f"{timeout:g}s: {self._log_tail() or 'no output'}"
                )
            # A subprocess offers nothing to await while it binds its socket: poll briefly.
            time.sleep(0.05)

    def _log_tail(self) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return mask_secrets(text[-_LOG_TAIL:].strip())

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pid(self) -> int:
        """The server's process id (the leader of its process group)."""
        return self.process.pid

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
        if os.name != "posix":
            self.process.terminate()
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if os.name == "posix":
            # Whatever of the group outlived its leader (a console process mid-exit).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self._logdir.cleanup()

    def release(self) -> None:
        """Close (the cell was run again: its iframe is gone with the old output)."""
        self.close()


def console(
    bucket: str | None = None,
    *,
    prefix: str | None = None,
    height: int = 600,
    read_only: bool = False,
    args: Sequence[str] = (),
    key: str | None = None,
) -> NotebookConsole:
    """Run the full console on ``bucket`` and show it in this cell (an iframe).

    ``bucket`` and ``prefix`` default to what the settings give (``OMNIQ_BUCKET``, the config
    file). Starts ``omniq-console serve`` on a free loopback port with this kernel's environment
    (credentials, ``STORAGE_EMULATOR_HOST``) and a secret token in the iframe's URL; ``args``
    are further ``serve`` flags (``--project``, ``--token FILE``, ...). Executing the cell
    again, ``close()`` or the kernel's shutdown stop the server. Raises ImportError with the
    install command when the ``serve`` extra is missing, and RuntimeError with the server's
    own message when it cannot start (say, the bucket does not exist).
    """
    served = NotebookConsole(
        bucket, prefix=prefix, height=height, read_only=read_only, args=args, key=key
    )
    session.register(served.key, served)
    served.show()
    return served


__all__ = ["NotebookConsole", "console"]
