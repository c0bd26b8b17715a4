"""Where each object lives in the bucket, and the checks that keep ids inside their prefix.

The layout is OmniQ's: ``{prefix}tasks/{id}.json``, ``{prefix}queues/{queue}/{id}.json``,
``{prefix}results/{task_id}.json``, ``{prefix}events/{event_id}.json``,
``{prefix}schedules/{id}.json``; plus ``{prefix}workers/{worker_id}.json`` for heartbeats and
``{prefix}paused/{queue}.json`` for paused queues, ``{prefix}requests/{task_id}.json`` for an
operator's cancel request of a running task. ``results/{id}.json`` is also the task's state
record and ``events/`` holds batches (docs/architecture.md, "Layout of a bucket").
"""

from __future__ import annotations

import re
import unicodedata

_MAX_ID_LENGTH = 200
_FORBIDDEN = re.compile(r"[/\\#\[\]*?]")


def check_id(value: object, what: str = "id") -> str:
    """Return ``value`` if it is safe as one path segment of a key, else raise ``ValueError``.

    Refused: non-strings, empty strings, ``.``/``..`` anywhere, ``/`` and ``\\``, GCS wildcard
    characters, control and other non-printable characters, and very long names.
    """
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, not {type(value).__name__}")
    if not value:
        raise ValueError(f"{what} must not be empty")
    if len(value) > _MAX_ID_LENGTH:
        raise ValueError(f"{what} is longer than {_MAX_ID_LENGTH} characters")
    if ".." in value or value in (".",):
        raise ValueError(f"{what} {value!r} must not contain '..'")
    if _FORBIDDEN.search(value):
        raise ValueError(f"{what} {value!r} must not contain '/', '\\', '#', '[', ']', '*' or '?'")
    # Printable ASCII holds no control or separator character but the space: the per-character
    # look-up (several a task on the claim path) is left to other text.
    if not (value.isascii() and value.isprintable()) and any(
        unicodedata.category(ch)[0] in ("C", "Z") and ch != " " for ch in value
    ):
        raise ValueError(f"{what} {value!r} must not contain control or separator characters")
    if value != value.strip():
        raise ValueError(f"{what} {value!r} must not start or end with white space")
    return value


def normalize_prefix(prefix: str | None) -> str:
    """``"omniq"`` -> ``"omniq/"``; ``""`` stays empty (the bucket's root)."""
    prefix = (prefix or "").strip("/")
    if not prefix:
        return ""
    for part in prefix.split("/"):
        check_id(part, "prefix segment")
    return prefix + "/"


class Layout:
    """Key builder for one prefix of a bucket."""

    def __init__(self, prefix: str | None = "omniq/") -> None:
        self.prefix = normalize_prefix(prefix)

    # Folders (with trailing slash), for listings.
    @property
    def tasks(self) -> str:
        return f"{self.prefix}tasks/"

    @property
    def queues(self) -> str:
        return f"{self.prefix}queues/"

    @property
    def results(self) -> str:
        return f"{self.prefix}results/"

    @property
    def events(self) -> str:
        return f"{self.prefix}events/"

    @property
    def schedules(self) -> str:
        return f"{self.prefix}schedules/"

    @property
    def workers(self) -> str:
        return f"{self.prefix}workers/"

    @property
    def paused(self) -> str:
        return f"{self.prefix}paused/"

    @property
    def requests(self) -> str:
        return f"{self.prefix}requests/"

    def queue(self, queue_name: str) -> str:
        return f"{self.queues}{check_id(queue_name, 'queue name')}/"

    # Objects.
    def task(self, task_id: str) -> str:
        return f"{self.tasks}{check_id(task_id, 'task id')}.json"

    def queue_entry(self, queue_name: str, task_id: str) -> str:
        return f"{self.queue(queue_name)}{check_id(task_id, 'task id')}.json"

    def result(self, task_id: str) -> str:
        return f"{self.results}{check_id(task_id, 'task id')}.json"

    def request(self, task_id: str) -> str:
        """An operator's cancel request of a running task, honoured by its lease holder."""
        return f"{self.requests}{check_id(task_id, 'task id')}.json"

    def event(self, event_id: str) -> str:
        return f"{self.events}{check_id(event_id, 'event id')}.json"

    def schedule(self, schedule_id: str) -> str:
        return f"{self.schedules}{check_id(schedule_id, 'schedule id')}.json"

    def worker(self, worker_id: str) -> str:
        return f"{self.workers}{check_id(worker_id, 'worker id')}.json"

    def paused_queue(self, queue_name: str) -> str:
        return f"{self.paused}{check_id(queue_name, 'queue name')}.json"

    @staticmethod
    def name_of(key: str) -> str:
        """The id in a key: ``.../tasks/abc.json`` -> ``abc``."""
        base = key.rsplit("/", 1)[-1]
        return base[:-5] if base.endswith(".json") else base

    def queue_of_entry(self, key: str) -> str | None:
        """The queue name of a queue-entry key, or None when the key is outside the layout."""
        rest = key[len(self.queues) :] if key.startswith(self.queues) else ""
        parts = rest.split("/")
        return parts[0] if len(parts) == 2 and parts[0] and parts[1].endswith(".json") else None
