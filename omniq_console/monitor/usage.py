"""Storage usage per prefix of the layout, from the listings the monitor makes anyway.

A prefix's figure is replaced when a listing has walked all of it: the full listing of every
poll in listing mode; in change-feed mode the start listing, then each completed walk of the
rolling reconcile (so it is at most one reconcile pass old). No request is made for it.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..backend.storeapi import ObjectInfo
from .snapshot import PrefixUsage


class StorageTally:
    """The latest complete count of objects and bytes under each listed prefix."""

    def __init__(self, root: str = "") -> None:
        # Figures are named relative to the layout's prefix: ``tasks/``, ``queues/``...
        self._root = root
        self._usage: dict[str, PrefixUsage] = {}
        self._walks: dict[str, tuple[int, int]] = {}

    def page(
        self, prefix: str, infos: Iterable[ObjectInfo], *, first: bool = True, last: bool = True
    ) -> None:
        """Part of a walk over ``prefix`` in key order: ``first`` starts it again, ``last``
        ends it and makes its totals the figure (a listing of all of it is both)."""
        prefix = prefix.removeprefix(self._root)
        objects, size = (0, 0) if first else self._walks.get(prefix, (0, 0))
        more, more_size = counted(infos)
        objects, size = objects + more, size + more_size
        if last:
            self._walks.pop(prefix, None)
            self._usage[prefix] = PrefixUsage(prefix=prefix, objects=objects, bytes=size)
        else:
            self._walks[prefix] = (objects, size)

    def walked(self, prefix: str, objects: int, size: int) -> None:
        """A walk over all of ``prefix`` whose pages the caller counted (``counted``), in
        whatever order they landed: its totals are the figure (a walk of ``page`` under way
        goes on)."""
        prefix = prefix.removeprefix(self._root)
        self._usage[prefix] = PrefixUsage(prefix=prefix, objects=objects, bytes=size)

    def rows(self) -> tuple[PrefixUsage, ...]:
        """Every prefix walked so far, in key order."""
        return tuple(self._usage[p] for p in sorted(self._usage))


def counted(infos: Iterable[ObjectInfo]) -> tuple[int, int]:
    """Objects and bytes in ``infos`` (a console's "folder" marker is not stored data)."""
    objects = size = 0
    for info in infos:
        if not info.key.endswith("/"):
            objects += 1
            size += info.size
    return objects, size
