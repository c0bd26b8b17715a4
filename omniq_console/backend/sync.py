"""The ``_sync`` twins of the async store methods, generated from one helper.

A sync store class subclasses its async class and declares each twin in one line::

    class GCSQueue(AsyncGCSQueue):
        enqueue_sync = sync_twin(AsyncGCSQueue.enqueue)

The twin has the async method's signature and docstring (``help()`` and IDEs show them) and
runs the coroutine on the backend's one :class:`~omniq_console.backend.bridge.SyncBridge`.
The ``OmniQ`` facade declares its blocking methods the same way (``name="enqueue"``).
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
    """Anything with a sync bridge: the stores, and the ``OmniQ`` facade."""

    @property
    def bridge(self) -> SyncBridge: ...


def sync_twin(
    method: Callable[Concatenate[S, P], Coroutine[Any, Any, R]],
    *,
    name: str | None = None,
) -> Callable[Concatenate[S, P], R]:
    """A blocking method that runs ``method`` on the instance's bridge and returns its result.

    It is named ``name`` (default: the async method's name plus ``_sync``).
    """

    async_name = method.__name__

    def twin(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        # The bridge first: creating the coroutine and then failing to run it would leave it
        # never awaited. Looked up on the instance, so a subclass's override is honoured.
        bridge = self.bridge
        bound: Callable[P, Coroutine[Any, Any, R]] = getattr(self, async_name)
        return bridge.run(bound(*args, **kwargs))

    functools.update_wrapper(twin, method)

    twin.__name__ = name or f"{async_name}_sync"
    twin.__qualname__ = f"{method.__qualname__.rpartition('.')[0]}.{twin.__name__}".lstrip(".")
    twin.__doc__ = (
        f"Blocking twin of ``{async_name}`` (runs it on the sync bridge).\n\n{method.__doc__ or ''}"
    )
    return twin
