"""Task results on GCS: ``results/{task_id}.json``, one object per task, also its state record.

While a task waits or runs its result is ``pending`` and says who holds the lease; once it has
an outcome the object holds it (docs/architecture.md, "Task status is derived from which
objects exist"). ``list_results`` and ``cleanup_expired_results`` see only outcomes.
"""

from __future__ import annotations

from datetime import UTC, datetime

from ..gathering import bounded_gather
from ..models import ResultStatus, TaskResult, utcnow
from .index import result_index, result_metadata
from .listing import READ_CONCURRENCY, ItemList, StoreBase
from .objectstore import ObjectInfo
from .sync import sync_twin

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class AsyncGCSResultStorage(StoreBase):
    """The outcome of each task, with its status, completion time and expiry in the index."""

    async def set(self, result: TaskResult) -> TaskResult:
        """Store ``result``; sets its generation.

        Never a blind overwrite: the result object is also the task's state record
        (docs/architecture.md), so a result read from the bucket (``get``) is replaced only if
        unchanged since (compare-and-swap on its generation), and a new one only if the task
        has none yet. ``ConflictError`` otherwise: re-read and decide again.
        """
        key = self.layout.result(result.task_id)
        self._check_writable("store result", key)
        expected = result.generation or 0
        await self.reader.write(key, result, result_metadata(result), if_generation_match=expected)
        return result

    async def get(self, task_id: str) -> TaskResult | None:
        """The result of a task, or None; ``CorruptObjectError`` when it is unreadable."""
        return await self.reader.read(self.layout.result(task_id), TaskResult)

    async def delete(self, task_id: str) -> bool:
        """Delete the result of a task; False when there was none.

        On the generation listed now (``ifGenerationMatch``): a result rewritten meanwhile
        (the task was retried) raises ``ConflictError`` and stays.
        """
        key = self.layout.result(task_id)
        self._check_writable("delete result", key)
        found = [info for info in await self.store.list(key, limit=1) if info.key == key]
        if not found:
            return False
        return await self.reader.delete(key, if_generation_match=found[0].generation)

    async def list_results(
        self, status: ResultStatus | str | None = None, limit: int | None = None
    ) -> ItemList[TaskResult]:
        """Results newest first (by completion time), filtered on listing metadata.

        Without ``status``, only outcomes (the state records of waiting and running tasks are
        left out; ask for ``status="pending"`` to see them). Only the bodies of the results
        returned are read (plus those without index metadata).
        """
        wanted = ResultStatus(status) if status is not None else None
        if limit is not None and limit < 0:
            raise ValueError("limit must not be negative")
        infos = await self._list(self.layout.results)
        rows: list[tuple[datetime, str, ObjectInfo | TaskResult]] = []
        unindexed: list[ObjectInfo] = []
        for info in infos:
            idx = result_index(info)
            if idx is None:
                unindexed.append(info)
            elif _wanted(idx.status, wanted):
                rows.append((idx.completed_at or info.updated or _EPOCH, info.key, info))
        bodies = await self.reader.read_listed(unindexed, TaskResult)
        rows.extend(
            (r.completed_at or r.created_at, self.layout.result(r.task_id), r)
            for r in bodies
            if _wanted(r.status, wanted)
        )
        rows.sort(key=lambda row: (row[0], row[1]), reverse=True)
        page = rows if limit is None else rows[:limit]
        read = await self.reader.read_listed(
            [item for _, _, item in page if isinstance(item, ObjectInfo)], TaskResult
        )
        by_id = {r.task_id: r for r in read}
        out: ItemList[TaskResult] = ItemList(unreadable=[*bodies.unreadable, *read.unreadable])
        for _, key, item in page:
            result = item if isinstance(item, TaskResult) else by_id.get(self.layout.name_of(key))
            if result is not None and _wanted(result.status, wanted):
                out.append(result)
        return out

    async def cleanup_expired_results(self) -> int:
        """Delete results past their ``expires_at``; return how many were deleted.

        The expiry comes from listing metadata; a body is read only for results whose index
        does not record it.
        """
        self._check_writable("clean up expired results", self.layout.results)
        now = utcnow()
        infos = await self._list(self.layout.results)
        expired: list[tuple[str, int]] = []
        unknown: list[ObjectInfo] = []
        for info in infos:
            idx = result_index(info)
            if idx is None or "expires_at" not in info.metadata:
                unknown.append(info)
            elif idx.expires_at is not None and idx.expires_at <= now:
                expired.append((info.key, info.generation))
        bodies = await self.reader.read_listed(unknown, TaskResult)
        expired.extend(
            (self.layout.result(r.task_id), r.generation or 0) for r in bodies if r.is_expired(now)
        )
        return sum(await bounded_gather(expired, self.reader.delete_listed, limit=READ_CONCURRENCY))


def _wanted(status: ResultStatus, wanted: ResultStatus | None) -> bool:
    return status == wanted if wanted is not None else status.is_final


class GCSResultStorage(AsyncGCSResultStorage):
    """Result storage with blocking ``*_sync`` twins (open the backend with ``with backend:``)."""

    set_sync = sync_twin(AsyncGCSResultStorage.set)
    get_sync = sync_twin(AsyncGCSResultStorage.get)
    delete_sync = sync_twin(AsyncGCSResultStorage.delete)
    list_results_sync = sync_twin(AsyncGCSResultStorage.list_results)
    cleanup_expired_results_sync = sync_twin(AsyncGCSResultStorage.cleanup_expired_results)
