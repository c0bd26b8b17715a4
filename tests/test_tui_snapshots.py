"""SVG snapshots of every view at a fixed size with fixed data (pytest-textual-snapshot).

The data is pinned (``tui_fixtures``: fixed times and ids) and the app's clock is frozen,
so ages and countdowns are the same on every run. Regenerate after a deliberate change of
the look with ``pytest tests/test_tui_snapshots.py --snapshot-update`` and review the SVGs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
from textual.pilot import Pilot
from tui_fixtures import make_app, settle, stale_snapshot, task_id

from omniq_console.tui import StaticSource

SIZE = (140, 42)
SMALL = (80, 24)
MEDIUM = (120, 40)


def keys_then_settle(keys: Sequence[str]) -> Callable[[Pilot[None]], object]:
    async def run_before(pilot: Pilot[None]) -> None:
        await settle(pilot)
        for key in keys:
            await pilot.press(key)
            await settle(pilot)

    return run_before


@pytest.mark.parametrize(
    "keys",
    [
        pytest.param((), id="overview"),
        pytest.param(("2",), id="queues"),
        pytest.param(("3",), id="tasks"),
        pytest.param(("4",), id="results"),
        pytest.param(("5",), id="events"),
        pytest.param(("6",), id="schedules"),
        pytest.param(("7",), id="workers"),
        pytest.param(("4", "tab", "enter"), id="task_detail"),
        pytest.param(("4", "R"), id="bulk_retry_confirmation"),
        pytest.param(("3", "c"), id="cancel_confirmation"),
        pytest.param(("question_mark",), id="help"),
        pytest.param(("5", "space"), id="events_tail_paused"),
    ],
)
def test_view(snap_compare: Callable[..., bool], keys: Sequence[str]) -> None:
    app, _, _ = make_app()
    assert snap_compare(app, terminal_size=SIZE, run_before=keys_then_settle(keys))


MAIN_VIEWS = [
    pytest.param((), id="overview"),
    pytest.param(("2",), id="queues"),
    pytest.param(("3",), id="tasks"),
    pytest.param(("4",), id="results"),
    pytest.param(("5",), id="events"),
    pytest.param(("6",), id="schedules"),
    pytest.param(("7",), id="workers"),
]


@pytest.mark.parametrize(
    "size", [pytest.param(SMALL, id="80x24"), pytest.param(MEDIUM, id="120x40")]
)
@pytest.mark.parametrize("keys", MAIN_VIEWS)
def test_view_at_size(
    snap_compare: Callable[..., bool], keys: Sequence[str], size: tuple[int, int]
) -> None:
    app, _, _ = make_app()
    assert snap_compare(app, terminal_size=size, run_before=keys_then_settle(keys))


def test_stale_data_at_80_columns(snap_compare: Callable[..., bool]) -> None:
    app, _, _ = make_app(StaticSource(stale_snapshot()))
    assert snap_compare(app, terminal_size=SMALL, run_before=keys_then_settle(()))


def test_stale_data(snap_compare: Callable[..., bool]) -> None:
    app, _, _ = make_app(StaticSource(stale_snapshot()))
    assert snap_compare(app, terminal_size=SIZE, run_before=keys_then_settle(()))


def test_read_only_tasks(snap_compare: Callable[..., bool]) -> None:
    app, _, _ = make_app(read_only=True)
    assert snap_compare(app, terminal_size=SIZE, run_before=keys_then_settle(("3",)))


def test_task_detail_of_a_task_gone_from_the_bucket(snap_compare: Callable[..., bool]) -> None:
    app, _, _ = make_app()

    async def run_before(pilot: Pilot[None]) -> None:
        await settle(pilot)
        app.open_task(task_id(2))
        await settle(pilot)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
