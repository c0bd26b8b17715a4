"""The feed's pull loop against a small Pub/Sub REST server of the test's own: what a pull's
messages become, what is acknowledged and in how many calls, and the pause after an empty
pull, which is each feed's own (``quiet_pull_s``)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from omniq_console.demo.emulator import free_port
from omniq_console.monitor.sources import pubsub
from omniq_console.monitor.sources.pubsub import Change, PubSubFeed

WAIT_S = 20.0


@dataclass
class Server:
    """Answers ``:pull`` with the queued answers, then with nothing; records acknowledgements."""

    root: str
    answers: list[list[dict[str, Any]]] = field(default_factory=list)
    pulls: dict[str, int] = field(default_factory=dict)
    acks: list[list[str]] = field(default_factory=list)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    port = free_port()
    state = Server(f"http://127.0.0.1:{port}/v1")

    async def pull(request: web.Request) -> web.Response:
        sub = request.match_info["sub"]
        state.pulls[sub] = state.pulls.get(sub, 0) + 1
        asked = await request.json()
        assert asked == {"maxMessages": pubsub.PULL_MAX, "returnImmediately": True}
        out = state.answers.pop(0) if state.answers and sub == "main" else []
        return web.json_response({"receivedMessages": out} if out else {})

    async def acknowledge(request: web.Request) -> web.Response:
        state.acks.append((await request.json())["ackIds"])
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/v1/projects/p/subscriptions/{sub}:pull", pull)
    app.router.add_post("/v1/projects/p/subscriptions/{sub}:acknowledge", acknowledge)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield state
    finally:
        await runner.cleanup()


def _message(n: int, key: str, generation: int, data: str | None, **attrs: str) -> dict[str, Any]:
    message: dict[str, Any] = {
        "attributes": {"eventType": "OBJECT_FINALIZE", "objectId": key,
                       "objectGeneration": str(generation), "payloadFormat": "JSON_API_V1",
                       "bucketId": "b", **attrs},
        "messageId": str(n), "publishTime": "2026-12-07T19:00:00Z",
    }  # fmt: skip
    if data is not None:
        message["data"] = data
    return {"ackId": f"a-{n}", "message": message}


def _resource(key: str, generation: int) -> str:
    body = {"name": key, "generation": str(generation), "metadata": {"status": "pending"}}
    return base64.b64encode(json.dumps(body).encode()).decode()


async def _started(server: Server, name: str, quiet: float) -> PubSubFeed:
    feed = PubSubFeed(
        f"projects/p/subscriptions/{name}", bucket="b", api_root=server.root, quiet_pull_s=quiet
    )
    await feed.start()
    return feed


async def test_a_pull_is_buffered_message_by_message_and_acknowledged_in_one_call(
    server: Server,
) -> None:
    answer = [
        _message(1, "p/tasks/a.json", 5, _resource("p/tasks/a.json", 5)),
        # Its data is not base64: this message alone is ignored, not the whole pull.
        _message(2, "p/tasks/b.json", 6, "%%% not base64 %%%"),
        # The old half of an overwrite and another bucket's: their data is never read.
        _message(
            3, "p/tasks/a.json", 4, "%%%", eventType="OBJECT_DELETE", overwrittenByGeneration="5"
        ),
        _message(4, "p/tasks/x.json", 7, "%%%", bucketId="other"),
        _message(5, "p/tasks/c.json", 8, None, eventType="OBJECT_DELETE"),
    ]
    server.answers.append(answer)
    feed = await _started(server, "main", quiet=0.01)
    try:
        async with asyncio.timeout(WAIT_S):
            await feed.wait_until(lambda f: f.received >= 5 and f.acks >= 5)
        batch = feed.take()
    finally:
        await feed.close()
    at = batch.changes[0].published
    assert batch.changes == [
        Change("p/tasks/a.json", 5, {"status": "pending"}, False, at),
        Change("p/tasks/c.json", 8, None, True, at),
    ]
    assert feed.ignored == 3 and feed.error is None and feed.errors_in_row == 0
    assert server.acks == [[f"a-{n}" for n in range(1, 6)]]
    assert feed.ack_calls == 1
    # Counted from the base64 text, never decoded for it.
    assert feed.received_bytes == sum(len(m["message"].get("data", "")) for m in answer) * 3 // 4


async def test_the_pause_after_an_empty_pull_is_each_feeds_own(server: Server) -> None:
    quick = await _started(server, "quick", quiet=0.01)
    slow = await _started(server, "slow", quiet=60.0)
    try:
        async with asyncio.timeout(WAIT_S):
            await quick.wait_until(lambda f: f.pulls >= 5)
            await slow.wait_until(lambda f: f.pulls >= 1)
        assert server.pulls["slow"] == 1  # still in its minute's pause
        assert slow.live and quick.live
    finally:
        await quick.close()
        await slow.close()
    for bad in (-1.0, float("nan"), "1"):
        with pytest.raises(ValueError, match="quiet_pull_s"):
            PubSubFeed("projects/p/subscriptions/s", bucket="b", quiet_pull_s=bad)  # type: ignore[arg-type]
