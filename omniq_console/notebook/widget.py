"""The live dashboard widget: a Monitor on the kernel's own event loop, drawn in a cell.

Built on ipywidgets: its core widgets (HTML, Button, Dropdown, boxes) ship with JupyterLab,
Notebook 7 and VS Code's Jupyter extension, so the dashboard needs no front-end extension and
no JavaScript of ours. anywidget would give a custom view, but through a JavaScript bundle we
would have to build and test in each front-end; the panel is HTML that changes as a whole per
snapshot, which an ``HTML`` widget's value carries well.

The Monitor runs as an asyncio task on the loop the kernel runs cells on: it polls while the
kernel is idle (or while a cell awaits), and no thread touches the widgets. Each snapshot
re-renders the panel in place. One Monitor per cell (see ``session``); ``close()``, a re-run
of the cell and the kernel's shutdown stop it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any

from ..backend.errors import BackendUnavailableError
from ..backend.gcs import GCSBackend
from ..checks import check_seconds, describe_exception
from ..models import ScheduleStatus, TaskStatus
from ..monitor import Monitor
from ..monitor.frames import NOTEBOOK_INSTALL_HINT
from ..monitor.snapshot import QueueStats, ScheduleRow, Snapshot
from ..runtime.operator import Operator
from ..settings import default_actor, load_settings, make_backend
from . import session
from .groups import FailureGroup, failure_groups
from .render import dashboard_html, message_html

try:
    import ipywidgets as widgets  # type: ignore[import-untyped,unused-ignore]
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(f"the notebook dashboard needs ipywidgets: {NOTEBOOK_INSTALL_HINT}") from exc

MONITOR_TASK_PREFIX = "omniq-dashboard:"
"""Name prefix of the asyncio task that runs a dashboard's Monitor (one per live dashboard)."""
DEFAULT_INTERVAL = 2.0
"""Seconds between polls of a dashboard given a backend (a bucket name uses the settings)."""
OPEN_BACKOFF_MAX_S = 30.0
"""Longest wait between two attempts to reach an unreachable bucket."""
SHUTDOWN_GRACE_S = 2.0
"""How long the kernel's exit waits for a dashboard's Monitor to close its connections."""


def _descendants(box: Any) -> list[Any]:
    found: list[Any] = []
    for child in getattr(box, "children", ()):
        found += [child, *_descendants(child)]
    return found


class Dashboard:
    """A live panel of one bucket, with the operator's actions (unless read-only).

    Made by ``dashboard()``. ``snapshot`` is the newest snapshot shown, ``state()`` what the
    panel shows as plain data, ``await wait_for(...)`` waits for a snapshot matching a
    condition, ``close()`` stops it. ``widget`` is the ipywidgets box (display it again in
    another cell to get a second view of the same live panel).
    """

    def __init__(
        self,
        backend: GCSBackend,
        *,
        interval: float = DEFAULT_INTERVAL,
        read_only: bool = False,
        actor: str | None = None,
        key: str | None = None,
    ) -> None:
        self.backend = backend
        self.interval = check_seconds("interval", interval)
        self.read_only = bool(read_only or backend.read_only)
        self.operator: Operator | None = (
            None if self.read_only else Operator(backend, actor or default_actor())
        )
        self.key = key or f"dashboard:{session.cell_key()}"
        self.monitor: Monitor | None = None
        self.snapshot: Snapshot | None = None
        self.groups: tuple[FailureGroup, ...] = ()
        self.snapshots = 0
        self.error: str | None = None
        self.last_action: str | None = None
        self._closed = False
        self._displayed_in: int | None = None
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "a dashboard runs its Monitor on the running event loop: make it in a Jupyter "
                "cell (or from async code)"
            ) from None
        self._published = asyncio.Event()
        self._stopped = asyncio.Event()
        self._actions: set[Future[None]] = set()
        self._confirming: FailureGroup | None = None
        self._build()
        self._task = self._loop.create_task(self._run(), name=f"{MONITOR_TASK_PREFIX}{self.url}")

    # -- widgets -----------------------------------------------------------------------------

    def _build(self) -> None:
        self.panel = widgets.HTML(value=message_html(f"connecting to {self.url} ..."))
        children: list[Any] = [self.panel]
        if not self.read_only:
            wide = widgets.Layout(width="360px")
            self.schedule_select = widgets.Dropdown(description="Schedule", options=[], layout=wide)
            self.pause_button = widgets.Button(description="Pause")
            self.resume_button = widgets.Button(description="Resume")
            self.trigger_button = widgets.Button(description="Run now")
            self.queue_select = widgets.Dropdown(description="Queue", options=[], layout=wide)
            self.pause_queue_button = widgets.Button(description="Pause queue")
            self.resume_queue_button = widgets.Button(description="Resume queue")
            self.group_select = widgets.Dropdown(description="Failures", options=[], layout=wide)
            self.retry_button = widgets.Button(description="Retry group...", button_style="warning")
            self.confirm_text = widgets.HTML()
            self.confirm_yes = widgets.Button(button_style="danger")
            self.confirm_no = widgets.Button(description="No")
            self.confirm_box = widgets.HBox(
                [self.confirm_text, self.confirm_yes, self.confirm_no],
                layout=widgets.Layout(display="none"),
            )
            self.action_status = widgets.HTML()
            self.pause_button.on_click(lambda _: self._schedule_action("pause"))
            self.resume_button.on_click(lambda _: self._schedule_action("resume"))
            self.trigger_button.on_click(lambda _: self._schedule_action("trigger"))
            self.pause_queue_button.on_click(lambda _: self._queue_action(pause=True))
            self.resume_queue_button.on_click(lambda _: self._queue_action(pause=False))
            self.retry_button.on_click(lambda _: self._ask_retry())
            self.confirm_yes.on_click(lambda _: self._confirm_retry(True))
            self.confirm_no.on_click(lambda _: self._confirm_retry(False))
            self.schedule_select.observe(lambda _: self._sync_buttons(), names="value")
            self.queue_select.observe(lambda _: self._sync_buttons(), names="value")
            self.group_select.observe(lambda _: self._sync_buttons(), names="value")
            children += [
                widgets.HBox(
                    [self.schedule_select, self.pause_button, self.resume_button,
                     self.trigger_button]
                ),
                widgets.HBox(
                    [self.queue_select, self.pause_queue_button, self.resume_queue_button]
                ),
                widgets.HBox([self.group_select, self.retry_button]),
                self.confirm_box,
                self.action_status,
            ]  # fmt: skip
            self._sync_buttons()
        self.widget = widgets.VBox(children)
        self._widgets: list[Any] = [self.widget, *_descendants(self.widget)]

    @property
    def url(self) -> str:
        return f"gs://{self.backend.bucket_name}/{self.backend.prefix}"

    @property
    def closed(self) -> bool:
        return self._closed

    def show(self) -> None:
        """Display the panel in the current cell's output."""
        from IPython.display import display

        self._displayed_in = session.execution_count()
        display(self.widget)  # type: ignore[no-untyped-call]

    def _ipython_display_(self) -> None:
        # ``dashboard()`` already displayed it: a bare ``dashboard(...)`` as a cell's last line
        # must not show it twice. Shown in a later cell, it is a second view of the same panel.
        if self._displayed_in is None or self._displayed_in != session.execution_count():
            self.show()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"live, every {self.interval:g}s"
        return f"<Dashboard {self.url}: {state}>"

    # -- the monitor -------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            if not await self._open():
                return
            try:
                self.monitor = Monitor(self.backend, interval=self.interval)
                unsubscribe = self.monitor.subscribe(self._on_snapshot)
                try:
                    await self.monitor.run()
                finally:
                    unsubscribe()
            finally:
                await self.backend.aclose()
        finally:
            self._stopped.set()
            self._wake()

    async def _open(self) -> bool:
        """Open the backend, retrying while it is unreachable; False when it cannot be used
        (a missing bucket, refused credentials, a bad option): the panel says why."""
        attempt = 0
        while True:
            attempt += 1
            try:
                await self.backend.aopen()
                return True
            except (BackendUnavailableError, TimeoutError, ConnectionError) as exc:
                delay = min(OPEN_BACKOFF_MAX_S, self.interval * 2 ** min(attempt, 16))
                self.error = describe_exception(exc)
                self.panel.value = message_html(
                    f"connecting to {self.url} (attempt {attempt}): {self.error}; "
                    f"trying again in {delay:.0f}s",
                    error=True,
                )
                await asyncio.sleep(delay)
            except Exception as exc:
                self.error = f"cannot open {self.url}: {describe_exception(exc)}"
                self.panel.value = message_html(self.error, error=True)
                return False

    def _on_snapshot(self, snapshot: Snapshot) -> None:
        if self._closed:
            return
        self.snapshot = snapshot
        self.snapshots += 1
        self.error = snapshot.error if snapshot.stale else None
        self.groups = failure_groups(snapshot.task_rows)
        self.panel.value = dashboard_html(snapshot, self.groups)
        if not self.read_only:
            self._sync_options()
        self._wake()

    def _wake(self) -> None:
        published, self._published = self._published, asyncio.Event()
        published.set()

    async def wait_for(
        self,
        predicate: Callable[[Snapshot], object] = lambda s: True,
        *,
        within: float = 30.0,
        what: str = "a matching snapshot",
    ) -> Snapshot:
        """The first snapshot shown (the current one included) for which ``predicate`` holds.

        Only snapshots with data count (not the "connecting" ones published before the first
        poll succeeded).
        Raises ``TimeoutError`` naming ``what`` after ``within`` seconds, and
        ``RuntimeError`` if the dashboard stops first.
        """
        deadline = time.monotonic() + check_seconds("within", within)
        while True:
            published = self._published
            snapshot = self.snapshot
            if snapshot is not None and not snapshot.connecting and predicate(snapshot):
                return snapshot
            if self._stopped.is_set() or self._closed:
                raise RuntimeError(
                    f"the dashboard of {self.url} stopped ({self.error or 'closed'})"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                last = "no snapshot yet" if snapshot is None else f"last taken {snapshot.taken_at}"
                raise TimeoutError(f"waited {within:g}s for {what} on {self.url} ({last})")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(published.wait(), remaining)

    async def refresh(self, *, within: float = 30.0) -> Snapshot:
        """Poll now and return the snapshot that poll publishes.

        The panel's widgets then send their state again from the calling cell: the Monitor's
        own updates are tagged with the cell that started it (the kernel keeps the parent
        message per task), and tools that record only the running cell's messages (nbclient,
        papermill) would otherwise save the panel as it was when that cell ended.
        """
        if self.monitor is None:
            snapshot = await self.wait_for(within=within, what="the first snapshot")
        else:
            seen = self.snapshots
            self.monitor.request_poll()
            snapshot = await self.wait_for(
                lambda _: self.snapshots > seen, within=within, what="a fresh poll"
            )
        for widget in self._widgets:
            widget.send_state()
        return snapshot

    def state(self) -> dict[str, Any]:
        """What the panel shows now, as plain data (JSON-ready)."""
        s = self.snapshot
        return {
            "url": self.url,
            "running": not self._closed and not self._task.done(),
            "snapshots": self.snapshots,
            "taken_at": None if s is None else s.taken_at.isoformat(),
            "stale": None if s is None else s.stale,
            "connecting": s is None or s.connecting,
            "error": self.error,
            "queues": {}
            if s is None
            else {
                q.name: {
                    "pending": q.pending,
                    "delayed": q.delayed,
                    "running": q.running,
                    "paused": q.paused,
                }
                for q in s.queues
            },
            "tasks": {} if s is None else dict(s.tasks),
            "results": {} if s is None else dict(s.results),
            "failure_groups": [
                {"error_type": g.error_type, "queue": g.queue, "count": g.count}
                for g in self.groups
            ],
            "schedules": {} if s is None else {r.id: r.status for r in s.schedules},
            "workers": [] if s is None else [w.id for w in s.workers],
            "actions": not self.read_only,
            "last_action": self.last_action,
        }

    def close(self) -> None:
        """Stop the Monitor and the actions; the panel keeps its last picture, marked stopped."""
        if self._closed:
            return
        self._closed = True
        session.unregister(self.key, self)
        self._task.cancel()
        for action in list(self._actions):
            action.cancel()
        if self.snapshot is not None:
            self.panel.value = dashboard_html(self.snapshot, self.groups, running=False)
        if not self.read_only:
            for control in (
                self.schedule_select, self.pause_button, self.resume_button,
                self.trigger_button, self.queue_select, self.pause_queue_button,
                self.resume_queue_button, self.group_select, self.retry_button,
                self.confirm_yes,
            ):  # fmt: skip
                control.disabled = True
            self.confirm_box.layout.display = "none"
        if not self._loop.is_running() and not self._loop.is_closed():
            # The kernel is exiting (atexit): let the Monitor close its connections.
            with contextlib.suppress(Exception):
                self._loop.run_until_complete(asyncio.wait({self._task}, timeout=SHUTDOWN_GRACE_S))

    def release(self) -> None:
        """Close, and close the widgets too (their views go blank): the cell was run again."""
        self.close()
        for widget in self._widgets:
            widget.close()

    async def wait_closed(self) -> None:
        """Wait until the Monitor has stopped and released the backend."""
        await self._stopped.wait()

    # -- actions -----------------------------------------------------------------------------

    def _selected_schedule(self) -> ScheduleRow | None:
        if self.snapshot is None or not self.schedule_select.value:
            return None
        return next(
            (r for r in self.snapshot.schedules if r.id == self.schedule_select.value), None
        )

    def _selected_queue(self) -> QueueStats | None:
        if self.snapshot is None or not self.queue_select.value:
            return None
        return next((q for q in self.snapshot.queues if q.name == self.queue_select.value), None)

    def _selected_group(self) -> FailureGroup | None:
        return next((g for g in self.groups if g.key == self.group_select.value), None)

    def _sync_options(self) -> None:
        assert self.snapshot is not None
        schedules = [(f"{r.id} ({r.status})", r.id) for r in self.snapshot.schedules]
        queues = [
            (f"{q.name} ({'paused' if q.paused else 'active'})", q.name)
            for q in self.snapshot.queues
        ]
        groups = [(f"{g.error_type} in {g.queue} ({g.count})", g.key) for g in self.groups]
        for select, options in (
            (self.schedule_select, schedules),
            (self.queue_select, queues),
            (self.group_select, groups),
        ):
            if list(select.options) != options:
                # Reassigning options resets the selection: keep what the operator chose.
                chosen = select.value
                select.options = options
                values = [value for _, value in options]
                select.value = chosen if chosen in values else (values[0] if values else None)
        self._sync_buttons()

    def _sync_buttons(self) -> None:
        busy = bool(self._actions) or self._closed
        row = self._selected_schedule()
        status = None if row is None else row.status
        self.pause_button.disabled = busy or status != ScheduleStatus.ACTIVE.value
        self.resume_button.disabled = busy or status != ScheduleStatus.PAUSED.value
        self.trigger_button.disabled = busy or status not in (
            ScheduleStatus.ACTIVE.value,
            ScheduleStatus.PAUSED.value,
        )
        queue = self._selected_queue()
        self.pause_queue_button.disabled = busy or queue is None or queue.paused
        self.resume_queue_button.disabled = busy or queue is None or not queue.paused
        self.retry_button.disabled = busy or self._selected_group() is None

    def _schedule_action(self, action: str) -> None:
        row = self._selected_schedule()
        if row is None or self.operator is None:
            return
        operator, schedule_id, generation = self.operator, row.id, row.generation

        async def pause() -> str:
            await operator.pause_schedule(schedule_id, generation=generation)
            return f"Schedule {schedule_id} is paused."

        async def resume() -> str:
            await operator.resume_schedule(schedule_id, generation=generation)
            return f"Schedule {schedule_id} is active again."

        async def trigger() -> str:
            task_id = await operator.trigger_schedule(schedule_id)
            return f"Schedule {schedule_id} ran now: task {task_id} enqueued."

        run = {"pause": pause, "resume": resume, "trigger": trigger}[action]
        self._act(f"{action} schedule {schedule_id}", run)

    def _queue_action(self, *, pause: bool) -> None:
        queue = self._selected_queue()
        if queue is None or self.operator is None:
            return
        operator, name = self.operator, queue.name

        async def run() -> str:
            if pause:
                await operator.pause_queue(name)
                return f"Queue {name} is paused: workers stop claiming from it."
            await operator.resume_queue(name)
            return f"Queue {name} is active again."

        self._act(f"{'pause' if pause else 'resume'} queue {name}", run)

    def _ask_retry(self) -> None:
        group = self._selected_group()
        if group is None:
            return
        # The ids are frozen now: what the operator confirms is exactly what is retried.
        self._confirming = group
        self.confirm_text.value = message_html(group.question())
        self.confirm_yes.description = f"Yes, retry {group.count}"
        self.confirm_box.layout.display = "flex"

    def _confirm_retry(self, yes: bool) -> None:
        group, self._confirming = self._confirming, None
        self.confirm_box.layout.display = "none"
        if group is None or self.operator is None:
            return
        if not yes:
            self._report(
                f"Retry of {group.error_type} in {group.queue} cancelled: nothing changed."
            )
            return
        operator = self.operator
        label = f"Retry {group.count} failed tasks of {group.error_type} in queue {group.queue}"

        async def retry() -> str:
            outcome = await operator.retry_tasks(
                group.task_ids, expected_status=TaskStatus.FAILED.value
            )
            return outcome.summary(label, separator="; ")

        self._act(label, retry)

    def _act(self, label: str, run: Callable[[], Awaitable[str]]) -> None:
        # A click arrives in a comm handler; the coroutine runs on the kernel's loop whichever
        # thread that handler runs on.
        future = asyncio.run_coroutine_threadsafe(self._perform(label, run), self._loop)
        self._actions.add(future)
        future.add_done_callback(self._action_done)
        self._sync_buttons()
        self._report(f"{label} ...")

    def _action_done(self, future: Future[None]) -> None:
        self._actions.discard(future)
        if not self._closed:
            self._loop.call_soon_threadsafe(self._sync_buttons)

    async def _perform(self, label: str, run: Callable[[], Awaitable[str]]) -> None:
        try:
            message, failed = await run(), False
        except Exception as exc:
            message, failed = f"{label} failed: {describe_exception(exc)}", True
        self._report(message, error=failed)
        if self.monitor is not None:
            self.monitor.request_poll()

    def _report(self, message: str, *, error: bool = False) -> None:
        self.last_action = message
        self.action_status.value = message_html(message, error=error)


def dashboard(
    target: str | GCSBackend | None = None,
    *,
    prefix: str | None = None,
    interval: float | None = None,
    read_only: bool = False,
    actor: str | None = None,
    key: str | None = None,
    **settings: Any,
) -> Dashboard:
    """Show a live dashboard of a bucket (its name, or a ``GCSBackend``, open or not).

    The panel refreshes in place every ``interval`` seconds: queue depths with their trend,
    outcomes per minute, failure groups, recent events, schedules, workers, the data's age and
    stale state, and the monitor's request rate and cost. Actions (pause, resume and run a
    schedule now; pause and resume a queue; retry a failure group after a confirmation naming
    the count) are audited
    under ``actor`` and shown only when the dashboard may write (not ``read_only``, not a
    read-only backend).

    Executing the cell again replaces the dashboard (the old Monitor stops); so do
    ``close()`` and the kernel's shutdown. ``key`` overrides which cell it belongs to.

    With a bucket name (or none: ``OMNIQ_BUCKET``), the backend comes from
    ``omniq_console.settings.load_settings``: ``prefix`` and ``settings`` (``project``,
    ``token``, ``config``, ...) beat the ``OMNIQ_*`` environment, which beats the config file;
    ``interval`` and ``actor`` default to the settings' ``refresh`` and ``actor``.
    """
    if isinstance(target, GCSBackend):
        if prefix is not None or settings:
            raise ValueError("prefix and settings apply to a bucket name, not to a backend")
        backend = target
    else:
        loaded = load_settings(bucket_name=target, prefix=prefix, read_only=read_only, **settings)
        backend = make_backend(loaded)
        interval = loaded.refresh if interval is None else interval
        actor = actor or loaded.actor
    board = Dashboard(
        backend,
        interval=DEFAULT_INTERVAL if interval is None else interval,
        read_only=read_only,
        actor=actor,
        key=key,
    )
    session.register(board.key, board)
    board.show()
    return board


__all__ = ["DEFAULT_INTERVAL", "MONITOR_TASK_PREFIX", "Dashboard", "dashboard"]
