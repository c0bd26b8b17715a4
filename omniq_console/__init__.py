"""omniq-console: OmniQ's Google Cloud Storage backend and an operator console."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .runtime.omniq import OmniQ

__all__ = ["OmniQ", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy: `import omniq_console` stays cheap (no gcsfs, no textual) for the CLI and tools.
    if name == "OmniQ":
        from .runtime.omniq import OmniQ

        return OmniQ
    raise AttributeError(f"module 'omniq_console' has no attribute {name!r}")
