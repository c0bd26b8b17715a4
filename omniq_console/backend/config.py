"""Checks of the backend's options, and ``create_gcs_backend_from_config``.

Every bad value is a ``ValueError`` at construction that names the option and what is allowed,
before any network request.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .objectstore import ACCESS_MODES, CONSISTENCY_MODES

if TYPE_CHECKING:
    from .gcs import GCSBackend

CONFIG_KEYS = (
    "bucket_name",
    "prefix",
    "project",
    "token",
    "access",
    "consistency",
    "cache_timeout",
    "gcs_kwargs",
    "endpoint_url",
    "lease_seconds",
)
"""The keys ``create_gcs_backend_from_config`` accepts; anything else is a ``ValueError``."""

# gcsfs options the backend sets itself (freshness, async use, credentials): a second value
# through gcs_kwargs would silently change what the backend guarantees, or clash at open.
RESERVED_GCS_KWARGS = frozenset(
    {
        "asynchronous",
        "skip_instance_cache",
        "use_listings_cache",
        "listings_expiry_time",
        "loop",
        "token",
        "project",
        "access",
        "consistency",
        "endpoint_url",
    }
)

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*[a-z0-9]$")


def check_bucket_name(bucket_name: object) -> str:
    """GCS's naming rules: 3-63 characters (222 with dots, 63 per dot-separated part), lower
    case letters, digits, ``-``, ``_`` and ``.``, starting and ending with a letter or digit."""
    if not isinstance(bucket_name, str) or not bucket_name.strip():
        raise ValueError("bucket_name must be a non-empty string")
    longest = 222 if "." in bucket_name else 63
    if not 3 <= len(bucket_name) <= longest or not _BUCKET_RE.match(bucket_name):
        raise ValueError(
            f"bucket_name {bucket_name!r} is not a valid GCS bucket name: 3 to 63 characters "
            "(lower-case letters, digits, '-', '_' and '.'), starting and ending with a letter "
            "or digit"
        )
    if any(len(part) > 63 or not part for part in bucket_name.split(".")):
        raise ValueError(f"bucket_name {bucket_name!r}: each dot-separated part is 1-63 characters")
    return bucket_name


def check_options(
    *,
    bucket_name: object,
    access: object,
    consistency: object,
    cache_timeout: object,
    lease_seconds: object,
    gcs_kwargs: Mapping[str, Any],
) -> None:
    """Raise ``ValueError`` naming the first bad option."""
    check_bucket_name(bucket_name)
    if access not in ACCESS_MODES:
        raise ValueError(f"access must be one of {', '.join(ACCESS_MODES)}, not {access!r}")
    if consistency not in CONSISTENCY_MODES:
        raise ValueError(
            f"consistency must be one of {', '.join(CONSISTENCY_MODES)}, not {consistency!r}"
        )
    _check_seconds("cache_timeout", cache_timeout, allow_zero=True)
    _check_seconds("lease_seconds", lease_seconds, allow_zero=False)
    clash = sorted(RESERVED_GCS_KWARGS & set(gcs_kwargs))
    if clash:
        raise ValueError(
            f"gcsfs option(s) {', '.join(clash)} are set by the backend itself; use the "
            "backend's own arguments (token, project, access, consistency, endpoint_url)"
        )


def _check_seconds(name: str, value: object, *, allow_zero: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number of seconds, not {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        least = "0 or more" if allow_zero else "more than 0"
        raise ValueError(f"{name} must be {least} seconds, not {value!r}")


def create_gcs_backend_from_config(config: Mapping[str, Any]) -> GCSBackend:
    """A ``GCSBackend`` from a dict (say, a parsed config file).

    Keys: ``bucket_name`` (required), ``prefix``, ``project``, ``token``, ``access``,
    ``consistency``, ``cache_timeout``, ``endpoint_url``, ``lease_seconds``, and ``gcs_kwargs``
    (a dict of extra gcsfs options). An unknown key is a ``ValueError``.
    """
    from .gcs import GCSBackend

    if not isinstance(config, Mapping):
        raise ValueError(f"config must be a mapping, not {type(config).__name__}")
    unknown = sorted(str(key) for key in config if key not in CONFIG_KEYS)
    if unknown:
        raise ValueError(
            f"unknown GCS backend option(s): {', '.join(unknown)}; "
            f"known: {', '.join(CONFIG_KEYS)} (gcsfs options go under 'gcs_kwargs')"
        )
    if "bucket_name" not in config:
        raise ValueError("config needs 'bucket_name'")
    options = dict(config)
    gcs_kwargs = options.pop("gcs_kwargs", None) or {}
    if not isinstance(gcs_kwargs, Mapping):
        raise ValueError(f"gcs_kwargs must be a mapping, not {type(gcs_kwargs).__name__}")
    bad = sorted(str(key) for key in gcs_kwargs if not isinstance(key, str) or key in CONFIG_KEYS)
    if bad:
        raise ValueError(f"gcs_kwargs must not repeat backend options: {', '.join(bad)}")
    return GCSBackend(**options, **gcs_kwargs)
