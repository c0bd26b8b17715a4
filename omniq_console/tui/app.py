"""The console app and its one factory, :func:`build_app`."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime

from rich.text import Text
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.reactive import reactive
from textual.screen import Screen
from textual.worker import Worker, WorkerError, WorkerState

from ..monitor.snapshot import Snapshot, TaskRow
from .actions import ActionRunner
from .context import ProvidesCommands
from .messages import OpenTask, ShowQueueTasks, SnapshotUpdated
from .operations import ConsoleOperator
from .screens.confirm import ConfirmScreen
from .screens.detail import TaskDetailScreen
from .screens.help import HelpScreen, HelpSection, offered
from .screens.main import VIEWS, MainScreen
from .source import SnapshotSource
from .taskfilter import TaskFilter
from .thresholds import Thresholds
from .views.tasks import TasksView

INTERVALS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
"""Poll intervals ``+`` and ``-`` step through, in seconds."""


class ConsoleApp(App[None]):
    """The on-call dashboard: renders the source's snapshots, runs the operator's actions.

    Its state (``snapshot``, ``interval``, ``polling_paused``) is reactive: the views and the
    status bar watch it and redraw themselves; nothing here reaches into a screen to update it.
    """

    CSS_PATH = "app.tcss"
    TITLE = "omniq-console"

    # always_update: comparing two 100,000-row snapshots field by field costs more than
    # redrawing, and a new snapshot object always means a new poll.
    snapshot: reactive[Snapshot | None] = reactive(None, always_update=True, init=False)
    interval: reactive[float | None] = reactive(None, init=False)
    polling_paused: reactive[bool] = reactive(False, init=False)

    def __init__(
        self,
        source: SnapshotSource,
        *,
        operator: ConsoleOperator | None,
        bucket: str,
        prefix: str,
        read_only: bool,
        title: str | None,
        thresholds: Thresholds,
        clock: Callable[[], float],
        views: Sequence[str] | None = None,
        quit_warning: str | None = None,
    ) -> None:
        super().__init__()
        known = dict(VIEWS)
        chosen = tuple(views) if views is not None else tuple(known)
        unknown = [name for name in chosen if name not in known]
        if unknown or not chosen:
            raise ValueError(
                f"views must name some of {', '.join(known)}; got {', '.join(chosen) or 'none'}"
            )
        self._views = tuple((name, known[name]) for name in chosen)
        self.quit_warning = quit_warning
        self.source = source
        self.operator = operator
        self.bucket = bucket
        self.prefix = prefix
        self.read_only = read_only
        self.thresholds = thresholds
        self.clock = clock
        if title:
            self.title = title
        self._actions = ActionRunner(self, source, operator, read_only=read_only)
        # The newest snapshot published and not drawn yet: a burst of polls (or a loop busy
        # for seconds) is drawn once, newest first, never as a queue of old ones.
        self._arrived: Snapshot | None = None
        self._arrived_lock = threading.Lock()  # a source may publish from another thread
        self._interval_chosen = False
        self._unsubscribe: Callable[[], None] | None = None
        self._poller: Worker[None] | None = None
        self._gc_frozen = False
        self._drawn = asyncio.Event()

    # Setup and data flow

    @property
    def actions(self) -> ActionRunner:
        """Runs the operator's actions (confirmation, worker, poll)."""
        return self._actions

    @property
    def can_act(self) -> bool:
        """True when action keys and commands are offered."""
        return self._actions.enabled

    def get_default_screen(self) -> Screen[None]:
        return MainScreen(self._views)

    def connect_operator(self, operator: ConsoleOperator) -> None:
        """Offer the action keys, run through ``operator``: for a console built without one
        because its backend was not loaded yet (the CLI draws the first frame first)."""
        self.operator = operator
        self._actions.connect(operator)
        self.refresh_bindings()

    async def first_frame(self) -> None:
        """Return once the first frame is on the terminal (at once if it already is)."""
        await self._drawn.wait()

    def on_ready(self) -> None:
        # Textual's Ready: the DOM is mounted and the first frame displayed.
        self._drawn.set()

    def on_mount(self) -> None:
        # A toast belongs to the screen it was raised on: Textual shows every live one again on
        # each screen that becomes active (a retry's toast on the detail, then again on the
        # main screen after esc). Leaving a screen dismisses what it showed.
        self.screen_change_signal.subscribe(self, self._screen_changed, immediate=True)
        self._unsubscribe = self.source.subscribe(self._publish)
        self._poller = self.run_worker(
            self.source.run(), name="monitor", group="monitor", exclusive=True, exit_on_error=False
        )
        if self.source.latest is not None:
            self._publish(self.source.latest)

    async def on_unmount(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        # Textual cancels workers when the app stops but does not wait for them: wait for the
        # source's run() to end, so that a monitor on its own thread has closed its backend
        # and its thread has ended when the app returns (MonitorThread bounds that wait).
        if self._poller is not None:
            if not self._poller.is_cancelled:  # twice would cut short the source's stopping
                self._poller.cancel()
            with contextlib.suppress(WorkerError):  # cancelled, or failed (told on screen)
                await self._poller.wait()

    def _screen_changed(self, _: Screen[object]) -> None:
        self.clear_notifications()

    def _publish(self, snapshot: Snapshot) -> None:
        # Called by the source, possibly from another thread: post_message is thread-safe.
        # One message in flight at most; it draws whatever is newest when it is handled.
        with self._arrived_lock:
            waiting, self._arrived = self._arrived, snapshot
        if waiting is None:
            self.post_message(SnapshotUpdated(snapshot))

    def on_snapshot_updated(self, message: SnapshotUpdated) -> None:
        with self._arrived_lock:
            snapshot, self._arrived = self._arrived or message.snapshot, None
        with self.batch_update():
            if not self._interval_chosen:
                self.interval = snapshot.poll_interval_s
            self.snapshot = snapshot
        if not self._gc_frozen and not self.is_headless:
            self.call_after_refresh(self.freeze_long_lived_objects)

    def freeze_long_lived_objects(self) -> None:
        """Once, after the first snapshot is on screen: exclude what exists now from the
        cyclic garbage collector's full passes.

        Why: a full pass rescans every tracked object, and with a big snapshot, its rows and
        the app's widgets alive that is 300,000 objects: passes of 120-250 ms (measured),
        each one a frozen screen. Frozen objects are still freed by reference counting; only
        cycles among them are never collected, and what exists at start-up lives as long as
        the app anyway. No full pass runs first: it would be that same frozen screen
        (130-285 ms at 100,000 tasks, measured) to free the cycles already garbage then,
        about 2,300 objects (under a megabyte), which stay frozen instead. Process-wide, so
        only when the app owns the terminal, never in a headless run (tests, screenshots)
        where other code shares the process.
        """
        if self._gc_frozen:
            return
        self._gc_frozen = True
        gc.freeze()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "monitor" and event.state == WorkerState.ERROR:
            self.notify(
                f"Polling stopped: {event.worker.error}",
                severity="error",
                markup=False,
                timeout=30,
            )

    def now(self) -> datetime:
        """The time the views count down from (the injected wall clock)."""
        return datetime.fromtimestamp(self.clock(), UTC)

    def data_age(self) -> float:
        """Seconds since the snapshot on screen was taken: from its ``taken_at``, so a
        snapshot delivered late (a busy loop, a slow poll) is never shown as fresh."""
        if self.snapshot is None:
            return 0.0
        return max(0.0, self.clock() - self.snapshot.taken_at.timestamp())

    # Navigation

    def on_open_task(self, message: OpenTask) -> None:
        self.open_task(message.task_id)

    def open_task(self, task_id: str) -> None:
        """Show the detail screen of one task."""
        row: TaskRow | None = None
        if self.snapshot is not None:
            row = next((r for r in self.snapshot.task_rows if r.id == task_id), None)
        self.push_screen(TaskDetailScreen(task_id, row))

    def on_show_queue_tasks(self, message: ShowQueueTasks) -> None:
        main = self.screen_stack[0]
        if isinstance(main, MainScreen) and main.has_view("tasks"):
            main.action_show_view("tasks")
            main.query_one(TasksView).set_filter(TaskFilter(queue=message.queue))

    # Keys of the main screen

    def action_refresh_now(self) -> None:
        """Poll now."""
        self.source.request_poll()
        self.notify("Refreshing…", timeout=2)

    def action_change_interval(self, step: int) -> None:
        """Poll less (+1) or more (-1) often."""
        current = self.interval if self.interval is not None else 2.0
        index = min(range(len(INTERVALS)), key=lambda i: abs(INTERVALS[i] - current))
        index = max(0, min(len(INTERVALS) - 1, index + step))
        self._interval_chosen = True
        self.interval = INTERVALS[index]
        self.source.set_interval(INTERVALS[index])

    def action_toggle_polling(self) -> None:
        """Pause polling, or resume it."""
        self.polling_paused = not self.polling_paused

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # ``P`` is bound twice so that the footer says what it does now: one of the two shows.
        if action == "pause_polling":
            return not self.polling_paused
        if action == "resume_polling":
            return self.polling_paused
        return True

    def action_pause_polling(self) -> None:
        """Stop polling the bucket (the screen keeps the last data, and says so)."""
        self.polling_paused = True

    def action_resume_polling(self) -> None:
        """Poll again, at once."""
        self.polling_paused = False

    def watch_polling_paused(self, paused: bool) -> None:
        if paused:
            self.source.pause()
        else:
            self.source.resume()
            self.source.request_poll()
        self.screen.refresh_bindings()

    def action_request_quit(self) -> None:
        """Quit; with a ``quit_warning`` (the demo: quitting stops its fleet), ask first."""
        if self.quit_warning is None:
            self.exit()
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.exit()

        question = Text("Quit omniq-console?", style="bold", end="")
        detail = Text(self.quit_warning, style="dim", end="")
        self.push_screen(
            ConfirmScreen("Quit", question, detail=detail, confirm_label="Quit"), answered
        )

    def action_help(self) -> None:
        """Show every key, by where it works: action keys only where they apply now."""
        main = self.screen_stack[0]
        active = main.active_view if isinstance(main, MainScreen) else None
        sections: list[HelpSection] = [("Everywhere", offered(MainScreen.BINDINGS, None))]
        for view in main.views if isinstance(main, MainScreen) else ():
            # The view shown answers for its selection; the others list their keys.
            keys = offered(view.BINDINGS, view if view is active else None)
            if not self.can_act:
                keys = [b for b in keys if b.action.split("(", 1)[0] not in view.ACTIONS]
            title = f"{view.TITLE} view" + (" (shown now)" if view is active else "")
            sections.append((title, keys))
        detail = [b for b in TaskDetailScreen.BINDINGS if isinstance(b, Binding)]
        if not self.can_act:
            detail = [b for b in detail if b.action not in TaskDetailScreen.ACTIONS]
        sections.append(("Task detail", detail))
        sections.append(
            (
                "Tables",
                [
                    Binding("enter", "", "Open the row (task, queue, group)"),
                    Binding("o", "", "Sort by the next column (or click a header)"),
                    Binding("tab", "", "Next panel or filter"),
                ],
            )
        )
        self.push_screen(HelpScreen(sections))

    # Command palette

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        if isinstance(screen, MainScreen):
            for name, view_class in self._views:
                yield SystemCommand(
                    f"Show {view_class.TITLE}",
                    f"Switch to the {view_class.TITLE.lower()} view",
                    lambda name=name: screen.action_show_view(name),
                )
            yield SystemCommand("Refresh now", "Poll the bucket now", self.action_refresh_now)
            yield SystemCommand(
                "Resume polling" if self.polling_paused else "Pause polling",
                "Stop or restart polling the bucket",
                self.action_toggle_polling,
            )
            yield SystemCommand(
                "Poll less often", "Longer poll interval", lambda: self.action_change_interval(1)
            )
            yield SystemCommand(
                "Poll more often", "Shorter poll interval", lambda: self.action_change_interval(-1)
            )
            yield SystemCommand("Help", "Every key, by view", self.action_help)
        # Each view (and the detail screen) offers its own commands: the app knows none.
        provider = screen.active_view if isinstance(screen, MainScreen) else screen
        if isinstance(provider, ProvidesCommands):
            yield from provider.commands()


def build_app(
    source: SnapshotSource,
    *,
    operator: ConsoleOperator | None = None,
    bucket: str = "",
    prefix: str = "",
    read_only: bool = False,
    title: str | None = None,
    thresholds: Thresholds | None = None,
    clock: Callable[[], float] | None = None,
    views: Sequence[str] | None = None,
    quit_warning: str | None = None,
) -> ConsoleApp:
    """The console on ``source``: the one way the CLI, the tests and the screenshots make it.

    Without an ``operator``, or with ``read_only``, no action is offered and every action
    refuses. ``bucket`` and ``prefix`` label the status bar (the snapshot's own are used when
    empty). ``clock`` (wall-clock seconds, ``time.time``) is injectable so that tests and
    screenshots show fixed ages and countdowns. ``views`` names the views mounted, in tab
    order (all by default; a test of one view boots only that one); the first is shown.
    ``quit_warning`` makes ``q`` ask first, saying what quitting stops (the demo's fleet).
    """
    return ConsoleApp(
        source,
        operator=operator,
        bucket=bucket,
        prefix=prefix,
        read_only=read_only,
        title=title,
        thresholds=thresholds or Thresholds(),
        clock=clock or time.time,
        views=views,
        quit_warning=quit_warning,
    )
