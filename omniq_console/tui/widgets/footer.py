"""The footer: Textual's, with the keys an operator must always find put first."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widget import Widget
from textual.widgets import Footer
from textual.widgets._footer import FooterKey  # not exported; pinned by its test


class ConsoleFooter(Footer):
    """Lists the keys that apply now, Help and Quit first.

    Textual's footer lays keys out in binding order, the focused widget's first, and cuts
    what does not fit: at 80 columns a view's own keys pushed ``q Quit`` and ``? Help`` off
    the right edge. Those two lead here, so any width that shows a key shows them.

    It is composed again only when the keys it shows change. Textual's footer recomposes
    (removes and mounts every key widget, each styled anew) on every ``refresh_bindings``,
    and the views call that on each page shown and each cursor move: 30-90 ms of blocked
    loop each time at 160 columns (measured with 100,000 tasks), for the same keys.
    """

    FIRST: ClassVar[tuple[str, ...]] = ("app.help", "app.request_quit")

    def __init__(self) -> None:
        super().__init__()
        self._composed_for: tuple[tuple[Binding, bool, str], ...] | None = None

    def _shown_bindings(self) -> tuple[tuple[Binding, bool, str], ...]:
        """What ``compose`` draws from: each active binding, whether it is enabled, its
        tooltip (the node that binds it draws nothing)."""
        active = self.screen.active_bindings.values()
        return tuple((b.binding, b.enabled, b.tooltip) for b in active)

    async def recompose(self) -> None:
        shown = self._shown_bindings()
        if shown == self._composed_for:
            return
        self._composed_for = shown
        await super().recompose()

    def compose(self) -> ComposeResult:
        widgets: list[Widget] = list(super().compose())
        for widget in widgets:
            # Textual's key starts compact and is then bound to the footer's own (not
            # compact): a restyle each way, twice the mount's styling of every key. Given the
            # footer's at once, it is styled once. (The palette's key is not bound: it stays
            # as Textual makes it.)
            if isinstance(widget, FooterKey) and not widget.has_class("-command-palette"):
                widget.set_reactive(FooterKey.compact, self.compact)
        # A key widget carries its binding's ``action`` (Textual's FooterKey, not exported).
        first = [w for w in widgets if getattr(w, "action", None) in self.FIRST]
        first.sort(key=lambda w: self.FIRST.index(getattr(w, "action", "")))
        yield from first
        yield from (w for w in widgets if w not in first)
