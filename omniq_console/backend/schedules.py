"""Schedules on GCS: ``schedules/{id}.json``; every change is a compare-and-swap (decision 5)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from ..models import Schedule, ScheduleStatus, as_utc, utcnow
from .errors import ConflictError, ObjectNotFoundError
from .index import schedule_index, schedule_metadata
from .listing import ItemList, StoreBase
from .objectstore import ObjectInfo
from .sync import sync_twin

INTENT_TRIES = 5
"""How often pause/resume re-read and re-apply after losing a compare-and-swap."""

_FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)


class AsyncGCSScheduleStorage(StoreBase):
    """Cron, interval and one-time schedules, with pause and resume."""

    async def save_schedule(self, schedule: Schedule) -> Schedule:
        """Store ``schedule``: create it when new (no generation), else compare-and-swap.

        ``ConflictError`` when a new schedule's id exists already, or when a stored one changed
        since it was read. Sets the schedule's generation.
        """
        key = self.layout.schedule(schedule.id)
        self._check_writable("save schedule", key)
        expected = 0 if schedule.generation is None else schedule.generation
        try:
            await self.reader.write(
                key, schedule, schedule_metadata(schedule), if_generation_match=expected
            )
        except ConflictError as exc:
            detail = (
                f"a schedule with id {schedule.id} exists already"
                if expected == 0
                else f"schedule {schedule.id}: re-read it and decide again"
            )
            raise ConflictError(key, expected, detail) from exc
        return schedule

    async def get_schedule(self, schedule_id: str) -> Schedule | None:
        """The schedule, or None; ``CorruptObjectError`` when it is unreadable."""
        return await self.reader.read(self.layout.schedule(schedule_id), Schedule)

    async def update_schedule(self, schedule: Schedule) -> Schedule:
        """Write a schedule read earlier, if unchanged since (compare-and-swap on its generation).

        ``ConflictError`` when someone else changed it: re-read it and decide again.
        """
        key = self.layout.schedule(schedule.id)
        self._check_writable("update schedule", key)
        if schedule.generation is None:
            raise ValueError(
                f"schedule {schedule.id} was never read from or written to the bucket: "
                "save it with save_schedule, or read it with get_schedule first"
            )
        return await self.save_schedule(schedule)

    async def delete_schedule(self, schedule_id: str, *, generation: int | None = None) -> bool:
        """Delete a schedule; False when it did not exist.

        The delete is conditioned on ``generation`` (the schedule as the caller read it; without
        it, as listed now), like every delete of the protocol: ``ConflictError`` when the
        schedule changed since, so a delete retried after a lost answer never removes a newer
        version (docs/architecture.md, "Transitions").
        """
        key = self.layout.schedule(schedule_id)
        self._check_writable("delete schedule", key)
        if generation is None:
            listed = await self._stat(key)
            if listed is None:
                return False
            generation = listed.generation
        try:
            return await self.reader.delete(key, if_generation_match=generation)
        except ConflictError as exc:
            raise ConflictError(
                key, generation, f"schedule {schedule_id}: re-read it and decide again"
            ) from exc

    async def list_schedules(
        self, status: ScheduleStatus | str | None = None
    ) -> ItemList[Schedule]:
        """Schedules in id order, filtered by status on listing metadata."""
        wanted = ScheduleStatus(status) if status is not None else None
        return await self._listed(
            lambda st, _next: wanted is None or st == wanted,
            lambda s: wanted is None or s.status == wanted,
        )

    async def get_ready_schedules(self, now: datetime | None = None) -> ItemList[Schedule]:
        """Active schedules whose next run has come (and that have not expired), soonest first."""
        now = as_utc(now) if now is not None else utcnow()
        ready = await self._listed(
            lambda st, nxt: st == ScheduleStatus.ACTIVE and nxt is not None and nxt <= now,
            lambda s: s.is_due(now),
        )
        ready.sort(key=lambda s: (s.next_run or _FAR_FUTURE, s.id))
        return ready

    async def pause_schedule(self, schedule_id: str) -> Schedule:
        """Pause a schedule; returns it as stored. ``ObjectNotFoundError`` when it is missing."""
        return await self._apply_intent(schedule_id, "pause", lambda s: s.pause())

    async def resume_schedule(self, schedule_id: str) -> Schedule:
        """Resume a schedule (its next run is planned from now); returns it as stored."""
        return await self._apply_intent(schedule_id, "resume", lambda s: s.resume())

    async def _apply_intent(
        self, schedule_id: str, what: str, change: Callable[[Schedule], None]
    ) -> Schedule:
        # "Pause" is absolute: whatever else changed meanwhile, re-reading and pausing again is
        # what the caller meant. A few tries, then the conflict is reported.
        key = self.layout.schedule(schedule_id)
        self._check_writable(f"{what} schedule", key)
        for _ in range(INTENT_TRIES):
            schedule = await self.reader.read(key, Schedule)
            if schedule is None:
                raise ObjectNotFoundError(key, "schedule")
            change(schedule)
            try:
                return await self.save_schedule(schedule)
            except ConflictError:
                continue
        raise ConflictError(
            key, None, f"could not {what} schedule {schedule_id}: it kept changing; try again"
        )

    async def _listed(
        self,
        by_index: Callable[[ScheduleStatus, datetime | None], bool],
        by_body: Callable[[Schedule], bool],
    ) -> ItemList[Schedule]:
        infos = await self._list(self.layout.schedules)
        chosen: list[ObjectInfo] = []
        for info in infos:
            idx = schedule_index(info)
            if idx is None or by_index(idx.status, idx.next_run):
                chosen.append(info)
        bodies = await self.reader.read_listed(chosen, Schedule)
        return ItemList((s for s in bodies if by_body(s)), bodies.unreadable)


class GCSScheduleStorage(AsyncGCSScheduleStorage):
    """Schedule storage with blocking ``*_sync`` twins (open the backend with ``with backend:``)."""

    save_schedule_sync = sync_twin(AsyncGCSScheduleStorage.save_schedule)
    get_schedule_sync = sync_twin(AsyncGCSScheduleStorage.get_schedule)
    update_schedule_sync = sync_twin(AsyncGCSScheduleStorage.update_schedule)
    delete_schedule_sync = sync_twin(AsyncGCSScheduleStorage.delete_schedule)
    list_schedules_sync = sync_twin(AsyncGCSScheduleStorage.list_schedules)
    get_ready_schedules_sync = sync_twin(AsyncGCSScheduleStorage.get_ready_schedules)
    pause_schedule_sync = sync_twin(AsyncGCSScheduleStorage.pause_schedule)
    resume_schedule_sync = sync_twin(AsyncGCSScheduleStorage.resume_schedule)
