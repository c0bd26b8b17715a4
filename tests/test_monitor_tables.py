"""A Snapshot renders itself as rich tables (terminal and Jupyter HTML), without Textual."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

from rich.console import Console

from omniq_console.monitor import (
    EventRow,
    QueueStats,
    ScheduleRow,
    Snapshot,
    UnreadableRow,
    snapshot_html,
    snapshot_text,
)

TAKEN = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)


def _python(code: str) -> subprocess.CompletedProcess[str]:
    """``code`` run in a fresh interpreter: what it imports is what the code under test does."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )


def sample(**changes: Any) -> Snapshot:
    return Snapshot(
        bucket="bkt",
        prefix="omniq/",
        taken_at=TAKEN,
        queues=(
            QueueStats(name="emails", pending=12, delayed=3, running=2, oldest_pending_age_s=75),
            QueueStats(name="reports", pending=0),
        ),
        events=(
            EventRow(
                id="e1",
                timestamp=TAKEN,
                event_type="failed",
                task_id="t1",
                queue_name="emails",
                message="[bold red]not markup[/] <script>alert(1)</script>",
            ),
        ),
        schedules=(
            ScheduleRow(
                id="s1", func="nightly.report", schedule_type="cron", status="active", overdue=True
            ),
        ),
        unreadable=(UnreadableRow(key="omniq/tasks/x.json", reason="not valid JSON"),),
        failures_by_type={"ValueError": 4},
        **changes,
    )


def test_text_shows_every_section_and_untrusted_text_literally() -> None:
    text = snapshot_text(sample())
    for expected in (
        "gs://bkt/omniq/",
        "emails",
        "reports",
        "75s",  # oldest pending
        "nightly.report",
        "OVERDUE",
        "ValueError",
        "omniq/tasks/x.json",
        "[bold red]not markup[/]",
    ):
        assert expected in text, expected
    assert "STALE" not in text
    stale = snapshot_text(sample(stale=True, age_s=42, error="BackendUnavailableError: down"))
    assert "STALE (42s old)" in stale and "BackendUnavailableError: down" in stale


def test_rich_protocol_and_jupyter_html() -> None:
    console = Console(record=True, width=120, color_system=None)
    console.print(sample())  # __rich__
    assert "emails" in console.export_text()
    html = sample()._repr_html_()
    assert html == snapshot_html(sample())
    assert html.startswith("<pre") and "emails" in html and "nightly.report" in html
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_importing_and_rendering_never_loads_textual() -> None:
    code = (
        "import sys\n"
        "import omniq_console.monitor as m\n"
        "from datetime import datetime, timezone\n"
        "s = m.Snapshot(bucket='b', prefix='p/', taken_at=datetime.now(timezone.utc),\n"
        "               queues=(m.QueueStats(name='jobs'),))\n"
        "assert 'jobs' in s._repr_html_() and 'jobs' in m.snapshot_text(s)\n"
        "bad = sorted(k for k in sys.modules if k == 'textual' or k.startswith('textual.'))\n"
        "print(bad)\n"
    )
    out = _python(code)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_the_tables_import_no_snapshot_at_run_time() -> None:
    # Snapshot.__rich__ imports the tables when a snapshot is displayed; the tables importing
    # the snapshot back would make the two modules a cycle.
    code = (
        "import sys\n"
        "import omniq_console.monitor.tables\n"
        "print('omniq_console.monitor.snapshot' in sys.modules)\n"
    )
    out = _python(code)
    assert out.stdout.strip() == "False", out.stdout + out.stderr


def test_frames_load_nothing_of_the_notebook_package() -> None:
    # The monitor sits below the notebook: a snapshot's frames (its own method) come from the
    # monitor package, so the notebook may import the monitor and never the other way round.
    code = (
        "import sys\n"
        "from datetime import datetime, timezone\n"
        "from omniq_console.monitor.snapshot import Snapshot\n"
        "Snapshot(bucket='b', prefix='', taken_at=datetime.now(timezone.utc)).to_frames()\n"
        "print(sorted(k for k in sys.modules if k.startswith('omniq_console.notebook')))\n"
    )
    out = _python(code)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
