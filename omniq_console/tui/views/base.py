"""What every view of the main screen has in common."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

from textual.binding import Binding
from textual.containers import Vertical
from textual.widget import Widget

from ...monitor.snapshot import Snapshot

if TYPE_CHECKING:
    from ..app import ConsoleApp

PAGE_KEYS = Binding.Group("page", compact=True)
"""``[`` and ``]``, shown as one entry in the footer."""


class View(Vertical):
    """One tab of the main screen, redrawn from each snapshot.

    ``ACTIONS`` names the actions that change the bucket: their bindings are hidden, and the
    actions refuse, when the console has no operator or is read-only.
    """

    ACTIONS: ClassVar[frozenset[str]] = frozenset()
    TITLE: ClassVar[str] = ""

    @property
    def console(self) -> ConsoleApp:
        return cast("ConsoleApp", self.app)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in self.ACTIONS:
            return self.console.can_act
        return True

    def show_snapshot(self, snapshot: Snapshot) -> None:
        """Show ``snapshot``; called for every new one, visible or not."""

    def tick(self) -> None:
        """Called every second: refresh what depends on the clock (countdowns)."""

    def on_activated(self) -> None:
        """The view became the visible tab."""

    @property
    def main_widget(self) -> Widget | None:
        """The widget that takes focus when the view is shown."""
        return None

    def focus_main(self) -> None:
        widget = self.main_widget
        if widget is not None:
            widget.focus()
