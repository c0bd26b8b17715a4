"""Credentials never leak: not in error messages, reprs, exception chains, or logs.

Every credential here is a throwaway made for the test (a fresh RSA key, recognizable ids and
tokens); every token refresh goes to a fake token endpoint on loopback, and anything that would
go to Google is sent to a closed loopback proxy port instead.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest
from faultproxy import FaultProxy
from google.oauth2.credentials import Credentials as UserCredentials
from reliability_fixtures import (
    FAST_RETRY,
    FakeTokenServer,
    assert_secret_free,
    fault_proxy_fixture,  # noqa: F401 - fixtures used by name
    proxy_bucket_fixture,  # noqa: F401
    service_account_file,
)

from omniq_console.backend.credentials import pubsub_service_file, resolve
from omniq_console.backend.errors import (
    AuthenticationError,
    BackendUnavailableError,
    StorageError,
)
from omniq_console.backend.objectstore import ObjectStore
from omniq_console.demo.emulator import free_port
from omniq_console.monitor.sources.pubsub import PubSubFeed


@pytest.fixture(autouse=True)
def no_way_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """Anything that tries Google's real endpoints (https) hits a closed port on loopback."""
    closed = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("HTTPS_PROXY", closed)
    monkeypatch.setenv("https_proxy", closed)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)


@pytest.fixture
def granting_server() -> Iterator[FakeTokenServer]:
    with FakeTokenServer(grant=True) as server:
        yield server


@pytest.fixture
def refusing_server() -> Iterator[FakeTokenServer]:
    with FakeTokenServer(grant=False) as server:
        yield server


def _everything_said(err: BaseException, caplog: pytest.LogCaptureFixture) -> str:
    """What an operator or a log file could ever see of this failure."""
    return "\n".join([str(err), repr(err), "".join(traceback.format_exception(err)), caplog.text])


async def _fail(store: ObjectStore) -> BaseException:
    try:
        await store.open()
        await store.list("omniq/tasks/")
    except Exception as exc:  # the test inspects whatever was raised
        return exc
    finally:
        await store.close()
    pytest.fail("the request was expected to fail")


def _closed_endpoint() -> str:
    return f"http://127.0.0.1:{free_port()}"


async def test_refused_service_account_is_a_clear_secret_free_error(
    tmp_path: Path, refusing_server: FakeTokenServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    account = service_account_file(tmp_path, refusing_server.url)
    store = ObjectStore(
        "b-creds", token=str(account.path), endpoint_url=_closed_endpoint(), retry=FAST_RETRY
    )
    err = await _fail(store)
    assert refusing_server.requests >= 1  # the key really was used to ask for a token
    assert_secret_free(_everything_said(err, caplog), account.secrets, (account.file_text,))
    # The operator must be told it is about credentials, in one line.
    assert isinstance(err, AuthenticationError), f"{type(err).__name__}: {err}"
    assert "credentials" in str(err).lower() and "\n" not in str(err)


async def test_granted_token_never_shows_when_the_endpoint_is_down(
    tmp_path: Path, granting_server: FakeTokenServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    account = service_account_file(tmp_path, granting_server.url)
    endpoint = _closed_endpoint()
    store = ObjectStore("b-creds", token=str(account.path), endpoint_url=endpoint, retry=FAST_RETRY)
    err = await _fail(store)
    assert granting_server.requests == 1
    assert isinstance(err, BackendUnavailableError)
    assert endpoint in str(err) and "\n" not in str(err)
    assert_secret_free(
        _everything_said(err, caplog),
        [*account.secrets, FakeTokenServer.ACCESS_TOKEN],
        (account.file_text,),
    )


async def test_bearer_token_sent_during_an_outage_is_not_in_the_error(
    tmp_path: Path,
    granting_server: FakeTokenServer,
    fault_proxy: FaultProxy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    account = service_account_file(tmp_path, granting_server.url)
    fault_proxy.outage(503)
    store = ObjectStore(
        "b-creds", token=str(account.path), endpoint_url=fault_proxy.url, retry=FAST_RETRY
    )
    err = await _fail(store)
    # The requests did carry the token: the proxy saw an Authorization header on each.
    assert fault_proxy.records and all(r.authorized for r in fault_proxy.records)
    assert isinstance(err, BackendUnavailableError) and fault_proxy.url in str(err)
    assert_secret_free(
        _everything_said(err, caplog),
        [*account.secrets, FakeTokenServer.ACCESS_TOKEN],
        (account.file_text,),
    )


async def test_unusable_private_key_is_a_clear_secret_free_error(
    tmp_path: Path, granting_server: FakeTokenServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bogus = (
        "-----BEGIN PRIVATE KEY-----\nTm90QUtleUJ1dEFTZWNyZXRUaGF0TXVzdE5vdExlYWsxMjM0NTY3OA==\n"
        "-----END PRIVATE KEY-----\n"
    )
    account = service_account_file(tmp_path, granting_server.url, private_key=bogus)
    store = ObjectStore(
        "b-creds", token=str(account.path), endpoint_url=_closed_endpoint(), retry=FAST_RETRY
    )
    err = await _fail(store)
    assert_secret_free(_everything_said(err, caplog), account.secrets, (account.file_text,))
    assert isinstance(err, AuthenticationError), f"{type(err).__name__}: {err}"
    assert "credentials" in str(err).lower() and "\n" not in str(err)


async def test_token_file_that_is_not_json_is_a_clear_secret_free_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "creds.json"
    secret = "password=hunter2-do-not-print-me-4242"
    path.write_text(secret + "\n")
    store = ObjectStore(
        "b-creds", token=str(path), endpoint_url=_closed_endpoint(), retry=FAST_RETRY
    )
    err = await _fail(store)
    assert_secret_free(_everything_said(err, caplog), [secret])
    assert isinstance(err, AuthenticationError)
    assert "credentials" in str(err).lower() and "\n" not in str(err)


async def test_authorized_user_secrets_never_show(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A user's refresh token and client secret: the refresh goes nowhere (closed proxy)."""
    caplog.set_level(logging.DEBUG)
    info = {
        "type": "authorized_user",
        "client_id": "1234.apps.googleusercontent.com",
        "client_secret": "CLIENT-SECRET-7f3a9b2c1d0e",
        "refresh_token": "1//REFRESH-TOKEN-0a1b2c3d4e5f6a7b",
    }
    path = tmp_path / "user.json"
    path.write_text(json.dumps(info))
    store = ObjectStore(
        "b-creds", token=str(path), endpoint_url=_closed_endpoint(), retry=FAST_RETRY
    )
    err = await _fail(store)
    assert_secret_free(
        _everything_said(err, caplog), [info["client_secret"], info["refresh_token"]]
    )
    assert isinstance(err, StorageError), f"{type(err).__name__}: {err}"


async def test_raw_access_token_never_shows(caplog: pytest.LogCaptureFixture) -> None:
    """``token=`` given a bare access token: gcsfs checks it against Google's tokeninfo
    endpoint (here unreachable), putting the token in the URL it reports on failure."""
    caplog.set_level(logging.DEBUG)
    raw = "ya29.RAW-ACCESS-TOKEN-9e107d9d372bb682"
    store = ObjectStore("b-creds", token=raw, endpoint_url=_closed_endpoint(), retry=FAST_RETRY)
    err = await _fail(store)
    assert isinstance(err, StorageError), f"{type(err).__name__}: {err}"
    assert_secret_free(_everything_said(err, caplog), [raw])


# -- snapshots and the command line -----------------------------------------------------------


async def test_snapshots_never_carry_credentials(
    tmp_path: Path,
    granting_server: FakeTokenServer,
    fault_proxy: FaultProxy,
    proxy_bucket: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from omniq_console.backend.gcs import GCSBackend
    from omniq_console.models import Task
    from omniq_console.monitor.monitor import Monitor

    caplog.set_level(logging.DEBUG)
    account = service_account_file(tmp_path, granting_server.url)
    secrets = [*account.secrets, FakeTokenServer.ACCESS_TOKEN]
    backend = GCSBackend(
        proxy_bucket, token=str(account.path), endpoint_url=fault_proxy.url, retry=FAST_RETRY
    )
    async with backend:
        await backend.async_task_storage.enqueue(Task(func="m:f"))
        monitor = Monitor(backend, poll_timeout=5)
        good = await monitor.poll()
        assert not good.stale and good.tasks["pending"] == 1
        fault_proxy.outage(503)
        stale = await monitor.poll()
        assert stale.stale and stale.error
    assert fault_proxy.records and all(r.authorized for r in fault_proxy.records)
    for snap in (good, stale):
        text = json.dumps(snap.to_json_dict(include_tasks=True)) + repr(snap)
        assert_secret_free(text, secrets, (account.file_text,))
    assert_secret_free(caplog.text + repr(backend), secrets, (account.file_text,))


@pytest.mark.parametrize("grant", [True, False])
def test_snapshot_command_fails_in_one_secret_free_line(
    tmp_path: Path, fault_proxy: FaultProxy, proxy_bucket: str, grant: bool
) -> None:
    with FakeTokenServer(grant=grant) as server:
        account = service_account_file(tmp_path, server.url)
        # An endpoint that echoes the request's Authorization header in its error (the
        # command's retry deadline is GCS's two minutes, so no outage here).
        echoed = f"Invalid Credentials; Authorization: Bearer {FakeTokenServer.ACCESS_TOKEN}"
        fault_proxy.fail(401, times=None, message=echoed)
        env = {
            **os.environ,
            "STORAGE_EMULATOR_HOST": fault_proxy.url,
            "OMNIQ_LOG_LEVEL": "DEBUG",
        }
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "omniq_console",
                "snapshot",
                "--bucket",
                proxy_bucket,
                "--token",
                str(account.path),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        asked = server.requests
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert asked >= 1, "the --token credentials were not used"
    assert "Traceback" not in output
    assert_secret_free(
        output, [*account.secrets, FakeTokenServer.ACCESS_TOKEN], (account.file_text,)
    )
    if not grant:
        assert "credential" in done.stderr.lower(), done.stderr


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("password=hunter2-do-not-print-me-4242\n", "the file is not JSON (line 1 column 1)"),
        (
            {"type": "service_account", "private_key": "SECRET-KEY-4242", "token_uri": "x"},
            "not a usable service_account key (missing 'client_email')",
        ),
        (
            {"type": "authorized_user", "client_id": "id", "client_secret": "SECRET-4242"},
            "not a usable authorized_user key (missing 'refresh_token')",
        ),
        (
            {"type": "external_account", "audience": "SECRET-4242"},
            "not a usable external_account key (missing 'subject_token_type', 'token_url')",
        ),
        ({"type": "api_key", "key": "SECRET-4242"}, "type 'api_key' is not supported"),
        (
            {
                "type": "service_account",
                "client_email": "a@b.iam.gserviceaccount.com",
                "private_key": "-----BEGIN PRIVATE KEY-----\nU0VDUkVULTQyNDI=\n-----END "
                "PRIVATE KEY-----\n",
                "token_uri": "http://127.0.0.1:9/token",
            },
            "its private_key cannot be loaded",
        ),
    ],
    ids=[
        "not-json",
        "no-client-email",
        "no-refresh-token",
        "external-account-incomplete",
        "unsupported-type",
        "bad-pem",
    ],
)
async def test_a_bad_credentials_file_says_what_is_wrong_with_it(
    tmp_path: Path, content: str | dict[str, str], reason: str
) -> None:
    path = tmp_path / "key.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    store = ObjectStore("b-creds", token=str(path), endpoint_url=_closed_endpoint())
    with pytest.raises(AuthenticationError) as err:
        await store.open()
    message = str(err.value)
    assert message.startswith(f"cannot load GCS credentials (file {path}): ")
    assert reason in message and "KeyError" not in message and "\n" not in message
    assert "4242" not in message and "SECRET" not in message


# -- key types, the feed's credentials, and no silent anonymous access ------------------------


def _authorized_user_file(directory: Path, token_uri: str) -> Path:
    """gcloud's application default credentials file, as 'gcloud auth application-default
    login' writes it (token_uri pointed at the fake server)."""
    path = directory / "application_default_credentials.json"
    path.write_text(
        json.dumps(
            {
                "type": "authorized_user",
                "client_id": "764086051850-fake.apps.googleusercontent.com",
                "client_secret": "d-FL95Q19q7MQmFpd7hHD0Ty",
                "refresh_token": "1//0gFAKE-REFRESH-TOKEN-never-shown",
                "quota_project_id": "omniq-test",
                "token_uri": token_uri,
            }
        )
    )
    return path


def _external_account_file(directory: Path, token_url: str) -> Path:
    """A Workload Identity Federation config as 'gcloud iam workload-identity-pools
    create-cred-config' writes it, with a file-sourced subject token."""
    subject = directory / "oidc-token.jwt"
    subject.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJmYWtlIn0.c2lnbmF0dXJl")
    path = directory / "wif.json"
    path.write_text(
        json.dumps(
            {
                "type": "external_account",
                "audience": "//iam.googleapis.com/projects/123456/locations/global/"
                "workloadIdentityPools/ci-pool/providers/ci-provider",
                "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
                "token_url": token_url,
                "credential_source": {"file": str(subject)},
            }
        )
    )
    return path


async def test_a_workload_identity_federation_config_is_used(
    tmp_path: Path, granting_server: FakeTokenServer, fault_proxy: FaultProxy, proxy_bucket: str
) -> None:
    path = _external_account_file(tmp_path, granting_server.url)
    store = ObjectStore(proxy_bucket, token=str(path), endpoint_url=fault_proxy.url)
    try:
        await store.open()
        assert await store.list("omniq/tasks/") == []
    finally:
        await store.close()
    assert granting_server.requests >= 1  # the token exchange went to the config's token_url
    assert fault_proxy.records and all(r.authorized for r in fault_proxy.records)


async def test_gclouds_own_authorized_user_file_is_loaded_as_user_credentials(
    tmp_path: Path, granting_server: FakeTokenServer, caplog: pytest.LogCaptureFixture
) -> None:
    path = _authorized_user_file(tmp_path, granting_server.url)
    loaded = resolve(str(path), "read_write")
    assert isinstance(loaded, UserCredentials) and loaded.refresh_token
    # google-auth refreshes user credentials at Google's endpoint whatever the file says:
    # here that is a closed port, and the failure is about these credentials, secret-free.
    store = ObjectStore("b-creds", token=str(path), endpoint_url=_closed_endpoint())
    err = await _fail(store)
    assert isinstance(err, AuthenticationError) and f"file {path}" in str(err)
    assert_secret_free(
        _everything_said(err, caplog), ["1//0gFAKE-REFRESH-TOKEN", "d-FL95Q19q7MQmFpd7hHD0Ty"]
    )


@pytest.fixture
def no_default_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No key file, no gcloud login, not on GCE: application default credentials fail."""
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    monkeypatch.setenv("GCE_METADATA_HOST", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("GCE_METADATA_IP", f"127.0.0.1:{free_port()}")


async def test_without_credentials_nothing_connects_anonymously(
    no_default_credentials: None,
) -> None:
    store = ObjectStore("b-creds", retry=FAST_RETRY)  # no token, no emulator
    with pytest.raises(AuthenticationError) as err:
        await store.open()
    message = str(err.value)
    assert "no credentials found" in message and "not connecting anonymously" in message
    assert "GOOGLE_APPLICATION_CREDENTIALS" in message and "\n" not in message
    assert not store.is_open


async def test_default_credentials_of_another_project_are_used_not_dropped(
    tmp_path: Path,
    granting_server: FakeTokenServer,
    fault_proxy: FaultProxy,
    proxy_bucket: str,
    no_default_credentials: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    account = service_account_file(tmp_path, granting_server.url)  # project omniq-test
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(account.path))
    store = ObjectStore(
        proxy_bucket, project="another-project", token="google_default",
        endpoint_url=fault_proxy.url,
    )  # fmt: skip
    try:
        await store.open()
        assert await store.list("omniq/") == []
    finally:
        await store.close()
    assert fault_proxy.records and all(r.authorized for r in fault_proxy.records)


def test_the_feed_gets_the_storage_key(tmp_path: Path, granting_server: FakeTokenServer) -> None:
    account = service_account_file(tmp_path, granting_server.url)
    assert pubsub_service_file(str(account.path)) == str(account.path)
    as_dict = pubsub_service_file(json.loads(account.file_text))
    assert as_dict is not None and not isinstance(as_dict, str)
    assert json.loads(as_dict.read())["client_email"].startswith("omniq-test@")
    assert pubsub_service_file(None) is None and pubsub_service_file("anon") is None


async def test_the_feed_authenticates_with_the_storage_key(
    tmp_path: Path, granting_server: FakeTokenServer
) -> None:
    account = service_account_file(tmp_path, granting_server.url)
    feed = PubSubFeed(
        "projects/p/subscriptions/s", bucket="b", service_file=str(account.path),
        api_root=_closed_endpoint() + "/v1",
    )  # fmt: skip
    await feed.start()
    try:
        assert feed._client is not None
        token = await feed._client.token.get()  # the service account's grant, not GCE's
        assert token == FakeTokenServer.ACCESS_TOKEN and granting_server.requests == 1
    finally:
        await feed.close()
