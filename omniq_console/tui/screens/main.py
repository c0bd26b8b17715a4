"""The main screen: status bar, one tab per view, footer with the keys."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import TabbedContent, TabPane

from ..views.backend import BackendView
from ..views.base import View
from ..views.events import EventsView
from ..views.overview import OverviewView
from ..views.queues import QueuesView
from ..views.results import ResultsView
from ..views.schedules import SchedulesView
from ..views.tasks import TasksView
from ..views.workers import WorkersView
from ..widgets.footer import ConsoleFooter
from ..widgets.status_bar import StatusBar

VIEWS: tuple[tuple[str, type[View]], ...] = (
    ("overview", OverviewView),
    ("queues", QueuesView),
    ("tasks", TasksView),
    ("results", ResultsView),
    ("events", EventsView),
    ("schedules", SchedulesView),
    ("workers", WorkersView),
    ("backend", BackendView),
)
"""Views in tab order; key ``1`` shows the first."""

_VIEW_KEYS = Binding.Group("views", compact=True)
_INTERVAL_KEYS = Binding.Group("interval", compact=True)


class MainScreen(Screen[None]):
    """Holds the views; keys here work in every view."""

    BINDINGS: ClassVar[list[BindingType]] = [
        # The footer puts Help and Quit first (``ConsoleFooter``): at 80 columns they show.
        Binding("question_mark", "app.help", "Help", key_display="?"),
        *(
            Binding(str(i), f"show_view('{name}')", view.TITLE, group=_VIEW_KEYS)
            for i, (name, view) in enumerate(VIEWS, start=1)
        ),
        Binding("ctrl+r,f5", "app.refresh_now", "Refresh"),
        Binding(
            "plus,equals_sign",
            "app.change_interval(1)",
            "Poll less often",
            key_display="+",
            group=_INTERVAL_KEYS,
        ),
        Binding(
            "minus",
            "app.change_interval(-1)",
            "Poll more often",
            key_display="-",
            group=_INTERVAL_KEYS,
        ),
        # Two bindings of one key: the app offers the one that applies, so the footer says
        # what ``P`` does now.
        Binding("P", "app.pause_polling", "Pause", key_display="P", tooltip="Pause polling"),
        Binding("P", "app.resume_polling", "Resume", key_display="P", tooltip="Resume polling"),
        Binding("q", "app.request_quit", "Quit"),
    ]

    # Classes the stylesheet lays out by: below 120 columns panels stack, below 36 rows the
    # overview scrolls instead of squeezing its panels to a border.
    HORIZONTAL_BREAKPOINTS = [  # noqa: RUF012 (Textual declares it a plain attribute)
        (0, "-narrow"),
        (120, "-wide"),
        (160, "-huge"),
    ]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (36, "-tall")]  # noqa: RUF012

    def __init__(self, views: Sequence[tuple[str, type[View]]]) -> None:
        super().__init__()
        self._view_classes = tuple(views)

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        # A tab is labelled with its key, the view's place in ``VIEWS``, whatever is mounted.
        numbers = {name: i for i, (name, _) in enumerate(VIEWS, start=1)}
        first, first_class = self._view_classes[0]
        with TabbedContent(initial=first, id="views"):
            for name, view in self._view_classes:
                with TabPane(f"{numbers[name]} {view.TITLE}", id=name):
                    if name == first:
                        yield first_class(id=f"view-{name}")
        yield ConsoleFooter()

    def has_view(self, name: str) -> bool:
        """Whether the view ``name`` is on this screen (a test harness mounts only some)."""
        return any(name == mounted for mounted, _ in self._view_classes)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # A view's key is offered only where the view is mounted.
        if action == "show_view":
            return bool(parameters) and self.has_view(str(parameters[0]))
        return True

    @property
    def views(self) -> list[View]:
        return [self.view(name) for name, _ in self._view_classes]

    def view(self, name: str) -> View:
        """The view ``name``, mounted now if it was not yet (see ``on_mount``)."""
        found = self.query(f"#view-{name}").results(View)
        view = next(found, None)
        if view is None:
            view_class = dict(self._view_classes)[name]
            view = view_class(id=f"view-{name}")
            self.query_one(f"#{name}", TabPane).mount(view)
        return view

    @property
    def active_view(self) -> View | None:
        active = self.query_one(TabbedContent).active
        return self.view(active) if active else None

    def on_mount(self) -> None:
        self.call_after_refresh(self._focus_active)
        # The hidden views are mounted once the first frame is drawn: it waits for the shown
        # one's widgets only (the seven others were about half of its mounting time).
        self.call_after_refresh(self._mount_hidden)

    def _mount_hidden(self) -> None:
        for name, _ in self._view_classes:
            # A quit right after the first frame detaches the panes before this runs: a view
            # mounted into one then would fail the shutdown (MountError), not just be lost.
            if self.query_one(f"#{name}", TabPane).is_attached:
                self.view(name)

    def _focus_active(self) -> None:
        if (view := self.active_view) is not None:
            view.focus_main()

    def action_show_view(self, name: str) -> None:
        """Show the view ``name`` and put the focus in it."""
        tabs = self.query_one(TabbedContent)
        view = self.view(name)
        if tabs.active != name:
            tabs.active = name
        if view.is_mounted:
            view.focus_main()
        else:  # mounted just now: its widgets exist once it has composed
            self.call_after_refresh(view.focus_main)

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id is not None:
            view = self.view(event.pane.id)
            if view.is_mounted:
                view.on_activated()
            # else: mounted just now, it draws the latest snapshot on mount (it is shown).
