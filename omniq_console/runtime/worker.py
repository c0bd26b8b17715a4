"""The worker: claims tasks from the bucket, runs them, stores what happened.

One task's life in a worker (the writes and their order are those of docs/architecture.md,
"Transitions"):

1. A claim writes the task's state record: the task is RUNNING, attempt ``n``, under our lease.
   The claim's ``dequeued`` (logged by the queue that applies it) and ``executing`` go into
   this process's next event batch. Every transition's event is the transition's own
   (``lifecycle.event_of``), logged by whoever applies it.
2. While it runs, the lease is renewed every ``lease_seconds / 3`` (a compare-and-swap on the
   record). A renewal that loses its compare-and-swap means the task was cancelled or requeued
   after our lease was judged dead: we stop (an async function is cancelled) and write nothing
   more for it. A renewal is never cancelled mid-request while the lease holds: the outcome
   waits for it and uses the generation it returned.
   The lease ends on this process's monotonic clock a lease length after the last write that
   held it was sent (the claim, then each renewal that landed). A holder that could not renew
   by then stops as if it had lost the race: an async function is cancelled; a sync function's
   thread cannot be stopped, so its lease loss is logged and its outcome dropped. A claim whose
   answer arrived after its lease had passed never starts the function (it is released).
3. When the function returns, the slot is free at once and the outcome is written in the
   background, fenced: a compare-and-swap on the record generation we last wrote, at least a
   second after that write (GCS's per-name limit). Success -> COMPLETED with the value; a failure
   with retries left -> PENDING with ``run_at`` pushed out by ``retry_delay * 2**retry_count``;
   without -> FAILED. Only the current lease holder's outcome can land, and ``get_result`` always
   agrees with the task's status: both are the same object.
4. On shutdown (``stop()``, a first SIGINT/SIGTERM): no more claims; running tasks get
   ``shutdown_grace``; then async ones are cancelled and released to their queue. A sync
   function cannot be interrupted: its lease is kept alive until its thread ends and its
   outcome is written as usual. Cancelling ``run()`` (a second signal) stops at once: async
   functions are cancelled and released, a sync function's thread is abandoned (a daemon
   thread, so the process can exit), its outcome dropped and its lease left to expire, after
   which another worker runs the task again.

Alongside: a heartbeat (``workers/{id}.json``, everything in custom metadata) every few
seconds, and a reaper (``AsyncGCSQueue.maintain``) that requeues dead leases, expires what
waited too long and repairs what a crash left half-written.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import json
import logging
import os
import random
import socket
import threading
import time
import traceback as tb
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from queue import SimpleQueue
from typing import Any, TypeVar

from ..backend import lifecycle
from ..backend.errors import ConflictError, ObjectNotFoundError, StorageError
from ..backend.index import WorkerIndex, worker_metadata
from ..backend.layout import check_id
from ..backend.lifecycle import NAME_WRITE_GAP_S, Failure, Transition
from ..backend.queue import CancelledOnRequest, default_worker_id
from ..backend.storeapi import RetryPolicy
from ..clock import SYSTEM_CLOCK, Clock
from ..models import EventType, Task, TaskEvent, TaskStatus
from ..stopping import StopSignal
from .registry import TaskRegistry, TaskSpec

logger = logging.getLogger(__name__)

T = TypeVar("T")

_current_task: contextvars.ContextVar[Task | None] = contextvars.ContextVar(
    "omniq_current_task", default=None
)

# A queue paused by an operator is seen within this long (one listing of paused/ at most this
# often), so every worker stops claiming from it within about a claim cycle.
_PAUSED_MAX_AGE_S = 1.0
# Backoff after a storage error while claiming, so a broken bucket is not hammered: the
# store's own recipe (exponential, full jitter), from half a second up to 5 s.
_CLAIM_ERROR_BACKOFF = RetryPolicy(base_delay=0.5, max_delay=5.0)


def current_task() -> Task | None:
    """The task this worker is running in the current context (None outside a task).

    A task function can read its own id, ``retry_count`` or metadata from it. Sync
    functions see it too (they run in a thread with a copy of the context).
    """
    return _current_task.get()


@dataclass
class _Run:
    """A task this worker holds: the view of its newest record (for the next compare-and-swap),
    and when its lease ends on this process's monotonic clock (``held_until``)."""

    task: Task
    held_until: float
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    lost: bool = False
    done: bool = False
    call: asyncio.Future[Any] | None = None
    sync: bool = False


class _DaemonThreads:
    """Threads for sync task functions: daemons, started on demand, reused while idle.

    Not an executor: the interpreter joins an executor's threads when it exits, so a stop
    "at once" would still wait for a sync function to return. At most one thread per busy
    slot (``concurrency``), plus any abandoned by a stop at once.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._jobs: SimpleQueue[Callable[[], Callable[[], None]] | None] = SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._started = 0

    def submit(self, job: Callable[[], Callable[[], None]]) -> None:
        """Run ``job`` (which must not raise) in an idle thread, or a new one. ``job`` returns
        how to hand its outcome over; the thread counts itself idle first, so the task that
        awaits the outcome and submits the next job finds it idle (one thread per slot)."""
        with self._lock:
            if self._idle:
                self._idle -= 1
            else:
                self._started += 1
                thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
                thread.start()
        self._jobs.put(job)

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            hand_over = job()
            with self._lock:
                self._idle += 1
            hand_over()

    def close(self) -> None:
        """Let every thread end once its job is done."""
        with self._lock:
            for _ in range(self._started):
                self._jobs.put(None)
            self._started = self._idle = 0


class _LeaseOver(Exception):
    """Our lease ended (on our monotonic clock) before a renewal landed."""


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What the function did: a value, or a failure."""

    value: Any = None
    failure: Failure | None = None
    execution_time: float = 0.0


class Worker:
    """Runs tasks of ``queues`` from a backend, up to ``concurrency`` at once.

    ``await worker.run()`` returns after ``worker.stop()``. Cancelling ``run()`` stops at once:
    running tasks are released to their queue without a grace period.

    - ``lease_seconds``: how long a claim holds without renewal (renewed every third of it;
      at least 3 s); a dead worker's tasks run again about this long after it died.
    - ``poll_interval`` / ``poll_timeout``: the shortest and longest pause between two looks
      at idle queues (each look is one listing per queue and one of ``paused/``); the pause
      doubles while idle.
    - ``heartbeat_interval``: seconds between heartbeats (``workers/{worker_id}.json``).
    - ``reap_interval``: seconds between reaper passes (default: ``lease_seconds``).
    - ``shutdown_grace``: seconds running tasks get to finish on ``stop()``.
    - ``clock``: wall and monotonic time, and the idle pauses between looks (tests pass a
      ``FakeClock``).

    ``processed`` counts tasks run to an outcome that landed (success, failure or a scheduled
    retry); ``failed`` those of them that raised.
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
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        queue_list = [queues] if isinstance(queues, str) else list(queues)
        if not queue_list:
            raise ValueError("a worker needs at least one queue")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        lease_seconds = lifecycle.check_lease(lease_seconds)
        if poll_interval <= 0 or poll_timeout <= 0:
            raise ValueError("poll_interval and poll_timeout must be positive")
        if heartbeat_interval < 1:
            raise ValueError("heartbeat_interval must be at least 1 s (GCS's per-name limit)")
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
        self.clock = clock
        self.started_at: datetime | None = None
        self.processed = 0
        self.failed = 0
        self._running: dict[str, _Run] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop = StopSignal()
        self._slot_free: asyncio.Event | None = None
        self._threads: _DaemonThreads | None = None
        self._started = False
        self._paused_seen: set[str] = set()
        self._beat_gen = 0
        self._beat_at: float | None = None

    # -- public ------------------------------------------------------------------------------

    @property
    def running_task_ids(self) -> list[str]:
        """Ids of the tasks this worker runs now."""
        return list(self._running)

    def stop(self) -> None:
        """Stop claiming; running tasks finish within ``shutdown_grace`` or are released.

        Safe to call from a signal handler, another thread, or before ``run()`` started.
        """
        self._stop.set()

    async def run(self) -> None:
        """Claim and run tasks until ``stop()``; then drain and write a last heartbeat."""
        if self._started:
            raise RuntimeError("a Worker runs once; create a new one")
        self._started = True
        self._stop.bind()
        self._slot_free = asyncio.Event()
        self._threads = _DaemonThreads(f"omniq-{self.worker_id}")
        self.started_at = self.clock.now()
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
            self._stop.set()
            for loop_task in loops:
                loop_task.cancel()
            try:
                try:
                    await asyncio.shield(self._drain(self.shutdown_grace if graceful else 0.0))
                except asyncio.CancelledError:
                    # Cancelled while draining gracefully: stop at once after all.
                    await self._drain(0.0)
                    raise
            finally:
                await asyncio.gather(*loops, return_exceptions=True)
                try:
                    await self.backend.async_event_storage.flush()
                    await self._beat("stopped")
                except (StorageError, OSError) as exc:
                    logger.warning("worker %s: last heartbeat failed: %s", self.worker_id, exc)
                self._threads.close()

    # -- claiming ----------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        assert self._slot_free is not None
        errors = idle = 0
        # An idle worker's looks: from poll_interval, doubling, up to poll_timeout.
        idle_backoff = RetryPolicy(base_delay=self.poll_interval, max_delay=self.poll_timeout)
        queue = self.backend.async_task_storage
        while not self._stop.is_set():
            if len(self._running) >= self.concurrency:
                self._slot_free.clear()
                await self._wait_slot()
                continue
            asked = self.clock.monotonic()
            try:
                paused = set(await queue.paused_queues(max_age_s=_PAUSED_MAX_AGE_S))
                self._say_paused(paused)
                task = await queue.claim_pass(
                    list(self.queues),
                    self.worker_id,
                    self.lease_seconds,
                    paused=paused or (),
                )
                errors = 0
            except Exception as exc:
                # Storage trouble, or an object no check foresaw (logged with its traceback):
                # back off and look again; one bad object never ends the worker.
                delay = _CLAIM_ERROR_BACKOFF.delay(errors)
                errors += 1
                logger.warning(
                    "worker %s: claiming failed (%s); retrying in %.1f s",
                    self.worker_id,
                    exc,
                    delay,
                    exc_info=not isinstance(exc, StorageError),
                )
                await self._stop.wait(delay, clock=self.clock)
                continue
            if task is None:
                # Every look is a listing per queue (a billed request): an idle worker looks
                # less and less often, a busy one at once again. Jitter keeps workers apart.
                pause = idle_backoff.ceiling(idle) * random.uniform(0.8, 1.2)
                await self._stop.wait(pause, clock=self.clock)
                idle += 1
                continue
            idle = 0
            run = _Run(task, held_until=self._claim_held_until(task, asked))
            self._running[task.id] = run
            runner = asyncio.create_task(self._run_claimed(run), name=f"omniq-task-{task.id}")
            self._tasks.add(runner)
            runner.add_done_callback(self._tasks.discard)

    def _claim_held_until(self, task: Task, asked: float) -> float:
        """When a fresh claim's lease ends on our monotonic clock.

        The claim's write was sent between ``asked`` (before the pass) and now; its record's
        ``lease_expires_at`` (stamped by the queue's clock just before the send) narrows that
        down, so a long pass with lost races does not shorten a lease that was won late. The
        wall-clock estimate is clamped to what the monotonic clock allows: a jump of the wall
        clock can neither lengthen the lease past "sent now" nor shorten it before "sent at
        the start of the pass".
        """
        mono = self.clock.monotonic()
        earliest, latest = asked + self.lease_seconds, mono + self.lease_seconds
        record = task.record
        if record is None or record.lease_expires_at is None:
            return earliest
        wall_now: datetime = self.backend.async_task_storage.clock.now()
        estimate = mono + (record.lease_expires_at - wall_now).total_seconds()
        return min(max(estimate, earliest), latest)

    def _say_paused(self, paused: set[str]) -> None:
        """Log once when one of our queues is paused, and once when it is resumed."""
        ours = paused & set(self.queues)
        for name in sorted(ours - self._paused_seen):
            logger.info("worker %s: queue %s is paused; not claiming from it", self.worker_id, name)
        for name in sorted(self._paused_seen - ours):
            logger.info("worker %s: queue %s resumed; claiming again", self.worker_id, name)
        self._paused_seen = ours

    async def _wait_slot(self) -> None:
        assert self._slot_free is not None
        waiters = [
            asyncio.create_task(self._slot_free.wait()),
            asyncio.create_task(self._stop.wait()),
        ]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _drain(self, grace: float) -> None:
        """Give running tasks ``grace`` seconds; then cancel async ones (they release
        themselves). A sync function cannot be interrupted: on a graceful stop we wait for its
        thread with its lease kept alive, and write its outcome; on a cancelled ``run()`` its
        thread is abandoned and its lease left to expire (never handed back while it runs)."""
        if not self._tasks:
            return
        if grace > 0:
            await asyncio.wait(list(self._tasks), timeout=grace)
        waiting = []
        for runner, run in self._runners():
            if run is not None and run.sync and grace <= 0:
                # Stopping at once: the thread is abandoned, its outcome dropped, its lease
                # left to expire (the renewer stops with the runner).
                self._lose(run, "the worker was told to stop at once")
                runner.cancel()
            elif run is not None and not run.sync and run.call is not None:
                run.call.cancel()
            waiting.append(runner)
        if waiting:
            await asyncio.gather(*waiting, return_exceptions=True)

    def _runners(self) -> list[tuple[asyncio.Task[None], _Run | None]]:
        """Each task runner with its run (None once its outcome is being written)."""
        by_name = {f"omniq-task-{run.task.id}": run for run in self._running.values()}
        return [(r, by_name.get(r.get_name())) for r in self._tasks if not r.done()]

    # -- running one task ----------------------------------------------------------------------

    async def _run_claimed(self, run: _Run) -> None:
        late = self.clock.monotonic() >= run.held_until
        renewer = None if late else asyncio.create_task(self._renew_loop(run))
        try:
            try:
                if late:
                    # Another worker may hold it by now: running it could run it twice at once.
                    logger.warning(
                        "worker %s: the claim of task %s was answered after its lease had "
                        "passed; not running it",
                        self.worker_id,
                        run.task.id,
                    )
                    outcome = None
                else:
                    outcome = await self._execute(run)
            finally:
                self._running.pop(run.task.id, None)
                assert self._slot_free is not None
                self._slot_free.set()
            if outcome is None:
                why = "claimed after its lease had passed" if late else "worker stopped"
                await self._release(run, why if late else f"{why} before the task finished")
            else:
                await self._settle(run, outcome)
        except StorageError as exc:
            # The outcome could not be written within the retry deadline: the task stays
            # RUNNING under our lease, which dies, and it runs again. Never lost.
            logger.error(
                "worker %s: recording task %s failed: %s", self.worker_id, run.task.id, exc
            )
        finally:
            await self._stop_renewer(run, renewer)

    async def _execute(self, run: _Run) -> _Outcome | None:
        """Run the function; its outcome, or None when it was cancelled by a stop."""
        task = run.task
        spec = self.registry.get(task.func)
        if spec is None:
            known = ", ".join(self.registry.names()[:20]) or "none"
            return _Outcome(
                failure=Failure(
                    "UnknownTaskError",
                    f"no function named {task.func!r} is registered in worker "
                    f"{self.worker_id} (registered: {known}); register it with @omniq.task",
                    None,
                    retryable=False,
                )
            )
        # Not a transition (the claim's event was logged by the queue that applied it): the
        # moment the function starts.
        self._log(
            TaskEvent(
                task_id=task.id,
                event_type=EventType.EXECUTING,
                worker_id=self.worker_id,
                queue_name=task.queue_name,
                timestamp=self.clock.now(),
                message=f"running {task.func}",
            )
        )
        run.sync = not spec.is_async
        t0 = time.perf_counter()
        run.call = asyncio.ensure_future(self._call(spec, task))
        try:
            await asyncio.wait({run.call})
        except asyncio.CancelledError:
            run.call.cancel()
            raise
        elapsed = time.perf_counter() - t0
        call = run.call
        if call.cancelled():
            if run.lost or self._stop.is_set():
                return None
            failure = Failure("CancelledError", "the task function was cancelled", None)
            return _Outcome(failure=failure, execution_time=elapsed)
        exc = call.exception()
        if exc is None:
            return _Outcome(value=call.result(), execution_time=elapsed)
        failure = Failure(
            type(exc).__name__,
            str(exc),
            "".join(tb.format_exception(type(exc), exc, exc.__traceback__)),
        )
        return _Outcome(failure=failure, execution_time=elapsed)

    async def _call(self, spec: TaskSpec, task: Task) -> Any:
        _current_task.set(task)
        if spec.is_async:
            return await spec.func(*task.args, **task.kwargs)
        # The thread gets a copy of this context, so current_task() works in sync functions.
        ctx = contextvars.copy_context()
        call = functools.partial(ctx.run, spec.func, *task.args, **task.kwargs)
        result = await self._in_thread(call)
        if asyncio.iscoroutine(result):
            # A sync wrapper that returned a coroutine: run it here rather than store it.
            return await result
        return result

    async def _in_thread(self, call: Callable[[], Any]) -> Any:
        """Run ``call`` in one of this worker's daemon threads and await what it returns.

        Cancelling the await abandons the call: what it returns then is dropped.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def deliver(value: Any, error: BaseException | None) -> None:
            if future.done():
                return  # abandoned
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)

        def work() -> Callable[[], None]:
            value, error = None, None
            try:
                value = call()
            except BaseException as exc:  # delivered to the awaiting task, as an executor does
                error = exc

            def hand_over() -> None:
                # A closed loop (RuntimeError): nobody waits for this outcome any more.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(deliver, value, error)

            return hand_over

        assert self._threads is not None
        self._threads.submit(work)
        return await future

    async def _renew_loop(self, run: _Run) -> None:
        queue = self.backend.async_task_storage
        interval = self.lease_seconds / 3
        while True:
            await self.clock.sleep(min(interval, run.held_until - self.clock.monotonic()))
            async with run.lock:
                if run.done or run.lost:
                    return
                sent = self.clock.monotonic()
                try:
                    if sent >= run.held_until:
                        raise _LeaseOver
                    renewal = queue.renew_lease(run.task, lease_seconds=self.lease_seconds)
                    run.task = await self._while_held(run, renewal)
                    run.held_until = sent + self.lease_seconds
                    interval = self.lease_seconds / 3
                except _LeaseOver:
                    self._lose(run, "its lease ended before a renewal landed")
                    return
                except CancelledOnRequest:
                    # We wrote the operator's cancel ourselves, instead of the renewal.
                    self._lose(run, "an operator asked for it to be cancelled")
                    return
                except (ConflictError, ObjectNotFoundError):
                    self._lose(run, "it was cancelled or requeued while it ran")
                    return
                except StorageError as exc:
                    # Transient: the lease still holds until it is judged dead; try again sooner.
                    logger.warning(
                        "worker %s: lease renewal of %s failed: %s",
                        self.worker_id,
                        run.task.id,
                        exc,
                    )
                    interval = max(lifecycle.NAME_WRITE_GAP_S, self.lease_seconds / 6)

    async def _while_held(self, run: _Run, request: Coroutine[Any, Any, T]) -> T:
        """Await a renewal, but no longer than the lease holds (``_LeaseOver`` then).

        A renewal stuck in retries past the lease would otherwise keep the function running
        while another worker runs it too. Once the lease is over no outcome of ours is written,
        so cancelling the request cannot leave a generation the outcome needs.
        """
        call = asyncio.ensure_future(request)
        timer = asyncio.ensure_future(self.clock.sleep(run.held_until - self.clock.monotonic()))
        try:
            await asyncio.wait({call, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            if not call.done():
                # Not awaited: a request that ignores cancellation must not hold us.
                call.cancel()
        if not call.done():
            raise _LeaseOver
        return call.result()

    async def _stop_renewer(self, run: _Run, renewer: asyncio.Task[None] | None) -> None:
        # Under the lock the renewer is not in the middle of a request: cancelling it now
        # can never leave a landed renewal whose generation we do not know.
        async with run.lock:
            run.done = True
            if renewer is not None:
                renewer.cancel()
        if renewer is not None:
            await asyncio.gather(renewer, return_exceptions=True)

    def _lose(self, run: _Run, why: str) -> None:
        """We no longer hold ``run``'s lease: stop it and write nothing more for it."""
        run.lost = True
        running = run.call is not None and not run.call.done()
        if running and not run.sync:
            assert run.call is not None
            run.call.cancel()
        # A thread cannot be stopped: a sync function runs on, and what it returns is dropped.
        fate = (
            "its thread runs on; outcome will be dropped"
            if running and run.sync
            else ("function cancelled; outcome dropped" if running else "outcome dropped")
        )
        log = logger.warning if running else logger.info
        log("worker %s: task %s lost: %s; %s", self.worker_id, run.task.id, why, fate)

    async def _settle(self, run: _Run, outcome: _Outcome) -> None:
        """Write the outcome, fenced on the record generation we last wrote."""
        queue = self.backend.async_task_storage
        async with run.lock:
            if run.lost:
                return
            record = run.task.record
            assert record is not None
            await queue.ready_to_write(run.task)
            transition = self._transition(run.task, record, outcome)
            try:
                run.task = await queue.finish(run.task, transition)
            except (ConflictError, ObjectNotFoundError):
                self._lose(run, "it was cancelled or requeued before its outcome landed")
                return
            run.done = True
        self.processed += 1
        if outcome.failure is not None:
            self.failed += 1
        failure = outcome.failure
        self._record(
            transition,
            execution_time=outcome.execution_time,
            error_type=failure.error_type if failure else None,
            error_message=failure.message if failure else None,
            traceback=failure.traceback if failure else None,
        )

    def _transition(self, task: Task, record: Any, outcome: _Outcome) -> Transition:
        now = self.clock.now()
        if outcome.failure is None:
            transition = lifecycle.complete(
                record,
                worker=self.worker_id,
                value=outcome.value,
                execution_time=outcome.execution_time,
                now=now,
            )
            try:
                transition.record.to_json()
            except Exception as exc:  # pydantic cannot serialise every Python object
                failure = Failure(
                    "UnserializableResultError",
                    f"the task returned a {type(outcome.value).__name__}, which cannot be "
                    f"stored as JSON: {exc}",
                    None,
                    retryable=False,
                )
                return self._transition(
                    task, record, _Outcome(failure=failure, execution_time=outcome.execution_time)
                )
            return transition
        return lifecycle.fail_or_retry(
            task,
            record,
            outcome.failure,
            worker=self.worker_id,
            execution_time=outcome.execution_time,
            now=now,
        )

    async def _release(self, run: _Run, reason: str) -> None:
        """Hand a task we hold back to its queue (PENDING), so another worker runs it."""
        async with run.lock:
            if run.lost or run.task.status != TaskStatus.RUNNING:
                return
            queue = self.backend.async_task_storage
            try:
                # The release transition, applied and recorded like an outcome.
                await queue.ready_to_write(run.task)
                assert run.task.record is not None
                transition = lifecycle.release(
                    run.task.record, worker=self.worker_id, now=self.clock.now(), reason=reason
                )
                await queue.finish(run.task, transition)
            except (ConflictError, ObjectNotFoundError):
                return  # someone else changed it already: nothing of ours to give back
            except StorageError as exc:
                logger.warning(
                    "worker %s: could not release task %s (%s); it returns when its lease dies",
                    self.worker_id,
                    run.task.id,
                    exc,
                )
                return
            run.done = True
        self._record(transition)

    # -- events --------------------------------------------------------------------------------

    def _record(self, transition: Transition, **fields: Any) -> None:
        """Log the event of a transition this worker applied (with what only the run knows in
        ``fields``): a release, an outcome. Claims, requeues and expiries are logged by the
        queue and its reaper, which apply them."""
        self.backend.async_event_storage.record_transition(
            transition, at=self.clock.now(), worker_id=self.worker_id, **fields
        )

    def _log(self, event: TaskEvent) -> None:
        """Add ``event`` to this process's next batch (written about once a second)."""
        try:
            self.backend.async_event_storage.record(event)
        except (StorageError, ValueError) as exc:
            logger.warning(
                "worker %s: event %s not recorded: %s", self.worker_id, event.event_type, exc
            )

    # -- heartbeat and reaper ------------------------------------------------------------------

    async def _beat(self, state: str) -> None:
        # The heartbeat is one name: never written twice within a second (the last one,
        # "stopped", may follow a periodic one at once).
        if self._beat_at is not None:
            await self.clock.sleep(self._beat_at + NAME_WRITE_GAP_S - self.clock.monotonic())
        runs = list(self._running.values())
        index = WorkerIndex(
            id=self.worker_id,
            state=state,
            last_seen=self.clock.now(),
            started_at=self.started_at,
            host=socket.gethostname(),
            pid=os.getpid(),
            queues=self.queues,
            running=tuple(r.task.id for r in runs),
            processed=self.processed,
            failed=self.failed,
            concurrency=self.concurrency,
            running_funcs=tuple(r.task.func for r in runs),
        )
        body = {
            "id": index.id,
            "state": index.state,
            "last_seen": index.last_seen.isoformat() if index.last_seen else None,
            "concurrency": self.concurrency,
            "lease_seconds": self.lease_seconds,
            "queues": list(self.queues),
        }
        store, layout = self.backend.store, self.backend.layout
        key = layout.worker(self.worker_id)
        data = json.dumps(body).encode()
        # Conditional, so a retried heartbeat can never overwrite a newer one.
        try:
            info = await store.write(
                key, data, metadata=worker_metadata(index), if_generation_match=self._beat_gen
            )
        except ConflictError:
            # A heartbeat of an earlier process with our id: continue from its generation.
            listed = await store.list(key, limit=1)
            self._beat_gen = listed[0].generation if listed and listed[0].key == key else 0
            info = await store.write(
                key, data, metadata=worker_metadata(index), if_generation_match=self._beat_gen
            )
        self._beat_gen = info.generation
        self._beat_at = self.clock.monotonic()

    async def _heartbeat_loop(self) -> None:
        while True:
            await self.clock.sleep(self.heartbeat_interval)
            try:
                await self._beat("running")
            except (StorageError, OSError) as exc:
                logger.warning("worker %s: heartbeat failed: %s", self.worker_id, exc)

    async def _reap_loop(self) -> None:
        # Workers started together would otherwise all reap at the same instants.
        await self.clock.sleep(random.uniform(0.1, 1.0) * self.reap_interval)
        while True:
            try:
                await self.reap()
            except (StorageError, OSError) as exc:
                logger.warning("worker %s: reaper pass failed: %s", self.worker_id, exc)
            except Exception:
                # A bug, or an object no check foresaw: the pass is lost, never the reaper.
                logger.exception("worker %s: reaper pass failed", self.worker_id)
            await self.clock.sleep(self.reap_interval)

    async def reap(self) -> list[str]:
        """One reaper pass: requeue tasks whose lease is dead, expire tasks that waited past
        their ``expires_at``, repair what a crash left; log each. Returns the requeued ids.

        A lease is judged dead on this process's monotonic clock (the record's generation
        unchanged for its lease length across passes), so the first pass only observes.
        """
        # The pass applies requeues and expiries, and so logs their events, as this worker's.
        report = await self.backend.async_task_storage.maintain(by=self.worker_id)
        if report.expired:
            logger.info(
                "worker %s: %d task(s) expired before they ran", self.worker_id, len(report.expired)
            )
        return [task_id for task_id, _ in report.requeued]
