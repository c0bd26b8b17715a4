"""Results per minute by outcome: the throughput chart of the overview (plotext).

plotext loads with the first minutes to draw, not with the console's first frame (about 4% of
the instructions to it): until then the chart is plotext's empty chart, drawn here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.style import Style
from rich.text import Text
from textual.color import Color
from textual.widget import Widget

from ...monitor.snapshot import ResultMinute

if TYPE_CHECKING:
    from textual_plotext import PlotextPlot

OUTCOMES = (
    ("success", "green"),
    ("error", "red"),
    ("cancelled", "orange"),
    ("expired", "gray"),
)
EMPTY_TITLE = "no results in the window"
LEGEND = "  ".join(f"[{colour}]■[/] {name}" for name, colour in OUTCOMES)
"""Our own fixed markup (no bucket text): plotext's legend would cover the bars."""


def y_ticks(top: int, steps: int = 4) -> list[int]:
    """Whole-number ticks from 0 to at least ``top``."""
    step = max(1, math.ceil(top / steps))
    return list(range(0, step * steps + 1, step))


class OutcomeChart(Widget):
    """Stacked bars, one per minute: how many tasks finished, and how.

    The bars are a plotext plot inside, made with the first minutes to draw; before that (and
    on a chart too small for plotext's plain empty frame) this widget draws the empty chart."""

    DEFAULT_CSS = """
    OutcomeChart {
        width: 1fr;
        height: 1fr;
    }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._minutes: tuple[ResultMinute, ...] = ()
        self._plot: PlotextPlot | None = None

    def show(self, minutes: Sequence[ResultMinute]) -> None:
        minutes = tuple(minutes)
        if minutes == self._minutes:
            return
        self._minutes = minutes
        self._draw()

    def on_mount(self) -> None:
        self.border_subtitle = LEGEND

    def on_resize(self) -> None:
        if self._plot is None and not fits_empty_frame(self.size.width, self.size.height):
            self._draw()  # plotext draws what a small chart shows

    def render(self) -> Text:
        """plotext's empty chart in the app's theme (what ``PlotextPlot``'s "auto" theme
        draws): the title centred on the first line over an empty frame."""
        width, height = self.size.width, self.size.height
        variables = self.app.theme_variables
        background = Color.parse(variables["surface"]).rich_color
        ink = Style(color=Color.parse(variables["foreground"]).rich_color, bgcolor=background)
        blank = Style(bgcolor=background)
        left = (width - len(EMPTY_TITLE)) // 2
        text = Text(end="")
        text.append(" " * left, blank)
        text.append(EMPTY_TITLE, ink)
        text.append(" " * (width - left - len(EMPTY_TITLE)) + "\n", blank)
        text.append("┌" + "─" * (width - 2) + "┐\n", ink)
        for _ in range(height - 3):
            text.append("│", ink)
            text.append(" " * (width - 2), blank)
            text.append("│\n", ink)
        text.append("└" + "─" * (width - 2) + "┘", ink)
        return text

    def _draw(self) -> None:
        minutes = self._minutes
        if self._plot is None:
            if not minutes and fits_empty_frame(self.size.width, self.size.height):
                self.refresh()
                return
            from textual_plotext import PlotextPlot

            self._plot = PlotextPlot()
            self.mount(self._plot)
        plot = self._plot
        plt = plot.plt
        plt.clear_data()
        if not minutes:
            plt.title(EMPTY_TITLE)
            plt.xticks([], [])
            plt.yticks([], [])
            plot.refresh()
            return
        plt.title("")
        xs: list[float] = list(range(len(minutes)))
        plt.stacked_bar(
            xs,
            [[getattr(m, name) for m in minutes] for name, _ in OUTCOMES],
            # plotext's hints say one colour; a stacked bar takes one per series.
            color=[colour for _, colour in OUTCOMES],  # type: ignore[arg-type]
            width=0.5,
            minimum=0,
        )
        every = max(1, math.ceil(len(minutes) / 6))
        plt.xticks(xs[::every], [m.minute.strftime("%H:%M") for m in minutes][::every])
        plt.xlim(-0.6, len(minutes) - 0.4)
        top = max(sum(getattr(m, name) for name, _ in OUTCOMES) for m in minutes)
        ticks = y_ticks(top)
        plt.yticks([float(y) for y in ticks])
        # Bars start on the axis: without a fixed lower limit plotext pads below zero.
        plt.ylim(0, ticks[-1])
        plot.refresh()


def fits_empty_frame(width: int, height: int) -> bool:
    """Whether plotext's empty chart at this size is the plain one :class:`OutcomeChart`
    draws: the whole title over a frame of at least two lines (smaller, plotext drops or
    reshapes parts of it, and plotext draws it)."""
    return width >= len(EMPTY_TITLE) and height >= 3
