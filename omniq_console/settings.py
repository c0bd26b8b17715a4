"""Where the console's settings come from: flags, then environment, then a file.

The order GCP users expect: a flag (a keyword argument here) beats an environment variable
(``OMNIQ_BUCKET``, ``OMNIQ_PREFIX``, ``OMNIQ_PROJECT``, ``OMNIQ_SUBSCRIPTION``,
``GOOGLE_APPLICATION_CREDENTIALS``, ``STORAGE_EMULATOR_HOST``), which beats the config file
(``config=`` / ``--config`` or ``OMNIQ_CONFIG``; JSON, or TOML named ``*.toml``, with the keys
of ``create_gcs_backend_from_config`` plus ``subscription``, ``refresh`` and ``actor``).

The CLI and the notebook use it the same way::

    from omniq_console.settings import load_settings, make_backend

    settings = load_settings(bucket_name="my-bucket")   # plus OMNIQ_* and the file
    backend = make_backend(settings)                    # a GCSBackend, not yet opened
    async with backend:
        ...

Every value is checked once, by :class:`BackendSettings` (``backend/config.py``); a bad or
missing one is a :class:`SettingsError` naming it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .backend.config import BackendSettings, SettingsError, default_actor

if TYPE_CHECKING:
    from .backend.gcs import GCSBackend

__all__ = [
    "BackendSettings",
    "SettingsError",
    "default_actor",
    "feed_options",
    "load_settings",
    "make_backend",
]


def load_settings(*, read_only: bool = False, **overrides: Any) -> BackendSettings:
    """Settings from ``overrides`` (flags; ``None`` means not given), then the environment,
    then the config file (``config=`` or ``OMNIQ_CONFIG``).

    ``overrides`` take :class:`BackendSettings`'s names (``bucket_name``, ``prefix``,
    ``project``, ``token``, ``subscription``, ``refresh``, ``actor``, ``config``...).
    ``read_only=True`` forces ``access="read_only"`` whatever the other sources say.
    """
    if read_only:
        overrides["access"] = "read_only"
    return BackendSettings.load(**overrides)


def make_backend(settings: BackendSettings | None = None, **overrides: Any) -> GCSBackend:
    """The ``GCSBackend`` for ``settings`` (default: ``load_settings(**overrides)``), not opened."""
    # Imported here: reading settings (and failing on a bad one) need not load gcsfs.
    from .backend.gcs import GCSBackend

    if settings is None:
        settings = load_settings(**overrides)
    elif overrides:
        raise TypeError("give settings or overrides, not both")
    return GCSBackend.from_settings(settings)


def feed_options(settings: BackendSettings) -> dict[str, Any]:
    """The ``Monitor`` keywords of the change feed in ``settings``: its subscription or topic,
    and the key the feed authenticates with (the storage one: one identity for both)."""
    from .backend.credentials import pubsub_service_file

    return {
        "subscription": settings.subscription,
        "topic": settings.topic,
        "pubsub_service_file": pubsub_service_file(settings.token),
    }
