"""Column widths, decided per table width in one place: key columns stay whole.

A Textual ``DataTable`` sizes each column to its widest cell, and what does not fit runs off
the right edge: at 80 or 120 columns the columns an operator decides by (status, next run,
retries, message) were the ones cut. Here each column says how it gives way
(:class:`Width`); :func:`plan_widths` turns that into widths for the space there is, and
:class:`FittedTable` applies them whenever its size, rows or sort change.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from rich.text import Text
from textual.geometry import Size
from textual.message import Message
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey, RowKey

from .widgets.keyed_table import Cells, KeyedTable

T = TypeVar("T", bound=Hashable)


@dataclass(frozen=True, slots=True)
class Width:
    """How one column gives way when its table is narrow.

    By default a column is a key column: as wide as its widest cell and its header, never
    cut. ``cut``: it may be cut down to ``cut`` cells, an ellipsis showing where. ``most``:
    never wider than ``most`` (long free text). ``fill``: it takes whatever width is left
    (the message of an event). ``drop``: when even the cut widths do not fit, the columns
    with a ``drop`` rank are hidden, the highest rank first (a hidden column keeps the two
    cells of its padding, so droppable columns go last in a table).
    """

    cut: int | None = None
    most: int | None = None
    fill: bool = False
    drop: int = 0

    @property
    def cuttable(self) -> bool:
        return self.cut is not None or self.most is not None or self.fill


KEY = Width()
"""A column shown whole at every width."""


def plan_widths(
    widths: Sequence[Width], natural: Sequence[int], available: int, padding: int = 2
) -> list[int]:
    """The content width of each column (0: hidden) for a table ``available`` cells wide.

    ``natural`` is what each column needs to show its widest cell and header whole;
    ``padding`` is the cells around each column's content. Key columns get their natural
    width; cuttable ones at least their ``cut`` and, with room, up to their natural width
    (shared in proportion to what each lacks); a ``fill`` column takes what is left. When
    the columns do not fit at their least, droppable columns are hidden, highest rank first.
    What still does not fit runs off the right edge (the table scrolls).
    """
    n = len(widths)
    want = [
        min(nat, w.most) if w.most is not None else nat
        for w, nat in zip(widths, natural, strict=True)
    ]
    least = [min(x, w.cut) if w.cut is not None else x for w, x in zip(widths, want, strict=True)]
    shown = [True] * n

    def needed() -> int:
        return sum(least[i] for i in range(n) if shown[i]) + padding * n

    for i in sorted((i for i in range(n) if widths[i].drop), key=lambda i: -widths[i].drop):
        if needed() <= available:
            break
        shown[i] = False
    plan = [least[i] if shown[i] else 0 for i in range(n)]
    spare = available - sum(plan) - padding * n
    lacking = [want[i] - plan[i] if shown[i] else 0 for i in range(n)]
    short = sum(lacking)
    if spare > 0 and short:
        give = min(spare, short)
        extra = [give * lack // short for lack in lacking]
        left = give - sum(extra)
        for i in range(n):
            if left and lacking[i] > extra[i]:
                extra[i] += 1
                left -= 1
        plan = [p + e for p, e in zip(plan, extra, strict=True)]
        spare -= give
    fill = next((i for i in range(n) if widths[i].fill and shown[i]), None)
    if spare > 0 and fill is not None:
        plan[fill] += spare
    return plan


@dataclass(frozen=True, slots=True)
class TableSpec(Generic[T]):
    """What one table shows, declared together: the cells of one item, its columns (key,
    header) in order, and how each column gives way (a column not in ``widths``: :data:`KEY`)."""

    render: Callable[[T], Cells]
    columns: tuple[tuple[str, str], ...]
    widths: Mapping[str, Width] = field(default_factory=dict)

    def header(self, key: str) -> str:
        """The header of column ``key``."""
        return dict(self.columns)[key]


class FittedTable(KeyedTable[T]):
    """A :class:`KeyedTable` of ``spec``'s columns whose widths follow :func:`plan_widths`.

    Cells of cuttable columns end in an ellipsis where they are cut.
    """

    def __init__(
        self,
        spec: TableSpec[T],
        *,
        follow_top: bool = False,
        openable: bool = False,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        columns, render = spec.columns, spec.render
        self._widths = tuple(spec.widths.get(key, KEY) for key, _ in columns)
        cuttable = [i for i, w in enumerate(self._widths) if w.cuttable]

        def render_cut(item: T) -> Cells:
            cells = list(render(item))
            for i in cuttable:
                cells[i].no_wrap = True
                cells[i].overflow = "ellipsis"
            return cells

        super().__init__(
            columns, render_cut, follow_top=follow_top, openable=openable, id=id, classes=classes
        )
        self._column_keys = tuple(key for key, _ in columns)
        self._measured: dict[str, tuple[Cells, list[int]]] = {}

    def sync(self, rows: Sequence[tuple[str, T]]) -> None:
        super().sync(rows)
        self.fit()

    def _update_dimensions(self, new_rows: Iterable[RowKey]) -> None:
        # Textual's own pass, once the loop is idle after rows were added: it measures every
        # cell of each new row (rendering it with Rich) to size auto-width columns, 20-30 ms
        # of blocked loop for a page of 200 rows, and these columns' widths are set by
        # ``fit`` from the cells' lengths. Only the rest of it (the virtual size) is kept.
        super()._update_dimensions(())

    def _update(self, key: str, column: str, cell: Text) -> None:
        # Nor a changed cell: asked to re-fit its column, Textual measures the cell and,
        # when it is narrower than the column, every cell of the column (per updated cell).
        self.update_cell(key, column, cell)

    def sort_by(self, column: str | None, descending: bool = False) -> None:
        super().sort_by(column, descending)
        # The header just grew a marker: make room for it.
        self.fit()

    def on_resize(self) -> None:
        self.fit()

    def natural_widths(self) -> list[int]:
        """What each column needs to show its widest cell and its header whole."""
        labels = [self.columns[ColumnKey(key)].label.cell_len for key in self._column_keys]
        # Measured once per row version: a sync replaces the cells of changed rows only, so
        # a 1,000-row tail costs a lookup per row, not a measure of every cell, per poll.
        known = self._measured
        measured: dict[str, tuple[Cells, list[int]]] = {}
        for key in self.keys():
            cells = self.row_cells(key)
            seen = known.get(key)
            if seen is not None and seen[0] is cells:
                measured[key] = seen
            else:
                measured[key] = (cells, [cell.cell_len for cell in cells])
        self._measured = measured
        rows = (widths for _, widths in measured.values())
        return [max(column) for column in zip(labels, *rows, strict=True)]

    def fit(self) -> None:
        """Set the columns' widths for the table's width now."""
        if not self.columns or not self.size.width:
            return
        available = self.size.width
        if self.styles.overflow_y != "hidden" and self.row_count + 1 > self.size.height:
            available -= self.styles.scrollbar_size_vertical
        plan = plan_widths(
            self._widths, self.natural_widths(), available, padding=2 * self.cell_padding
        )
        changed = False
        for key, width, spec in zip(self._column_keys, plan, self._widths, strict=True):
            column = self.columns[ColumnKey(key)]
            if spec.cuttable and isinstance(column.label, Text):
                column.label.no_wrap = True
                column.label.overflow = "ellipsis"
            if column.auto_width or column.width != width:
                column.auto_width = False
                column.width = width
                changed = True
        if changed:
            total = sum(c.get_render_width(self) for c in self.columns.values())
            self.virtual_size = Size(total, self.virtual_size.height)
            # Cells are cached by key, not width: draw them again at their new widths.
            self.notify_style_update()
            self.refresh()


class PagedTable(FittedTable[T]):
    """A :class:`FittedTable` showing one page of a longer list that is sorted elsewhere.

    Sorting a page would sort 200 rows of 100,000: here a header click or ``o`` only marks
    the column and posts :class:`PagedTable.SortRequested`; the view sorts the whole list
    (off the UI loop) and syncs the page it gets, in that order.
    """

    class SortRequested(Message):
        """The operator asked for the list sorted by ``column``."""

        def __init__(self, table: PagedTable[Any], column: str, descending: bool) -> None:
            super().__init__()
            self.table = table
            self.column = column
            self.descending = descending

        @property
        def control(self) -> PagedTable[Any]:
            return self.table

    def __init__(
        self,
        spec: TableSpec[T],
        *,
        order: tuple[str, bool],
        follow_top: bool = False,
        openable: bool = False,
        id: str | None = None,
    ) -> None:
        super().__init__(spec, follow_top=follow_top, openable=openable, id=id)
        self._labels = dict(spec.columns)
        self.order = order
        self._marked = False

    def sort_by(self, column: str | None, descending: bool = False) -> None:
        if column is None or (column, descending) == self.order:
            return
        self.order = (column, descending)
        self._mark_order()
        self.post_message(self.SortRequested(self, column, descending))

    def sync(self, rows: Sequence[tuple[str, T]]) -> None:
        if not self._marked:
            self._mark_order()
        super().sync(rows)

    def _mark_order(self) -> None:
        self._marked = True
        column, descending = self.order
        for key, label in self._labels.items():
            shown = Text(label)
            if key == column:
                shown.append(" ▼" if descending else " ▲", style="bold")
            self.columns[ColumnKey(key)].label = shown
        self.fit()
        self.refresh()

    def action_sort_next(self) -> None:
        """Sort by the next column (after the last: the first again)."""
        keys = list(self._labels)
        self.sort_by(keys[(keys.index(self.order[0]) + 1) % len(keys)], self.order[1])

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        # Instead of the keyed table's own sort of the rows it holds.
        event.prevent_default()
        event.stop()
        column = event.column_key.value
        if column is not None:
            # The same header again turns the order round.
            self.sort_by(column, not self.order[1] if column == self.order[0] else True)
