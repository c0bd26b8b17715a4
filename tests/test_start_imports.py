"""Start-up: what the console loads, and builds, before its first frame.

The first frame is due within a second (a minimal Textual app takes most of that on a busy
machine): the backend, its HTTP stack, the poller and the OmniQ facade load after it, the
pydantic models of stored objects and snapshots are built (their validators) on first use,
and the cyclic garbage collector waits for the frame.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from terminal import run_in_terminal

HEAVY = (
    "aiohttp",
    "gcsfs",
    "google.cloud",
    "prometheus_client",
    "pandas",
    "croniter",
    "plotext",  # the charts' plots load with their first data (the empty chart is drawn without)
    "omniq_console.backend.gcs",
    "omniq_console.backend.objectstore",
    "omniq_console.monitor.monitor",
    "omniq_console.runtime.omniq",
    "omniq_console.runtime.worker",
)
"""Modules the first frame does not need: each costs tens to hundreds of milliseconds."""

BUILT_BEFORE_THE_FRAME = {
    "omniq_console.backend.config.BackendSettings",
    "omniq_console.backend.config._Environment",
}
"""The only pydantic models whose validators the first frame needs: the settings, read (and
refused with a clear error) before anything is drawn."""

# Records, when Textual says the first frame is displayed (``Ready``), the modules loaded, the
# console's pydantic models whose validators are built, and whether the cyclic garbage
# collector runs; then runs the console's command as the user would.
_PROBE = """
import gc, json, sys
from omniq_console import cli
from omniq_console.tui.app import ConsoleApp

drawn = getattr(ConsoleApp, "on_ready", lambda self: None)

def built():
    from pydantic import BaseModel
    found, todo = [], [BaseModel]
    while todo:
        for model in todo.pop().__subclasses__():
            todo.append(model)
            name = f"{model.__module__}.{model.__qualname__}"
            if name.startswith("omniq_console.") and model.__pydantic_complete__:
                found.append(name)
    return sorted(set(found))

def on_ready(self):
    seen = {"modules": sorted(sys.modules), "built": built(), "collecting": gc.isenabled()}
    with open(sys.argv[1], "w") as out:
        json.dump(seen, out)
    drawn(self)

ConsoleApp.on_ready = on_ready

checking = cli.probe

async def probe(settings):  # the bucket's check, once the first frame is on screen
    with open(sys.argv[1] + ".after", "w") as out:
        json.dump(gc.isenabled(), out)
    await checking(settings)

cli.probe = probe
cli.main(sys.argv[2:])
"""


@pytest.fixture(scope="module")
def first_frame(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The console in a terminal, on a bucket nobody answers for: it draws, then exits with
    the store's error; what the probe saw at its first frame."""
    seen = tmp_path_factory.mktemp("first-frame") / "seen.json"
    argv = [sys.executable, "-c", _PROBE, str(seen), "--bucket", "any", "--read-only"]
    screen, _ = run_in_terminal(argv)
    assert seen.exists(), f"no first frame: {screen[-2000:]!r}"
    recorded: dict[str, Any] = json.loads(seen.read_text())
    after = seen.with_name(seen.name + ".after")
    recorded["collecting_after"] = json.loads(after.read_text()) if after.exists() else None
    return recorded


def test_the_first_frame_loads_no_backend_poller_or_facade(first_frame: dict[str, Any]) -> None:
    loaded = set(first_frame["modules"])
    assert "omniq_console.tui.app" in loaded  # it did record the console's first frame
    heavy = sorted(
        name for name in HEAVY if name in loaded or any(m.startswith(f"{name}.") for m in loaded)
    )
    assert heavy == [], f"loaded before the first frame: {heavy}"


def test_the_first_frame_builds_only_the_settings_models(first_frame: dict[str, Any]) -> None:
    # Building a model's validator costs about a millisecond each (the stored objects' and the
    # snapshot's: ~2% of the instructions to the first frame); they are built on first use.
    assert "omniq_console.backend.config.BackendSettings" in first_frame["built"]
    assert set(first_frame["built"]) <= BUILT_BEFORE_THE_FRAME, first_frame["built"]


def test_the_collector_waits_for_the_first_frame(first_frame: dict[str, Any]) -> None:
    # The start-up's imports and first layout allocate hundreds of thousands of objects and
    # no garbage cycle worth a pass: the collector's passes were ~3% of the start's work.
    assert first_frame["collecting"] is False
    assert first_frame["collecting_after"] is True  # and runs once the frame is drawn


def test_the_runtime_package_still_offers_every_name() -> None:
    # Its names load on first use (PEP 562): each one resolves to where it is defined.
    import importlib

    runtime = importlib.import_module("omniq_console.runtime")
    for name in runtime.__all__:
        value = getattr(runtime, name)
        assert value is getattr(importlib.import_module(value.__module__), name), name
    with pytest.raises(AttributeError, match="NoSuchName"):
        runtime.NoSuchName  # noqa: B018
