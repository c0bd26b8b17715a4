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


def _started_by_demo(since: float) -> list[psutil.Process]:
    """Demo processes (fleet, emulator) created after ``since``."""
    found = []
    for proc in psutil.process_iter(["cmdline", "create_time"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if (proc.info["create_time"] or 0) < since - 1:
            continue
        if "omniq_console.demo.environment" in cmdline or "fake-gcs-server" in cmdline:
            found.append(proc)
    return found


def test_demo_shows_the_fleet_and_quits_cleanly() -> None:
    started = time.time()
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
        assert _started_by_demo(started), "no fleet or emulator process while the demo runs"
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
        while _started_by_demo(started) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _started_by_demo(started) == [], "the demo left processes behind"
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        for proc in _started_by_demo(started):
            proc.kill()
        os.close(fd)
