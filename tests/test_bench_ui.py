"""The ui benchmark's baseline: a plain DataTable filled with the console's task rows."""

from __future__ import annotations

from benchmarks.ui import baseline_add_rows


async def test_add_rows_baseline_fills_a_table_with_every_field_of_the_task_rows() -> None:
    phase = await baseline_add_rows(50)
    assert phase.samples > 0
    assert phase.seconds >= 0
