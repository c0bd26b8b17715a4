"""Backend: what the console's own monitoring costs and meets in the bucket.

Requests per minute and their price, latency by request kind, failed requests by status,
the body cache's hit rate and what each prefix of the layout holds: the figures the status
bar sums up, from the same fields of the snapshot (``Snapshot.requests``,
``Snapshot.storage``), and the same ones ``omniq-console metrics`` exports.
"""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widget import Widget
from textual.widgets import Static

from ...monitor.snapshot import PrefixUsage, RequestFigures, Snapshot
from ..fmt import DASH, count, percent
from ..text import literal
from .base import View

ERROR_KINDS = ("412", "429", "5xx", "4xx", "network")
"""Failed requests by status, in the order shown (412: a lost compare-and-swap; 429: GCS's
one-write-per-second limit; 5xx: GCS or the emulator failing; network: no answer)."""


def size(n: int) -> str:
    """``n`` bytes in the largest unit that keeps a number of at least 1 (1,024 a step)."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable: the loop returns at GiB")


def _table(*headers: str) -> Table:
    table = Table(box=None, padding=(0, 2, 0, 0), show_edge=False, header_style="bold")
    table.add_column(headers[0], no_wrap=True)
    for header in headers[1:]:
        table.add_column(header, justify="right", no_wrap=True)
    return table


def requests_panel(figures: RequestFigures) -> RenderableType:
    """Rate and $/h (none until the monitor measured a window), totals, the last poll, failed
    requests by status and the body cache's hit rate: one line each."""
    rows = Table.grid(padding=(0, 2))
    rows.add_column(style="bold", no_wrap=True)
    rows.add_column()
    if figures.paused:
        rows.add_row("Rate", Text("polling paused: no requests, no cost", style="yellow"))
    elif figures.requests_per_minute is None:
        rows.add_row("Rate", Text("measuring (needs about a minute of polls)", style="dim"))
    else:
        rate = Text(f"{figures.requests_per_minute:,.0f} req/min")
        if figures.cost_per_hour_usd is not None:
            rate.append(f" · ~${figures.cost_per_hour_usd:.4f}/h", style="dim")
        rows.add_row("Rate", rate)
    kinds = " · ".join(f"{kind} {count(n)}" for kind, n in sorted(figures.by_kind.items()))
    total = Text(count(figures.total), end="")
    if kinds:
        total.append(f" ({kinds})", style="dim")
    rows.add_row("Requests", total)
    rows.add_row(
        "Last poll",
        Text(f"{figures.last_poll_requests} requests in {figures.last_poll_ms:,.0f} ms"),
    )
    rows.add_row("Errors", errors_line(figures))
    rows.add_row("Body cache", cache_line(figures))
    return rows


def latency_table(figures: RequestFigures) -> RenderableType:
    """p50 and p95 per request kind, over the rate's window."""
    kinds = sorted(set(figures.latency_p50_ms) | set(figures.latency_p95_ms))
    if not kinds:
        return Text("No latency measured yet.", style="dim")
    table = _table("Kind", "p50", "p95", "Requests")
    for kind in kinds:
        p50, p95 = figures.latency_p50_ms.get(kind), figures.latency_p95_ms.get(kind)
        table.add_row(
            literal(kind),
            f"{p50:,.0f} ms" if p50 is not None else DASH,
            f"{p95:,.0f} ms" if p95 is not None else DASH,
            count(figures.by_kind.get(kind, 0)),
        )
    return table


def errors_line(figures: RequestFigures) -> Text:
    """Failed requests by status; each known kind shown, even at 0, so a 0 is read as one."""
    text = Text(end="")
    others = sorted(k for k in figures.errors_by_status if k not in ERROR_KINDS)
    for i, kind in enumerate((*ERROR_KINDS, *others)):
        n = figures.errors_by_status.get(kind, 0)
        if i:
            text.append(" · ", style="dim")
        text.append_text(literal(kind))
        text.append(f" {count(n)}", style="bold red" if n else "dim")
    text.append(f" · retried {count(figures.retries)}", style="dim")
    return text


def cache_line(figures: RequestFigures) -> Text:
    """The body cache's hit rate: bodies served from memory of all the monitor needed."""
    needed = figures.cache_hits + figures.cache_misses
    if not needed:
        return Text("No body read yet.", style="dim")
    text = Text(f"{percent(figures.cache_hits / needed)} hits", style="bold", end="")
    text.append(
        f" ({count(figures.cache_hits)} from memory, {count(figures.cache_misses)} read)",
        style="dim",
    )
    return text


def storage_table(storage: tuple[PrefixUsage, ...]) -> RenderableType:
    """Objects and bytes per prefix, from the listings the monitor made (no extra request)."""
    if not storage:
        return Text("No listing measured yet.", style="dim")
    table = _table("Prefix", "Objects", "Bytes")
    for usage in storage:
        table.add_row(literal(usage.prefix), count(usage.objects), size(usage.bytes))
    table.add_row(
        Text("total", style="bold"),
        count(sum(u.objects for u in storage)),
        size(sum(u.bytes for u in storage)),
    )
    return table


class BackendView(View):
    """The monitoring's own figures: rate and cost, errors, cache, latency, storage."""

    TITLE = "Backend"

    DEFAULT_CSS = """
    BackendView > VerticalScroll > Static {
        border: round $primary 40%;
        border-title-color: $text;
        padding: 0 1;
        height: auto;
    }
    """

    PANELS = (
        ("backend-requests", "Requests, cost, errors and cache"),
        ("backend-latency", "Latency by request kind"),
        ("backend-storage", "Storage by prefix"),
    )

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="backend-panels"):
            for panel_id, title in self.PANELS:
                panel = Static(Text("Waiting for the first poll…", style="italic"), id=panel_id)
                panel.border_title = title
                yield panel

    @property
    def main_widget(self) -> Widget:
        return self.query_one("#backend-panels")

    def show_snapshot(self, snapshot: Snapshot) -> None:
        figures = snapshot.requests
        drawn: dict[str, RenderableType] = {
            "backend-requests": requests_panel(figures),
            "backend-latency": latency_table(figures),
            "backend-storage": storage_table(snapshot.storage),
        }
        for panel_id, renderable in drawn.items():
            self.query_one(f"#{panel_id}", Static).update(Group(renderable))
