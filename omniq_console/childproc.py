"""Child processes the console starts and must stop: the GCS and Pub/Sub emulators, the demo
fleet, a console served to a notebook.

Every child gets the same care. Its output goes to a file or to DEVNULL, never to a pipe that
nobody reads (a chatty child blocks once the pipe is full: fake-gcs-server logs each request
to stderr and hangs every client after a few hundred). It runs in its own session, so Ctrl-C
in the console does not kill it before the console stops it in order, and so its own children
(a launcher's JVM, textual-serve's consoles) stop with it. Optionally the kernel sends it
SIGTERM when the thread that started it dies (Linux), so a console killed outright leaves
nothing running. Readiness is probed until it holds, with a clear error when the child exits
first or does not get ready in time.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

LOOPBACK = "127.0.0.1"


class ChildExitedError(RuntimeError):
    """The child exited before it was ready."""


class ChildNotReadyError(TimeoutError):
    """The child was still not ready when its start-up time ran out (it has been stopped)."""


def die_with_parent() -> None:
    """In a child before exec (Linux): be sent SIGTERM when the parent dies, however it dies.

    A console killed outright (SIGKILL, a closed terminal) must not leave its demo emulator or
    fleet running. Elsewhere this does nothing; the fleet also watches its parent.
    """
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port free on ``host`` now (the kernel's pick), for a child to listen on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = LOOPBACK) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def answers_http(url: str) -> bool:
    """Whether ``GET url`` answers 200 within a second."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class ChildProcess:
    """One child process: ``start()`` (and wait until ``ready``), ``stop()``.

    ``name`` names it in errors. ``output``: a file that gets its stdout and stderr (read it
    back with ``output_tail()``), else both go to DEVNULL. ``tied_to_parent``: the kernel
    sends it SIGTERM when the starting thread ends (only for a thread that lives as long as
    the child should: a main thread). ``stop_grace``: how long it gets after SIGTERM before
    its process group is killed.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str,
        env: Mapping[str, str] | None = None,
        output: Path | None = None,
        tied_to_parent: bool = False,
        stop_grace: float = 5.0,
    ) -> None:
        self.argv = list(argv)
        self.name = name
        self.env = dict(env) if env is not None else None
        self.output = output
        self.tied_to_parent = tied_to_parent
        self.stop_grace = stop_grace
        self._process: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int:
        """The child's process id (the leader of its own process group), also once stopped."""
        if self._pid is None:
            raise RuntimeError(f"{self.name} was never started")
        return self._pid

    def start(
        self,
        ready: Callable[[], bool] | None = None,
        *,
        timeout: float = 30.0,
        interval: float = 0.05,
        hint: Callable[[], str] | None = None,
    ) -> ChildProcess:
        """Start the child; with ``ready``, poll it every ``interval`` s until it holds.

        Raises ChildExitedError when the child exits first, ChildNotReadyError (after stopping
        it) when ``timeout`` s pass; ``hint()`` says what may be wrong, for both messages
        (default: the tail of ``output``).
        """
        if self.running:
            return self
        if self.output is not None:
            with self.output.open("wb") as log:
                self._process = self._popen(log, subprocess.STDOUT)
        else:
            self._process = self._popen(subprocess.DEVNULL, subprocess.DEVNULL)
        self._pid = self._process.pid
        if ready is not None:
            self._wait_ready(ready, timeout, interval, hint or self.output_tail)
        return self

    def _popen(self, stdout: int | IO[bytes], stderr: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env=self.env,
            start_new_session=True,
            preexec_fn=die_with_parent if self.tied_to_parent else None,
        )

    def _wait_ready(
        self, ready: Callable[[], bool], timeout: float, interval: float, hint: Callable[[], str]
    ) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while not ready():
            code = self._process.poll()
            if code is not None:
                self._process = None
                raise ChildExitedError(
                    f"{self.name} exited with code {code} before it was ready: "
                    f"{hint() or 'no output'}"
                )
            if time.monotonic() > deadline:
                detail = hint()
                self.stop()
                raise ChildNotReadyError(
                    f"{self.name} was not ready within {timeout:g}s: {detail or 'no output'}"
                )
            # A child offers nothing to await while it gets ready: poll briefly.
            time.sleep(interval)

    def output_tail(self, limit: int = 2000) -> str:
        """The last ``limit`` characters the child wrote (empty without ``output``)."""
        if self.output is None:
            return ""
        try:
            return self.output.read_text(errors="replace")[-limit:].strip()
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the child and its process group (see ``stop_process``)."""
        process, self._process = self._process, None
        if process is not None:
            stop_process(process, grace=self.stop_grace)


def stop_process(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM to the process group ``process`` leads (it was started in its own session),
    SIGKILL after ``grace`` s; then whatever of the group outlived its leader (a grandchild
    mid-exit) is killed too."""
    if os.name != "posix":
        process.terminate()
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if os.name == "posix":
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)


__all__ = [
    "ChildExitedError",
    "ChildNotReadyError",
    "ChildProcess",
    "answers_http",
    "die_with_parent",
    "free_port",
    "port_open",
    "stop_process",
]
