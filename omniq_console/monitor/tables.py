"""A Snapshot as readable tables, for notebooks and plain terminals (rich, no Textual).

``Snapshot.__rich__`` and ``Snapshot._repr_html_`` delegate here, so in Jupyter a snapshot
displays itself, and ``rich.print(snapshot)`` works in a terminal. Every string that comes
from the bucket (queue names, functions, messages, error types, keys) is put in a
``rich.text.Text``: it is shown literally, never interpreted as markup.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Container, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    # Types only: ``Snapshot.__rich__`` imports this module when a snapshot is displayed, and
    # a run-time import back would make the two modules a cycle.
    from .snapshot import RequestFigures, Snapshot

MAX_ROWS = 20
"""Rows shown per table (events, schedules, stuck tasks, workers, unreadable objects)."""

_Row = TypeVar("_Row")


def _t(value: object) -> Text:
    """Untrusted text, literally."""
    if value is None:
        return Text("-", style="dim")
    if isinstance(value, datetime):
        return Text(value.strftime("%Y-%m-%d %H:%M:%S"))
    return Text(str(value))


def _age(seconds: float | None) -> Text:
    if seconds is None:
        return Text("-", style="dim")
    if seconds < 120:
        return Text(f"{seconds:.0f}s")
    if seconds < 7200:
        return Text(f"{seconds / 60:.0f}m")
    return Text(f"{seconds / 3600:.1f}h")


def _bounded(
    title: str,
    columns: Iterable[str],
    rows: Sequence[_Row],
    cells: Callable[[_Row], Iterable[Text]],
    *,
    right: Container[str] = (),
    style: str = "none",
) -> Table:
    """A table of the first ``MAX_ROWS`` of ``rows`` (``cells`` makes a row's cells), whose
    caption says how many it shows of how many when that is not all."""
    table = Table(title=title, title_justify="left", style=style)
    for col in columns:
        table.add_column(col, justify="right" if col in right else "left")
    shown = rows[:MAX_ROWS]
    for row in shown:
        table.add_row(*cells(row))
    if len(rows) > len(shown):
        table.caption = f"{len(shown)} of {len(rows)} shown"
    return table


def _counts(title: str, counts: dict[str, int]) -> Table:
    table = Table(title=title, title_justify="left")
    for name in counts:
        table.add_column(name, justify="right")
    table.add_row(*(Text(str(n)) for n in counts.values()))
    return table


def _header(s: Snapshot) -> Text:
    head = Text()
    head.append("OmniQ snapshot ", style="bold")
    head.append(f"gs://{s.bucket}/{s.prefix}")
    head.append(f"  taken {s.taken_at:%Y-%m-%d %H:%M:%S} UTC")
    if s.stale:
        head.append(f"  STALE ({s.age_s:.0f}s old)", style="bold red")
        if s.error:
            head.append("\n")
            head.append(s.error, style="red")
    return head


def _queues(s: Snapshot) -> Table:
    table = Table(title="Queues", title_justify="left")
    for col in ("queue", "pending", "delayed", "running", "claimed", "expired", "oldest pending"):
        table.add_column(col, justify="left" if col == "queue" else "right")
    for q in s.queues:
        table.add_row(
            _t(q.name),
            Text(str(q.pending)),
            Text(str(q.delayed)),
            Text(str(q.running)),
            Text(str(q.claimed)),
            Text(str(q.expired)),
            _age(q.oldest_pending_age_s),
        )
    if not s.queues:
        table.caption = "no queues"
    return table


def _results(s: Snapshot) -> Table:
    """State records of the tasks in the bucket; the rate is over the outcomes of its window
    (deleted tasks' included), whose counts it shows beside it."""
    table = _counts("Results (tasks in the bucket)", s.results)
    w = s.window_outcomes
    caption = (
        f"failure rate (last {s.outcome_window_s / 60:.0f} min): {s.failure_rate:.1%}"
        f" of {w.get('success', 0)} succeeded + {w.get('error', 0)} failed"
    )
    orphans = sum(s.results_without_task.values())
    if orphans:
        caption += f"; {orphans} results of deleted tasks not counted"
    table.caption = caption
    return table


def _failures(s: Snapshot) -> Table:
    return _bounded(
        "Failures by type",
        ("error type", "count"),
        list(s.failures_by_type.items()),
        lambda item: (_t(item[0]), Text(str(item[1]))),
        right={"count"},
    )


def _per_minute(s: Snapshot) -> Table:
    table = Table(title="Results per minute (last 10 min)", title_justify="left")
    for col in ("minute", "success", "error", "cancelled", "expired"):
        table.add_column(col, justify="left" if col == "minute" else "right")
    for m in s.results_per_minute[-10:]:
        # A minute before outcomes_known_since: retention may have deleted part of it.
        counts = (m.success, m.error, m.cancelled, m.expired) if m.known else None
        table.add_row(
            Text(f"{m.minute:%H:%M}"),
            *(
                Text(str(n) if counts else "?", style="" if counts else "dim")
                for n in counts or (0,) * 4
            ),
        )
    return table


def _schedules(s: Snapshot) -> Table:
    return _bounded(
        "Schedules",
        ("id", "func", "type", "status", "next run", "last run", "runs", "overdue"),
        s.schedules,
        lambda r: (
            _t(r.id),
            _t(r.func),
            _t(r.schedule_type),
            _t(f"{r.status} by {r.paused_by}" if r.paused_by else r.status),
            _t(r.next_run),
            _t(r.last_run),
            Text(str(r.run_count)),
            Text("OVERDUE", style="bold red") if r.overdue else Text(""),
        ),
    )


def _stuck(s: Snapshot) -> Table:
    return _bounded(
        "Stuck (lease expired)",
        ("task", "queue", "func", "worker", "overdue"),
        s.stuck,
        lambda t: (_t(t.id), _t(t.queue_name), _t(t.func), _t(t.worker_id), _age(t.overdue_s)),
    )


def _workers(s: Snapshot) -> Table:
    return _bounded(
        "Workers",
        ("worker", "state", "alive", "last seen", "host", "running", "done", "failed"),
        s.workers,
        lambda w: (
            _t(w.id),
            _t(w.state),
            Text("yes", style="green") if w.alive else Text("no", style="red"),
            _age(w.age_s),
            _t(w.host),
            Text(w.load_text()),
            Text(str(w.processed)),
            Text(str(w.failed)),
        ),
    )


def _events(s: Snapshot) -> Table:
    return _bounded(
        "Recent events (newest first)",
        ("time", "type", "task", "queue", "message"),
        s.events,
        lambda e: (
            _t(e.timestamp),
            _t(e.event_type),
            _t(e.task_id),
            _t(e.queue_name),
            _t(e.message or e.error_message or e.error_type),
        ),
    )


def _unreadable(s: Snapshot) -> Table:
    return _bounded(
        "Unreadable objects",
        ("key", "reason"),
        s.unreadable,
        lambda u: (_t(u.key), _t(u.reason)),
        style="red",
    )


def _requests(s: Snapshot) -> Text:
    r = s.requests
    kinds = ", ".join(f"{k} {n}" for k, n in r.by_kind.items() if n)
    return Text(
        f"Requests: {r.total} ({kinds or 'none'}), {r.errors} errors, {r.retries} retries; "
        f"last poll {r.last_poll_requests} requests in {r.last_poll_ms:.0f} ms; "
        f"mean latency {r.mean_latency_ms:.1f} ms; " + _rate(r),
        style="dim",
    )


def render_snapshot(snapshot: Snapshot) -> Group:
    """The snapshot as a group of rich tables (only the sections that have something)."""
    s = snapshot
    parts: list[RenderableType] = [_header(s), _queues(s), _counts("Tasks", s.tasks), _results(s)]
    optional: Iterable[tuple[bool, RenderableType]] = (
        (bool(s.failures_by_type), _failures(s)),
        (any(m.success or m.error or m.cancelled or m.expired for m in s.results_per_minute),
         _per_minute(s)),
        (bool(s.schedules), _schedules(s)),
        (bool(s.stuck), _stuck(s)),
        (bool(s.workers), _workers(s)),
        (bool(s.events), _events(s)),
        (bool(s.unreadable), _unreadable(s)),
    )  # fmt: skip
    parts.extend(part for present, part in optional if present)
    parts.append(_requests(s))
    return Group(*parts)


def snapshot_text(snapshot: Snapshot, *, width: int = 120) -> str:
    """The rendered tables as plain text (no colour codes)."""
    console = Console(file=io.StringIO(), width=width, color_system=None, force_jupyter=False)
    console.print(render_snapshot(snapshot))
    return console.file.getvalue()  # type: ignore[attr-defined,no-any-return]


def snapshot_html(snapshot: Snapshot, *, width: int = 120) -> str:
    """The rendered tables as HTML (inline styles), as Jupyter shows them."""
    console = Console(
        file=io.StringIO(), record=True, width=width, force_jupyter=False, force_terminal=True
    )
    console.print(render_snapshot(snapshot))
    return console.export_html(
        inline_styles=True,
        code_format=(
            '<pre style="white-space:pre;overflow-x:auto;line-height:normal;'
            "font-family:Menlo,'DejaVu Sans Mono',consolas,'Courier New',monospace\">"
            "{code}</pre>"
        ),
    )


__all__ = ["render_snapshot", "snapshot_html", "snapshot_text"]


def _rate(r: RequestFigures) -> str:
    """The request rate and its price, or why there is none yet (a rate needs a window)."""
    if r.paused:
        return "paused: no live cost"
    if r.requests_per_minute is None or r.cost_per_hour_usd is None:
        return "rate: measuring (needs 60 s of polling)"
    per_min, cost = r.requests_per_minute, r.cost_per_hour_usd
    return f"{per_min:.1f}/min over {r.window_s:.0f} s, about ${cost:.4f}/hour"
