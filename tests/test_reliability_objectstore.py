"""ObjectStore under injected faults: bursts, lost responses, slow answers, real conflicts.

Every test talks to the real emulator through the fault proxy and checks both sides: what the
client reports (result, error, ``stats``) and what reached the emulator (the proxy's records).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from faultproxy import FaultProxy
from reliability_fixtures import (
    FAST_RETRY,
    fault_proxy_fixture,  # noqa: F401 - fixtures used by name
    proxy_bucket_fixture,  # noqa: F401
)
from waiting import wait_until

from omniq_console.backend.errors import BackendUnavailableError, ConflictError
from omniq_console.backend.objectstore import ObjectStore, RetryPolicy

KEY = "omniq/tasks/t1.json"


@pytest.fixture
async def store(fault_proxy: FaultProxy, proxy_bucket: str) -> AsyncIterator[ObjectStore]:
    s = ObjectStore(proxy_bucket, endpoint_url=fault_proxy.url, retry=FAST_RETRY)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


Op = Callable[[ObjectStore], Awaitable[object]]
OPS: dict[str, tuple[str, Op]] = {
    # name: (path filter that matches only this operation's requests, operation)
    # Only a write with a precondition is retried: a create-only write of a fresh name.
    "write": ("/upload/", lambda s: s.write(KEY + ".new", b'{"v":2}', if_generation_match=0)),
    "read": ("alt=media", lambda s: s.read(KEY)),
    "list": ("/o?", lambda s: s.list("omniq/tasks/")),
}


@pytest.mark.parametrize("status", [503, 429])
@pytest.mark.parametrize("op_name", sorted(OPS))
async def test_burst_shorter_than_budget_succeeds_and_is_counted(
    store: ObjectStore, fault_proxy: FaultProxy, status: int, op_name: str
) -> None:
    await store.write(KEY, b'{"v":1}')
    path, op = OPS[op_name]
    fault_proxy.reset_records()
    before = store.stats.copy()
    rule = fault_proxy.fail(status, times=FAST_RETRY.attempts - 1, path=path)

    await op(store)

    assert rule.hits == FAST_RETRY.attempts - 1
    delta = store.stats.since(before)
    assert delta.retries == FAST_RETRY.attempts - 1
    assert sum(delta.errors.values()) == FAST_RETRY.attempts - 1
    outcomes = [r.outcome for r in fault_proxy.records]
    assert outcomes == [f"injected-{status}"] * (FAST_RETRY.attempts - 1) + ["forwarded"]


@pytest.mark.parametrize("status", [503, 429, "drop"])
async def test_a_write_without_precondition_is_never_retried(
    store: ObjectStore, fault_proxy: FaultProxy, status: int | str
) -> None:
    """A plain write that may have landed is not sent again: it could overwrite a newer one."""
    await store.write(KEY, b'{"v":1}')
    fault_proxy.reset_records()
    if status == "drop":
        fault_proxy.drop(times=1, after_forward=True, path="/upload/")
    else:
        assert isinstance(status, int)
        fault_proxy.fail(status, times=1, path="/upload/")
    before = store.stats.copy()

    with pytest.raises(BackendUnavailableError, match="not retried") as err:
        await store.write(KEY, b'{"v":2}')

    assert "\n" not in str(err.value) and "if_generation_match" in str(err.value)
    assert len(fault_proxy.write_requests()) == 1
    delta = store.stats.since(before)
    assert delta.count["write"] == 1 and delta.retries == 0
    assert delta.rate_limited == (1 if status == 429 else 0)


@pytest.mark.parametrize("op_name", sorted(OPS))
async def test_burst_longer_than_budget_raises_one_clear_line(
    store: ObjectStore, fault_proxy: FaultProxy, op_name: str
) -> None:
    await store.write(KEY, b'{"v":1}')
    path, op = OPS[op_name]
    fault_proxy.reset_records()
    fault_proxy.fail(503, times=FAST_RETRY.attempts + 2, path=path)

    with pytest.raises(BackendUnavailableError) as err:
        await op(store)

    message = str(err.value)
    assert "\n" not in message
    assert fault_proxy.url in message
    assert f"after {FAST_RETRY.attempts} attempts" in message
    assert "503" in message
    # Bounded: exactly the retry budget reached the wire, not one request more.
    assert len(fault_proxy.records) == FAST_RETRY.attempts
    assert isinstance(err.value, ConnectionError)


async def test_dropped_connections_are_retried(store: ObjectStore, fault_proxy: FaultProxy) -> None:
    await store.write(KEY, b'{"v":1}')
    fault_proxy.reset_records()
    fault_proxy.drop(times=2, path="alt=media")
    got = await store.read(KEY)
    assert got.data == b'{"v":1}'
    # aiohttp itself retries an idempotent request once on a reused keep-alive connection, so
    # the store's counters may see fewer attempts than the wire did; the proxy sees them all.
    assert [r.outcome for r in fault_proxy.records] == ["dropped-before"] * 2 + ["forwarded"]


async def test_dropped_write_connections_are_retried_and_counted(
    store: ObjectStore, fault_proxy: FaultProxy
) -> None:
    fault_proxy.drop(times=2, path="/upload/")
    before = store.stats.copy()
    await store.write(KEY, b'{"v":1}', if_generation_match=0)
    assert (await store.read(KEY)).data == b'{"v":1}'
    # POST is never retried by aiohttp behind our back: every attempt is counted.
    delta = store.stats.since(before)
    assert delta.retries == 2 and delta.count["write"] == 3 and delta.errors["write"] == 2


@pytest.mark.parametrize("precondition", ["create", "compare-and-swap"])
async def test_write_whose_response_is_lost_still_reports_success(
    store: ObjectStore, fault_proxy: FaultProxy, precondition: str
) -> None:
    if precondition == "create":
        expected: int = 0
    else:
        expected = (await store.write(KEY, b'{"v":1}')).generation
    fault_proxy.reset_records()
    # The emulator applies the write, then the client's connection dies before any answer.
    fault_proxy.drop(times=1, after_forward=True, path="/upload/")
    before = store.stats.copy()
    body = b'{"v":2,"owner":"me"}'

    info = await store.write(KEY, body, if_generation_match=expected)

    current = await store.read(KEY)
    assert current.data == body
    assert info.generation == current.generation != expected
    delta = store.stats.since(before)
    assert delta.retries == 1 and delta.conflicts == 0
    uploads = [r.outcome for r in fault_proxy.records if r.kind == "upload"]
    # The retry reached the emulator and lost its precondition: the 412 was settled as ours.
    assert uploads == ["dropped-after", "forwarded"]
    assert [r.status for r in fault_proxy.records if r.kind == "upload"][1] == 412


async def test_compare_and_swap_that_truly_lost_raises_conflict(
    store: ObjectStore, fault_proxy: FaultProxy, proxy_bucket: str
) -> None:
    first = await store.write(KEY, b'{"v":1}')
    other = ObjectStore(proxy_bucket, endpoint_url=fault_proxy.url, retry=FAST_RETRY)
    await other.open()
    try:
        await other.write(KEY, b'{"v":"theirs"}', if_generation_match=first.generation)
    finally:
        await other.close()
    before = store.stats.copy()

    with pytest.raises(ConflictError) as err:
        await store.write(KEY, b'{"v":"mine"}', if_generation_match=first.generation)

    assert err.value.key == KEY and err.value.expected_generation == first.generation
    assert store.stats.since(before).conflicts == 1
    assert (await store.read(KEY)).data == b'{"v":"theirs"}'


async def test_create_that_truly_lost_raises_conflict_even_after_a_lost_response(
    store: ObjectStore, fault_proxy: FaultProxy
) -> None:
    """A lost answer to a request that never landed must not be mistaken for our success."""
    await store.write(KEY, b'{"v":"theirs"}', if_generation_match=0)
    fault_proxy.drop(times=1, after_forward=True, path="/upload/")
    with pytest.raises(ConflictError):
        await store.write(KEY, b'{"v":"mine"}', if_generation_match=0)
    assert (await store.read(KEY)).data == b'{"v":"theirs"}'


async def test_delete_whose_response_is_lost_leaves_the_object_gone(
    store: ObjectStore, fault_proxy: FaultProxy
) -> None:
    info = await store.write(KEY, b"{}")
    fault_proxy.drop(times=1, after_forward=True, method="DELETE")
    # Retried because it carries a precondition (GCS counts only such a delete idempotent).
    # The retry sees 404: the object is gone either way. The bool cannot tell who deleted it.
    await store.delete(KEY, if_generation_match=info.generation)
    assert await store.list("omniq/tasks/") == []


async def test_slow_answer_within_retries_succeeds(
    fault_proxy: FaultProxy, proxy_bucket: str
) -> None:
    policy = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02, request_timeout=0.3)
    store = ObjectStore(proxy_bucket, endpoint_url=fault_proxy.url, retry=policy)
    await store.open()
    try:
        await store.write(KEY, b'{"v":1}')
        fault_proxy.reset_records()
        fault_proxy.delay(1.0, times=1, path="alt=media")
        got = await store.read(KEY)
        assert got.data == b'{"v":1}'
        assert store.stats.retries == 1
    finally:
        await store.close()


async def test_answers_slower_than_the_timeout_fail_clearly_in_bounded_time(
    fault_proxy: FaultProxy, proxy_bucket: str
) -> None:
    policy = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02, request_timeout=0.3)
    store = ObjectStore(proxy_bucket, endpoint_url=fault_proxy.url, retry=policy)
    await store.open()
    try:
        fault_proxy.delay(1.0, times=None)
        started = time.monotonic()
        with pytest.raises(BackendUnavailableError) as err:
            await store.list("omniq/")
        elapsed = time.monotonic() - started
        assert elapsed < policy.attempts * (policy.request_timeout + policy.max_delay) + 1.0
        message = str(err.value)
        assert "\n" not in message and fault_proxy.url in message
        assert "after 3 attempts" in message
        assert store.stats.retries == 2
    finally:
        await store.close()
    # A request whose client gave up is never forwarded late by the proxy: each of the three
    # is recorded once its delay is over, as abandoned.
    await wait_until(
        lambda: len(fault_proxy.records) >= 3, "the proxy to finish the 3 delayed requests"
    )
    assert {r.outcome for r in fault_proxy.records} == {"abandoned"}


async def test_lost_create_is_settled_as_ours_after_further_failures(
    fault_proxy: FaultProxy, proxy_bucket: str
) -> None:
    """The write lands but its answer is lost, the retry meets a 503, the next one a 412:
    the create is still reported as this client's success, not as a conflict."""
    policy = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02, request_timeout=2.0)
    store = ObjectStore(proxy_bucket, endpoint_url=fault_proxy.url, retry=policy)
    await store.open()
    try:
        fault_proxy.drop(times=1, after_forward=True, path="/upload/")
        fault_proxy.fail(503, times=1, path="/upload/")
        info = await store.write(KEY, b'{"claim":"w1"}', if_generation_match=0)
        assert (await store.read(KEY)).generation == info.generation
        assert store.stats.retries == 2 and store.stats.conflicts == 0
    finally:
        await store.close()


@pytest.mark.parametrize("precondition", ["create", "compare-and-swap"])
async def test_two_writers_of_identical_bytes_cannot_both_win(
    store: ObjectStore, fault_proxy: FaultProxy, proxy_bucket: str, precondition: str
) -> None:
    """Exactly one conditional write wins, even when two writers send the same bytes (two
    consoles pausing one schedule from the same version write byte-identical bodies).

    A 412 may only be settled as "ours" when this very client's earlier attempt landed."""
    expected = 0 if precondition == "create" else (await store.write(KEY, b'{"v":1}')).generation
    other = ObjectStore(proxy_bucket, endpoint_url=fault_proxy.url, retry=FAST_RETRY)
    await other.open()
    try:
        body = b'{"status":"paused","v":2}'
        first = await other.write(KEY, body, if_generation_match=expected)
        with pytest.raises(ConflictError):
            await store.write(KEY, body, if_generation_match=expected)
        assert (await store.read(KEY)).generation == first.generation
    finally:
        await other.close()
