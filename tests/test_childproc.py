"""ChildProcess: a child that exits or never gets ready fails with a clear error, and stopping
it stops its whole process group."""

from __future__ import annotations

import sys
from pathlib import Path

import psutil
import pytest
from waiting import wait_until_sync

from omniq_console.childproc import ChildExitedError, ChildNotReadyError, ChildProcess


def test_a_child_that_exits_first_is_named_with_its_code_and_output(tmp_path: Path) -> None:
    code = "import sys; print('port 1 is taken', file=sys.stderr); sys.exit(3)"
    child = ChildProcess([sys.executable, "-c", code], name="the server", output=tmp_path / "log")
    with pytest.raises(ChildExitedError, match=r"the server exited with code 3 .*port 1 is taken"):
        child.start(lambda: False, timeout=60)
    assert not child.running


def test_a_child_never_ready_is_stopped_and_said_so() -> None:
    # Waits for a signal: until stopped.
    child = ChildProcess([sys.executable, "-c", "import signal; signal.pause()"], name="slow")
    with pytest.raises(ChildNotReadyError, match=r"slow was not ready within 0.5s: hint"):
        child.start(lambda: False, timeout=0.5, hint=lambda: "hint")
    assert not child.running and not psutil.pid_exists(child.pid)


def test_stop_ends_the_childs_own_children_too(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild"
    code = (  # a child and a grandchild that wait for a signal: until stopped
        "import signal, subprocess, sys\n"
        "g = subprocess.Popen([sys.executable, '-c', 'import signal; signal.pause()'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(g.pid))\n"
        "signal.pause()\n"
    )
    child = ChildProcess([sys.executable, "-c", code], name="launcher", stop_grace=5)
    child.start(lambda: pid_file.exists() and bool(pid_file.read_text()), timeout=60)
    grandchild = psutil.Process(int(pid_file.read_text()))
    child.stop()
    wait_until_sync(
        lambda: not grandchild.is_running() or grandchild.status() == psutil.STATUS_ZOMBIE,
        "the grandchild to end with its group",
    )
    assert not child.running
