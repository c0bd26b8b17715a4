"""The change feed: GCS bucket notifications pulled from a Pub/Sub subscription with
``gcloud-aio-pubsub`` (async, on aiohttp like the rest of the monitor, and it honours
``PUBSUB_EMULATOR_HOST``).

What GCS publishes (its "Pub/Sub notifications for Cloud Storage" page), and what the feed
makes of it:

- ``OBJECT_FINALIZE`` (a create, or the new generation of an overwrite) and
  ``OBJECT_METADATA_UPDATE``: the object at ``objectGeneration``; with ``payloadFormat``
  ``JSON_API_V1`` the data is the object resource (``metadata`` absent when empty), with
  ``NONE`` there is no data and the monitor reads what it needs (``Change.metadata`` None).
- ``OBJECT_DELETE`` (``OBJECT_ARCHIVE`` when the bucket keeps versions): a delete, unless it
  names ``overwrittenByGeneration``: that is the old half of an overwrite, the object still
  exists and the ``OBJECT_FINALIZE`` of the other half carries the change. Pub/Sub does not
  order the two halves, so such a message is acknowledged and ignored.

Delivery is at least once and in no order: the monitor's model applies changes by generation
(``model.py``), so duplicates and reordering change nothing, and a message is acknowledged as
soon as it is buffered. The buffer is bounded (``BUFFER_MAX``): past it the feed drops what it
pulls and asks for a full listing instead (``Batch.relist``). While the monitor is paused the
feed stops pulling (the subscription keeps the messages). Messages published before the first
listing began (``listing_began``, with ``BACKLOG_MARGIN_S`` for clocks) describe what that
listing already shows: they are dropped, so an old subscription's backlog cannot bring a
deleted task back.

``topic`` mode: the feed creates its own subscription (``subscription_name``) with an
expiration policy and deletes it on ``close()``, so two consoles never share one (a shared
subscription splits its messages between its clients: each sees about half the changes).
``MissedChanges`` is the reconcile's test for that case.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import re
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, NamedTuple

import aiohttp
import msgspec

from ...backend.objectstore import ObjectInfo
from ...backend.storeapi import ObjectStoreAPI
from ...checks import check_seconds, describe_exception
from ...gathering import gather
from ..model import BucketModel
from ..records import Decoder
from .listing import SortedRuns, apply_listing

if TYPE_CHECKING:
    # Imported by ``start()``: gcloud-aio-pubsub pulls prometheus_client (~85 ms), which
    # listing mode never needs.
    from gcloud.aio.pubsub import SubscriberClient

log = logging.getLogger(__name__)

PULL_MAX = 1000
PULL_TIMEOUT_S = 10.0
"""A pull's read timeout. Pulls return at once (``returnImmediately``): a pull that Pub/Sub
would hold while the client gives up on it keeps the messages it is handed meanwhile for a
whole ack deadline (seen on the emulator: redelivered to the next abandoned pull, again and
again). So a time-out is an error, reported, never taken for a quiet bucket."""
DECODE_SLICE = 250
"""Messages decoded between two yields to the event loop."""
QUIET_PULL_S = 1.0
"""After an empty pull, the next one waits this long by default (``quiet_pull_s``): about
86,400 small requests a day."""
FATAL_STATUSES = frozenset({400, 401, 403, 404})
"""A subscription that is gone or refused: retrying will not help, fall back at once."""
ERRORS_TO_FALL_BACK = 3
"""Transient pull failures in a row after which the feed is declared dead."""
BUFFER_MAX = 50_000
"""Changes buffered between two polls at most; past it the monitor re-lists instead."""
BACKLOG_MARGIN_S = 2.0
"""A message published this long before the first listing began is still applied (clocks of
the machine and of Pub/Sub differ a little); older ones are the listing's already."""
SUBSCRIPTION_TTL_S = 86_400
"""A console's own subscription expires after this long without a client (Pub/Sub's least
expiration policy is one day), so a console that dies leaves nothing behind for long."""
SUBSCRIPTION_RETENTION_S = 600
"""Unacknowledged messages a console's own subscription keeps (a paused console catches up)."""
ACK_DEADLINE_S = 60
CLOSE_TIMEOUT_S = 5.0

_CHANGES = frozenset({"OBJECT_FINALIZE", "OBJECT_METADATA_UPDATE"})
_DELETES = frozenset({"OBJECT_DELETE", "OBJECT_ARCHIVE"})
_SUBSCRIPTION_RE = re.compile(r"^projects/[^/\s]+/subscriptions/[^/\s]+$")
_TOPIC_RE = re.compile(r"^projects/[^/\s]+/topics/[^/\s]+$")
_OWN_FEEDS = itertools.count(1)
_EPOCH = datetime.fromtimestamp(0, UTC)


class Attributes(msgspec.Struct, frozen=True, rename="camel"):
    """The attributes of a GCS notification the feed reads (Pub/Sub attributes are strings;
    one that is absent is empty here, and the others GCS sends are skipped): decoded into
    fields, not a dict per message."""

    event_type: str = ""
    object_id: str = ""
    object_generation: str = ""
    payload_format: str = ""
    bucket_id: str = ""
    overwritten_by_generation: str = ""


_NO_ATTRIBUTES = Attributes()


_NO_DATA = msgspec.Raw(b'""')


class Message(msgspec.Struct, rename="camel"):
    """One message of a pull, as decoded from the pull's JSON in one typed pass.

    ``data`` is the message's base64 text as it came (a JSON string, quotes included): it is
    decoded only for a change that needs the object resource, never for the old half of an
    overwrite or a delete (about half of a fleet's messages)."""

    data: msgspec.Raw = _NO_DATA
    attributes: Attributes | None = None
    publish_time: datetime = _EPOCH

    @property
    def published(self) -> float:
        """Pub/Sub's publish time (POSIX seconds)."""
        return self.publish_time.timestamp()


class Received(msgspec.Struct, rename="camel"):
    """A message and the id that acknowledges it."""

    ack_id: str
    message: Message


class _PullAnswer(msgspec.Struct, rename="camel"):
    received_messages: list[Received] = []


class _Resource(msgspec.Struct):
    """What the feed reads of an object resource (GCS sends numbers as strings)."""

    generation: int | str | None = None
    metadata: dict[str, str] | None = None


_PULL_DECODER = msgspec.json.Decoder(_PullAnswer)
_DATA_DECODER = msgspec.json.Decoder(bytes)
_RESOURCE_DECODER = msgspec.json.Decoder(_Resource)
_ACK_ENCODER = msgspec.json.Encoder()
_PULL_REQUEST = json.dumps({"maxMessages": PULL_MAX, "returnImmediately": True}).encode()


def parse_pull(body: bytes) -> list[Received]:
    """The messages of a ``:pull`` answer (``FeedMessageError`` if it is not one), decoded
    into typed structs in one pass: no dict per message, data left as base64 text."""
    try:
        return _PULL_DECODER.decode(body or b"{}").received_messages
    except msgspec.DecodeError as exc:
        raise FeedMessageError(f"not a Pub/Sub pull answer: {exc}") from exc


class Change(NamedTuple):
    """One notification that changes the model.

    ``deleted``: the generation is gone. Otherwise ``metadata`` is the object's custom
    metadata, or None when the message carried no payload (``payloadFormat`` ``NONE``).
    ``published``: Pub/Sub's publish time (POSIX seconds).
    """

    key: str
    generation: int
    metadata: dict[str, str] | None
    deleted: bool
    published: float


class Batch(NamedTuple):
    """What the monitor takes from the feed at a poll."""

    changes: list[Change]
    relist: bool
    """The buffer overflowed since the last poll: changes were dropped, list everything."""


class FeedMessageError(ValueError):
    """A message that is not a GCS notification for this bucket."""


def parse_message(message: Message) -> Change | None:
    """The change a GCS notification carries; None for one that changes nothing (the old
    half of an overwrite). ``FeedMessageError`` for anything that is not a notification."""
    attrs = message.attributes or _NO_ATTRIBUTES
    key, generation = attrs.object_id, attrs.object_generation
    if not key or not generation:
        raise FeedMessageError("not a GCS notification: objectId/objectGeneration missing")
    event = attrs.event_type
    if event in _DELETES:
        if attrs.overwritten_by_generation:
            return None  # the object lives on at overwrittenByGeneration: its FINALIZE says so
        return Change(key, int(generation), None, True, message.published)
    if event not in _CHANGES:
        raise FeedMessageError(f"event type {event!r} is not a change")
    if attrs.payload_format == "NONE" or message.data == _NO_DATA:
        return Change(key, int(generation), None, False, message.published)
    try:
        resource = _RESOURCE_DECODER.decode(_DATA_DECODER.decode(message.data))
    except msgspec.DecodeError as exc:
        raise FeedMessageError(f"notification data is not an object resource: {exc}") from exc
    return Change(
        key,
        int(resource.generation or generation),
        resource.metadata or {},
        False,
        message.published,
    )


def subscription_name(host: str | None = None, pid: int | None = None) -> str:
    """``omniq-console-<host>-<pid>``, in the characters Pub/Sub allows in a name."""
    host = host if host is not None else socket.gethostname()
    pid = pid if pid is not None else os.getpid()
    clean = re.sub(r"[^A-Za-z0-9._~+-]+", "-", host).strip("-")[:180] or "host"
    return f"omniq-console-{clean}-{pid}"


def check_topic(topic: str) -> str:
    """``topic`` if it is ``projects/P/topics/T``, else ``ValueError``."""
    if not _TOPIC_RE.match(topic):
        raise ValueError(f"topic must be projects/<project>/topics/<name>, not {topic!r}")
    return topic


class MissedChanges:
    """Whether the feed misses changes, from what the rolling reconcile corrects.

    A feed of its own never misses a change for long (Pub/Sub delivers at least once); a
    subscription shared with another console or notebook splits its messages, and the
    reconcile then corrects changes the feed never delivered, step after step. Late changes
    are counted over the current and the previous reconcile pass; ``threshold`` of them found
    in at least two steps means the feed is shared (or broken) and cannot be trusted.
    """

    def __init__(self, threshold: int = 3) -> None:
        self.threshold = threshold
        self._steps: deque[tuple[int, int]] = deque()
        self.total = 0

    def add(self, late: int, passes: int) -> bool:
        """Record one reconcile step (``late`` changes found, ``passes`` completed so far);
        True when the feed is to be declared unreliable."""
        if late:
            self._steps.append((passes, late))
            self.total += late
        while self._steps and self._steps[0][0] < passes - 1:
            self.total -= self._steps.popleft()[1]
        return self.total >= self.threshold and len(self._steps) >= 2

    def reason(self, subscription: str) -> str:
        """What the operator is told when the feed is given up for missing changes."""
        return (
            f"the feed missed {self.total} change(s) that the reconcile found: is another "
            f"console or notebook pulling {subscription}? Each console needs a subscription of "
            "its own (--topic makes one); listing instead"
        )


async def look_up(
    store: ObjectStoreAPI,
    model: BucketModel,
    decoders: Mapping[str, Decoder],
    keys: Mapping[str, str],
) -> list[ObjectInfo]:
    """Apply a listing of each of ``keys`` (key -> kind) alone: the changes that came without
    a payload. One list request per key; returns the objects whose body must be read."""
    before = model.seq
    found = await gather(*(store.list(key, limit=1) for key in keys))
    need: list[ObjectInfo] = []
    for (key, kind), infos in zip(keys.items(), found, strict=True):
        exact = [i for i in infos if i.key == key]  # the prefix may name longer keys too
        applied = await apply_listing(
            model, kind, exact, decoders[kind], before=before, lo=key, hi=key,
            known_keys=SortedRuns([[key]]),
        )  # fmt: skip
        need += applied.need_body
    return need


class PubSubFeed:
    """Pulls ``subscription`` (``projects/P/subscriptions/S``) in the background; or, given
    ``topic`` (``projects/P/topics/T``) instead, a subscription of its own to that topic,
    made by ``start()`` and deleted by ``close()``.

    ``error`` says why the feed is dead (None while it is live); ``on_message`` is called
    (in the loop) when a pull returned messages, so the monitor can apply them at once.
    ``service_file``: the credentials file for Pub/Sub (the storage's own, so both use the
    same identity); None: application default credentials, or none with an emulator.
    ``quiet_pull_s``: the pause after a pull that brought nothing (``QUIET_PULL_S``); it sets
    how soon a change is pulled once the bucket was quiet, and the requests a quiet day costs.
    """

    def __init__(
        self,
        subscription: str | None = None,
        *,
        bucket: str,
        topic: str | None = None,
        on_message: Callable[[], None] | None = None,
        api_root: str | None = None,
        service_file: str | IO[str] | None = None,
        quiet_pull_s: float = QUIET_PULL_S,
    ) -> None:
        self.quiet_pull_s = check_seconds("quiet_pull_s", quiet_pull_s, allow_zero=True)
        if (subscription is None) == (topic is None):
            raise ValueError("give a subscription or a topic (one of them)")
        if topic is not None:
            self.topic: str | None = check_topic(topic)
            project = topic.split("/")[1]
            # A second feed in one process (a notebook's, a test's) gets a name of its own.
            n = next(_OWN_FEEDS)
            name = subscription_name() + (f"-{n}" if n > 1 else "")
            subscription = f"projects/{project}/subscriptions/{name}"
        else:
            self.topic = None
        assert subscription is not None
        if not _SUBSCRIPTION_RE.match(subscription):
            raise ValueError(
                "subscription must be projects/<project>/subscriptions/<name>, "
                f"not {subscription!r}"
            )
        self.subscription = subscription
        self.bucket = bucket
        self._on_message = on_message
        self._api_root = api_root
        self._service_file = service_file
        self._client: SubscriberClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._buffer: list[Change] = []
        self._overflowed = False
        self._not_before: float | None = None
        self._pulling_allowed = asyncio.Event()
        self._pulling_allowed.set()
        self._created = False
        self.parked = False
        """True while the feed does not pull because the monitor is paused."""
        self.error: str | None = None
        self.errors_in_row = 0
        self.received = 0
        self.received_bytes = 0
        """Message data received, in bytes (three quarters of its base64 text's length)."""
        self.pulls = 0
        self.timeouts = 0
        """Pulls that got no answer within ``PULL_TIMEOUT_S`` (counted as errors)."""
        self.acks = 0
        self.ack_calls = 0
        self.ignored = 0
        """Messages acknowledged without a change: another bucket's, not notifications, and
        the old halves of overwrites."""
        self.backlog_skipped = 0
        """Messages dropped as published before the first listing."""
        self.dropped = 0
        """Changes dropped because the buffer was full (a full listing replaced them)."""
        self.last_message_at: float | None = None
        """Wall-clock time (POSIX seconds) a message last arrived."""
        self.caught_up_at: float | None = None
        """When the latest pull that emptied the subscription was sent (it returned fewer than
        ``PULL_MAX`` messages): every change published before then has been delivered, unless
        it was lost or went to another client. A feed behind a backlog (full pulls) has not
        caught up, so a change the reconcile finds is then late, not missed."""
        self.started_at = time.time()
        self._progress: asyncio.Condition | None = None

    @property
    def live(self) -> bool:
        return self.error is None and self._task is not None and not self._task.done()

    @property
    def own_subscription(self) -> bool:
        """True when this feed made its subscription (``topic`` mode) and deletes it."""
        return self._created

    async def start(self) -> None:
        """Start pulling; in ``topic`` mode, create the subscription first (a failure makes
        ``error`` say why, and the feed does not pull)."""
        from gcloud.aio.pubsub import SubscriberClient

        self._progress = asyncio.Condition()
        self._client = SubscriberClient(api_root=self._api_root, service_file=self._service_file)
        if self.topic is not None:
            try:
                await self._client.create_subscription(
                    self.subscription,
                    self.topic,
                    body={
                        "ackDeadlineSeconds": ACK_DEADLINE_S,
                        "messageRetentionDuration": f"{SUBSCRIPTION_RETENTION_S}s",
                        "expirationPolicy": {"ttl": f"{SUBSCRIPTION_TTL_S}s"},
                    },
                )
            except aiohttp.ClientResponseError as exc:
                if exc.status != 409:
                    self._cannot_create(exc)
                    return
                # Left by an earlier console of this host and pid that died (a container's
                # pid 1): ours now; its backlog is dropped like any backlog.
                log.info("reusing subscription %s left by an earlier console", self.subscription)
            except Exception as exc:
                self._cannot_create(exc)
                return
            self._created = True
        self._task = asyncio.create_task(self._pull_forever(), name="omniq-pubsub-pull")

    def _cannot_create(self, exc: BaseException) -> None:
        self.error = (
            f"cannot create subscription {self.subscription} to {self.topic}: "
            f"{_http_reason(exc)} (it needs pubsub.subscriptions.create on the project "
            "and pubsub.topics.attachSubscription on the topic)"
        )[:300]

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        client, self._client = self._client, None
        if client is None:
            return
        if self._created:
            self._created = False
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await client.delete_subscription(self.subscription)
            except Exception as exc:
                log.warning(
                    "could not delete subscription %s (it expires by itself): %s",
                    self.subscription,
                    describe_exception(exc),
                )
        await client.close()

    def pause(self) -> None:
        """Stop pulling after the pull in flight (the subscription keeps what arrives)."""
        self._pulling_allowed.clear()

    def resume(self) -> None:
        self._pulling_allowed.set()

    def listing_began(self, at: float) -> None:
        """The first full listing was requested at ``at`` (POSIX seconds): messages published
        before it (less ``BACKLOG_MARGIN_S``) describe what that listing shows; drop them."""
        if self._not_before is None:
            self._not_before = at - BACKLOG_MARGIN_S

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

    def take(self) -> Batch:
        """The changes buffered since the last call, less the backlog before the first
        listing; ``relist`` when some were dropped meanwhile."""
        out, self._buffer = self._buffer, []
        relist, self._overflowed = self._overflowed, False
        floor = self._not_before
        if floor is not None:
            kept = [c for c in out if c.published >= floor]
            self.backlog_skipped += len(out) - len(kept)
            out = kept
        return Batch(out, relist)

    async def ack(self, ack_ids: list[str]) -> None:
        """Acknowledge messages (a failure only means Pub/Sub redelivers them, which the
        generation rules make harmless)."""
        if not ack_ids or self._client is None:
            return
        for start in range(0, len(ack_ids), PULL_MAX):
            try:
                part = ack_ids[start : start + PULL_MAX]
                self.ack_calls += 1
                await self._call("acknowledge", _ACK_ENCODER.encode({"ackIds": part}))
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
            if not self._pulling_allowed.is_set():
                self.parked = True
                await self._notify()
                await self._pulling_allowed.wait()
                self.parked = False
            asked = time.time()
            try:
                messages = await self._pull()
            except asyncio.CancelledError:
                raise
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
                if isinstance(exc, TimeoutError):
                    self.timeouts += 1
                if self._count_error(exc):
                    return
                await asyncio.sleep(min(5.0, 0.5 * 2**self.errors_in_row))
                continue
            self.pulls += 1
            self.errors_in_row = 0
            if len(messages) < PULL_MAX:
                self.caught_up_at = asked
            if not messages:
                await self._notify()
                await asyncio.sleep(self.quiet_pull_s)
                continue
            self.last_message_at = time.time()
            self.received += len(messages)
            text = sum(len(received.message.data) - 2 for received in messages)  # less quotes
            self.received_bytes += text * 3 // 4
            for n, received in enumerate(messages):
                self._buffer_message(received.message)
                if n % DECODE_SLICE == DECODE_SLICE - 1:
                    await asyncio.sleep(0)  # ~3 us a message: a full pull is ~3 ms of CPU
            # Acknowledged once buffered: the model applies by generation and the reconcile
            # corrects what a crash between here and the next poll would lose, while an
            # unacknowledged message comes back after the ack deadline, again and again.
            await self.ack([received.ack_id for received in messages])
            if self._on_message is not None:
                self._on_message()
            await self._notify()

    async def _pull(self) -> list[Received]:
        """One pull that returns at once, decoded here (gcloud-aio's ``pull`` holds the
        request open and builds a message object per message)."""
        return parse_pull(await self._call("pull", _PULL_REQUEST))

    async def _call(self, verb: str, body: bytes) -> bytes:
        """``POST {subscription}:{verb}`` with a JSON ``body`` through the client's session
        (its credentials, its errors as ``aiohttp.ClientResponseError``); the answer's body,
        read whole, so the connection goes back to the pool at once."""
        from gcloud.aio.pubsub.subscriber_client import init_api_root

        assert self._client is not None
        is_dev, root = init_api_root(self._api_root)
        headers = {"Content-Type": "application/json"}
        if not is_dev:
            headers["Authorization"] = f"Bearer {await self._client.token.get()}"
        async with asyncio.timeout(PULL_TIMEOUT_S):
            response = await self._client.session.post(
                f"{root}/{self.subscription}:{verb}",
                headers=headers,
                data=body,
                timeout=PULL_TIMEOUT_S,
            )
            return await response.read()

    def _buffer_message(self, message: Message) -> None:
        attributes = message.attributes
        if attributes is not None and attributes.bucket_id not in ("", self.bucket):
            self.ignored += 1  # another bucket's: its data is never decoded
            return
        try:
            change = parse_message(message)
        except (FeedMessageError, ValueError):
            change = None  # not ours to apply (a test message, a malformed one)
        if change is None:
            self.ignored += 1
            return
        if len(self._buffer) >= BUFFER_MAX:
            self._overflowed = True
            self.dropped += 1
            return
        self._buffer.append(change)

    def _count_error(self, exc: BaseException) -> bool:
        self.errors_in_row += 1
        if self.errors_in_row >= ERRORS_TO_FALL_BACK:
            what = f"{type(exc).__name__}: {describe_exception(exc)}"
            self.error = f"Pub/Sub pull failed {self.errors_in_row} times: {what}"[:300]
            return True
        return False


def _http_reason(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"HTTP {exc.status} {exc.message}"
    return f"{type(exc).__name__}: {describe_exception(exc)}"
