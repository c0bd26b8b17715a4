"""ObjectStore and GCSBackend against the GCS rules model: what real GCS would answer.

Retries as Google recommends (backoff with full jitter, a deadline, idempotent requests only),
least privilege at open, integrity both ways, and error messages an operator can act on.
"""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from faultproxy import FaultProxy, GCSRulesProxy
from gcs_rules_fixtures import RULES_RETRY

from omniq_console.backend.errors import (
    AuthenticationError,
    BackendUnavailableError,
    BucketNotFoundError,
    ChecksumMismatchError,
    MetadataTooLargeError,
    RateLimitedError,
)
from omniq_console.backend.gcs import GCSBackend
from omniq_console.backend.objectstore import ObjectStore, RetryNotice, RetryPolicy
from omniq_console.demo.emulator import Emulator, free_port

KEY = "omniq/results/t1.json"
# Google's shape scaled down 20x: 50 ms initial, doubling, 1.6 s cap, 6 s deadline.
SHORT = RetryPolicy(base_delay=0.05, max_delay=1.6, deadline=6.0, request_timeout=5.0)


@pytest.fixture
async def store(gcs_rules: GCSRulesProxy) -> AsyncIterator[ObjectStore]:
    assert gcs_rules.bucket is not None
    opened = ObjectStore(gcs_rules.bucket, endpoint_url=gcs_rules.url, retry=SHORT)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


# -- retries --------------------------------------------------------------------------------


def test_the_default_policy_is_googles() -> None:
    policy = RetryPolicy()
    assert (policy.base_delay, policy.multiplier, policy.max_delay) == (1.0, 2.0, 32.0)
    assert policy.deadline == 120.0 and policy.attempts is None
    assert [policy.ceiling(n) for n in range(8)] == [1, 2, 4, 8, 16, 32, 32, 32]
    assert policy.ceiling(10_000) == 32.0  # no overflow however long an outage lasts
    # Full jitter: anywhere from 0 up to the ceiling.
    assert policy.delay(3, rand=0.0) == 0.0 and policy.delay(3, rand=0.5) == 4.0
    assert all(0 <= policy.delay(5) <= 32 for _ in range(100))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"deadline": 0}, "deadline must be more than 0"),
        ({"base_delay": -1}, "base_delay must be more than 0"),
        ({"request_timeout": float("inf")}, "request_timeout must be a number"),
        ({"multiplier": 0.5}, "multiplier must be 1 or more"),
        ({"attempts": 0}, "attempts must be 1 or more"),
    ],
)
def test_a_nonsensical_policy_is_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**options)


@pytest.mark.parametrize("rand", [0.01, 0.5, 0.999])
def test_the_default_policy_outlasts_a_30_second_outage(rand: float) -> None:
    """Walk the schedule of attempts: one always falls after a 30 s outage and before the
    deadline (the gap between two attempts is at most the 32 s cap)."""
    policy = RetryPolicy()
    at, retry = 0.0, 0
    while at < 30.0:
        pause = policy.delay(retry, rand=rand)
        assert at + pause <= policy.deadline, f"gave up at {at:.1f} s"
        at, retry = at + pause, retry + 1
    assert 30.0 <= at <= 30.0 + policy.max_delay < policy.deadline


async def test_an_outage_shorter_than_the_deadline_is_survived(
    store: ObjectStore, gcs_rules: GCSRulesProxy
) -> None:
    first = await store.write(KEY, b'{"v":1}', if_generation_match=0)
    gcs_rules.outage(seconds=1.5)
    started = time.monotonic()
    listed = await store.list("omniq/")
    second = await store.write(KEY, b'{"v":2}', if_generation_match=first.generation)
    elapsed = time.monotonic() - started
    assert [o.key for o in listed] == [KEY]
    assert second.generation != first.generation
    assert elapsed >= 1.5
    assert store.stats.retries >= 2 and store.stats.errors["list"] >= 1


async def test_an_outage_longer_than_the_deadline_fails_in_one_line_in_time(
    gcs_rules: GCSRulesProxy,
) -> None:
    assert gcs_rules.bucket is not None
    policy = RetryPolicy(base_delay=0.05, max_delay=0.2, deadline=1.0, request_timeout=2.0)
    store = ObjectStore(gcs_rules.bucket, endpoint_url=gcs_rules.url, retry=policy)
    await store.open()
    try:
        gcs_rules.outage(seconds=30)
        started = time.monotonic()
        with pytest.raises(BackendUnavailableError) as err:
            await store.list("omniq/")
        elapsed = time.monotonic() - started
    finally:
        await store.close()
    assert elapsed < policy.deadline + 0.5
    message = str(err.value)
    assert "\n" not in message and gcs_rules.url in message and "503" in message
    assert store.stats.count["list"] == store.stats.retries + 1 >= 3


async def test_a_429_on_a_hot_name_is_retried_and_counted(
    store: ObjectStore, gcs_rules: GCSRulesProxy
) -> None:
    first = await store.write(KEY, b'{"v":1}', if_generation_match=0)
    started = time.monotonic()
    second = await store.write(KEY, b'{"v":2}', if_generation_match=first.generation)
    assert time.monotonic() - started >= 0.9  # it waited out the name's second
    assert (await store.read(KEY)).generation == second.generation
    assert store.stats.rate_limited >= 1 and store.stats.rate_limited == gcs_rules.rate_limited
    assert store.stats.count["write"] == 2 + store.stats.rate_limited
    assert gcs_rules.max_mutations_per_second() == 1
    assert gcs_rules.mutation_counts() == {KEY: 2}


async def test_a_name_kept_hot_past_the_deadline_is_a_rate_limited_error(
    gcs_rules: GCSRulesProxy,
) -> None:
    assert gcs_rules.bucket is not None
    policy = RetryPolicy(base_delay=0.05, max_delay=0.1, deadline=0.5, request_timeout=2.0)
    store = ObjectStore(gcs_rules.bucket, endpoint_url=gcs_rules.url, retry=policy)
    await store.open()
    try:
        created = await store.write(KEY, b'{"v":1}', if_generation_match=0)
        with pytest.raises(RateLimitedError, match="429"):
            await store.write(KEY, b'{"v":2}', if_generation_match=created.generation)
    finally:
        await store.close()


async def test_a_plain_write_meeting_a_429_is_not_retried(
    store: ObjectStore, gcs_rules: GCSRulesProxy
) -> None:
    await store.write(KEY, b'{"v":1}', if_generation_match=0)
    with pytest.raises(BackendUnavailableError, match="without a precondition"):
        await store.write(KEY, b'{"v":2}')
    assert store.stats.count["write"] == 2 and store.stats.retries == 0
    assert store.stats.rate_limited == 1
    assert (await store.read(KEY)).data == b'{"v":1}'


async def test_a_create_that_lost_the_race_is_a_conflict_without_waiting(
    store: ObjectStore, gcs_rules: GCSRulesProxy
) -> None:
    """A claim race: the loser's create-only write gets 412 at once, not 429 and backoff."""
    await store.write(KEY, b'{"w":"one"}', if_generation_match=0)
    started = time.monotonic()
    from omniq_console.backend.errors import ConflictError

    with pytest.raises(ConflictError):
        await store.write(KEY, b'{"w":"two"}', if_generation_match=0)
    assert time.monotonic() - started < 0.5
    assert gcs_rules.rate_limited == 0 and store.stats.conflicts == 1


# -- least privilege ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "access"), [("objectAdmin", "read_write"), ("objectViewer", "read_only")]
)
async def test_object_only_roles_open_a_backend_and_list(
    gcs_rules: GCSRulesProxy, role: str, access: str
) -> None:
    assert gcs_rules.bucket is not None
    gcs_rules.role = role
    backend = GCSBackend(
        gcs_rules.bucket, endpoint_url=gcs_rules.url, retry=RULES_RETRY, access=access
    )
    async with backend:
        assert await backend.store.list("omniq/") == []
    kinds = [r.kind for r in gcs_rules.records]
    assert "bucket" not in kinds and kinds.count("list") >= 2
    assert all(r.status == 200 for r in gcs_rules.records)


async def test_a_missing_bucket_is_one_clear_line_from_a_listing(
    gcs_rules: GCSRulesProxy,
) -> None:
    backend = GCSBackend("no-such-bucket-h1", endpoint_url=gcs_rules.url, retry=RULES_RETRY)
    with pytest.raises(BucketNotFoundError) as err:
        await backend.aopen()
    assert "no-such-bucket-h1" in str(err.value) and "\n" not in str(err.value)
    assert [(r.kind, r.status) for r in gcs_rules.records] == [("list", 404)]


async def test_a_refused_listing_names_the_permission_needed(
    store: ObjectStore, gcs_rules: GCSRulesProxy
) -> None:
    gcs_rules.fail(403, times=1, path="/o?", message="caller does not have storage.objects.list")
    with pytest.raises(AuthenticationError, match=r"storage\.objects\.list") as err:
        await store.check_bucket("omniq/")
    assert "\n" not in str(err.value)
    assert "prefix=omniq/" in gcs_rules.records[-1].path
    assert "maxResults=1" in gcs_rules.records[-1].path


# -- integrity ------------------------------------------------------------------------------


@pytest.mark.parametrize("consistency", ["md5", "crc32c"])
async def test_a_corrupted_upload_is_refused(gcs_rules: GCSRulesProxy, consistency: str) -> None:
    assert gcs_rules.bucket is not None
    store = ObjectStore(
        gcs_rules.bucket, endpoint_url=gcs_rules.url, retry=SHORT, consistency=consistency
    )
    await store.open()
    try:
        gcs_rules.corrupt_uploads(times=1)
        with pytest.raises(ChecksumMismatchError, match=consistency):
            await store.write(KEY, b'{"v":1}', if_generation_match=0)
        assert await store.list("omniq/") == []  # nothing was stored
        assert [r.status for r in gcs_rules.records if r.kind == "upload"] == [400]
        await store.write(KEY, b'{"v":1}', if_generation_match=0)  # an intact one lands
    finally:
        await store.close()


@pytest.mark.parametrize("consistency", ["md5", "crc32c"])
async def test_a_corrupted_download_with_split_hash_headers_is_detected(
    gcs_rules: GCSRulesProxy, consistency: str
) -> None:
    assert gcs_rules.bucket is not None
    store = ObjectStore(
        gcs_rules.bucket, endpoint_url=gcs_rules.url, retry=SHORT, consistency=consistency
    )
    await store.open()
    try:
        await store.write(KEY, b'{"v":1}', if_generation_match=0)
        gcs_rules.split_hash_headers = True
        assert (await store.read(KEY)).data == b'{"v":1}'  # two headers, both checked, fine
        gcs_rules.corrupt(times=1, path="alt=media")
        with pytest.raises(ChecksumMismatchError, match="does not match its body"):
            await store.read(KEY)
    finally:
        await store.close()


async def test_metadata_over_8_kib_is_refused_before_sending(
    store: ObjectStore, gcs_rules: GCSRulesProxy
) -> None:
    with pytest.raises(MetadataTooLargeError, match="8192"):
        await store.write(KEY, b"{}", metadata={"k": "é" * 4096}, if_generation_match=0)
    assert gcs_rules.records == []


async def test_every_json_request_asks_for_compact_json(
    store: ObjectStore, gcs_rules: GCSRulesProxy
) -> None:
    written = await store.write(KEY, b"{}", if_generation_match=0)
    await store.list("omniq/")
    await store.read(KEY)
    await store.check_bucket()
    # On the generation written: within a second of the create GCS answers 429, which only a
    # conditioned delete may retry.
    await store.delete(KEY, if_generation_match=written.generation)
    assert {r.kind for r in gcs_rules.records} == {"upload", "list", "get", "delete"}
    assert all("prettyPrint=false" in r.path for r in gcs_rules.records)


# -- error messages -------------------------------------------------------------------------


async def test_an_unreachable_http_endpoint_says_so_plainly() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    policy = RetryPolicy(base_delay=0.01, max_delay=0.02, deadline=0.2, request_timeout=1.0)
    store = ObjectStore("b-unreachable", endpoint_url=endpoint, retry=policy)
    await store.open()
    try:
        with pytest.raises(BackendUnavailableError) as err:
            await store.list("omniq/")
    finally:
        await store.close()
    message = str(err.value)
    assert f"cannot connect to {endpoint}: connection refused" in message
    assert "ssl:default" not in message and "\n" not in message


class _NoSuchHost(AbstractResolver):
    """Answers every lookup as a resolver does for a name that does not exist (EAI_NONAME),
    so the test sends no DNS query off the machine."""

    async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[ResolveResult]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async def close(self) -> None:
        return None


async def test_a_host_name_that_does_not_resolve_fails_at_once() -> None:
    connector = aiohttp.TCPConnector(resolver=_NoSuchHost())
    store = ObjectStore(
        "b-dns",
        endpoint_url="http://storage.example.invalid:4443",
        retry=RetryPolicy(),
        gcs_kwargs={"session_kwargs": {"connector": connector}},
    )
    await store.open()
    started = time.monotonic()
    try:
        with pytest.raises(BackendUnavailableError, match="does not resolve") as err:
            await store.list("omniq/")
    finally:
        await store.close()
    assert time.monotonic() - started < 2.0
    assert store.stats.count["list"] == 1 and store.stats.retries == 0
    message = str(err.value)
    assert "cannot connect to http://storage.example.invalid:4443" in message
    assert "\n" not in message and "ssl:default" not in message


async def test_an_invalid_host_name_fails_at_once() -> None:
    # A name with an empty label fails in Python's IDNA codec: no lookup is even attempted.
    store = ObjectStore("b-dns", endpoint_url="http://no..such-host:4443", retry=RetryPolicy())
    await store.open()
    try:
        with pytest.raises(BackendUnavailableError, match="not a valid host name") as err:
            await store.list("omniq/")
    finally:
        await store.close()
    assert store.stats.retries == 0 and "\n" not in str(err.value)


async def test_an_endpoint_echoing_the_authorization_header_is_masked(
    store: ObjectStore, gcs_rules: GCSRulesProxy
) -> None:
    secret = "ya29.ECHOED-TOKEN-0123456789"
    gcs_rules.fail(401, times=None, message=f"Invalid credentials; Authorization: Bearer {secret}")
    with pytest.raises(AuthenticationError) as err:
        await store.read(KEY)
    assert secret not in str(err.value) and secret not in repr(err.value)
    assert "401" in str(err.value)


def test_rules_env_points_clients_at_the_model(
    rules_env: dict[str, str], gcs_rules: GCSRulesProxy
) -> None:
    assert rules_env["STORAGE_EMULATOR_HOST"] == gcs_rules.url
    assert ObjectStore("any-bucket").endpoint_url == gcs_rules.url


async def test_rules_backend_is_open_through_the_model(
    rules_backend: GCSBackend, gcs_rules: GCSRulesProxy, emulator: Emulator
) -> None:
    assert rules_backend.is_open and rules_backend.bucket_name == gcs_rules.bucket
    assert isinstance(gcs_rules, FaultProxy) and gcs_rules.upstream == emulator.url
    assert gcs_rules.role == "objectAdmin"


def test_storage_endpoint_is_the_emulator_unless_asked(
    storage_endpoint: str, emulator: Emulator, request: pytest.FixtureRequest
) -> None:
    if request.config.getoption("--gcs-rules"):
        proxy: GCSRulesProxy = request.getfixturevalue("gcs_rules_session")
        assert storage_endpoint == proxy.url != emulator.url
    else:
        assert storage_endpoint == emulator.url


async def test_each_retry_is_announced_before_its_backoff(
    store: ObjectStore, gcs_rules: GCSRulesProxy
) -> None:
    notices: list[RetryNotice] = []
    store.on_retry = notices.append
    secret = "ya29.SECRET-IN-A-503"
    gcs_rules.fail(503, times=2, path="/o?", message=f"busy; Authorization: Bearer {secret}")
    await store.list("omniq/")
    assert [(n.kind, n.attempt) for n in notices] == [("list", 2), ("list", 3)]
    assert all(n.endpoint == gcs_rules.url and "503" in n.reason for n in notices)
    assert all(secret not in n.reason and 0 <= n.delay <= SHORT.ceiling(1) for n in notices)
