"""What every view of the main screen has in common."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import ClassVar, Generic, TypeVar

from rich.text import Text
from textual import on
from textual.app import SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Select, TabbedContent, TabPane

from ...monitor.snapshot import Snapshot, TaskRow
from ..columns import PagedTable
from ..context import ConsoleContext, console_of
from ..taskfilter import PAGE_SIZE, TaskOrder, TaskPage

PAGE_KEYS = Binding.Group("page", compact=True)
"""``[`` and ``]``, shown as one entry in the footer."""
PAGE_BINDINGS: list[BindingType] = [
    Binding("left_square_bracket", "page(-1)", "Previous page", key_display="[", group=PAGE_KEYS),
    Binding("right_square_bracket", "page(1)", "Next page", key_display="]", group=PAGE_KEYS),
]
"""The paging keys of a :class:`FilteredView` (``action_page``)."""


@dataclass(frozen=True, slots=True)
class Command:
    """A view's key and, with a ``title``, the same action in the command palette: declared
    once, so the footer and the palette offer one set of actions, under one test
    (``check_action``). ``description`` labels the key in the footer; ``title`` and ``help``
    the palette's entry."""

    key: str
    action: str
    description: str
    title: str = ""
    help: str = ""
    key_display: str | None = None
    tooltip: str = ""

    def binding(self) -> Binding:
        """The key, as Textual binds it."""
        return Binding(
            self.key,
            self.action,
            self.description,
            key_display=self.key_display,
            tooltip=self.tooltip,
        )


def keys(commands: Iterable[Command]) -> list[BindingType]:
    """The bindings of ``commands``, in order."""
    return [command.binding() for command in commands]


class View(Vertical):
    """One tab of the main screen, drawn from the app's ``snapshot`` reactive.

    Only the visible view draws a new snapshot; a hidden one is marked dirty and draws the
    latest when it is shown. ``ACTIONS`` names the actions that change the bucket: their
    bindings and commands are offered only when the console can act and
    :meth:`action_applies` says the selection allows it (``refresh_bindings`` on each change
    of selection keeps the footer true). ``COMMANDS`` declares the view's keys that the palette
    offers too (a view binds them with :func:`keys`).
    """

    ACTIONS: ClassVar[frozenset[str]] = frozenset()
    TITLE: ClassVar[str] = ""
    COMMANDS: ClassVar[tuple[Command, ...]] = ()

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._dirty = True
        self._console_ctx: ConsoleContext | None = None

    @property
    def console(self) -> ConsoleContext:
        """The app, as the small part of it a view uses."""
        if self._console_ctx is None:
            self._console_ctx = console_of(self)
        return self._console_ctx

    def on_mount(self) -> None:
        self.watch(self.app, "snapshot", self._snapshot_arrived, init=False)
        if self.console.snapshot is not None:
            self._snapshot_arrived(self.console.snapshot)

    @property
    def shown(self) -> bool:
        """Whether the view's tab is the one on screen."""
        # The tab switcher's own display flags are set after the views mount: ask it instead.
        pane = next((n for n in self.ancestors if isinstance(n, TabPane)), None)
        tabs = next((n for n in self.ancestors if isinstance(n, TabbedContent)), None)
        return pane is None or tabs is None or tabs.active == pane.id

    def _snapshot_arrived(self, snapshot: Snapshot | None) -> None:
        if snapshot is None:
            return
        if self.shown:
            self._dirty = False
            self.show_snapshot(snapshot)
        else:
            self._dirty = True

    def on_activated(self) -> None:
        """The view became the visible tab: catch up with the latest snapshot."""
        snapshot = self.console.snapshot
        if self._dirty and snapshot is not None:
            self._dirty = False
            self.show_snapshot(snapshot)
        self.refresh_bindings()

    def show_snapshot(self, snapshot: Snapshot) -> None:
        """Draw ``snapshot``; called for the visible view only."""

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in self.ACTIONS:
            return self.console.can_act and self.action_applies(action)
        return True

    def action_applies(self, action: str) -> bool:
        """Whether ``action`` (one of ``ACTIONS``) applies to what is selected now."""
        return True

    def commands(self) -> Iterable[SystemCommand]:
        """The view's palette commands that apply now (the same test as the keys)."""
        for command in self.COMMANDS:
            if command.title and self.check_action(command.action, ()):
                yield SystemCommand(command.title, command.help, partial(self._run, command.action))

    def _run(self, action: str) -> None:
        self.call_later(self.run_action, action)

    @property
    def main_widget(self) -> Widget | None:
        """The widget that takes focus when the view is shown."""
        return None

    def focus_main(self) -> None:
        widget = self.main_widget
        if widget is not None:
            widget.focus()


def offer_queues(select: Select[str], queues: Sequence[str]) -> None:
    """Offer ``queues`` (literal names) in ``select``, keeping its choice while still offered;
    no ``Changed`` is posted, so a new queue in the bucket does not refilter."""
    current = select.value
    with select.prevent(Select.Changed):
        select.set_options([(Text(q, end=""), q) for q in queues])
        if isinstance(current, str) and current in queues:
            select.value = current


Found = TypeVar("Found")


class FilterAnswer(Message, Generic[Found]):
    """A filter worker's answer: what it found, and the ``generation`` it was asked with
    (``FilteredView.is_current`` says whether it is still the one to show)."""

    def __init__(self, found: Found, generation: int) -> None:
        super().__init__()
        self.found = found
        self.generation = generation


class FilteredView(View, Generic[Found]):
    """A view showing a filtered page of the snapshot's task rows.

    Filtering 100,000 rows runs in a thread (``start_filter``), which posts a
    ``FilterAnswer``; only the newest request's answer is shown (``show_found``). The keys
    of :data:`PAGE_BINDINGS` turn the pages of ``shown_page``; a sort asked of a
    :class:`PagedTable` or a filter's new choice starts again from the first page.
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._generation = 0
        self._start = 0  # the first row of the page the next filter shows
        self._order = TaskOrder()

    def show_snapshot(self, snapshot: Snapshot) -> None:
        self.refilter()

    @property
    def shown_page(self) -> TaskPage | None:
        """The page on screen (None before the first answer)."""
        raise NotImplementedError

    def turn_to(self, start: int) -> None:
        """Filter again, showing the page from row ``start``."""
        self._start = start
        self.refilter()

    @on(PagedTable.SortRequested)
    def _sort_requested(self, event: PagedTable.SortRequested) -> None:
        """Sort all the rows that match (in the filter's thread), from the first page."""
        event.stop()
        self._order = TaskOrder(event.column, event.descending)
        self.turn_to(0)

    @on(Select.Changed)
    def _select_changed(self, event: Select.Changed) -> None:
        """A filter's choice changed: filter again, from the first page."""
        event.stop()
        self.turn_to(0)

    def action_page(self, step: int) -> None:
        """Move ``step`` pages (``]``: 1, ``[``: -1); a bell past either end."""
        page = self.shown_page
        if page is None:
            return
        start = page.start + step * PAGE_SIZE
        if not 0 <= start < page.matched:
            self.app.bell()
            return
        self.turn_to(start)

    def refilter(self) -> None:
        """Filter the latest snapshot's rows again, in a thread; the newest request wins."""
        snapshot = self.console.snapshot
        if snapshot is None:
            return
        self._generation += 1
        self.start_filter(snapshot.task_rows, self._generation)

    def is_current(self, generation: int) -> bool:
        """Whether an answer asked with ``generation`` is still the one to show."""
        return generation == self._generation

    def start_filter(self, rows: Sequence[TaskRow], generation: int) -> None:
        """Start filtering ``rows`` in a thread; it posts ``FilterAnswer(found, generation)``."""
        raise NotImplementedError

    def on_filter_answer(self, message: FilterAnswer[Found]) -> None:
        message.stop()
        if self.is_current(message.generation):
            self.show_found(message.found)

    def show_found(self, found: Found) -> None:
        """Show what the newest filter found."""
        raise NotImplementedError
