"""Reading from the bucket for the monitor: bounded concurrent GETs, one error per failure."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

from ..backend.errors import (
    AuthenticationError,
    BackendUnavailableError,
    BucketNotFoundError,
    ChecksumMismatchError,
    ObjectNotFoundError,
    StorageError,
)
from ..backend.objectstore import ObjectData
from ..backend.storeapi import ObjectStoreAPI
from ..checks import describe_exception
from .snapshot import UnreadableRow

T = TypeVar("T")

BODY_CONCURRENCY = 16
_FATAL = (AuthenticationError, BackendUnavailableError, BucketNotFoundError)


def describe_error(error: BaseException, timeout: float | None = None) -> str:
    """A failed poll's one-line message (its type and first line), secrets masked."""
    if isinstance(error, TimeoutError) and timeout is not None:
        return f"poll timed out after {timeout:g} s"
    text = describe_exception(error)
    name = type(error).__name__
    return (f"{name}: {text}" if text != name else name)[:300]


async def gather(*aws: Awaitable[Any]) -> list[Any]:
    """Run concurrently; on the first failure cancel the rest and raise that error itself
    (not an ExceptionGroup: callers and messages deal in one error)."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(_as_coro(aw)) for aw in aws]
    except BaseExceptionGroup as failed:
        raise _first_error(failed) from None
    return [task.result() for task in tasks]


async def _as_coro(aw: Awaitable[T]) -> T:
    return await aw


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_error(exc)
        if not isinstance(exc, asyncio.CancelledError):
            return exc
    return group.exceptions[0]


async def read_many(
    store: ObjectStoreAPI, keys: Sequence[str], concurrency: int = BODY_CONCURRENCY
) -> dict[str, ObjectData | UnreadableRow]:
    """Read bodies concurrently. A missing object is left out; an object GCS refuses to
    serve intact becomes an ``UnreadableRow``; losing the bucket or the network raises."""
    if not keys:
        return {}
    limit = asyncio.Semaphore(concurrency)

    async def one(key: str) -> tuple[str, ObjectData | UnreadableRow | None]:
        async with limit:
            try:
                return key, await store.read(key)
            except ObjectNotFoundError:
                return key, None
            except _FATAL:
                raise
            except (ChecksumMismatchError, StorageError) as exc:
                return key, UnreadableRow(key=key, reason=describe_error(exc))

    pairs = await gather(*(one(k) for k in keys))
    return {key: value for key, value in pairs if value is not None}
