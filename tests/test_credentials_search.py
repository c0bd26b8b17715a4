"""Application default credentials are searched for once per command, within a bound.

The console's first check of the bucket (``cli.probe``) and the stores it opens afterwards
share one search (``credentials.ApplicationDefaultCredentials``): on GCE each search asks the
metadata server, which google-auth retries for seconds. The key here is a throwaway whose
token refresh goes to a fake token endpoint on loopback; requests go to the emulator through
a proxy that records whether they were authorized.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import google.auth
import pytest
from faultproxy import FaultProxy
from reliability_fixtures import (
    FakeTokenServer,
    fault_proxy_fixture,  # noqa: F401 - fixtures used by name
    proxy_bucket_fixture,  # noqa: F401
    service_account_file,
)

from omniq_console import cli
from omniq_console.backend.credentials import ApplicationDefaultCredentials, resolve
from omniq_console.backend.errors import AuthenticationError
from omniq_console.demo.emulator import free_port
from omniq_console.settings import load_settings, make_backend


@pytest.fixture
def searches(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every search for application default credentials (``google.auth.default``), counted."""
    calls: list[object] = []
    real = google.auth.default

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("scopes"))
        return real(*args, **kwargs)

    monkeypatch.setattr(google.auth, "default", counting)
    return calls


@pytest.fixture
def gcloud_login(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTokenServer]:
    """Application default credentials as gcloud keeps them (its config folder), a key whose
    tokens come from a fake endpoint; nothing else to find (not on GCE, no variable)."""
    with FakeTokenServer(grant=True) as server:
        config = tmp_path / "gcloud"
        config.mkdir()
        account = service_account_file(config, server.url)
        account.path.rename(config / "application_default_credentials.json")
        monkeypatch.setenv("CLOUDSDK_CONFIG", str(config))
        monkeypatch.setenv("HOME", str(tmp_path))
        monkeypatch.setenv("NO_GCE_CHECK", "True")
        monkeypatch.setenv("GCE_METADATA_HOST", f"127.0.0.1:{free_port()}")
        monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
        monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
        yield server


def test_a_command_without_key_or_emulator_searches_through_one_token(
    gcloud_login: FakeTokenServer,
) -> None:
    settings = cli._settings(cli._parser().parse_args(["--bucket", "b-creds", "--read-only"]))
    assert isinstance(settings.token, ApplicationDefaultCredentials)
    assert settings.token.access == settings.access == "read_only"
    keyed = cli._settings(cli._parser().parse_args(["--bucket", "b-creds", "--token", "anon"]))
    assert keyed.token == "anon"


async def test_the_console_start_searches_once_for_its_probe_and_its_backend(
    gcloud_login: FakeTokenServer,
    searches: list[object],
    fault_proxy: FaultProxy,
    proxy_bucket: str,
) -> None:
    """The probe's backend and the console's own open with the one search's result (before:
    one search in the CLI's check, then one per store opened: three)."""
    settings = load_settings(bucket_name=proxy_bucket, endpoint_url=fault_proxy.url)
    settings = settings.model_copy(update={"token": ApplicationDefaultCredentials("read_write")})
    backend = make_backend(settings)  # built before the search, as the console builds it
    await cli.probe(settings)
    async with backend:
        assert await backend.async_task_storage.get_queue_size("default") == 0
    assert len(searches) == 1
    assert fault_proxy.records and all(r.authorized for r in fault_proxy.records)


async def test_a_search_that_hangs_fails_within_the_bound(
    gcloud_login: FakeTokenServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On GCE with an unreachable metadata server the search can take many seconds: the
    command says so after CREDENTIALS_DEADLINE, and the search left behind does not hold it."""
    release = threading.Event()

    def hanging(*args: Any, **kwargs: Any) -> Any:
        release.wait(30)
        raise google.auth.exceptions.DefaultCredentialsError("gave up")

    monkeypatch.setattr(google.auth, "default", hanging)
    monkeypatch.setattr(cli, "CREDENTIALS_DEADLINE", 0.2)
    settings = cli._settings(cli._parser().parse_args(["--bucket", "b-creds"]))
    try:
        with pytest.raises(AuthenticationError, match=r"none were found within 0.2 s"):
            await cli._find_default_credentials(settings)
    finally:
        release.set()


async def test_no_default_credentials_is_said_at_once(
    gcloud_login: FakeTokenServer, searches: list[object]
) -> None:
    (Path.home() / "gcloud" / "application_default_credentials.json").unlink()  # logged out
    settings = cli._settings(cli._parser().parse_args(["--bucket", "b-creds"]))
    with pytest.raises(AuthenticationError, match=r"no GCS credentials \(none were found\)"):
        await cli._find_default_credentials(settings)
    assert len(searches) == 1


def test_another_scope_is_searched_for_on_its_own(
    gcloud_login: FakeTokenServer, searches: list[object]
) -> None:
    """A token searched for read-only access is not handed out for writes."""
    token = ApplicationDefaultCredentials("read_only")
    first = resolve(token, "read_only")
    assert resolve(token, "read_only") is first
    assert resolve(token, "read_write") is not first
    assert len(searches) == 2 and "read_write" in str(searches[-1])
