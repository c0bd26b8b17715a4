"""The demo's environment in process: its emulator and its fleet child start, the fleet works
on the demo bucket, and stopping leaves neither process (nor the fleet's log) behind."""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path

import psutil
import pytest
from waiting import wait_until_sync

from omniq_console.demo.emulator import EmulatorUnavailableError
from omniq_console.demo.environment import DEMO_BUCKET, DEMO_PREFIX, DemoEnvironment

# A fleet process starts and stops: seconds.
pytestmark = pytest.mark.slow


def _fleet_processes() -> list[psutil.Process]:
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "omniq_console.demo.environment" in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    return [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def _objects(url: str) -> int:
    listing = f"{url}/storage/v1/b/{DEMO_BUCKET}/o?prefix={DEMO_PREFIX}&maxResults=5"
    with urllib.request.urlopen(listing, timeout=10) as response:
        return len(json.loads(response.read()).get("items", []))


def test_the_fleet_works_on_the_bucket_and_stops_with_the_environment() -> None:
    demo = DemoEnvironment(seed=5, feed=False)
    fleet: list[psutil.Process] = []
    try:
        with demo:
            fleet = _fleet_processes()
            assert len(fleet) == 1, fleet
            log = demo.fleet_log
            wait_until_sync(lambda: _objects(demo.url) > 0, "the fleet's first objects", within=60)
            assert log.exists()
        wait_until_sync(lambda: not _alive(fleet), "the fleet to end", within=15)
        assert not demo.emulator.running and not log.exists()
    finally:
        for proc in _alive(fleet):
            proc.kill()


def test_an_environment_that_fails_to_start_stops_what_it_started() -> None:
    demo = DemoEnvironment(feed=False, fleet=False)
    logdir = Path(demo.fleet_log).parent
    # The emulator's port is taken: the environment fails after making its log folder.
    with socket.socket() as taken:
        taken.bind((demo.emulator.host, demo.emulator.port))
        taken.listen()
        with pytest.raises(EmulatorUnavailableError), demo:
            pytest.fail("entered an environment whose emulator did not start")
    assert not demo.emulator.running
    assert not logdir.exists()
