"""`omniq-console demo` in a real terminal (a pty): the console shows the fleet's work, and
quitting stops everything it started."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import sys
import termios
import time

import psutil

ANSI = re.compile(rb"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[()][A-Za-z0-9]|\x1b[=>78]")


def _read_until(fd: int, pattern: re.Pattern[bytes], timeout: float, seen: bytearray) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                return False
            if not chunk:
                return False
            seen.extend(chunk)
            if pattern.search(ANSI.sub(b"", bytes(seen))):
                return True
    return False


def _demo_children(pid: int) -> list[psutil.Process]:
    """The demo's fleet and emulator processes (children of the console process)."""
    found = []
    for proc in psutil.Process(pid).children(recursive=True):
        try:
            cmdline = " ".join(proc.cmdline())
        except psutil.Error:
            continue
        if "omniq_console.demo.environment" in cmdline or "fake-gcs-server" in cmdline:
            found.append(proc)
    return found


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    return [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_demo_shows_the_fleet_and_quits_cleanly() -> None:
    children: list[psutil.Process] = []
    pid, fd = pty.fork()
    if pid == 0:  # the child: the demo, in a 140x40 terminal
        os.environ.update(TERM="xterm-256color", COLUMNS="140", LINES="40")
        os.execv(sys.executable, [sys.executable, "-m", "omniq_console", "demo", "--seed", "7"])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 140, 0, 0))
    seen = bytearray()
    try:
        # The fleet's queues appear once the first snapshot of its work has arrived.
        shown = _read_until(fd, re.compile(rb"omniq-demo[\s\S]*critical|critical[\s\S]*omniq-demo"), 90, seen)
        text = ANSI.sub(b"", bytes(seen)).decode("utf-8", "replace")
        assert shown, f"the demo never showed the dashboard; screen text:\n{text[-3000:]}"
        assert "Traceback" not in text
        children = _demo_children(pid)
        assert len(children) == 2, f"expected a fleet and an emulator, found {children}"
        os.write(fd, b"q")
        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline:
            select.select([fd], [], [], 0.2)
            try:
                os.read(fd, 65536)
            except OSError:
                pass
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
        assert status is not None and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        deadline = time.monotonic() + 10
        while _alive(children) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _alive(children) == [], "the demo left processes behind"
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        for proc in _alive(children):
            proc.kill()
        os.close(fd)
