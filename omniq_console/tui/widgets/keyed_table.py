"""A DataTable updated by row key: only rows that changed are touched, never rebuilt whole."""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Sequence
from typing import ClassVar, Generic, TypeVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey, RowDoesNotExist

T = TypeVar("T", bound=Hashable)
Cells = Sequence[Text]

_NUMBER = re.compile(r"(\d[\d,]*(?:\.\d+)?)")


def natural_key(value: str) -> tuple[tuple[int, float, str], ...]:
    """Sort key of a cell's text: numbers by value (``1,480`` after ``20``), text by case."""
    parts: list[tuple[int, float, str]] = []
    for i, part in enumerate(_NUMBER.split(value)):
        if i % 2:
            parts.append((0, float(part.replace(",", "")), ""))
        elif part:
            parts.append((1, 0.0, part.casefold()))
    return tuple(parts)


class _KeyedText(Text):
    """The first cell of a row, carrying the row's key so rows can be put in order by key."""

    row_key: str = ""


def _first_cell(cell: Text, key: str) -> _KeyedText:
    keyed = _KeyedText(end="", no_wrap=cell.no_wrap, overflow=cell.overflow)
    keyed.append_text(cell)
    keyed.row_key = key
    return keyed


class KeyedTable(DataTable[Text], Generic[T]):
    """A table showing ``(key, item)`` pairs, kept in sync with :meth:`sync`.

    Each ``sync`` diffs by key against what is shown: rows gone are removed, new rows added,
    rows whose item changed get their changed cells updated, and rows are put in the given
    order. The cursor stays on the row it was on, or at the top of a ``follow_top`` table (a
    live tail) when it was there. An ``openable`` table shows ``enter`` in the footer; what
    opening does is up to whoever handles ``DataTable.RowSelected``.

    ``o`` (or a click on a header) sorts by a column: the next column on each ``o``, the
    other way on a second click of the same header; the header shows the direction. A
    sorted table keeps its sort across syncs (numbers sort by value).
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "Open", tooltip="Open the row under the cursor"),
        Binding("o", "sort_next", "Sort", tooltip="Sort by the next column"),
    ]

    def __init__(
        self,
        columns: Sequence[tuple[str, str]],
        render: Callable[[T], Cells],
        *,
        follow_top: bool = False,
        openable: bool = False,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(
            id=id,
            classes=classes,
            cursor_type="row",
            zebra_stripes=True,
            # Keep the colours that flag what needs attention visible under the cursor.
            cursor_foreground_priority="renderable",
        )
        self._column_spec = tuple(columns)
        self._make_cells = render
        self._follow_top = follow_top
        self.openable = openable
        self._items: dict[str, T] = {}
        self._cells: dict[str, Cells] = {}
        self._order: list[str] = []
        # (column key, descending), or None for the order ``sync`` is given.
        self.sorted_by: tuple[str, bool] | None = None

    def on_mount(self) -> None:
        for key, label in self._column_spec:
            self.add_column(Text(label), key=key)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return self.openable or action != "select_cursor"

    @property
    def selected_key(self) -> str | None:
        """Key of the row under the cursor, None when the table is empty."""
        if not self.row_count:
            return None
        try:
            return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except (RowDoesNotExist, LookupError):
            return None

    @property
    def selected_item(self) -> T | None:
        """The item under the cursor."""
        key = self.selected_key
        return None if key is None else self._items.get(key)

    def item(self, key: str) -> T | None:
        return self._items.get(key)

    def keys(self) -> list[str]:
        """Keys of the rows shown, top to bottom."""
        return [row.key.value for row in self.ordered_rows if row.key.value is not None]

    def _cells_for(self, key: str, item: T) -> Cells:
        cells = list(self._make_cells(item))
        cells[0] = _first_cell(cells[0], key)
        return cells

    def sync(self, rows: Sequence[tuple[str, T]]) -> None:
        """Show exactly ``rows``, in this order, touching only what changed."""
        wanted = dict(rows)
        if len(wanted) != len(rows):
            raise ValueError("row keys must be unique")
        selected = self.selected_key
        at_top = self.cursor_row <= 0
        with self.app.batch_update():
            gone = [key for key in self._items if key not in wanted]
            if gone and len(gone) > max(len(self._items) // 2, 32):
                # Removing a row renumbers every row after it: past a point, starting
                # afresh is cheaper than removing one by one.
                self.clear()
                self._items.clear()
                self._cells.clear()
            else:
                for key in gone:
                    self.remove_row(key)
                    del self._items[key]
                    del self._cells[key]
            column_keys = [key for key, _ in self._column_spec]
            for key, item in rows:
                old = self._items.get(key)
                if old is None:
                    cells = self._cells_for(key, item)
                    self.add_row(*cells, key=key)
                elif old != item:
                    cells = self._cells_for(key, item)
                    for column, before, after in zip(
                        column_keys, self._cells[key], cells, strict=True
                    ):
                        if before != after:
                            self._update(key, column, after)
                else:
                    continue
                self._items[key] = item
                self._cells[key] = cells
            self._order = [key for key, _ in rows]
            order = self._sorted(self._order)
            if self.keys() != order:
                position = {key: index for index, key in enumerate(order)}
                self.sort(key=lambda values: position[values[0].row_key])
            self._restore_cursor(selected, at_top)

    def _sorted(self, order: list[str]) -> list[str]:
        if self.sorted_by is None:
            return order
        column, descending = self.sorted_by
        index = [key for key, _ in self._column_spec].index(column)
        return sorted(
            order,
            key=lambda key: natural_key(self._cells[key][index].plain),
            reverse=descending,
        )

    def sort_by(self, column: str | None, descending: bool = False) -> None:
        """Sort by ``column`` (None: the order given to ``sync``), keeping the selection."""
        self.sorted_by = None if column is None else (column, descending)
        for key, label in self._column_spec:
            shown = Text(label)
            if self.sorted_by is not None and key == column:
                shown.append(" ▼" if descending else " ▲", style="bold")
            self.columns[ColumnKey(key)].label = shown
        selected = self.selected_key
        order = self._sorted(self._order or self.keys())
        position = {key: index for index, key in enumerate(order)}
        self.sort(key=lambda values: position[values[0].row_key])
        self._restore_cursor(selected, False)
        self.refresh()

    def action_sort_next(self) -> None:
        """Sort by the next column (after the last: back to the given order)."""
        keys = [key for key, _ in self._column_spec]
        if self.sorted_by is None:
            self.sort_by(keys[0])
        elif (index := keys.index(self.sorted_by[0]) + 1) < len(keys):
            self.sort_by(keys[index])
        else:
            self.sort_by(None)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        column = event.column_key.value
        if column is None:
            return
        descending = self.sorted_by is not None and self.sorted_by == (column, False)
        self.sort_by(column, descending)

    def _update(self, key: str, column: str, cell: Text) -> None:
        # Ask Textual to re-fit the column only when this cell is wider than the column:
        # for a narrower cell it re-measures every cell of the column, once per updated cell
        # (200 rows x 150 changed cells cost two seconds of blocked loop in a measurement).
        grow = cell.cell_len > self.columns[ColumnKey(column)].content_width
        self.update_cell(key, column, cell, update_width=grow)

    def _restore_cursor(self, selected: str | None, at_top: bool) -> None:
        if not self.row_count:
            return
        if (self._follow_top and at_top) or selected is None or selected not in self._items:
            row = 0 if (self._follow_top and at_top) or selected is None else self.cursor_row
            self.move_cursor(row=min(row, self.row_count - 1), animate=False)
            return
        index = self.get_row_index(selected)
        if index != self.cursor_row:
            self.move_cursor(row=index, animate=False)

    def row_cells(self, key: str) -> Cells:
        """The cells shown for a row, as ``Text`` (their styles say what is highlighted)."""
        return self._cells[key]

    def render_cell_values(self, key: str) -> list[str]:
        """The plain text of each cell of a row."""
        return [cell.plain for cell in self._cells[key]]
