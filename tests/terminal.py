"""Running the console in a real terminal (a pty) in a fresh interpreter, for tests of what
a user's terminal shows and of what the process loads."""

from __future__ import annotations

import os
import pty
from collections.abc import Sequence

from omniq_console.demo.emulator import free_port


def run_in_terminal(argv: Sequence[str]) -> tuple[bytes, int]:
    """Run ``argv`` (a Python command line) in a pty against a GCS endpoint nobody answers
    on, until it closes the terminal; its screen bytes and exit code."""
    endpoint = f"http://127.0.0.1:{free_port()}"
    pid, fd = pty.fork()
    if pid == 0:  # the child: the command in a terminal
        env = {**os.environ, "STORAGE_EMULATOR_HOST": endpoint, "TERM": "xterm-256color"}
        os.execvpe(argv[0], list(argv), env)
    screen = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the child closed the terminal: it exited
            break
        if not chunk:
            break
        screen += chunk
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return screen, os.waitstatus_to_exitcode(status)
