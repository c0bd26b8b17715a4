"""What ties notebook objects to the kernel: one per cell, and nothing outlives the kernel.

Executing a cell again must replace what the cell made before (one Monitor per cell, one
console server per cell), so live objects are kept in a registry keyed by the cell: the
front-end's cell id when it sends one (JupyterLab, Notebook 7 and VS Code put ``cellId`` in
the execute request's metadata), else the cell's source, which is the same for a re-run.
An ``atexit`` hook closes everything left when the kernel shuts down.
"""

from __future__ import annotations

import atexit
import hashlib
import itertools
import logging
import threading
from typing import Any, Protocol

log = logging.getLogger(__name__)


class Closable(Protocol):
    """What a cell's live object offers: ``close()`` stops it; ``release()`` stops it and
    frees what it displays, when its cell made a new one."""

    def close(self) -> None: ...

    def release(self) -> None: ...


_live: dict[str, Closable] = {}
_lock = threading.Lock()
_hooked = False
_anonymous = itertools.count(1)


def _kernel_parent() -> dict[str, Any]:
    """The execute request being run, or ``{}`` outside a Jupyter kernel."""
    try:
        from IPython import get_ipython
    except ImportError:
        return {}
    kernel = getattr(get_ipython(), "kernel", None)
    if kernel is None:
        return {}
    parent = kernel.get_parent()
    return parent if isinstance(parent, dict) else {}


def cell_key() -> str:
    """A name for the cell being executed that stays the same when it is executed again."""
    parent = _kernel_parent()
    cell_id = (parent.get("metadata") or {}).get("cellId")
    if isinstance(cell_id, str) and cell_id:
        return f"cell:{cell_id}"
    code = (parent.get("content") or {}).get("code")
    if isinstance(code, str):
        return "code:" + hashlib.sha256(code.encode()).hexdigest()[:16]
    # Not in a kernel (a script): nothing is ever re-executed, so nothing is replaced.
    return f"anonymous:{next(_anonymous)}"


def execution_count() -> int | None:
    """The number of the cell being executed (None outside IPython)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return None if shell is None else int(shell.execution_count)


def register(key: str, obj: Closable) -> None:
    """Make ``obj`` the live object of ``key``, releasing the one it replaces."""
    global _hooked
    with _lock:
        old = _live.get(key)
        _live[key] = obj
        if not _hooked:
            atexit.register(close_all)
            _hooked = True
    if old is not None and old is not obj:
        old.release()


def unregister(key: str, obj: Closable) -> None:
    """Forget ``obj`` (closed by its owner) unless a newer object took its key."""
    with _lock:
        if _live.get(key) is obj:
            del _live[key]


def live() -> dict[str, Closable]:
    """The live objects by cell key (a copy)."""
    with _lock:
        return dict(_live)


def close_all() -> None:
    """Close every live object (the kernel is shutting down)."""
    with _lock:
        objects = list(_live.values())
        _live.clear()
    for obj in objects:
        try:
            obj.close()
        except Exception:
            log.exception("closing %r at kernel shutdown failed", obj)


__all__ = ["cell_key", "close_all", "execution_count", "live", "register", "unregister"]
