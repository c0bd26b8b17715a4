"""A Snapshot as pandas DataFrames, for a user's own analysis (in a notebook, mostly).

``Snapshot.to_frames()`` delegates here, as ``Snapshot.__rich__`` does to ``tables.py``;
``omniq_console.notebook`` re-exports ``snapshot_frames``. pandas is optional (the ``notebook``
extra) and imported only when a frame is asked for, so nothing else in the package pays for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from .groups import failure_groups
from .snapshot import (
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
        "tasks": _typed(_records(snapshot.task_rows, TaskRow._fields), "id"),
        "results": _models(snapshot.results_per_minute, ResultMinute, "minute"),
        "failure_groups": _records(
            ((g.error_type, g.queue, g.count, g.task_ids) for g in groups), _GROUP_COLUMNS
        ),
        "events": _models(snapshot.events, EventRow, None),
        "schedules": _models(snapshot.schedules, ScheduleRow, "id"),
        "workers": _models(snapshot.workers, WorkerRow, "id"),
    }


__all__ = ["FRAMES", "NOTEBOOK_INSTALL_HINT", "snapshot_frames"]
