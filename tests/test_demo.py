"""`omniq-console demo` in a real terminal (a pty): the console shows the fleet's work, and
quitting stops everything it started."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time

import psutil
from waiting import wait_until_sync

ANSI = re.compile(
    rb"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[()][A-Za-z0-9]|\x1b[=>78]"
)


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
        shown = _read_until(
            fd, re.compile(rb"omniq-demo[\s\S]*critical|critical[\s\S]*omniq-demo"), 90, seen
        )
        text = ANSI.sub(b"", bytes(seen)).decode("utf-8", "replace")
        assert shown, f"the demo never showed the dashboard; screen text:\n{text[-3000:]}"
        assert "Traceback" not in text
        children = _demo_children(pid)
        assert len(children) == 2, f"expected a fleet and an emulator, found {children}"
        # Quitting the demo stops its fleet: q asks first, and y confirms.
        seen.clear()
        os.write(fd, b"q")
        asked = _read_until(fd, re.compile(rb"Quitting stops the demo"), 30, seen)
        assert asked, "q in the demo did not ask before stopping the fleet"
        os.write(fd, b"y")
        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline:
            select.select([fd], [], [], 0.2)
            with contextlib.suppress(OSError):
                os.read(fd, 65536)
            done, code = os.waitpid(pid, os.WNOHANG)
            if done:
                status = code
                break
        assert status is not None, "the demo did not exit after q, y"
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        wait_until_sync(lambda: not _alive(children), "the demo's processes to end", within=10)
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        for proc in _alive(children):
            proc.kill()
        os.close(fd)


def _lines_until(proc: subprocess.Popen[bytes], last: str, timeout: float) -> list[str]:
    """What ``proc`` printed up to the line holding ``last``; fails naming what it waited for."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], deadline - time.monotonic())
        if not ready:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            raise AssertionError(f"the demo exited before printing {last!r}: {seen!r}")
        seen += chunk
        lines = seen.decode().splitlines()
        if any(last in line for line in lines):
            return lines
    raise AssertionError(f"the demo did not print {last!r} within {timeout} s: {seen!r}")


def test_demo_prints_what_points_snapshot_at_it() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMNIQ_", "STORAGE_EMU"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "omniq_console", "demo", "--no-console", "--seed", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    children: list[psutil.Process] = []
    try:
        lines = _lines_until(proc, "running until Ctrl+C", timeout=60)
        children = _demo_children(proc.pid)
        exports = dict(
            line.strip().removeprefix("export ").split("=", 1)
            for line in lines
            if line.strip().startswith("export ")
        )
        assert exports["STORAGE_EMULATOR_HOST"].startswith("http://127.0.0.1:")
        assert exports["STORAGE_EMULATOR_HOST"] in lines[0]  # the endpoint, said first
        assert (exports["OMNIQ_BUCKET"], exports["OMNIQ_PREFIX"]) == ("omniq-demo", "omniq/")
        snapshot = subprocess.run(
            [sys.executable, "-m", "omniq_console", "snapshot", "--compact"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**env, **exports},
        )
        assert snapshot.returncode == 0, snapshot.stderr
        assert json.loads(snapshot.stdout)["stale"] is False
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        wait_until_sync(lambda: not _alive(children), "the demo's processes to end", within=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for child in _alive(children):
            child.kill()
