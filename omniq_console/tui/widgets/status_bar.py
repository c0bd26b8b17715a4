"""The status bar: where the data comes from, how fresh it is, and what polling costs."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.widgets import Static

from ...monitor.snapshot import Snapshot
from ..fmt import count, duration
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


def status_text(state: StatusState) -> Text:
    """The status bar's line (bucket and prefix come from the operator, yet stay literal)."""
    text = Text(end="")
    text.append(" gs://", style="bold")
    text.append_text(literal(state.bucket, "bold"))
    text.append_text(literal("/" + state.prefix.lstrip("/") if state.prefix else "", "bold"))
    text.append(*_SEPARATOR)
    snap = state.snapshot
    if snap is None:
        text.append("waiting for the first poll…", style="italic")
    elif snap.stale:
        text.append(f" STALE: data {duration(state.age_s)} old ", style="bold white on red")
        if snap.error:
            text.append(" ")
            text.append_text(literal(snap.error, "red"))
    else:
        text.append("● ", style="green")
        text.append(f"data {duration(state.age_s)} old")
        if snap.error:
            text.append("  last poll failed: ", style="yellow")
            text.append_text(literal(snap.error, "yellow"))
    text.append(*_SEPARATOR)
    if state.polling_paused:
        text.append(" polling paused ", style="bold black on yellow")
    elif state.interval_s is not None:
        text.append(f"every {state.interval_s:g}s")
    if snap is not None:
        figures = snap.requests
        text.append(*_SEPARATOR)
        text.append(f"{figures.requests_per_minute:,.0f} req/min")
        text.append(f" · ~${figures.cost_per_hour_usd:.4f}/h", style="dim")
        text.append(*_SEPARATOR)
        text.append(f"{count(sum(snap.tasks.values()))} tasks")
    if state.read_only:
        text.append(*_SEPARATOR)
        text.append("read-only", style="bold cyan")
    return text


class StatusBar(Static):
    """One line at the top of the main screen; red when the data is stale."""

    def show(self, state: StatusState) -> None:
        self.set_class(state.snapshot is not None and state.snapshot.stale, "-stale")
        self.update(status_text(state))
