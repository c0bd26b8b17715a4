"""A pull's messages decoded into changes: typed attributes, what is ignored and why."""

from __future__ import annotations

import base64
import json
from typing import Any

from omniq_console.monitor.sources import pubsub


def _message(n: int, event: str, key: str, generation: int, **attrs: str) -> dict[str, Any]:
    resource = {"name": key, "generation": str(generation), "metadata": {"status": "pending"}}
    return {
        "ackId": f"a-{n}",
        "message": {
            "data": base64.b64encode(json.dumps(resource).encode()).decode(),
            "attributes": {"eventType": event, "objectId": key,
                           "objectGeneration": str(generation), "payloadFormat": "JSON_API_V1",
                           "notificationConfig": "projects/_/buckets/b/notificationConfigs/1",
                           **attrs},
            "messageId": str(n), "publishTime": "2026-12-07T19:00:00Z",
        },
    }  # fmt: skip


def test_a_pull_becomes_the_changes_of_this_bucket_only() -> None:
    body = json.dumps({"receivedMessages": [
        _message(1, "OBJECT_FINALIZE", "p/tasks/a.json", 5, bucketId="b"),
        _message(2, "OBJECT_FINALIZE", "p/tasks/x.json", 6, bucketId="other"),
        _message(3, "OBJECT_DELETE", "p/tasks/a.json", 4, bucketId="b",
                 overwrittenByGeneration="5"),
        _message(4, "OBJECT_DELETE", "p/tasks/c.json", 7, bucketId="b"),
        _message(5, "OBJECT_FINALIZE", "p/tasks/d.json", 8),  # no bucketId: taken as ours
        {"ackId": "a-6", "message": {"data": "", "publishTime": "2026-12-07T19:00:00Z"}},
        _message(7, "OBJECT_FINALIZE", "p/tasks/e.json", 9, bucketId="b",
                 payloadFormat="NONE"),
    ]}).encode()  # fmt: skip
    pulled = pubsub.parse_pull(body)
    assert [p.ack_id for p in pulled] == [f"a-{n}" for n in range(1, 8)]
    feed = pubsub.PubSubFeed("projects/p/subscriptions/s", bucket="b")
    for p in pulled:
        feed._buffer_message(p.message)
    changes = feed.take().changes
    at = pulled[0].message.published
    assert changes == [
        pubsub.Change("p/tasks/a.json", 5, {"status": "pending"}, False, at),
        pubsub.Change("p/tasks/c.json", 7, None, True, at),
        pubsub.Change("p/tasks/d.json", 8, {"status": "pending"}, False, at),
        pubsub.Change("p/tasks/e.json", 9, None, False, at),
    ]
    # Another bucket's message, the old half of an overwrite, one without attributes.
    assert feed.ignored == 3
