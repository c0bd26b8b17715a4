"""The footer: Textual's, with the keys an operator must always find put first."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.widget import Widget
from textual.widgets import Footer


class ConsoleFooter(Footer):
    """Lists the keys that apply now, Help and Quit first.

    Textual's footer lays keys out in binding order, the focused widget's first, and cuts
    what does not fit: at 80 columns a view's own keys pushed ``q Quit`` and ``? Help`` off
    the right edge. Those two lead here, so any width that shows a key shows them.
    """

    FIRST: ClassVar[tuple[str, ...]] = ("app.help", "app.request_quit")

    def compose(self) -> ComposeResult:
        widgets: list[Widget] = list(super().compose())
        # A key widget carries its binding's ``action`` (Textual's FooterKey, not exported).
        first = [w for w in widgets if getattr(w, "action", None) in self.FIRST]
        first.sort(key=lambda w: self.FIRST.index(getattr(w, "action", "")))
        yield from first
        yield from (w for w in widgets if w not in first)
