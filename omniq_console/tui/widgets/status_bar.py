"""The status bar: where the data comes from, how fresh it is, and what polling costs."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.widgets import Static

from ...monitor.snapshot import Snapshot
from ..context import ConsoleContext, console_of
from ..fmt import duration, every, plural
from ..text import literal

_SEPARATOR = (" │ ", "dim")


@dataclass(frozen=True, slots=True)
class StatusState:
    """Everything the status bar shows, at one instant."""

    bucket: str
    prefix: str
    snapshot: Snapshot | None
    # Seconds since the data was fetched: the snapshot's own age plus time since it arrived.
    age_s: float
    interval_s: float | None
    polling_paused: bool
    read_only: bool


def _where(state: StatusState) -> str:
    prefix = "/" + state.prefix.lstrip("/") if state.prefix else ""
    return f"gs://{state.bucket}{prefix}"


def status_text(state: StatusState) -> Text:
    """The status bar's text (bucket and prefix come from the operator, yet stay literal).

    No rate or cost is shown until the monitor has measured one over a window, and none while
    polling is paused: a paused console costs nothing. The freshness dot is green only while
    polling runs and the data is fresh.
    """
    text = Text(end="")
    text.append(" ")
    text.append_text(literal(_where(state), "bold"))
    text.append(*_SEPARATOR)
    snap = state.snapshot
    if snap is None or snap.connecting:
        attempt = snap.attempt if snap is not None else 0
        text.append("connecting to ", style="italic")
        text.append_text(literal(_where(state), "italic"))
        text.append(f" (attempt {max(attempt, 1)})…", style="italic")
        if snap is not None and snap.error:
            text.append(" ")
            text.append_text(literal(snap.error, "yellow"))
    elif snap.stale:
        text.append(f" STALE: data {duration(state.age_s)} old ", style="bold white on red")
        if snap.error:
            text.append(" ")
            text.append_text(literal(snap.error, "red"))
    else:
        if not state.polling_paused:
            text.append("● ", style="green")
        text.append(f"data {duration(state.age_s)} old")
        if snap.error:
            text.append("  last poll failed: ", style="yellow")
            text.append_text(literal(snap.error, "yellow"))
    text.append(*_SEPARATOR)
    if state.polling_paused:
        text.append(" polling paused ", style="bold black on yellow")
    elif state.interval_s is not None:
        text.append(every(state.interval_s))
    if snap is not None and not snap.connecting:
        text.append(" · changes: ")
        text.append("Pub/Sub" if snap.changes == "pubsub" else "listing", style="dim")
        figures = snap.requests
        rate = figures.requests_per_minute
        if not (state.polling_paused or figures.paused) and rate is not None:
            text.append(*_SEPARATOR)
            text.append(f"{rate:,.0f} req/min")
            if figures.cost_per_hour_usd is not None:
                text.append(f" · ~${figures.cost_per_hour_usd:.4f}/h", style="dim")
        text.append(*_SEPARATOR)
        text.append(plural(sum(snap.tasks.values()), "task"))
    if state.read_only:
        text.append(*_SEPARATOR)
        text.append("read-only", style="bold cyan")
    return text


class StatusBar(Static):
    """At the top of the main screen; red when the data is stale. Wraps at whole words.

    It watches the app's ``snapshot``, ``interval`` and ``polling_paused`` and redraws the
    data age once a second with its own timer.
    """

    def on_mount(self) -> None:
        app = self.app
        for name in ("snapshot", "interval", "polling_paused"):
            self.watch(app, name, self._changed, init=False)
        self.set_interval(1.0, self.redraw)
        self.redraw()

    def _changed(self, _: object) -> None:
        self.redraw()

    def redraw(self) -> None:
        """Draw the current state (the data age moves with the clock)."""
        console: ConsoleContext = console_of(self)
        snapshot = console.snapshot
        self.show(
            StatusState(
                bucket=console.bucket or (snapshot.bucket if snapshot else ""),
                prefix=console.prefix or (snapshot.prefix if snapshot else ""),
                snapshot=snapshot,
                age_s=console.data_age(),
                interval_s=console.interval,
                polling_paused=console.polling_paused,
                read_only=console.read_only,
            )
        )

    def show(self, state: StatusState) -> None:
        self.set_class(state.snapshot is not None and state.snapshot.stale, "-stale")
        self.update(status_text(state))
