"""Errors raised by the storage backend.

Every error says what failed in words an operator can act on; none carries credentials: the
text of every ``StorageError`` goes through ``mask_secrets``, since it often quotes what an
endpoint or google-auth answered (an echoed ``Authorization`` header, a ``token=`` URL).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..checks import mask_secrets


class StorageError(Exception):
    """Base of every error the backend raises on purpose; its text never carries a secret."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(mask_secrets(a) if isinstance(a, str) else a for a in args))


class ConflictError(StorageError):
    """A compare-and-swap lost: the object changed since it was read. Re-read and decide again."""

    def __init__(self, key: str, expected_generation: int | None, detail: str = "") -> None:
        self.key = key
        self.expected_generation = expected_generation
        what = "already exists" if expected_generation == 0 else "was changed by someone else"
        msg = f"conflict on {key}: it {what} since it was read"
        super().__init__(f"{msg} ({detail})" if detail else msg)


class ObjectNotFoundError(StorageError, LookupError):
    """The object (task, schedule, result, ...) does not exist."""

    def __init__(self, key: str, what: str = "object") -> None:
        self.key = key
        super().__init__(f"{what} not found: {key}")


class ReadOnlyError(StorageError, PermissionError):
    """A write was attempted on a backend opened with ``access="read_only"``; nothing was sent."""

    def __init__(self, operation: str, key: str) -> None:
        self.operation = operation
        self.key = key
        super().__init__(f"refused {operation} of {key}: the backend is read-only")


class CorruptObjectError(StorageError, ValueError):
    """An object in the bucket is not valid JSON or not a valid model."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"unreadable object {key}: {reason}")


class BucketNotFoundError(StorageError):
    def __init__(self, bucket: str) -> None:
        self.bucket = bucket
        super().__init__(f"bucket {bucket!r} does not exist (or this account cannot see it)")


class AuthenticationError(StorageError, PermissionError):
    """Credentials are missing, unreadable, or refused by GCS."""


class BackendUnavailableError(StorageError, ConnectionError):
    """GCS (or the emulator) could not be reached or kept failing after retries."""


class RateLimitedError(BackendUnavailableError):
    """GCS kept answering 429 (one object name takes about one mutation a second) past the
    retry deadline, or the in-memory store's per-name rule refused a mutation."""


class ChecksumMismatchError(StorageError):
    """What GCS stored (or sent back) is not what was sent (consistency checking)."""


class MetadataTooLargeError(StorageError, ValueError):
    """An object's custom metadata is over GCS's 8 KiB (UTF-8 bytes of keys and values)."""

    def __init__(self, key: str, size: int, limit: int) -> None:
        self.key = key
        self.size = size
        super().__init__(
            f"custom metadata of {key} is {size} bytes of UTF-8; GCS allows {limit} in all"
        )


@dataclass(frozen=True, slots=True)
class UnreadableObject:
    """An object a listing could not parse: reported to the caller, never silently skipped."""

    key: str
    reason: str
