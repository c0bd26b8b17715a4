"""Results per minute by outcome: the throughput chart of the overview (plotext)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from textual_plotext import PlotextPlot

from ...monitor.snapshot import ResultMinute

OUTCOMES = (
    ("success", "green"),
    ("error", "red"),
    ("cancelled", "orange"),
    ("expired", "gray"),
)
LEGEND = "  ".join(f"[{colour}]■[/] {name}" for name, colour in OUTCOMES)
"""Our own fixed markup (no bucket text): plotext's legend would cover the bars."""


def y_ticks(top: int, steps: int = 4) -> list[int]:
    """Whole-number ticks from 0 to at least ``top``."""
    step = max(1, math.ceil(top / steps))
    return list(range(0, step * steps + 1, step))


class OutcomeChart(PlotextPlot):
    """Stacked bars, one per minute: how many tasks finished, and how."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._minutes: tuple[ResultMinute, ...] = ()

    def show(self, minutes: Sequence[ResultMinute]) -> None:
        minutes = tuple(minutes)
        if minutes == self._minutes:
            return
        self._minutes = minutes
        self._draw()

    def on_mount(self) -> None:
        super().on_mount()
        self.border_subtitle = LEGEND
        self._draw()

    def _draw(self) -> None:
        plt = self.plt
        plt.clear_data()
        minutes = self._minutes
        if not minutes:
            plt.title("no results in the window")
            plt.xticks([], [])
            plt.yticks([], [])
            self.refresh()
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
        self.refresh()
