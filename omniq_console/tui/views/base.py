"""What every view of the main screen has in common."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar, cast

from textual.binding import Binding
from textual.containers import Vertical
from textual.widget import Widget

from ...monitor.snapshot import Snapshot, TaskRow

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


class FilteredView(View):
    """A view showing a filtered page of the snapshot's task rows.

    Filtering 100,000 rows runs in a thread (``start_filter``); only the newest request's
    answer is shown (answers carry the ``generation`` they were asked with). A hidden view
    does not filter: it is marked dirty and filters when shown.
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._generation = 0
        self._dirty = True

    def refilter_when_shown(self) -> None:
        if self.console.active_view is self:
            self.refilter()
        else:
            self._dirty = True

    def on_activated(self) -> None:
        if self._dirty:
            self.refilter()

    def refilter(self) -> None:
        """Filter the latest snapshot's rows again, in a thread; the newest request wins."""
        snapshot = self.console.snapshot
        if snapshot is None:
            return
        self._dirty = False
        self._generation += 1
        self.start_filter(snapshot.task_rows, self._generation)

    def is_current(self, generation: int) -> bool:
        """Whether an answer asked with ``generation`` is still the one to show."""
        return generation == self._generation

    def start_filter(self, rows: Sequence[TaskRow], generation: int) -> None:
        """Start filtering ``rows`` in a thread; its answer carries ``generation``."""
        raise NotImplementedError
