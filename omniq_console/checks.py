"""Checks and text hygiene shared by every layer: seconds-valued options and secret masking."""

from __future__ import annotations

import math
import re

_SECRET_PARAM = re.compile(
    r"(access_token|refresh_token|client_secret|assertion|token|key|password)=[^&\s'\"]+",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._\-~+/=]+", re.IGNORECASE)
_AUTH_HEADER = re.compile(
    r"(authorization['\"]?\s*[:=]\s*['\"]?)[^'\"\s,}]+(\s+[^'\"\s,}]+)?", re.IGNORECASE
)


def check_seconds(name: str, value: object, *, allow_zero: bool = False) -> float:
    """``value`` as a float number of seconds, or ``ValueError`` naming ``name``.

    Refused: booleans, non-numbers, NaN and infinities, negatives, and zero unless
    ``allow_zero``.
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a number of seconds, not {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        least = "0 or more" if allow_zero else "more than 0"
        raise ValueError(f"{name} must be {least} seconds, not {value!r}")
    return float(value)


def mask_secrets(text: str) -> str:
    """``text`` with anything that looks like a credential replaced by ``***``.

    Covers ``token=...``-style URL parameters, ``Bearer ...`` values and echoed
    ``Authorization`` headers (error messages of endpoints and of google-auth quote them).
    """
    text = _AUTH_HEADER.sub(r"\1***", text)
    text = _SECRET_PARAM.sub(r"\1=***", text)
    return _BEARER.sub(r"\1***", text)


def describe_exception(exc: BaseException | None, limit: int = 300) -> str:
    """One line describing ``exc`` (its first line, or its type), secrets masked."""
    if exc is None:
        return "unknown error"
    first = str(exc).splitlines()[0].strip() if str(exc).strip() else ""
    return mask_secrets(first or type(exc).__name__)[:limit]
