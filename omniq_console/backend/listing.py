"""From listings to models: parse bodies, report bad objects, cache bodies by generation.

Every store reads through a :class:`BodyReader`. It parses a body into its model and refuses,
with :class:`CorruptObjectError` naming the key, anything that is not JSON, not the model's
shape, of an unknown ``schema_version``, or whose id does not match its key. A listing of many
objects returns the good ones in an :class:`ItemList` whose ``.unreadable`` names every bad key
and why (nothing is swallowed: docs/architecture.md).

Bodies at a given generation never change, so a parsed body is cached by ``(key, generation)``:
when a listing shows the same generation again, no GET is sent, and a cached body can never be
stale. The cache is never consulted for a read by key alone (the generation is unknown then).
"""

from __future__ import annotations

import builtins
import json
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from pydantic import ValidationError

from ..gathering import bounded_gather
from ..models import OmniQModel, Schedule, Task, TaskEvent, TaskResult
from .bridge import SyncBridge
from .errors import (
    ConflictError,
    CorruptObjectError,
    ObjectNotFoundError,
    ReadOnlyError,
    UnreadableObject,
)
from .layout import Layout, check_id
from .storeapi import ObjectInfo, ObjectStoreAPI

T = TypeVar("T")
M = TypeVar("M", bound=OmniQModel)

MAX_CACHE_BYTES = 64 * 1024 * 1024
"""What the body cache may hold, counted in stored bytes (a parsed model takes a few times
more memory than its JSON)."""
READ_CONCURRENCY = 32
"""Bodies read at once by one listing call (32 in flight was the measured sweet spot on the
emulator; docs/architecture.md)."""

MAX_NESTING = 100
"""The deepest nesting of lists and objects a stored body may have: deeper ones are reported
as unreadable (copies and validators recurse, and a stack overflow must stay one object's
problem). No body OmniQ writes comes near it."""
TOO_DEEP = "nested too deeply to parse"
"""The reason given for a body whose nesting exceeds what the parser takes."""

# The field that must equal the name in the object's key: a body copied under another key
# would otherwise make every update address the wrong object.
_ID_FIELDS: dict[type[OmniQModel], str] = {
    Task: "id",
    TaskResult: "task_id",
    TaskEvent: "id",
    Schedule: "id",
}


class ItemList(list[T]):
    """A listing's parsed items, plus the objects that could not be parsed (``.unreadable``)."""

    def __init__(self, items: Iterable[T] = (), unreadable: Iterable[UnreadableObject] = ()):
        super().__init__(items)
        self.unreadable: list[UnreadableObject] = list(unreadable)

    def __repr__(self) -> str:
        return f"ItemList({list.__repr__(self)}, unreadable={self.unreadable!r})"


def parse_model(model: type[M], key: str, data: bytes) -> M:
    """Parse the body of ``key``; ``CorruptObjectError(key, reason)`` when it is not a ``model``."""
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptObjectError(key, f"not valid JSON ({exc})") from None
    except RecursionError:
        raise CorruptObjectError(key, TOO_DEEP) from None
    if not isinstance(raw, dict):
        raise CorruptObjectError(key, f"expected a JSON object, found {type(raw).__name__}")
    if too_deep(raw, MAX_NESTING):
        # The parser takes it, but copying or validating it recursively would not.
        raise CorruptObjectError(key, f"{TOO_DEEP} (more than {MAX_NESTING} levels)")
    try:
        parsed = model.model_validate(raw)
    except ValidationError as exc:
        raise CorruptObjectError(
            key, f"not a valid {model.__name__}: {_first_error(exc)}"
        ) from None
    except MemoryError:
        raise
    except Exception as exc:
        # Whatever else one body makes the validator raise (a RecursionError from nesting
        # within the parser's limit): a report about that object, never a crash of the reader.
        reason = TOO_DEEP if isinstance(exc, RecursionError) else f"{type(exc).__name__}: {exc}"
        raise CorruptObjectError(key, f"not a valid {model.__name__}: {reason}"[:300]) from None
    id_field = _ID_FIELDS.get(model)
    if id_field is not None:
        found = getattr(parsed, id_field)
        if found != Layout.name_of(key):
            raise CorruptObjectError(key, f"its {id_field} {found!r} does not match its key")
    return parsed


def too_deep(value: object, limit: int) -> bool:
    """Whether ``value`` (parsed JSON) nests lists and dicts more than ``limit`` deep;
    iterative, so that no depth can overflow the interpreter's stack here."""
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Iterable[object] = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth >= limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    if not errors:
        return str(exc)
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ())) or "body"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first.get('msg', 'invalid')}{more}"


class BodyCache:
    """Parsed bodies by ``(key, generation)``; an entry unused for ``timeout`` seconds is dropped.

    Bounded by count (``max_entries``) and by the stored size of the bodies it holds
    (``max_bytes``): the least recently used go first, and a body larger than
    ``max_bytes // 8`` is never kept (one 20 MB task must not pin 20 MB after it ran).
    ``timeout=0`` disables the cache. Models are mutable, so callers get deep copies; a body
    this process wrote is kept as its bytes (``put_written``) and parsed only if it is asked
    for: most never are, and a copy at each write was a deep copy per claim and outcome.
    """

    def __init__(
        self,
        timeout: float,
        *,
        max_entries: int = 20_000,
        max_bytes: int = MAX_CACHE_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timeout = float(timeout)
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self._clock = clock
        # key -> (generation, model or written body, size in bytes, last used); ordered by
        # last use.
        self._entries: OrderedDict[str, tuple[int, OmniQModel | _Written, int, float]] = (
            OrderedDict()
        )
        self._bytes = 0

    @property
    def enabled(self) -> bool:
        return self.timeout > 0

    @property
    def bytes(self) -> int:
        """The stored size of the bodies held."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, generation: int, model: type[M]) -> M | None:
        """A copy of the body of ``key`` at ``generation``, or None when not cached."""
        if not self.enabled:
            return None
        now = self._clock()
        self._expire(now)
        entry = self._entries.get(key)
        parsed: M | None = None
        if entry is not None and entry[0] == generation:
            held = entry[1]
            if isinstance(held, _Written) and held.model is model:
                parsed = parse_model(model, key, held.data)
                parsed._generation = generation
            elif isinstance(held, model):
                parsed = _copy_at(held, generation)
        if entry is None or parsed is None:
            self.misses += 1
            return None
        self._entries[key] = (*entry[:3], now)
        self._entries.move_to_end(key)
        self.hits += 1
        return parsed

    def put(self, key: str, generation: int, value: OmniQModel, size: int) -> None:
        """Remember ``value`` (``size`` bytes stored) as the body of ``key`` at ``generation``
        (a copy is kept)."""
        if self._admit(key, generation, size):
            self._keep(key, generation, _copy_at(value, generation), size)

    def put_written(
        self, key: str, generation: int, model: type[OmniQModel], data: builtins.bytes
    ) -> None:
        """Remember ``data``, just written as the body of ``key`` at ``generation``, to be
        parsed as a ``model`` if it is ever asked for."""
        if self._admit(key, generation, len(data)):
            self._keep(key, generation, _Written(model, data), len(data))

    def _admit(self, key: str, generation: int, size: int) -> bool:
        self.discard(key)
        return self.enabled and generation > 0 and size <= self.max_bytes // 8

    def _keep(self, key: str, generation: int, held: OmniQModel | _Written, size: int) -> None:
        now = self._clock()
        self._entries[key] = (generation, held, size, now)
        self._bytes += size
        self._expire(now)
        while self._entries and (
            len(self._entries) > self.max_entries or self._bytes > self.max_bytes
        ):
            self._pop_oldest()

    def discard(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry[2]

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def _pop_oldest(self) -> None:
        _, entry = self._entries.popitem(last=False)
        self._bytes -= entry[2]

    def _expire(self, now: float) -> None:
        cutoff = now - self.timeout
        while self._entries:
            _, entry = next(iter(self._entries.items()))
            if entry[3] > cutoff:
                break
            self._pop_oldest()


@dataclass(frozen=True, slots=True)
class _Written:
    """A body this process wrote, kept as the bytes it sent."""

    model: type[OmniQModel]
    data: bytes


def _copy_at(value: M, generation: int) -> M:
    copy = value.model_copy(deep=True)
    copy._generation = generation
    return copy


class BodyReader:
    """Reads and writes model bodies through one ObjectStore, with the shared body cache."""

    def __init__(
        self, store: ObjectStoreAPI, cache: BodyCache, *, concurrency: int = READ_CONCURRENCY
    ) -> None:
        self.store = store
        self.cache = cache
        self.concurrency = concurrency

    async def read(self, key: str, model: type[M]) -> M | None:
        """The current body of ``key`` (always a GET: only a listing tells a generation).

        None when the object does not exist; ``CorruptObjectError`` when it cannot be parsed.
        """
        try:
            got = await self.store.read(key)
        except ObjectNotFoundError:
            return None
        parsed = parse_model(model, key, got.data)
        parsed._generation = got.generation
        self.cache.put(key, got.generation, parsed, len(got.data))
        return parsed

    async def read_listed(self, infos: Sequence[ObjectInfo], model: type[M]) -> ItemList[M]:
        """The bodies of listed objects, in listing order, read at most ``concurrency`` at once.

        A body whose generation is cached costs no request. An object deleted since it was
        listed is left out (it is gone, not broken); one that cannot be parsed is reported in
        ``.unreadable``.
        """
        results: list[M | UnreadableObject | None] = [
            self.cache.get(info.key, info.generation, model) for info in infos
        ]

        async def fetch(i: int) -> None:
            try:
                results[i] = await self.read(infos[i].key, model)
            except CorruptObjectError as exc:
                results[i] = UnreadableObject(exc.key, exc.reason)

        missing = [i for i, item in enumerate(results) if item is None]
        await bounded_gather(missing, fetch, limit=self.concurrency)
        out: ItemList[M] = ItemList()
        for item in results:
            if isinstance(item, UnreadableObject):
                out.unreadable.append(item)
            elif item is not None:
                out.append(item)
        return out

    async def write(
        self,
        key: str,
        value: OmniQModel,
        metadata: Mapping[str, str],
        *,
        if_generation_match: int | None = None,
    ) -> ObjectInfo:
        """Write ``value`` as the body of ``key``; its ``generation`` becomes the new one."""
        data = value.to_json()
        info = await self.store.write(
            key, data, metadata=metadata, if_generation_match=if_generation_match
        )
        value._generation = info.generation
        self.cache.put_written(key, info.generation, type(value), data)
        return info

    async def delete(self, key: str, *, if_generation_match: int | None = None) -> bool:
        """Delete ``key`` (at ``if_generation_match`` when given); False when it was absent."""
        self.cache.discard(key)
        return await self.store.delete(key, if_generation_match=if_generation_match)

    async def delete_listed(self, listed: tuple[str, int]) -> bool:
        """Delete ``(key, generation)`` as a listing saw it; False when it is gone or changed
        since (a cleanup leaves a newer version alone)."""
        key, generation = listed
        try:
            return await self.delete(key, if_generation_match=generation)
        except ConflictError:
            return False


def layout_name(folder: str, key: str) -> str | None:
    """The id in ``key`` when it is exactly ``{folder}{id}.json`` with a safe id, else None."""
    if not key.startswith(folder) or not key.endswith(".json"):
        return None
    return safe_name(key[len(folder) : -len(".json")])


_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
_PLAIN_MAX = 64


def safe_name(name: str) -> str | None:
    """``name`` when ``check_id`` accepts it, else None.

    Every listed object's name is checked, on every claim pass and poll: the usual ids (uuids,
    hex, words joined by single dots, up to 64 characters) are accepted by one regular
    expression, which is all ``check_id`` would find; any other name gets its full check
    (its per-character scan cost 10-15 us an entry, a third of a claim pass's decoding).
    """
    if len(name) <= _PLAIN_MAX and _PLAIN_NAME.fullmatch(name):
        return name
    try:
        return check_id(name)
    except ValueError:
        return None


class StoreBase:
    """What every store shares: the bucket, the key layout, the body reader and the sync bridge."""

    def __init__(
        self, store: ObjectStoreAPI, layout: Layout, reader: BodyReader, bridge: SyncBridge
    ) -> None:
        self.store = store
        self.layout = layout
        self.reader = reader
        self._bridge = bridge

    @property
    def bridge(self) -> SyncBridge:
        """The backend's one sync bridge (the ``_sync`` twins run their coroutine on it)."""
        return self._bridge

    async def _list(self, folder: str) -> list[ObjectInfo]:
        """The objects of ``folder`` that belong to the layout: ``{folder}{id}.json``.

        Anything else (a folder marker, ``tasks/sub/x.json``, a key without ``.json``, an
        unsafe name) is not an object of this store: an action on it would address another key.
        """
        return [i for i in await self.store.list(folder) if layout_name(folder, i.key) is not None]

    async def _stat(self, key: str) -> ObjectInfo | None:
        """``key`` as a one-object listing describes it (generation, metadata), or None."""
        found = await self.store.list(key, limit=1)
        return found[0] if found and found[0].key == key else None

    async def _list_entries(self, prefix: str) -> list[ObjectInfo]:
        """Queue entries under ``prefix`` (all queues, or one): ``queues/{q}/{id}.json`` only."""
        return [
            info
            for info in await self.store.list(prefix)
            if (queue := self.layout.queue_of_entry(info.key)) is not None
            and safe_name(queue) is not None
            and safe_name(Layout.name_of(info.key)) is not None
        ]

    def _check_writable(self, operation: str, key: str) -> None:
        # Checked before any request, reads included: a read-only backend sends nothing for a
        # write method (read_only means read only).
        if self.store.read_only:
            raise ReadOnlyError(operation, key)
