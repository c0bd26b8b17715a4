"""What GCS publishes to Pub/Sub for each object mutation, as its documentation describes it
("Pub/Sub notifications for Cloud Storage"), built from the mutations a ``GCSRulesProxy``
forwards (``proxy.notifier = GCSNotifier(...)``) and published into the real Pub/Sub emulator.

fake-gcs-server's own notifications differ from GCS's (no ``notificationConfig``, no
``overwroteGeneration``, numbers where GCS sends strings, no ARCHIVE, no ``NONE`` payload):
this model is what the monitor's feed is tested against.

- A create: ``OBJECT_FINALIZE`` of the new generation.
- An overwrite: ``OBJECT_FINALIZE`` of the new generation with ``overwroteGeneration``, and
  ``OBJECT_DELETE`` (``OBJECT_ARCHIVE`` when ``versioned``) of the old one with
  ``overwrittenByGeneration``; the object still exists.
- A delete: ``OBJECT_DELETE`` (``OBJECT_ARCHIVE`` when ``versioned``) of the deleted generation.
- A metadata patch: ``OBJECT_METADATA_UPDATE``.

Attributes: ``bucketId``, ``objectId``, ``objectGeneration``, ``eventType``, ``eventTime``,
``notificationConfig``, ``payloadFormat`` (and the two above where they apply). With
``payload="JSON_API_V1"`` the data is the object resource: ``generation``,
``metageneration`` and ``size`` as strings, ``metadata`` absent when empty. With ``"NONE"``
there is no data.

Messages are held until ``flush()``, which publishes them in a random order, in several
publishes (so an overwrite's two halves land in different pulls), with duplicates of messages
published before (at-least-once delivery). ``published`` keeps every message in the order of
the mutations, for tests that replay a history.
"""

from __future__ import annotations

import base64
import json
import random
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from omniq_console.demo.emulator import PubSubEmulator

Payload = Literal["JSON_API_V1", "NONE"]
Message = dict[str, Any]
_STRINGS = ("generation", "metageneration", "size")


def object_resource(raw: Mapping[str, Any]) -> dict[str, Any]:
    """An object resource in GCS's JSON API shape (numbers as strings, no empty metadata)."""
    out = {k: v for k, v in raw.items() if v is not None}
    for name in _STRINGS:
        if name in out:
            out[name] = str(out[name])
    out.setdefault("kind", "storage#object")
    out.setdefault("metageneration", "1")
    if not out.get("metadata"):
        out.pop("metadata", None)
    return out


class GCSNotifier:
    """Builds GCS's notifications for the mutations it is told of; publishes on ``flush``."""

    def __init__(
        self,
        pubsub: PubSubEmulator,
        topic: str,
        *,
        versioned: bool = False,
        payload: Payload = "JSON_API_V1",
        seed: int = 0,
        duplicates: float = 0.2,
        config_id: str = "1",
    ) -> None:
        self.pubsub = pubsub
        self.topic = topic
        self.versioned = versioned
        self.payload = payload
        self.duplicates = duplicates
        self.config_id = config_id
        self.random = random.Random(seed)
        self._lock = threading.Lock()
        self._held: list[Message] = []
        self.published: list[Message] = []
        """Every message built so far, in mutation order (duplicates not included)."""

    # -- what the proxy reports ---------------------------------------------------------------

    def mutated(
        self,
        bucket: str,
        name: str,
        before: Mapping[str, Any] | None,
        after: Mapping[str, Any] | None,
        *,
        metadata_only: bool = False,
    ) -> None:
        """``name`` went from ``before`` to ``after`` (object resources; None: absent)."""
        messages: list[Message] = []
        gone = "OBJECT_ARCHIVE" if self.versioned else "OBJECT_DELETE"
        if after is None:
            if before is not None:
                messages.append(self._message(bucket, name, gone, before))
        elif metadata_only:
            messages.append(self._message(bucket, name, "OBJECT_METADATA_UPDATE", after))
        elif before is None:
            messages.append(self._message(bucket, name, "OBJECT_FINALIZE", after))
        else:
            new, old = str(after["generation"]), str(before["generation"])
            messages.append(
                self._message(bucket, name, "OBJECT_FINALIZE", after, overwroteGeneration=old)
            )
            messages.append(self._message(bucket, name, gone, before, overwrittenByGeneration=new))
        with self._lock:
            self._held += messages
            self.published += messages

    def _message(
        self, bucket: str, name: str, event: str, resource: Mapping[str, Any], **extra: str
    ) -> Message:
        body = object_resource(resource)
        attributes = {
            "bucketId": bucket,
            "objectId": name,
            "objectGeneration": body["generation"],
            "eventType": event,
            "eventTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "notificationConfig": f"projects/_/buckets/{bucket}/notificationConfigs/"
            f"{self.config_id}",
            "payloadFormat": self.payload,
            **extra,
        }
        message: Message = {"attributes": attributes}
        if self.payload == "JSON_API_V1":
            data = json.dumps(body, separators=(",", ":")).encode()
            message["data"] = base64.b64encode(data).decode()
        return message

    # -- delivery -----------------------------------------------------------------------------

    @property
    def held(self) -> int:
        with self._lock:
            return len(self._held)

    def take_held(self) -> list[Message]:
        """The messages not yet published (and forget them)."""
        with self._lock:
            out, self._held = self._held, []
        return out

    def shuffled(
        self, messages: Sequence[Message], earlier: Sequence[Message] = ()
    ) -> list[Message]:
        """``messages`` in a random order, plus duplicates (at least once) of some of them
        and of ``earlier`` ones (redeliveries of what was published before)."""
        out = list(messages)
        pool = [*messages, *earlier]
        if pool:
            count = int(len(messages) * self.duplicates) + 1
            out += [self.random.choice(pool) for _ in range(count)]
        self.random.shuffle(out)
        return out

    def publish(self, messages: Sequence[Message]) -> int:
        """Publish ``messages`` as they are (blocking: call from a thread in async code)."""
        if messages:
            self.pubsub.publish(self.topic, list(messages))
        return len(messages)

    def flush(self, parts: int = 3) -> list[int]:
        """Publish what is held, shuffled with duplicates, in ``parts`` publishes; returns the
        size of each (wait for that many messages per part before the next, to split pulls)."""
        with self._lock:
            earlier = self.published[: len(self.published) - len(self._held)]
        messages = self.shuffled(self.take_held(), earlier)
        size = max(1, -(-len(messages) // parts))
        return [self.publish(messages[i : i + size]) for i in range(0, len(messages), size)]


def is_overwrite_half(message: Message) -> bool:
    """The old half of an overwrite (DELETE or ARCHIVE naming ``overwrittenByGeneration``)."""
    return "overwrittenByGeneration" in message["attributes"]


def size_of(message: Message) -> int:
    """The bytes a subscriber receives for one notification: data plus attributes."""
    data = base64.b64decode(message.get("data", "")) if message.get("data") else b""
    attrs = message["attributes"]
    return len(data) + sum(len(k) + len(str(v)) for k, v in attrs.items())
