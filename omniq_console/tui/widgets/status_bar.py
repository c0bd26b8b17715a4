"""The status bar: where the data comes from, how fresh it is, and what polling costs."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.geometry import Size
from textual.widget import Widget

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


# What gives way first when the bar is narrow: the higher the number, the sooner dropped.
# Freshness and the paused/stale warnings never go; the bucket is shortened last.
_KEEP, _COST, _TASKS, _CHANGES, _RATE = 0, 4, 3, 5, 2


def _parts(state: StatusState) -> tuple[list[tuple[int, Text]], Text | None]:
    """The bar's parts, each whole, with the rank at which it is dropped for width; and the
    last poll's error, which gets the line below."""
    parts: list[tuple[int, Text]] = [(_KEEP, literal(_where(state), "bold"))]
    snap = state.snapshot
    fresh = Text(end="")
    problem: Text | None = None
    if snap is None or snap.connecting:
        attempt = snap.attempt if snap is not None else 0
        fresh.append("connecting to ", style="italic")
        fresh.append_text(literal(_where(state), "italic"))
        fresh.append(f" (attempt {max(attempt, 1)})…", style="italic")
        if snap is not None and snap.error:
            problem = literal(snap.error, "yellow")
    elif snap.stale:
        fresh.append(f" STALE: data {duration(state.age_s)} old ", style="bold white on red")
        if snap.error:
            problem = literal(snap.error, "red")
    else:
        if not state.polling_paused:
            fresh.append("● ", style="green")
        fresh.append(f"data {duration(state.age_s)} old")
        if snap.error:
            problem = Text("last poll failed: ", style="yellow", end="")
            problem.append_text(literal(snap.error, "yellow"))
    parts.append((_KEEP, fresh))
    if state.polling_paused:
        parts.append((_KEEP, Text(" polling paused ", style="bold black on yellow", end="")))
    elif state.interval_s is not None:
        parts.append((_KEEP, Text(every(state.interval_s), end="")))
    if snap is not None and not snap.connecting:
        changes = Text("changes: ", end="")
        changes.append("Pub/Sub" if snap.changes == "pubsub" else "listing", style="dim")
        parts.append((_CHANGES, changes))
        figures = snap.requests
        rate = figures.requests_per_minute
        if not (state.polling_paused or figures.paused) and rate is not None:
            parts.append((_RATE, Text(f"{rate:,.0f} req/min", end="")))
            if figures.cost_per_hour_usd is not None:
                parts.append((_COST, Text(f"~${figures.cost_per_hour_usd:.4f}/h", end="")))
        parts.append((_TASKS, Text(plural(sum(snap.tasks.values()), "task"), end="")))
    if state.read_only:
        parts.append((_KEEP, Text("read-only", style="bold cyan", end="")))
    return parts, problem


def status_text(state: StatusState, width: int | None = None) -> Text:
    """The status bar's text in ``width`` cells (bucket and prefix stay literal).

    The first line's parts are dropped whole, least needed first (cost, changes mode, task
    count, rate), never wrapped or cut mid-value; only the bucket path is shortened, with an
    ellipsis, when even the parts that always stay do not fit. A poll's error goes on the
    line below, wrapped at whole words. No rate or cost is shown until the monitor has
    measured one over a window, and none while polling is paused: a paused console costs
    nothing. The freshness dot is green only while polling runs and the data is fresh.
    """
    parts, problem = _parts(state)
    text = _join(parts)
    if width is not None:
        text = _fit(parts, text, width)
    if problem is not None:
        text.append("\n ")
        text.append_text(problem)
    return text


def _fit(parts: list[tuple[int, Text]], text: Text, width: int) -> Text:
    """``text`` (the joined ``parts``) in ``width`` cells: parts dropped, then the path cut."""
    for rank in (_COST, _CHANGES, _TASKS, _RATE):
        if text.cell_len <= width:
            break
        parts = [(r, p) for r, p in parts if r != rank]
        text = _join(parts)
    if text.cell_len > width:
        where = parts[0][1]
        where.truncate(max(8, where.cell_len - (text.cell_len - width)), overflow="ellipsis")
        text = _join(parts)
        text.truncate(width, overflow="ellipsis")
    return text


def _join(parts: list[tuple[int, Text]]) -> Text:
    text = Text(" ", end="")
    for i, (_, part) in enumerate(parts):
        if i:
            text.append(*_SEPARATOR)
        text.append_text(part)
    return text


class StatusBar(Widget):
    """At the top of the main screen; red when the data is stale. Its first line fits any
    width; a poll's error, when there is one, wraps below it at whole words.

    It watches the app's ``snapshot``, ``interval`` and ``polling_paused`` and redraws the
    data age once a second with its own timer (the age of the snapshot drawn, from its
    ``taken_at``). The text is fitted to the width the layout gives, both when the height is
    measured and when it is drawn, so the bar's height never depends on whether it was
    resized before or after its first draw.
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._state: StatusState | None = None

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
        """Draw ``state``; the layout is redone when the number of lines changes."""
        width = self.content_size.width
        lines = self._lines(width)
        self._state = state
        self.set_class(state.snapshot is not None and state.snapshot.stale, "-stale")
        self.refresh(layout=self._lines(width) != lines)

    @property
    def content(self) -> Text:
        """The text as drawn at the bar's current width."""
        return self._text(self.content_size.width)

    def _text(self, width: int) -> Text:
        if self._state is None:
            return Text()
        return status_text(self._state, width or None)

    def render(self) -> Text:
        return self._text(self.content_size.width)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return self._lines(width)

    def _lines(self, width: int) -> int:
        return len(self._text(width).wrap(self.app.console, max(width, 1)))
