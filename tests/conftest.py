"""Shared fixtures: one real GCS emulator (fake-gcs-server) for the session, a fresh bucket per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

# Fixture modules owned by their suites: the GCS rules model and the Pub/Sub emulator.
pytest_plugins = ["gcs_rules_fixtures", "pubsub_fixtures"]

from omniq_console.backend.gcs import GCSBackend
from omniq_console.demo.emulator import Emulator


@pytest.fixture(scope="session")
def emulator() -> Iterator[Emulator]:
    with Emulator() as emu:
        yield emu


@pytest.fixture
def gcs_env(
    emulator: Emulator, storage_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> Emulator:
    """Point every client created in the test (and its subprocesses) at the emulator, or at
    the GCS rules model in front of it under ``pytest --gcs-rules``."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", storage_endpoint)
    return emulator


@pytest.fixture
def bucket(gcs_env: Emulator) -> str:
    """A new, empty bucket on the emulator, so tests never see each other's objects."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    gcs_env.create_bucket(name)
    return name


@pytest.fixture
async def backend(bucket: str) -> AsyncIterator[GCSBackend]:
    """An open GCSBackend (async) on the test's fresh bucket, with the default options."""
    async with GCSBackend(bucket) as opened:
        yield opened
