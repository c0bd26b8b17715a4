"""What keeps the console's loop free with 100,000 tasks: each fix beside the behaviour it
must not change (the keys, pages and ids shown stay the same)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from rich.text import Text
from textual.app import App, ComposeResult
from textual.dom import DOMNode
from textual.widget import Widget
from tui_fixtures import LIGHT, big_snapshot, make_app, settle

from omniq_console.tui import ConsoleApp, StaticSource
from omniq_console.tui.cells import short_id
from omniq_console.tui.columns import FittedTable, TableSpec
from omniq_console.tui.taskfilter import PAGE_SIZE, TaskFilter, TaskOrder, select_tasks
from omniq_console.tui.views.tasks import TasksView

SIZE = (160, 48)


def footer_keys(app: ConsoleApp) -> list[Widget]:
    return list(app.screen.query("FooterKey"))


def footer_text(app: ConsoleApp) -> str:
    return " ".join(str(key.render()) for key in footer_keys(app))


async def test_the_footer_is_composed_again_only_when_its_keys_change() -> None:
    app, _, _ = make_app(views=LIGHT)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        keys, text = footer_keys(app), footer_text(app)
        assert "Pause" in text
        for _ in range(3):
            app.screen.refresh_bindings()  # what a page shown or a cursor move asks
            await settle(pilot)
        # The same key widgets: nothing was unmounted and mounted again.
        assert footer_keys(app) == keys
        assert footer_text(app) == text
        await pilot.press("P")
        await settle(pilot)
        assert "Resume" in footer_text(app) and "Pause" not in footer_text(app)
        assert footer_keys(app) != keys


@pytest.mark.parametrize(
    ("flt", "order"),
    [
        (TaskFilter(), TaskOrder()),
        (TaskFilter(queue="emails"), TaskOrder("retries", descending=False)),
        (TaskFilter(status="failed"), TaskOrder("queue")),
        (TaskFilter(func="job_3", error_type="ValueError"), TaskOrder()),
        (TaskFilter(text="no task has this"), TaskOrder()),
    ],
)
def test_a_page_gives_the_ids_a_bulk_action_takes_when_asked(
    flt: TaskFilter, order: TaskOrder
) -> None:
    rows = big_snapshot(5_000).task_rows
    page = select_tasks(rows, flt, 400, order=order)
    # What the filter keeps, in the order asked: worked out here the plain way.
    wanted = order.sort([r for r in rows if flt.predicate()(r)])
    failed = [r for r in wanted if r.status == "failed"]
    cancellable = [r for r in wanted if r.status in ("pending", "running")]
    assert page.rows == tuple(wanted[page.start : page.start + PAGE_SIZE])
    assert page.ids == tuple(r.id for r in wanted)
    assert page.failed_ids == tuple(r.id for r in failed)
    assert page.failed_queues == tuple(sorted({r.queue_name for r in failed}))
    assert page.cancellable_ids == tuple(r.id for r in cancellable)
    # The counts the keys and the summary read on the UI loop, without a pass over the rows.
    assert (page.matched, page.failed, page.cancellable) == (
        len(wanted),
        len(failed),
        len(cancellable),
    )


async def test_a_footer_key_is_styled_once_when_the_footer_is_composed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app, _, _ = make_app(views=LIGHT)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        styled: Counter[int] = Counter()
        apply = app.stylesheet.apply

        def counting(node: DOMNode, *args: Any, **kwargs: Any) -> None:
            # The keys of bindings (the palette's own key is Textual's, left as it is).
            if type(node).__name__ == "FooterKey" and not node.has_class("-command-palette"):
                styled[id(node)] += 1
            apply(node, *args, **kwargs)

        monkeypatch.setattr(app.stylesheet, "apply", counting)
        await pilot.press("P")  # Pause becomes Resume: the footer is composed again
        await settle(pilot)
        assert "Resume" in footer_text(app)
        # Textual's key starts compact and is bound to the footer's (not compact): styled
        # once to mount, then once per change of class, before.
        assert styled and set(styled.values()) == {1}, sorted(styled.values())


async def test_a_page_of_new_rows_is_not_measured_cell_by_cell(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from textual.render import measure
    from textual.widgets import _data_table

    measured: list[object] = []

    def counting(console: Any, renderable: Any, *args: Any, **kwargs: Any) -> int:
        measured.append(renderable)
        return measure(console, renderable, *args, **kwargs)

    monkeypatch.setattr(_data_table, "measure", counting)
    app, _, _ = make_app(StaticSource(big_snapshot(1_000)), views=("tasks",))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        view = app.screen.query_one(TasksView)
        keys = view.table.keys()  # a KeyedTable method, not a dict
        shown = [view.table.render_cell_values(key) for key in keys]
        assert len(shown) == PAGE_SIZE
        # The widths are the table's own, from the cells' lengths: Textual's measure of each
        # cell of the 200 new rows (a Rich render each) on the idle loop was wasted.
        cells = {id(cell) for key in keys for cell in view.table.row_cells(key)}
        assert not [r for r in measured if id(r) in cells]
        # And what the page shows is the page: the newest rows, each cell whole or cut.
        page = view.page
        assert page is not None
        assert [row[0] for row in shown] == [short_id(r.id).plain for r in page.rows]


class _FittedApp(App[None]):
    def compose(self) -> ComposeResult:
        spec: TableSpec[tuple[str, str]] = TableSpec(
            lambda item: [Text(item[0]), Text(item[1])], (("name", "Name"), ("state", "State"))
        )
        yield FittedTable(spec, id="t")


async def test_a_fitted_table_measures_no_cell_when_rows_come_or_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from textual.render import measure
    from textual.widgets import _data_table

    measured: list[object] = []

    def counting(console: Any, renderable: Any, *args: Any, **kwargs: Any) -> int:
        measured.append(renderable)
        return measure(console, renderable, *args, **kwargs)

    app = _FittedApp()
    async with app.run_test(size=(60, 20)) as pilot:
        table: FittedTable[tuple[str, str]] = app.query_one(FittedTable)
        monkeypatch.setattr(_data_table, "measure", counting)
        rows = [(f"t{i}", (f"t{i}", "pending")) for i in range(40)]
        table.sync(rows)
        await pilot.pause()
        # Half the rows change state, some to a longer word, some to a shorter one.
        changed = [
            (k, (k, "completed" if i % 4 else "ok")) if i % 2 else (k, v)
            for i, (k, v) in enumerate(rows)
        ]
        table.sync(changed)
        await pilot.pause()
        shown = table.keys()  # a KeyedTable method, not a dict
        cells = {id(cell) for key in shown for cell in table.row_cells(key)}
        assert not [r for r in measured if id(r) in cells]
        # The widths are the table's own: the widest cell of each column, whole.
        assert table.render_cell_values("t1") == ["t1", "completed"]
        assert [c.width for c in table.columns.values()] == [len("Name"), len("completed")]
