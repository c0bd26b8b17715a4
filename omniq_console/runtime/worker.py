"""The worker: claims tasks from the bucket, runs them, stores what happened.

One task's life in a worker, and the order of its writes (each step leaves a state the next
step, or another worker's reaper, can finish):

1. ``dequeue`` claims the task atomically; it is RUNNING with our ``worker_id`` and a lease.
2. ``dequeued`` and ``executing`` events are written (a worker that dies while running the
   task has left its name on the task's timeline).
3. While it runs, the lease is renewed every ``lease_seconds / 3``. A renewal that loses its
   compare-and-swap means the task was cancelled, deleted or taken over after our lease
   expired: we stop (an async function is cancelled) and write nothing more for it.
4. On success: the result is written first, then the task is marked COMPLETED (compare-and-
   swap), then the ``completed`` event. A crash between the result and the task update leaves
   a RUNNING task whose lease expires: it runs again (at-least-once), and its new result
   replaces the old one. Writing the task first would instead risk a COMPLETED task without a
   result, its value lost.
5. On failure with retries left: the task goes back to PENDING with ``run_at`` pushed out by
   ``retry_delay * 2**retry_count`` (compare-and-swap), then a ``retry`` event. Without
   retries left: an error result, the task FAILED, a ``failed`` event.
6. On shutdown (``stop()``, SIGINT/SIGTERM): no more claims; running tasks get a grace period,
   then are released back to their queue (``release``) so another worker takes them.

Alongside: a heartbeat (``workers/{id}.json``, everything in custom metadata) every few
seconds, and a reaper that returns tasks whose lease expired (dead workers) to their queue.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import logging
import os
import random
import socket
import time
import traceback as tb
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ..backend.errors import ConflictError, ObjectNotFoundError, StorageError
from ..backend.index import WorkerIndex, worker_metadata
from ..backend.layout import check_id
from ..models import (
    EventType,
    ResultStatus,
    Task,
    TaskEvent,
    TaskResult,
    TaskStatus,
    utcnow,
)
from .registry import TaskRegistry, TaskSpec

logger = logging.getLogger(__name__)

_current_task: contextvars.ContextVar[Task | None] = contextvars.ContextVar(
    "omniq_current_task", default=None
)

# A lease confirmed longer ago than this is confirmed again before an outcome is written: it
# narrows the window in which a task cancelled by an operator could still get our result.
_CONFIRM_AFTER_S = 1.0
# Backoff after a storage error while claiming, so a broken bucket is not hammered.
_ERROR_BACKOFF_S = (0.5, 1.0, 2.0, 5.0)


def current_task() -> Task | None:
    """The task this worker is running in the current context (None outside a task).

    A task function can read its own id, ``retry_count`` or metadata from it. Sync
    functions see it too (they run in a thread with a copy of the context).
    """
    return _current_task.get()


def default_worker_id() -> str:
    """``host-pid-xxxx``: readable in the console, unique across restarts."""
    host = "".join(c if c.isalnum() or c in "-_." else "-" for c in socket.gethostname())
    return f"{host.strip('.-')[:40] or 'worker'}-{os.getpid()}-{uuid.uuid4().hex[:4]}"


@dataclass
class _Claim:
    """A task this worker holds: the newest version we wrote (for the next compare-and-swap)."""

    task: Task
    confirmed_at: float = field(default_factory=time.monotonic)
    lost: bool = False
    call: asyncio.Future[Any] | None = None


@dataclass(frozen=True, slots=True)
class _Failure:
    error_type: str
    message: str
    traceback: str | None
    retryable: bool = True


class Worker:
    """Runs tasks of ``queues`` from a backend, up to ``concurrency`` at once.

    ``await worker.run()`` returns after ``worker.stop()``. Cancelling ``run()`` stops at once:
    running tasks are released to their queue without a grace period.

    - ``lease_seconds``: how long a claim holds without renewal (renewed every third of it);
      a dead worker's tasks run again about this long after it died.
    - ``poll_interval`` / ``poll_timeout``: the shortest and longest pause between two looks
      at idle queues (each look is one listing per queue); the pause doubles while idle.
    - ``heartbeat_interval``: seconds between heartbeats (``workers/{worker_id}.json``).
    - ``reap_interval``: seconds between looks for expired leases (default: ``lease_seconds``).
    - ``shutdown_grace``: seconds running tasks get to finish on ``stop()`` before release.

    ``processed`` counts tasks run to an outcome (success, failure or a scheduled retry);
    ``failed`` those of them that raised.
    """

    def __init__(
        self,
        backend: Any,
        registry: TaskRegistry,
        queues: Sequence[str] | str = ("default",),
        *,
        concurrency: int = 1,
        worker_id: str | None = None,
        lease_seconds: float = 30.0,
        poll_interval: float = 0.2,
        poll_timeout: float = 2.0,
        heartbeat_interval: float = 5.0,
        reap_interval: float | None = None,
        shutdown_grace: float = 10.0,
    ) -> None:
        queue_list = [queues] if isinstance(queues, str) else list(queues)
        if not queue_list:
            raise ValueError("a worker needs at least one queue")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        if poll_interval <= 0 or poll_timeout <= 0:
            raise ValueError("poll_interval and poll_timeout must be positive")
        self.backend = backend
        self.registry = registry
        self.queues: tuple[str, ...] = tuple(check_id(q, "queue name") for q in queue_list)
        self.concurrency = concurrency
        self.worker_id = check_id(worker_id or default_worker_id(), "worker id")
        self.lease_seconds = float(lease_seconds)
        self.poll_interval = float(min(poll_interval, poll_timeout))
        self.poll_timeout = float(poll_timeout)
        self.heartbeat_interval = float(heartbeat_interval)
        self.reap_interval = float(reap_interval if reap_interval is not None else lease_seconds)
        self.shutdown_grace = float(shutdown_grace)
        self.started_at: datetime | None = None
        self.processed = 0
        self.failed = 0
        self._running: dict[str, asyncio.Task[None]] = {}
        self._stop_requested = False
        self._stopping: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slot_free: asyncio.Event | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._started = False

    # -- public ------------------------------------------------------------------------------

    @property
    def running_task_ids(self) -> list[str]:
        """Ids of the tasks this worker runs now."""
        return list(self._running)

    def stop(self) -> None:
        """Stop claiming; running tasks finish within ``shutdown_grace`` or are released.

        Safe to call from a signal handler, another thread, or before ``run()`` started.
        """
        self._stop_requested = True
        loop, event = self._loop, self._stopping
        if loop is None or event is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            event.set()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(event.set)

    async def run(self) -> None:
        """Claim and run tasks until ``stop()``; then drain and write a last heartbeat."""
        if self._started:
            raise RuntimeError("a Worker runs once; create a new one")
        self._started = True
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._slot_free = asyncio.Event()
        if self._stop_requested:
            self._stopping.set()
        self._executor = ThreadPoolExecutor(
            max_workers=self.concurrency, thread_name_prefix=f"omniq-{self.worker_id}"
        )
        self.started_at = utcnow()
        loops: list[asyncio.Task[None]] = []
        graceful = True
        try:
            await self._beat("running")
            loops = [
                asyncio.create_task(self._heartbeat_loop()),
                asyncio.create_task(self._reap_loop()),
            ]
            await self._claim_loop()
        except asyncio.CancelledError:
            graceful = False
            raise
        finally:
            self._stopping.set()
            for loop_task in loops:
                loop_task.cancel()
            await self._drain(self.shutdown_grace if graceful else 0.0)
            await asyncio.gather(*loops, return_exceptions=True)
            try:
                await self._beat("stopped")
            except (StorageError, OSError) as exc:
                logger.warning("worker %s: last heartbeat failed: %s", self.worker_id, exc)
            self._executor.shutdown(wait=False, cancel_futures=True)

    # -- claiming ----------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        assert self._stopping is not None and self._slot_free is not None
        errors = 0
        pause = self.poll_interval
        queue = self.backend.async_task_storage
        while not self._stopping.is_set():
            if len(self._running) >= self.concurrency:
                self._slot_free.clear()
                await self._wait_either(self._slot_free)
                continue
            try:
                task = await queue.dequeue(
                    list(self.queues),
                    worker_id=self.worker_id,
                    lease_seconds=self.lease_seconds,
                )
                errors = 0
            except StorageError as exc:
                delay = _ERROR_BACKOFF_S[min(errors, len(_ERROR_BACKOFF_S) - 1)]
                errors += 1
                logger.warning(
                    "worker %s: claiming failed (%s); retrying in %.1f s",
                    self.worker_id,
                    exc,
                    delay,
                )
                await self._sleep_unless_stopped(delay)
                continue
            if task is None:
                # Every look is a listing per queue (a billed request): an idle worker looks
                # less and less often, a busy one at once again. Jitter keeps workers apart.
                await self._sleep_unless_stopped(pause * random.uniform(0.8, 1.2))
                pause = min(pause * 2, self.poll_timeout)
                continue
            pause = self.poll_interval
            if self._stopping.is_set():
                await self._release(_Claim(task), "worker stopping")
                break
            runner = asyncio.create_task(self._run_claimed(task), name=f"omniq-task-{task.id}")
            self._running[task.id] = runner

    async def _wait_either(self, event: asyncio.Event) -> None:
        assert self._stopping is not None
        waiters = [asyncio.create_task(event.wait()), asyncio.create_task(self._stopping.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        assert self._stopping is not None
        await _wait_event(self._stopping, seconds)

    async def _drain(self, grace: float) -> None:
        """Give running tasks ``grace`` seconds, then cancel them (they release themselves)."""
        runners = list(self._running.values())
        if not runners:
            return
        if grace > 0:
            await asyncio.wait(runners, timeout=grace)
        late = [r for r in runners if not r.done()]
        for runner in late:
            runner.cancel()
        if late:
            await asyncio.gather(*late, return_exceptions=True)

    # -- running one task ----------------------------------------------------------------------

    async def _run_claimed(self, task: Task) -> None:
        claim = _Claim(task)
        try:
            await self._execute(claim)
        except asyncio.CancelledError:
            if claim.call is not None:
                claim.call.cancel()
            if not claim.lost:
                await self._release(claim, "worker stopped before the task finished")
            raise
        except Exception:
            # A storage failure while recording the outcome: the task stays RUNNING under our
            # (soon expired) lease and the reaper hands it out again. Never lost.
            logger.exception("worker %s: recording task %s failed", self.worker_id, task.id)
        finally:
            self._running.pop(task.id, None)
            assert self._slot_free is not None
            self._slot_free.set()

    async def _execute(self, claim: _Claim) -> None:
        task = claim.task
        spec = self.registry.get(task.func)
        if spec is None:
            await self._log(task, EventType.DEQUEUED, message=f"claimed by {self.worker_id}")
            known = ", ".join(self.registry.names()[:20]) or "none"
            await self._finish_failure(
                claim,
                _Failure(
                    "UnknownTaskError",
                    f"no function named {task.func!r} is registered in worker "
                    f"{self.worker_id} (registered: {known}); register it with @omniq.task",
                    None,
                    retryable=False,
                ),
                started_at=utcnow(),
                execution_time=0.0,
            )
            return
        # Written before the function starts, so that a worker killed while running it has
        # left its name on the task's timeline.
        await asyncio.gather(
            self._log(task, EventType.DEQUEUED, message=f"claimed by {self.worker_id}"),
            self._log(task, EventType.EXECUTING, message=f"running {task.func}"),
        )
        started_at = utcnow()
        t0 = time.perf_counter()
        claim.call = asyncio.ensure_future(self._call(spec, task))
        renewer = asyncio.create_task(self._renew_loop(claim))
        try:
            await asyncio.wait({claim.call})
        finally:
            renewer.cancel()
            await asyncio.gather(renewer, return_exceptions=True)
        execution_time = time.perf_counter() - t0
        if claim.lost:
            logger.info(
                "worker %s: task %s was cancelled or taken over while it ran; outcome dropped",
                self.worker_id,
                task.id,
            )
            return
        call = claim.call
        if call.cancelled():
            failure = _Failure("CancelledError", "the task function was cancelled", None)
            await self._finish_failure(claim, failure, started_at, execution_time)
            return
        exc = call.exception()
        if exc is None:
            await self._finish_success(claim, call.result(), started_at, execution_time)
            return
        failure = _Failure(
            type(exc).__name__,
            str(exc),
            "".join(tb.format_exception(type(exc), exc, exc.__traceback__)),
        )
        await self._finish_failure(claim, failure, started_at, execution_time)

    async def _call(self, spec: TaskSpec, task: Task) -> Any:
        _current_task.set(task)
        if spec.is_async:
            return await spec.func(*task.args, **task.kwargs)
        assert self._executor is not None
        # The thread gets a copy of this context, so current_task() works in sync functions.
        ctx = contextvars.copy_context()
        call = functools.partial(ctx.run, spec.func, *task.args, **task.kwargs)
        result = await asyncio.get_running_loop().run_in_executor(self._executor, call)
        if asyncio.iscoroutine(result):
            # A sync wrapper that returned a coroutine: run it here rather than store it.
            return await result
        return result

    async def _renew_loop(self, claim: _Claim) -> None:
        queue = self.backend.async_task_storage
        interval = self.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                claim.task = await queue.renew_lease(claim.task, lease_seconds=self.lease_seconds)
                claim.confirmed_at = time.monotonic()
                interval = self.lease_seconds / 3
            except (ConflictError, ObjectNotFoundError):
                self._lose(claim)
                return
            except StorageError as exc:
                # Transient: the lease still holds until it expires; try again sooner.
                logger.warning(
                    "worker %s: lease renewal of %s failed: %s", self.worker_id, claim.task.id, exc
                )
                interval = max(0.2, self.lease_seconds / 6)

    def _lose(self, claim: _Claim) -> None:
        claim.lost = True
        if claim.call is not None and not claim.call.done():
            claim.call.cancel()

    async def _confirm(self, claim: _Claim) -> bool:
        """Check (by renewing it) that the lease is still ours before writing an outcome."""
        if time.monotonic() - claim.confirmed_at < _CONFIRM_AFTER_S:
            return True
        try:
            claim.task = await self.backend.async_task_storage.renew_lease(
                claim.task, lease_seconds=self.lease_seconds
            )
        except (ConflictError, ObjectNotFoundError):
            self._lose(claim)
            return False
        claim.confirmed_at = time.monotonic()
        return True

    async def _update(self, claim: _Claim, task: Task) -> bool:
        """Compare-and-swap ``task``; False (and nothing overwritten) when the claim was lost."""
        try:
            claim.task = await self.backend.async_task_storage.update_task(task)
            return True
        except (ConflictError, ObjectNotFoundError):
            self._lose(claim)
            logger.info(
                "worker %s: task %s changed under us; outcome dropped", self.worker_id, task.id
            )
            return False

    async def _finish_success(
        self, claim: _Claim, value: Any, started_at: datetime, execution_time: float
    ) -> None:
        task = claim.task
        result = TaskResult(
            task_id=task.id,
            status=ResultStatus.SUCCESS,
            result=value,
            started_at=started_at,
            completed_at=utcnow(),
            worker_id=self.worker_id,
            execution_time=execution_time,
        )
        try:
            result.to_json()
        except Exception as exc:  # pydantic cannot serialise every Python object
            failure = _Failure(
                "UnserializableResultError",
                f"the task returned a {type(value).__name__}, which cannot be stored as JSON: "
                f"{exc}",
                None,
                retryable=False,
            )
            await self._finish_failure(claim, failure, started_at, execution_time)
            return
        if not await self._confirm(claim):
            return
        await self.backend.async_result_storage.set(result)
        done = claim.task.model_copy(deep=True)
        done.status = TaskStatus.COMPLETED
        done.lease_expires_at = None
        done.updated_at = utcnow()
        if not await self._update(claim, done):
            return
        self.processed += 1
        await self._log(
            done,
            EventType.COMPLETED,
            message=f"completed in {execution_time:.3f} s",
            execution_time=execution_time,
        )

    async def _finish_failure(
        self, claim: _Claim, failure: _Failure, started_at: datetime, execution_time: float
    ) -> None:
        if not await self._confirm(claim):
            return
        task = claim.task  # as renewed by the confirmation: the generation to swap on
        self.processed += 1
        self.failed += 1
        if failure.retryable and task.retry_count < task.max_retries:
            delay = task.retry_delay.total_seconds() * 2**task.retry_count
            retry = task.model_copy(deep=True)
            retry.status = TaskStatus.PENDING
            retry.retry_count = task.retry_count + 1
            retry.run_at = utcnow() + timedelta(seconds=delay)
            retry.worker_id = None
            retry.lease_expires_at = None
            retry.started_at = None
            retry.updated_at = at = utcnow()  # the event's time: before another claim's
            if not await self._update(claim, retry):
                return
            await self._log(
                retry,
                EventType.RETRY,
                timestamp=at,
                message=(
                    f"attempt {retry.retry_count} of {task.max_retries} in {delay:g} s after "
                    f"{failure.error_type}"
                ),
                error_type=failure.error_type,
                error_message=failure.message,
                traceback=failure.traceback,
                execution_time=execution_time,
                details={
                    "retry_count": retry.retry_count,
                    "max_retries": task.max_retries,
                    "delay_s": delay,
                    "run_at": retry.run_at.isoformat() if retry.run_at else None,
                },
            )
            return
        result = TaskResult(
            task_id=task.id,
            status=ResultStatus.ERROR,
            error=failure.message,
            error_type=failure.error_type,
            traceback=failure.traceback,
            started_at=started_at,
            completed_at=utcnow(),
            worker_id=self.worker_id,
            execution_time=execution_time,
        )
        await self.backend.async_result_storage.set(result)
        failed = task.model_copy(deep=True)
        failed.status = TaskStatus.FAILED
        failed.lease_expires_at = None
        failed.updated_at = utcnow()
        if not await self._update(claim, failed):
            return
        await self._log(
            failed,
            EventType.FAILED,
            message=f"{failure.error_type}: {failure.message}"[:500],
            error_type=failure.error_type,
            error_message=failure.message,
            traceback=failure.traceback,
            execution_time=execution_time,
            details={"retry_count": task.retry_count, "retryable": failure.retryable},
        )

    async def _release(self, claim: _Claim, reason: str) -> None:
        """Hand a task we hold back to its queue (PENDING), so another worker runs it."""
        if claim.task.status != TaskStatus.RUNNING:
            return  # its outcome is written already: nothing to give back
        try:
            at = utcnow()  # the event's time: before the next claim's
            released = await self.backend.async_task_storage.release(claim.task)
        except (ConflictError, ObjectNotFoundError):
            return  # someone else changed it already: nothing of ours to give back
        except StorageError as exc:
            logger.warning(
                "worker %s: could not release task %s (%s); it returns when its lease expires",
                self.worker_id,
                claim.task.id,
                exc,
            )
            return
        await self._log(
            released,
            EventType.ENQUEUED,
            timestamp=at,
            message=f"released by {self.worker_id}: {reason}",
            details={"reason": "released", "released_by": self.worker_id},
        )

    # -- events --------------------------------------------------------------------------------

    async def _log(self, task: Task, event_type: EventType, **fields: Any) -> None:
        """Write one event; an event that cannot be written is logged, never fatal to a task."""
        event = TaskEvent(
            task_id=task.id,
            event_type=event_type,
            worker_id=self.worker_id,
            queue_name=task.queue_name,
            **fields,
        )
        try:
            await self.backend.async_event_storage.log_event(event)
        except (StorageError, OSError) as exc:
            logger.warning(
                "worker %s: event %s of task %s not written: %s",
                self.worker_id,
                event_type.value,
                task.id,
                exc,
            )

    # -- heartbeat and reaper ------------------------------------------------------------------

    async def _beat(self, state: str) -> None:
        index = WorkerIndex(
            id=self.worker_id,
            state=state,
            last_seen=utcnow(),
            started_at=self.started_at,
            host=socket.gethostname(),
            pid=os.getpid(),
            queues=self.queues,
            running=tuple(self._running),
            processed=self.processed,
            failed=self.failed,
        )
        body = {
            "id": index.id,
            "state": index.state,
            "last_seen": index.last_seen.isoformat() if index.last_seen else None,
            "concurrency": self.concurrency,
            "lease_seconds": self.lease_seconds,
        }
        store, layout = self.backend.store, self.backend.layout
        await store.write(
            layout.worker(self.worker_id),
            json.dumps(body).encode(),
            metadata=worker_metadata(index),
        )

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                await self._beat("running")
            except (StorageError, OSError) as exc:
                logger.warning("worker %s: heartbeat failed: %s", self.worker_id, exc)

    async def _reap_loop(self) -> None:
        # Workers started together would otherwise all reap at the same instants.
        await asyncio.sleep(random.uniform(0.1, 1.0) * self.reap_interval)
        while True:
            try:
                await self.reap()
            except (StorageError, OSError) as exc:
                logger.warning("worker %s: reaping expired leases failed: %s", self.worker_id, exc)
            await asyncio.sleep(self.reap_interval)

    async def reap(self) -> list[str]:
        """Return tasks whose lease expired (their worker died) to their queue; log each.

        Also marks tasks that waited past their ``expires_at`` EXPIRED (nobody else would:
        a queue never hands them out). Returns the ids of the requeued tasks.
        """
        queue = self.backend.async_task_storage
        at = utcnow()  # the events' time: before any new claim of the requeued tasks
        ids: list[str] = await queue.requeue_expired()
        expired = await queue.cleanup_expired_tasks()
        if expired:
            logger.info("worker %s: %d task(s) expired before they ran", self.worker_id, expired)
        if not ids:
            return ids
        tasks = await asyncio.gather(*(queue.get_task(i) for i in ids), return_exceptions=True)
        for task_id, task in zip(ids, tasks, strict=True):
            queue_name = task.queue_name if isinstance(task, Task) else None
            event = TaskEvent(
                task_id=task_id,
                event_type=EventType.LEASE_EXPIRED,
                timestamp=at,
                worker_id=self.worker_id,
                queue_name=queue_name,
                message=f"lease expired; returned to its queue by {self.worker_id}",
                details={"reaper": self.worker_id},
            )
            try:
                await self.backend.async_event_storage.log_event(event)
            except (StorageError, OSError) as exc:
                logger.warning(
                    "worker %s: lease_expired event not written: %s", self.worker_id, exc
                )
        return ids


async def _wait_event(event: asyncio.Event, timeout: float) -> None:
    """Wait until ``event`` is set or ``timeout`` passed.

    Not ``asyncio.wait_for``: on Python 3.11 it can swallow a cancellation that arrives as the
    event is set (a stop and a cancel together), turning "stop now" into a graceful stop.
    """
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=timeout)
    finally:
        waiter.cancel()
