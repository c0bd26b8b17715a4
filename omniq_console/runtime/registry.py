"""Task functions by name, and the one way a task enters a queue.

A task travels through the bucket as a function *name*; the worker that claims it looks the
name up in its own registry. Names are ``module:qualname`` so that a producer and a worker
that import the same module agree on them without any coordination. A function defined in a
script run as ``__main__`` gets ``__main__:name``, which a worker importing that file as a
module would not find: give such functions an explicit ``name=``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

from ..backend.layout import check_id
from ..models import EventType, Task, TaskEvent, as_utc, utcnow

TaskFunction = Callable[..., Any]

logger = logging.getLogger(__name__)

DEFAULT_QUEUE = "default"
DEFAULT_MAX_RETRIES = 3
DEFAULT_RETRY_DELAY = timedelta(seconds=1)

# Task options a schedule carries in its metadata, so that a scheduler in another process,
# which may not have the function registered, still builds the task its author asked for.
_SCHEDULE_OPTIONS = "task_options"


class UnknownTaskError(LookupError):
    """No function is registered under the task's name in this process."""


def task_name(func: TaskFunction) -> str:
    """The stable name of ``func``: ``module:qualname``."""
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None)
    if not module or not qualname:
        raise ValueError(f"cannot name {func!r}: give it an explicit name=")
    return f"{module}:{qualname}"


def as_timedelta(value: timedelta | float | int | None, what: str) -> timedelta | None:
    """Seconds (int/float) or a timedelta; refuses negative values with a clear error."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (timedelta, int, float)):
        raise ValueError(f"{what} must be seconds or a timedelta, not {type(value).__name__}")
    delta = value if isinstance(value, timedelta) else timedelta(seconds=value)
    if delta < timedelta(0):
        raise ValueError(f"{what} must not be negative")
    return delta


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """How one task is to be queued; the options a spec or a schedule supplies."""

    queue: str = DEFAULT_QUEUE
    priority: int = 0
    max_retries: int = DEFAULT_MAX_RETRIES
    retry_delay: timedelta = DEFAULT_RETRY_DELAY
    ttl: timedelta | None = None

    @classmethod
    def of(cls, spec: TaskOptions | None) -> TaskOptions:
        """Just the options of ``spec`` (defaults for ``None``)."""
        if spec is None:
            return cls()
        return cls(**{option.name: getattr(spec, option.name) for option in fields(cls)})

    def to_metadata(self) -> dict[str, Any]:
        """The form kept in a schedule's metadata (JSON-friendly)."""
        return {
            _SCHEDULE_OPTIONS: {
                "priority": self.priority,
                "max_retries": self.max_retries,
                "retry_delay": self.retry_delay.total_seconds(),
                "ttl": self.ttl.total_seconds() if self.ttl is not None else None,
            }
        }

    @classmethod
    def from_metadata(cls, queue: str, metadata: Mapping[str, Any]) -> TaskOptions:
        """Options stored by :meth:`to_metadata`; defaults for what is missing or malformed."""
        raw = metadata.get(_SCHEDULE_OPTIONS)
        if not isinstance(raw, Mapping):
            return cls(queue=queue)

        def number(key: str, default: float | None) -> float | None:
            value = raw.get(key, default)
            return (
                value
                if isinstance(value, (int, float)) and not isinstance(value, bool)
                else default
            )

        ttl = number("ttl", None)
        return cls(
            queue=queue,
            priority=int(number("priority", 0) or 0),
            max_retries=max(0, int(number("max_retries", DEFAULT_MAX_RETRIES) or 0)),
            retry_delay=timedelta(
                seconds=max(0.0, number("retry_delay", DEFAULT_RETRY_DELAY.total_seconds()) or 0.0)
            ),
            ttl=timedelta(seconds=ttl) if ttl is not None and ttl > 0 else None,
        )

    def build_task(
        self,
        func: str,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        run_at: datetime | None = None,
        task_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        now: datetime | None = None,
    ) -> Task:
        """A new PENDING task with these options."""
        fields: dict[str, Any] = {
            "func": func,
            "args": tuple(args),
            "kwargs": dict(kwargs or {}),
            "queue_name": check_id(self.queue, "queue name"),
            "priority": self.priority,
            "run_at": as_utc(run_at) if run_at is not None else None,
            "ttl": self.ttl,
            "max_retries": self.max_retries,
            "retry_delay": self.retry_delay,
            "metadata": dict(metadata or {}),
            "created_at": now or utcnow(),
        }
        if task_id is not None:
            fields["id"] = check_id(task_id, "task id")
        return Task(**fields)


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskSpec(TaskOptions):
    """A registered task function and its per-task defaults (the options it is queued with)."""

    name: str
    func: TaskFunction

    @property
    def is_async(self) -> bool:
        """True for an ``async def`` task (awaited on the worker's loop, not in a thread)."""
        return inspect.iscoroutinefunction(self.func)


class TaskRegistry:
    """Task functions of this process, by stable name."""

    def __init__(self) -> None:
        self._specs: dict[str, TaskSpec] = {}

    def register(
        self,
        func: TaskFunction,
        *,
        name: str | None = None,
        queue: str = DEFAULT_QUEUE,
        priority: int = 0,
        max_retries: int = DEFAULT_MAX_RETRIES,
        retry_delay: timedelta | float = DEFAULT_RETRY_DELAY,
        ttl: timedelta | float | None = None,
    ) -> TaskSpec:
        """Register ``func``; registering another function under a taken name is an error."""
        if not callable(func):
            raise TypeError(f"a task must be a function, not {type(func).__name__}")
        spec_name = name if name is not None else task_name(func)
        if not isinstance(spec_name, str) or not spec_name.strip():
            raise ValueError("a task name must be a non-empty string")
        if max_retries < 0:
            raise ValueError("max_retries must not be negative")
        spec = TaskSpec(
            name=spec_name,
            func=func,
            queue=check_id(queue, "queue name"),
            priority=int(priority),
            max_retries=int(max_retries),
            retry_delay=as_timedelta(retry_delay, "retry_delay") or timedelta(0),
            ttl=as_timedelta(ttl, "ttl"),
        )
        existing = self._specs.get(spec_name)
        if existing is not None and existing.func is not func:
            raise ValueError(
                f"task name {spec_name!r} is already registered for another function; "
                "pass name= to tell them apart"
            )
        self._specs[spec_name] = spec
        return spec

    def get(self, name: str) -> TaskSpec | None:
        return self._specs.get(name)

    def resolve(self, func_or_name: TaskFunction | str) -> tuple[str, TaskSpec | None]:
        """The task name for a function or a name, and its spec when registered here.

        A name that is not registered is allowed (the worker that runs it may know it); an
        unregistered function is enqueued under its ``module:qualname``.
        """
        if isinstance(func_or_name, str):
            if not func_or_name.strip():
                raise ValueError("a task name must be a non-empty string")
            return func_or_name, self._specs.get(func_or_name)
        for spec in self._specs.values():
            if spec.func is func_or_name:
                return spec.name, spec
        name = task_name(func_or_name)
        return name, self._specs.get(name)

    def names(self) -> list[str]:
        return sorted(self._specs)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __len__(self) -> int:
        return len(self._specs)


async def submit_task(
    backend: Any,
    task: Task,
    *,
    message: str | None = None,
    schedule_id: str | None = None,
    actor: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> str:
    """Put ``task`` in its queue and record the ``enqueued`` event; returns the task id.

    Everything that creates tasks (the facade, the scheduler, the operator's trigger, the demo
    fleet) goes through here, so the event trail of every task starts the same way.
    """
    # Stamped before the write: a worker may claim the task before this event is written,
    # and a task's events sort by time.
    event = TaskEvent(
        task_id=task.id,
        event_type=EventType.ENQUEUED,
        queue_name=task.queue_name,
        schedule_id=schedule_id,
        actor=actor,
        message=message,
        details=dict(details or {}),
    )
    task_id: str = await backend.async_task_storage.enqueue(task)
    # With this process's next event batch (about a second): a task costs a share of one
    # event write, not one of its own (docs/architecture.md, "Events").
    backend.async_event_storage.record(event)
    return task_id
