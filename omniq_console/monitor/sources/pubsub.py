"""The change feed: GCS bucket notifications (``JSON_API_V1``) pulled from a Pub/Sub
subscription with ``gcloud-aio-pubsub`` (async, on aiohttp like the rest of the monitor, and
it honours ``PUBSUB_EMULATOR_HOST``).

A background task pulls continuously and buffers what arrives; the monitor's poll takes the
buffer, applies every message to its model by generation, and only then acknowledges them
(``ack``): a message the monitor never applied is redelivered. Each message names one object:
``eventType`` (``OBJECT_FINALIZE``, ``OBJECT_METADATA_UPDATE``, ``OBJECT_DELETE``),
``objectId``, ``objectGeneration``, and the object resource (metadata included) as data.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import aiohttp

from ...checks import describe_exception

if TYPE_CHECKING:
    # Imported by ``start()``: gcloud-aio-pubsub pulls prometheus_client (~85 ms), which
    # listing mode never needs.
    from gcloud.aio.pubsub import SubscriberClient

log = logging.getLogger(__name__)

PULL_MAX = 1000
PULL_TIMEOUT_S = 5
"""A pull waits for messages up to this long (Pub/Sub answers as soon as it has some); short,
so that a deleted subscription is noticed within seconds."""
FATAL_STATUSES = frozenset({400, 401, 403, 404})
"""A subscription that is gone or refused: retrying will not help, fall back at once."""
ERRORS_TO_FALL_BACK = 3
"""Transient pull failures in a row after which the feed is declared dead."""


class Change(NamedTuple):
    """One notification: ``metadata`` None for a delete."""

    key: str
    generation: int
    metadata: dict[str, str] | None
    updated: str | None
    ack_id: str


class FeedMessageError(ValueError):
    """A message that is not a GCS notification for this bucket."""


def parse_message(attributes: dict[str, Any] | None, data: bytes | None, ack_id: str) -> Change:
    attrs = attributes or {}
    event = attrs.get("eventType", "")
    key = attrs.get("objectId")
    generation = attrs.get("objectGeneration")
    if not key or not generation:
        raise FeedMessageError("not a GCS notification: objectId/objectGeneration missing")
    if event == "OBJECT_DELETE":
        return Change(key, int(generation), None, None, ack_id)
    if event not in ("OBJECT_FINALIZE", "OBJECT_METADATA_UPDATE"):
        raise FeedMessageError(f"event type {event!r} is not a change")
    try:
        resource = json.loads(data or b"{}")
    except ValueError as exc:
        raise FeedMessageError("notification data is not JSON") from exc
    metadata = resource.get("metadata") or {}
    if not isinstance(metadata, dict):
        metadata = {}
    return Change(
        key,
        int(resource.get("generation") or generation),
        {str(k): str(v) for k, v in metadata.items()},
        resource.get("updated"),
        ack_id,
    )


class PubSubFeed:
    """Pulls ``subscription`` (``projects/P/subscriptions/S``) in the background.

    ``error`` says why the feed is dead (None while it is live); ``on_message`` is called
    (in the loop) when a pull returned messages, so the monitor can apply them at once.
    """

    def __init__(
        self,
        subscription: str,
        *,
        bucket: str,
        on_message: Callable[[], None] | None = None,
        api_root: str | None = None,
    ) -> None:
        parts = subscription.split("/")
        if len(parts) != 4 or parts[0] != "projects" or parts[2] != "subscriptions":
            raise ValueError(
                "subscription must be projects/<project>/subscriptions/<name>, "
                f"not {subscription!r}"
            )
        self.subscription = subscription
        self.bucket = bucket
        self._on_message = on_message
        self._api_root = api_root
        self._client: SubscriberClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._buffer: list[Change] = []
        self.error: str | None = None
        self.errors_in_row = 0
        self.received = 0
        self.received_bytes = 0
        self.pulls = 0
        self.acks = 0
        self.ack_calls = 0
        self.ignored = 0
        self.last_message_at: float | None = None
        """Wall-clock time (POSIX seconds) a message last arrived."""
        self.started_at = time.time()
        self._progress: asyncio.Condition | None = None

    @property
    def live(self) -> bool:
        return self.error is None and self._task is not None and not self._task.done()

    async def start(self) -> None:
        from gcloud.aio.pubsub import SubscriberClient

        self._progress = asyncio.Condition()
        self._client = SubscriberClient(api_root=self._api_root)
        self._task = asyncio.create_task(self._pull_forever(), name="omniq-pubsub-pull")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def wait_until(self, predicate: Callable[[PubSubFeed], bool]) -> None:
        """Wait until ``predicate(self)`` holds, checked after every pull: for callers that
        need "the feed has delivered N messages" without polling. ``RuntimeError`` (with the
        reason) when the feed dies first."""
        if self._progress is None:
            raise RuntimeError("the feed is not started")
        async with self._progress:
            await self._progress.wait_for(lambda: predicate(self) or not self._pulling())
        if not predicate(self):
            raise RuntimeError(f"the change feed stopped: {self.error or 'closed'}")

    def _pulling(self) -> bool:
        return self._task is not None and not self._task.done() and self.error is None

    async def _notify(self) -> None:
        if self._progress is not None:
            async with self._progress:
                self._progress.notify_all()

    def take(self) -> list[Change]:
        """The messages buffered since the last call (acknowledge them once applied)."""
        out, self._buffer = self._buffer, []
        return out

    async def ack(self, ack_ids: list[str]) -> None:
        """Acknowledge applied messages (a failure only means Pub/Sub redelivers them, which
        the generation rules make harmless)."""
        if not ack_ids or self._client is None:
            return
        for start in range(0, len(ack_ids), PULL_MAX):
            try:
                part = ack_ids[start : start + PULL_MAX]
                self.ack_calls += 1
                await self._client.acknowledge(self.subscription, part)
                self.acks += len(part)
            except Exception as exc:
                log.warning("acknowledging Pub/Sub messages failed: %s", describe_exception(exc))

    def fail(self, reason: str) -> None:
        """Declare the feed dead (the monitor falls back to listing)."""
        if self.error is None:
            self.error = reason[:300]
        if self._task is not None:
            self._task.cancel()

    async def _pull_forever(self) -> None:
        try:
            await self._pull_loop()
        finally:
            await self._notify()

    async def _pull_loop(self) -> None:
        assert self._client is not None
        while True:
            try:
                messages = await self._client.pull(
                    self.subscription, PULL_MAX, timeout=PULL_TIMEOUT_S
                )
            except asyncio.CancelledError:
                raise
            except TimeoutError:
                self.pulls += 1
                continue  # nothing arrived within the pull's wait: a quiet bucket
            except aiohttp.ClientResponseError as exc:
                self.pulls += 1
                if exc.status in FATAL_STATUSES:
                    self.error = (
                        f"Pub/Sub refused {self.subscription}: HTTP {exc.status} {exc.message}"[
                            :300
                        ]
                    )
                    return
                if self._count_error(exc):
                    return
                await asyncio.sleep(min(5.0, 0.5 * 2**self.errors_in_row))
                continue
            except Exception as exc:
                self.pulls += 1
                if self._count_error(exc):
                    return
                await asyncio.sleep(min(5.0, 0.5 * 2**self.errors_in_row))
                continue
            self.pulls += 1
            self.errors_in_row = 0
            if not messages:
                continue
            self.last_message_at = time.time()
            self.received += len(messages)
            self.received_bytes += sum(len(m.data or b"") for m in messages)
            bad: list[str] = []
            for m in messages:
                try:
                    change = parse_message(m.attributes, m.data, m.ack_id)
                except (FeedMessageError, ValueError):
                    bad.append(m.ack_id)
                    continue
                if m.attributes and m.attributes.get("bucketId") not in (None, self.bucket):
                    bad.append(m.ack_id)
                    continue
                self._buffer.append(change)
            if bad:
                # Not ours to apply (another bucket, a test message): acknowledge and move on.
                self.ignored += len(bad)
                await self.ack(bad)
            if self._on_message is not None:
                self._on_message()
            await self._notify()

    def _count_error(self, exc: BaseException) -> bool:
        self.errors_in_row += 1
        if self.errors_in_row >= ERRORS_TO_FALL_BACK:
            what = f"{type(exc).__name__}: {describe_exception(exc)}"
            self.error = f"Pub/Sub pull failed {self.errors_in_row} times: {what}"[:300]
            return True
        return False
