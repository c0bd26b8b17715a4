"""The overview's outcome chart loads plotext with its first minutes to draw: until then it
draws plotext's empty chart itself, and that must look exactly like plotext's."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from rich.segment import Segment
from rich.style import Style
from textual.app import App, ComposeResult
from textual.widget import Widget

from omniq_console.monitor.snapshot import ResultMinute
from omniq_console.tui.widgets.outcome_chart import EMPTY_TITLE, OutcomeChart


class Charts(App[None]):
    """The chart and plotext's own empty chart, one above the other, the same size."""

    def __init__(self, width: int, height: int, theme: str) -> None:
        super().__init__()
        self.chart_size = (width, height)
        self.chart_theme = theme

    def compose(self) -> ComposeResult:
        from textual_plotext import PlotextPlot

        width, height = self.chart_size
        reference = PlotextPlot(id="reference")
        reference.plt.title(EMPTY_TITLE)
        reference.plt.xticks([], [])
        reference.plt.yticks([], [])
        for widget in (OutcomeChart(id="chart"), reference):
            widget.styles.width = width
            widget.styles.height = height
            yield widget

    def on_mount(self) -> None:
        self.theme = self.chart_theme


def cells(widget: Widget) -> list[list[tuple[str, Style | None]]]:
    """Every cell of ``widget`` as drawn: its character and style."""
    lines = widget.render_lines(widget.size.region)
    return [
        [(char, segment.style) for segment in line for char in segment.text]
        for line in (list(Segment.simplify(strip)) for strip in lines)
    ]


@pytest.mark.parametrize("theme", ["textual-dark", "textual-light"])
@pytest.mark.parametrize("size", [(24, 3), (25, 4), (40, 8), (41, 9), (77, 14)])
async def test_the_empty_chart_is_plotexts_own(size: tuple[int, int], theme: str) -> None:
    app = Charts(*size, theme)
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.pause()
        chart = app.query_one("#chart", OutcomeChart)
        assert chart.size == app.query_one("#reference").size
        assert not chart.children  # drawn without plotext
        assert cells(chart) == cells(app.query_one("#reference"))


@pytest.mark.parametrize("size", [(23, 8), (40, 2)])
async def test_a_chart_too_small_for_the_plain_frame_is_drawn_by_plotext(
    size: tuple[int, int],
) -> None:
    app = Charts(*size, "textual-dark")
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.pause()
        chart = app.query_one("#chart", OutcomeChart)
        await pilot.pause()
        (plot,) = chart.children
        assert cells(plot) == cells(app.query_one("#reference"))


async def test_minutes_to_draw_load_the_plot() -> None:
    app = Charts(60, 12, "textual-dark")
    async with app.run_test(size=(100, 40)) as pilot:
        chart = app.query_one("#chart", OutcomeChart)
        minute = ResultMinute(
            minute=datetime(2026, 1, 1, 12, 0, tzinfo=UTC),
            success=3,
            error=1,
            cancelled=0,
            expired=0,
        )
        chart.show([minute])
        await pilot.pause()
        (plot,) = chart.children
        assert "12:00" in "".join(char for line in cells(plot) for char, _ in line)
