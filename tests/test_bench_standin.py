"""The benchmarks' GCS/Pub/Sub stand-in: listings in key order across its key blocks,
Pub/Sub's redelivery of messages not acknowledged within the ack deadline, and messages of
GCS's size and shape."""

from __future__ import annotations

import asyncio
import base64
import json
import random

from waiting import wait_until

from benchmarks.seed import Mix
from benchmarks.standin import Bucket, SortedKeys, change, fill
from omniq_console.backend.layout import Layout
from omniq_console.monitor.sources import pubsub


def test_sorted_keys_take_matches_a_sorted_list_through_inserts_and_deletes() -> None:
    rng = random.Random(5)
    reference = sorted({f"{rng.randrange(10**6):06d}" for _ in range(3000)})
    keys = SortedKeys(reference, load=16)
    for _ in range(2000):
        key = f"{rng.randrange(10**6):06d}"
        if key in reference:
            reference.remove(key)
            keys.remove(key)
        else:
            reference.append(key)
            reference.sort()
            keys.add(key)
    assert len(keys) == len(reference)
    for lo, hi, limit in [("", "\U0010ffff", 10**9), ("2", "5", 100), ("31", "311", 7),
                          ("999999", "\U0010ffff", 3), ("4", "4", 10)]:  # fmt: skip
        expected = [k for k in reference if lo <= k < hi][:limit]
        assert keys.take(lo, hi, limit) == expected


def test_pages_walk_every_key_of_a_prefix_once_in_order() -> None:
    bucket = Bucket("b")
    layout = Layout("omniq/")
    fill(bucket, Mix.for_tasks(300), layout)
    listed: list[str] = []
    token: str | None = None
    while True:
        page = json.loads(bucket.page(layout.tasks, None, None, token, 100))
        listed.extend(item["name"] for item in page["items"])
        token = page.get("nextPageToken")
        if token is None:
            break
    assert listed == sorted(k for k in bucket.objects if k.startswith(layout.tasks))
    assert len(listed) == 300


async def test_unacknowledged_messages_are_delivered_again_after_the_ack_deadline() -> None:
    bucket = Bucket("b", ack_deadline=0.2)
    layout = Layout("omniq/")
    tasks = fill(bucket, Mix.for_tasks(200), layout)
    bucket.notify = True
    await change(bucket, tasks, layout, 0.05)
    published = bucket.published
    first = bucket.deliver(10_000)
    assert len(first) == published
    acked = [m["ackId"] for m in first[: published // 2]]
    bucket.acknowledge(acked)
    assert bucket.deliver(10_000) == []  # within the deadline: nothing again
    again = await wait_until(lambda: bucket.deliver(10_000), "the redelivery", within=10)
    ids = [m["message"]["messageId"] for m in again]
    assert ids == [m["message"]["messageId"] for m in first[published // 2 :]]
    assert not {m["ackId"] for m in again} & {m["ackId"] for m in first}  # fresh ack ids
    assert bucket.redelivered == len(again)
    bucket.acknowledge([m["ackId"] for m in again])
    assert bucket.next_expiry() is None  # nothing awaits an ack: nothing can come again
    assert bucket.deliver(10_000) == []


async def test_a_change_gives_the_loop_back_between_slices() -> None:
    bucket = Bucket("b")
    layout = Layout("omniq/")
    tasks = fill(bucket, Mix.for_tasks(5_000), layout)
    bucket.notify = True
    loop = asyncio.get_running_loop()
    turns = 0
    handle: asyncio.Handle | None = None

    def probe() -> None:  # runs once per turn of the loop
        nonlocal turns, handle
        turns += 1
        handle = loop.call_soon(probe)

    probe()
    changed = await change(bucket, tasks, layout, 0.2)
    assert handle is not None
    handle.cancel()
    assert changed == 1000
    # 1,000 tasks changed, 200 a slice: the probe ran between slices.
    assert turns >= 5


async def test_an_empty_pull_that_asks_to_return_at_once_is_not_held() -> None:
    """The console's feed pulls with ``returnImmediately`` (and waits between empty pulls
    itself); a stand-in that held such a pull until the next publish measured a
    write-to-screen the feed does not have on GCP."""
    from aiohttp import ClientSession, web

    from benchmarks.standin import PULL_HOLD_S, make_app

    bucket = Bucket("b")
    runner = web.AppRunner(make_app(bucket, [], Layout("omniq/")))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}/v1/projects/p/subscriptions/s:pull"
    try:
        async with ClientSession() as session:
            loop = asyncio.get_running_loop()
            started = loop.time()
            async with session.post(url, json={"maxMessages": 10, "returnImmediately": True}) as r:
                assert (await r.json()) == {"receivedMessages": []}
            assert loop.time() - started < PULL_HOLD_S / 2
            started = loop.time()
            async with session.post(url, json={"maxMessages": 10}) as r:
                assert (await r.json()) == {"receivedMessages": []}
            assert loop.time() - started >= PULL_HOLD_S * 0.9  # held, as Pub/Sub holds it
    finally:
        await runner.cleanup()


def test_a_notification_carries_the_whole_resource_and_a_long_ack_id_as_gcp_sends() -> None:
    bucket = Bucket("b")
    bucket.notify = True
    metadata = {"omniq_index": "1", "status": "pending"}
    generation = bucket.put("omniq/tasks/t.json", b"{}", metadata)
    (delivered,) = bucket.deliver(10)
    resource = json.loads(base64.b64decode(delivered["message"]["data"]))
    assert {"id", "selfLink", "mediaLink", "md5Hash", "crc32c", "etag", "timeCreated",
            "storageClass", "metageneration", "contentType"} <= set(resource)  # fmt: skip
    assert len(delivered["ackId"]) >= 150
    # The feed reads it as it reads GCS's.
    (received,) = pubsub.parse_pull(json.dumps({"receivedMessages": [delivered]}).encode())
    change_ = pubsub.parse_message(received.message)
    assert change_ == pubsub.Change(
        "omniq/tasks/t.json", generation, metadata, False, received.message.published
    )
