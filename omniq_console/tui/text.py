"""Untrusted text from the bucket, made safe to show: always literal, never markup.

Task names, arguments, errors, tracebacks and event messages are written by whoever can
write to the bucket. Rendering them as markup would let ``[bold red]`` restyle the console
(or ``[@click=app.quit]`` act on it), and raw control characters (``\\x1b[31m``, a bidi
override) would reach the terminal. Every such value goes through :func:`literal`.
"""

from __future__ import annotations

import unicodedata

from rich.style import Style, StyleType
from rich.text import Text

# Bidirectional overrides and isolates reorder what the operator reads: never pass them on.
_BIDI_CONTROLS = frozenset(
    "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u061c"
)


def _visible(char: str, keep_newlines: bool) -> str:
    if keep_newlines and char in "\n\t":
        return char
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def escape_controls(value: str, *, keep_newlines: bool = False) -> str:
    """``value`` with control and bidi characters written as visible escapes (``\\x1b``).

    With ``keep_newlines`` (tracebacks, multi-line messages) newlines and tabs are kept.
    """
    if value.isprintable():
        return value
    return "".join(
        _visible(ch, keep_newlines)
        if ch in _BIDI_CONTROLS or unicodedata.category(ch) == "Cc"
        else ch
        for ch in value
    )


def literal(
    value: object,
    style: StyleType = "",
    *,
    multiline: bool = False,
    empty: str = "",
) -> Text:
    """A ``Text`` showing ``value`` exactly as stored: no markup, no terminal control codes.

    ``None`` shows as ``empty``. A style given here applies to the whole value and comes from
    the console, never from the value.
    """
    if value is None:
        return Text(empty, style=style or Style(dim=True), end="")
    return Text(escape_controls(str(value), keep_newlines=multiline), style=style, end="")
