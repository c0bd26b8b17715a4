"""The main screen: status bar, one tab per view, footer with the keys."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Footer, TabbedContent, TabPane

from ..views.base import View
from ..views.events import EventsView
from ..views.overview import OverviewView
from ..views.queues import QueuesView
from ..views.results import ResultsView
from ..views.schedules import SchedulesView
from ..views.tasks import TasksView
from ..views.workers import WorkersView
from ..widgets.status_bar import StatusBar

VIEWS: tuple[tuple[str, type[View]], ...] = (
    ("overview", OverviewView),
    ("queues", QueuesView),
    ("tasks", TasksView),
    ("results", ResultsView),
    ("events", EventsView),
    ("schedules", SchedulesView),
    ("workers", WorkersView),
)
"""Views in tab order; key ``1`` shows the first."""

_VIEW_KEYS = Binding.Group("views", compact=True)
_INTERVAL_KEYS = Binding.Group("interval", compact=True)


class MainScreen(Screen[None]):
    """Holds the views; keys here work in every view."""

    BINDINGS: ClassVar[list[BindingType]] = [
        # Help first: when the footer is too narrow for every key, this one still shows.
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
        Binding(
            "P", "app.toggle_polling", "Pause", key_display="P", tooltip="Pause or resume polling"
        ),
        Binding("q", "app.quit", "Quit"),
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
        with TabbedContent(initial=self._view_classes[0][0], id="views"):
            for number, (name, view) in enumerate(self._view_classes, start=1):
                with TabPane(f"{number} {view.TITLE}", id=name):
                    yield view(id=f"view-{name}")
        yield Footer()

    @property
    def views(self) -> list[View]:
        return [self.query_one(f"#view-{name}", View) for name, _ in self._view_classes]

    def view(self, name: str) -> View:
        return self.query_one(f"#view-{name}", View)

    @property
    def active_view(self) -> View | None:
        active = self.query_one(TabbedContent).active
        return self.view(active) if active else None

    def on_mount(self) -> None:
        self.call_after_refresh(self._focus_active)

    def _focus_active(self) -> None:
        if (view := self.active_view) is not None:
            view.focus_main()

    def action_show_view(self, name: str) -> None:
        """Show the view ``name`` and put the focus in it."""
        tabs = self.query_one(TabbedContent)
        if tabs.active != name:
            tabs.active = name
        self.view(name).focus_main()

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id is not None:
            self.view(event.pane.id).on_activated()
