"""Completed and failed tasks per queue: the throughput chart of the queues view (plotext)."""

from __future__ import annotations

from textual_plotext import PlotextPlot

from ...monitor.snapshot import QueueStats, QueueWindow


class ThroughputChart(PlotextPlot):
    """Completed and failed tasks per queue over the chosen window (stacked bars)."""

    def show(self, rows: list[tuple[QueueStats, QueueWindow]], window: str) -> None:
        plt = self.plt
        plt.clear_data()
        plt.title(f"completed / failed per queue, last {window}")
        if rows:
            names = [q.name for q, _ in rows]
            plt.stacked_bar(
                names,
                [[w.completed for _, w in rows], [w.failed for _, w in rows]],
                # plotext's hints say one colour; a stacked bar takes one per series.
                color=["green", "red"],  # type: ignore[arg-type]
                width=0.4,
                minimum=0,
            )
        self.refresh()
