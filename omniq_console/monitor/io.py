"""Reading from the bucket for the monitor: bounded concurrent GETs, one error per failure."""

from __future__ import annotations

from collections.abc import Sequence

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
from ..gathering import bounded_gather
from .snapshot import UnreadableRow

BODY_CONCURRENCY = 16
_FATAL = (AuthenticationError, BackendUnavailableError, BucketNotFoundError)


def describe_error(error: BaseException, timeout: float | None = None) -> str:
    """A failed poll's one-line message (its type and first line), secrets masked."""
    if isinstance(error, TimeoutError) and timeout is not None:
        return f"poll timed out after {timeout:g} s"
    text = describe_exception(error)
    name = type(error).__name__
    return (f"{name}: {text}" if text != name else name)[:300]


async def read_many(
    store: ObjectStoreAPI, keys: Sequence[str], concurrency: int = BODY_CONCURRENCY
) -> dict[str, ObjectData | UnreadableRow]:
    """Read bodies concurrently. A missing object is left out; an object GCS refuses to
    serve intact becomes an ``UnreadableRow``; losing the bucket or the network raises."""
    if not keys:
        return {}

    async def one(key: str) -> tuple[str, ObjectData | UnreadableRow | None]:
        try:
            return key, await store.read(key)
        except ObjectNotFoundError:
            return key, None
        except _FATAL:
            raise
        except (ChecksumMismatchError, StorageError) as exc:
            return key, UnreadableRow(key=key, reason=describe_error(exc))

    pairs = await bounded_gather(keys, one, limit=concurrency)
    return {key: value for key, value in pairs if value is not None}
