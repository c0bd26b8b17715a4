"""The ``_sync`` twins of the async store methods, generated from one helper.

A sync store class subclasses its async class and declares each twin in one line::

    class GCSQueue(AsyncGCSQueue):
        enqueue_sync = sync_twin(AsyncGCSQueue.enqueue)

The twin has the async method's signature and docstring (``help()`` and IDEs show them) and
runs the coroutine on the backend's one :class:`~omniq_console.backend.bridge.SyncBridge`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from .bridge import SyncBridge

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S", bound="HasBridge")


class HasBridge(Protocol):
    @property
    def bridge(self) -> SyncBridge: ...


def sync_twin(
    method: Callable[Concatenate[S, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[S, P], R]:
    """A blocking method that runs ``method`` on the instance's bridge and returns its result."""

    name = method.__name__

    def twin(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        # Looked up on the instance, so a subclass overriding the async method is honoured.
        bound: Callable[P, Coroutine[Any, Any, R]] = getattr(self, name)
        return self.bridge.run(bound(*args, **kwargs))

    functools.update_wrapper(twin, method)

    twin.__name__ = f"{method.__name__}_sync"
    twin.__qualname__ = f"{method.__qualname__}_sync"
    twin.__doc__ = (
        f"Blocking twin of ``{method.__name__}`` (runs on the backend's sync bridge; "
        f"open it with ``with backend:``).\n\n{method.__doc__ or ''}"
    )
    return twin
