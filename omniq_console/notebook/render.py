"""The dashboard panel as HTML: one self-contained fragment per snapshot.

Inline styles only (no ``<style>`` or scripts), so JupyterLab, classic Notebook and VS Code
show it the same way, and the fragment is safe in an ipywidgets ``HTML`` value. Every string
that comes from the bucket (queue names, functions, messages, error types) goes through
``html.escape``: it is shown literally, never interpreted as markup.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from datetime import datetime

from ..monitor.groups import FailureGroup
from ..monitor.snapshot import QueueStats, QueueWindow, ResultMinute, Snapshot

MAX_ROWS = 12
"""Rows shown per table; the rest is counted in a caption."""
EVENT_ROWS = 8
"""Events shown (newest first): the panel stays one screen high."""
CHART_MINUTES = 30
"""Minutes of outcomes in the chart."""

OUTCOME_COLOURS = (
    ("success", "#2e9d4f"),
    ("error", "#d64545"),
    ("cancelled", "#8c8c8c"),
    ("expired", "#e0a030"),
)

_FONT = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;font-size:13px"
_CARD = (
    "border:1px solid #d0d7de;border-radius:6px;padding:8px 10px;background:#fff;"
    "min-width:0;overflow-x:auto"
)
_TH = "text-align:left;padding:2px 8px 2px 0;color:#57606a;font-weight:600;white-space:nowrap"
_TH_NUM = _TH.replace("text-align:left", "text-align:right")
_TD = (
    "padding:2px 8px 2px 0;white-space:nowrap;max-width:28em;overflow:hidden;text-overflow:ellipsis"
)
_NUM = _TD + ";text-align:right;font-variant-numeric:tabular-nums"
_DIM = "color:#6e7781"
_RED = "color:#cf222e;font-weight:600"
_PAUSED = "color:#9a6700;font-weight:600;font-size:11px"
_ALIVE = '<span style="color:#1a7f37">alive</span>'
_GONE = f'<span style="{_RED}">gone</span>'


def _e(value: object) -> str:
    if value is None:
        return f'<span style="{_DIM}">-</span>'
    if isinstance(value, datetime):
        return value.strftime("%H:%M:%S")
    return html.escape(str(value))


def age(seconds: float | None) -> str:
    """``75s``, ``12m``, ``3.5h``: an age that fits a table cell."""
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    numeric: frozenset[int],
    total: int,
    limit: int = MAX_ROWS,
) -> str:
    head = "".join(
        f'<th style="{_TH_NUM if i in numeric else _TH}">{html.escape(h)}</th>'
        for i, h in enumerate(headers)
    )
    body = "".join(
        "<tr>"
        + "".join(f'<td style="{_NUM if i in numeric else _TD}">{c}</td>' for i, c in enumerate(r))
        + "</tr>"
        for r in rows[:limit]
    )
    caption = ""
    if total > min(len(rows), limit):
        caption = f'<div style="{_DIM}">{min(len(rows), limit)} of {total} shown</div>'
    return (
        f'<table style="border-collapse:collapse;width:100%"><tr>{head}</tr>{body}</table>'
        + caption
    )


def _card(title: str, content: str, wide: bool = False) -> str:
    span = "grid-column:1/-1;" if wide else ""
    return (
        f'<div style="{_CARD};{span}"><div style="font-weight:600;margin-bottom:4px">'
        f"{html.escape(title)}</div>{content}</div>"
    )


def _empty(text: str) -> str:
    return f'<div style="{_DIM}">{html.escape(text)}</div>'


def sparkline(values: Sequence[int], width: int = 90, height: int = 18) -> str:
    """The depth trend as a small SVG line (empty for fewer than two points)."""
    if len(values) < 2:
        return ""
    top = max(max(values), 1)
    step = width / (len(values) - 1)
    points = " ".join(
        f"{i * step:.1f},{height - 1 - (v / top) * (height - 2):.1f}" for i, v in enumerate(values)
    )
    return (
        f'<svg width="{width}" height="{height}" style="vertical-align:middle">'
        f'<polyline points="{points}" fill="none" stroke="#0969da" stroke-width="1.5"/></svg>'
    )


def _trend(values: Sequence[int]) -> str:
    if len(values) < 2 or values[-1] == values[0]:
        return f'<span style="{_DIM}">=</span>'
    if values[-1] > values[0]:
        return f'<span style="color:#cf222e">&#9650; +{values[-1] - values[0]}</span>'
    return f'<span style="color:#1a7f37">&#9660; {values[-1] - values[0]}</span>'


def _queues(s: Snapshot) -> str:
    if not s.queues:
        return _card("Queues", _empty("no queues"))
    rows = [
        (
            _e(q.name) + (_paused(q) if q.paused else ""),
            str(q.pending),
            str(q.delayed),
            str(q.running),
            _e(age(q.oldest_pending_age_s)),
            _per_minute(q.throughput),
            f"{_trend(q.depth_trend)} {sparkline(q.depth_trend)}",
        )
        for q in s.queues
    ]
    headers = ("queue", "pending", "delayed", "running", "oldest", "done/min", "depth trend")
    return _card("Queues", _table(headers, rows, frozenset({1, 2, 3, 4, 5}), len(rows)))


def _paused(q: QueueStats) -> str:
    by = html.escape(f"paused by {q.paused_by or 'someone'}", quote=True)
    return f' <span style="{_PAUSED}" title="{by}">PAUSED</span>'


def _per_minute(windows: Sequence[QueueWindow]) -> str:
    """Completions per minute over the shortest window the monitor measured."""
    if not windows:
        return _e(None)
    shortest = min(windows, key=lambda w: w.window_s)
    return f"{shortest.per_minute:.1f}"


def outcome_chart(minutes: Sequence[ResultMinute], width: int = 420, height: int = 90) -> str:
    """Results per minute by outcome, as stacked SVG bars (the last ``CHART_MINUTES``)."""
    shown = list(minutes)[-CHART_MINUTES:]
    if not shown:
        return _empty("no results yet")
    top = max(max(m.success + m.error + m.cancelled + m.expired for m in shown), 1)
    bar = width / CHART_MINUTES
    parts: list[str] = []
    for i, minute in enumerate(shown):
        x = (CHART_MINUTES - len(shown) + i) * bar
        y = float(height)
        for name, colour in OUTCOME_COLOURS:
            n = int(getattr(minute, name))
            if not n:
                continue
            h = n / top * (height - 4)
            y -= h
            parts.append(
                f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{max(bar - 2, 1):.1f}" '
                f'height="{h:.1f}" fill="{colour}"><title>{minute.minute:%H:%M} '
                f"{name} {n}</title></rect>"
            )
    legend = " ".join(f'<span style="color:{c}">&#9632;</span> {n}' for n, c in OUTCOME_COLOURS)
    first, last = shown[0].minute, shown[-1].minute
    return (
        f'<svg width="{width}" height="{height}" style="display:block">{"".join(parts)}'
        f'<line x1="0" y1="{height - 0.5}" x2="{width}" y2="{height - 0.5}" stroke="#d0d7de"/>'
        f'</svg><div style="{_DIM}">{first:%H:%M}&ndash;{last:%H:%M} UTC, peak {top}/min'
        f" &nbsp; {legend}</div>"
    )


def _outcomes(s: Snapshot) -> str:
    rate = s.failure_rate
    style = _RED if rate >= 0.1 else ""
    counts = " &middot; ".join(f"{html.escape(k)} {v}" for k, v in s.results.items() if v)
    content = (
        outcome_chart(s.results_per_minute)
        + f"<div>failure rate (last {age(s.outcome_window_s)}): "
        + f'<span style="{style}">{rate:.1%}</span>'
        + (f' &nbsp; <span style="{_DIM}">results: {counts}</span>' if counts else "")
        + "</div>"
    )
    return _card("Outcomes per minute", content)


def _failures(groups: Sequence[FailureGroup], now: datetime) -> str:
    if not groups:
        return _card("Failure groups", _empty("no failed tasks"))

    def since(when: datetime | None) -> str:
        return age((now - when).total_seconds()) if when is not None else "-"

    rows = [
        (
            f'<span style="{_RED}">{_e(g.error_type)}</span>'
            + (' <b style="color:#b07000">NEW</b>' if g.is_new else ""),
            _e(g.queue),
            str(g.count),
            since(g.first_seen),
            since(g.last_seen),
            sparkline(g.per_minute),
        )
        for g in groups
    ]
    headers = ("error", "queue", "tasks", "first seen", "last seen", "per minute, 30 min")
    return _card("Failure groups", _table(headers, rows, frozenset({2}), len(rows)))


def _schedules(s: Snapshot) -> str:
    if not s.schedules:
        return _card("Schedules", _empty("no schedules"), wide=True)
    rows = [
        (
            _e(r.id),
            _e(r.func),
            _e(r.status) if r.status != "paused" else f'<span style="{_DIM}">paused</span>',
            _e(r.next_run) + (f' <span style="{_RED}">OVERDUE</span>' if r.overdue else ""),
            _e(r.last_run),
            str(r.run_count),
        )
        for r in s.schedules
    ]
    headers = ("schedule", "func", "status", "next run", "last run", "runs")
    return _card("Schedules", _table(headers, rows, frozenset({5}), len(rows)), wide=True)


def _workers(s: Snapshot) -> str:
    if not s.workers:
        return _card("Workers", _empty("no workers"))
    rows = [
        (
            _e(w.id),
            _e(w.state),
            _GONE if w.dead or not w.alive else _ALIVE,
            _e(age(w.age_s)),
            w.load_text(),
            str(w.processed),
            str(w.failed),
        )
        for w in s.workers
    ]
    headers = ("worker", "state", "", "seen", "running", "done", "failed")
    return _card("Workers", _table(headers, rows, frozenset({3, 4, 5, 6}), len(rows)))


def _events(s: Snapshot) -> str:
    if not s.events:
        return _card("Recent events", _empty("no events"), wide=True)
    rows = [
        (
            _e(e.timestamp),
            _e(e.event_type),
            _e(e.task_id),
            _e(e.queue_name),
            _e(e.message or e.error_message or e.error_type),
        )
        for e in s.events[:EVENT_ROWS]
    ]
    headers = ("time", "event", "task", "queue", "message")
    table = _table(headers, rows, frozenset(), len(s.events), EVENT_ROWS)
    return _card("Recent events", table, wide=True)


def _tasks(s: Snapshot) -> str:
    return " &middot; ".join(f"{html.escape(k)} <b>{v}</b>" for k, v in s.tasks.items())


def _cost(s: Snapshot) -> str:
    r = s.requests
    if r.paused:
        return "polling paused: no live cost"
    if r.requests_per_minute is None or r.cost_per_hour_usd is None:
        return f"{r.total} requests (rate after a minute of polling)"
    return f"{r.requests_per_minute:.0f} req/min, ${r.cost_per_hour_usd:.4f}/h"


def status_line(s: Snapshot, *, running: bool = True) -> str:
    """Bucket, data age, live/stale state, poll interval, change feed, request rate and cost."""
    if not running:
        state = f'<span style="{_DIM};font-weight:600">STOPPED</span>'
    elif s.stale:
        state = f'<span style="{_RED}">STALE</span>'
    else:
        state = '<span style="color:#1a7f37;font-weight:600">LIVE</span>'
    parts = [
        f"<b>OmniQ</b> gs://{_e(s.bucket)}/{_e(s.prefix)}",
        state,
        f"data {s.taken_at:%H:%M:%S} UTC ({age(s.age_s)} old)",
        f"every {s.poll_interval_s:g}s" + (" + Pub/Sub" if s.changes == "pubsub" else ""),
        _cost(s),
    ]
    line = " &nbsp;&middot;&nbsp; ".join(parts)
    if s.stale and s.error:
        line += f'<div style="{_RED}">{_e(s.error)}</div>'
    return line


def dashboard_html(
    snapshot: Snapshot, groups: Iterable[FailureGroup], *, running: bool = True
) -> str:
    """The whole panel for one snapshot (``groups``: its failure groups)."""
    s = snapshot
    if s.connecting:
        return message_html(f"connecting to gs://{s.bucket}/{s.prefix} (attempt {s.attempt}) ...")
    grid = "".join(
        (
            _queues(s),
            _outcomes(s),
            _failures(tuple(groups), s.taken_at),
            _workers(s),
            _schedules(s),
            _events(s),
        )
    )
    return (
        f'<div class="omniq-dashboard" style="{_FONT};color:#1f2328">'
        f'<div style="padding:4px 2px 6px">{status_line(s, running=running)}</div>'
        f'<div style="padding:0 2px 6px">tasks: {_tasks(s)}</div>'
        '<div style="display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));'
        f'gap:8px">{grid}</div></div>'
    )


def message_html(text: str, *, error: bool = False) -> str:
    """A one-line panel (connecting, or why the dashboard cannot run)."""
    style = _RED if error else _DIM
    return f'<div style="{_FONT};{style};padding:6px 2px">{html.escape(text)}</div>'


__all__ = ["age", "dashboard_html", "message_html", "outcome_chart", "sparkline", "status_line"]
