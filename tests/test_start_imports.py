"""Start-up: what the console loads before its first frame.

The first frame is due within a second (a minimal Textual app takes most of that on a busy
machine): the backend, its HTTP stack, the poller and the OmniQ facade load after it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from terminal import run_in_terminal

HEAVY = (
    "aiohttp",
    "gcsfs",
    "google.cloud",
    "prometheus_client",
    "pandas",
    "croniter",
    "omniq_console.backend.gcs",
    "omniq_console.backend.objectstore",
    "omniq_console.monitor.monitor",
    "omniq_console.runtime.omniq",
    "omniq_console.runtime.worker",
)
"""Modules the first frame does not need: each costs tens to hundreds of milliseconds."""

# Records the modules loaded when Textual says the first frame is displayed (``Ready``), then
# runs the console's command as the user would.
_PROBE = """
import json, sys
from omniq_console.cli import main
from omniq_console.tui.app import ConsoleApp

drawn = getattr(ConsoleApp, "on_ready", lambda self: None)

def on_ready(self):
    with open(sys.argv[1], "w") as out:
        json.dump(sorted(sys.modules), out)
    drawn(self)

ConsoleApp.on_ready = on_ready
main(sys.argv[2:])
"""


def _modules_at_first_frame(tmp_path: Path) -> set[str]:
    """The console in a terminal, on a bucket nobody answers for: it draws, then exits with
    the store's error; the modules loaded at its first frame."""
    loaded = tmp_path / "modules.json"
    argv = [sys.executable, "-c", _PROBE, str(loaded), "--bucket", "any", "--read-only"]
    screen, _ = run_in_terminal(argv)
    assert loaded.exists(), f"no first frame: {screen[-2000:]!r}"
    names: list[str] = json.loads(loaded.read_text())
    return set(names)


def test_the_first_frame_loads_no_backend_poller_or_facade(tmp_path: Path) -> None:
    loaded = _modules_at_first_frame(tmp_path)
    assert "omniq_console.tui.app" in loaded  # it did record the console's first frame
    heavy = sorted(
        name for name in HEAVY if name in loaded or any(m.startswith(f"{name}.") for m in loaded)
    )
    assert heavy == [], f"loaded before the first frame: {heavy}"


def test_the_runtime_package_still_offers_every_name() -> None:
    # Its names load on first use (PEP 562): each one resolves to where it is defined.
    import importlib

    runtime = importlib.import_module("omniq_console.runtime")
    for name in runtime.__all__:
        value = getattr(runtime, name)
        assert value is getattr(importlib.import_module(value.__module__), name), name
    with pytest.raises(AttributeError, match="NoSuchName"):
        runtime.NoSuchName  # noqa: B018
