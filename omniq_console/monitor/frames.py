"""A Snapshot as pandas DataFrames, for a user's own analysis (in a notebook, mostly).

``Snapshot.to_frames()`` delegates here, as ``Snapshot.__rich__`` does to ``tables.py``;
``omniq_console.notebook`` re-exports ``snapshot_frames``. pandas is optional (the ``notebook``
extra) and imported only when a frame is asked for, so nothing else in the package pays for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import msgspec
from pydantic import BaseModel

from .groups import failure_groups
from .snapshot import (
    ROW_FIELDS,
    TIME_FIELDS,
    EventRow,
    QueueStats,
    ResultMinute,
    ScheduleRow,
    Snapshot,
    TaskRow,
    WorkerRow,
)

if TYPE_CHECKING:
    import pandas as pd

NOTEBOOK_INSTALL_HINT = "pip install 'omniq-console[notebook]'"
"""What to install for pandas and ipywidgets (the frames and the notebook dashboard)."""

FRAMES = ("queues", "tasks", "results", "failure_groups", "events", "schedules", "workers")
"""The frames ``snapshot_frames`` returns, by name."""

_GROUP_COLUMNS = ("error_type", "queue", "count", "task_ids")


def _require_pandas() -> None:
    try:
        import pandas  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"Snapshot.to_frames() needs pandas: {NOTEBOOK_INSTALL_HINT}") from exc


def _models(rows: Sequence[BaseModel], model: type[BaseModel], index: str | None) -> pd.DataFrame:
    import pandas as pd

    # Columns come from the model, so an empty bucket still gives frames with the right shape.
    frame = pd.DataFrame([r.model_dump() for r in rows], columns=list(model.model_fields))
    return _typed(frame, index)


def _typed(frame: pd.DataFrame, index: str | None) -> pd.DataFrame:
    import pandas as pd

    for column in frame.columns:
        if column.endswith(("_at", "_run", "_seen")) or column in ("minute", "timestamp"):
            frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame.set_index(index) if index else frame


def _records(rows: Iterable[tuple[Any, ...]], columns: Sequence[str]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame.from_records(list(rows), columns=list(columns))


def _tasks(rows: Sequence[TaskRow]) -> pd.DataFrame:
    """One row per task, its times (POSIX seconds in the rows) as UTC datetimes under the
    ``*_at`` names the rows' properties give."""
    import pandas as pd

    frame = _records((msgspec.structs.astuple(r) for r in rows), ROW_FIELDS)
    for ts, at in TIME_FIELDS.items():
        frame[at] = pd.to_datetime(frame.pop(ts), unit="s", utc=True)
    return frame[[TIME_FIELDS.get(f, f) for f in ROW_FIELDS]].set_index("id")


def snapshot_frames(snapshot: Snapshot) -> dict[str, pd.DataFrame]:
    """The snapshot's tables as DataFrames (``FRAMES`` names them).

    ``queues`` (index: queue name), ``tasks`` (one row per task, index: task id; from the
    index metadata, so no bodies), ``results`` (outcomes per UTC minute: the outcome chart),
    ``failure_groups`` (failed tasks by exception type and queue, with their ids, largest
    first), ``events`` (newest first), ``schedules`` and ``workers``. Times are UTC
    ``datetime64``. Raises ImportError naming the extra to install when pandas is missing.
    """
    _require_pandas()
    groups = failure_groups(snapshot.task_rows, by_queue=True)
    return {
        "queues": _models(snapshot.queues, QueueStats, "name"),
        "tasks": _tasks(snapshot.task_rows),
        "results": _models(snapshot.results_per_minute, ResultMinute, "minute"),
        "failure_groups": _records(
            ((g.error_type, g.queue, g.count, g.task_ids) for g in groups), _GROUP_COLUMNS
        ),
        "events": _models(snapshot.events, EventRow, None),
        "schedules": _models(snapshot.schedules, ScheduleRow, "id"),
        "workers": _models(snapshot.workers, WorkerRow, "id"),
    }


__all__ = ["FRAMES", "NOTEBOOK_INSTALL_HINT", "snapshot_frames"]
