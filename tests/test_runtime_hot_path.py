"""What a task costs the worker besides its requests: model builds and copies, threads.

A claim, each renewal and the outcome copy the task and its state record; pydantic's generic
deep copy made hundreds of ``copy.deepcopy`` calls a task, and its ``model_construct``
inspected every default factory's signature on every call.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from types import FrameType
from typing import Any

import pytest
from waiting import wait_until

from omniq_console.backend import layout, lifecycle
from omniq_console.backend.gcs import GCSBackend
from omniq_console.backend.memstore import MemoryObjectStore
from omniq_console.models import OmniQModel, Task, TaskResult
from omniq_console.runtime import Worker
from omniq_console.runtime.registry import TaskRegistry, submit_task
from omniq_console.runtime.worker import _DaemonThreads


def _calls(function: Callable[..., Any], action: Callable[[], object]) -> int:
    """How many times ``action()`` calls the pure-Python ``function`` (directly or not)."""
    code, count = function.__code__, 0

    def profile(frame: FrameType, event: str, arg: object) -> None:
        nonlocal count
        if event == "call" and frame.f_code is code:
            count += 1

    sys.setprofile(profile)
    try:
        action()
    finally:
        sys.setprofile(None)
    return count


def _held_task() -> Task:
    task = Task(func="jobs:work", queue_name="q", args=(1, [2]), kwargs={"x": {"y": 1}})
    record = TaskResult(task_id=task.id, lease_owner="w", attempt=1, queue_name="q")
    task._record = record
    task._generation = 7
    return task


def test_a_deep_copy_shares_immutable_values_and_copies_the_rest() -> None:
    task = _held_task()
    copied = task.model_copy(deep=True)
    assert copied == task and copied.generation == 7
    assert copied.record == task.record and copied.record is not task.record
    copied.kwargs["x"]["y"] = 2
    assert task.kwargs["x"]["y"] == 1  # mutable values are copied, not shared
    # A handful of calls (the mutable values), not one per field and datetime (118 with pydantic's).
    calls = _calls(copy.deepcopy, lambda: task.model_copy(deep=True))
    assert calls <= 20, calls


def test_model_construct_does_not_inspect_default_factories() -> None:
    def build() -> Task:
        return Task.model_construct(id="a", func="jobs:work", queue_name="q")

    build()  # the first call may look at the class once
    assert _calls(inspect.signature, lambda: [build() for _ in range(10)]) == 0
    a, b = build(), build()
    assert a.kwargs == {} and a.kwargs is not b.kwargs and a.created_at is not None
    assert a.model_fields_set == {"id", "func", "queue_name"}


def test_a_transition_sets_its_fields_in_one_update_with_times_in_utc() -> None:
    """A claim, a renewal and an outcome build their records without a validated assignment
    per field (each re-ran the model's validators over every field: 16 a task); times still
    come out in UTC, as the validators make them."""
    task = Task(func="jobs:work", queue_name="q")
    east = timezone(timedelta(hours=3))
    now = datetime(2026, 12, 8, 6, 0, tzinfo=east)
    records: list[TaskResult] = []

    def transitions() -> None:
        claimed = lifecycle.claim(task, None, worker="w", lease_s=30, now=now).record
        renewed = lifecycle.renew(claimed, worker="w", lease_s=30, now=now)
        done = lifecycle.complete(renewed, worker="w", value=[1], execution_time=1, now=now)
        failure = lifecycle.Failure("E", "boom")
        retry = lifecycle.fail_or_retry(
            task, renewed, failure, worker="w", execution_time=0.5, now=now
        ).record
        records.extend([claimed, renewed, done.record, retry])

    assert _calls(OmniQModel._utc_datetimes, transitions) == 1, "only the first record's build"
    claimed, renewed, done, retry = records
    assert claimed.started_at == now and claimed.started_at.tzinfo is UTC
    assert claimed.lease_expires_at == now + timedelta(seconds=30)
    assert claimed.lease_seconds == 30.0 and isinstance(claimed.lease_seconds, float)
    assert claimed.attempt == 1 and claimed.lease_owner == claimed.worker_id == "w"
    assert renewed.lease_expires_at is not None and renewed.lease_expires_at.tzinfo is UTC
    assert done.completed_at is not None and done.completed_at.tzinfo is UTC
    assert done.result == [1] and done.execution_time == 1.0 and done.lease_owner is None
    assert retry.run_at is not None and retry.run_at.tzinfo is UTC and retry.retry_count == 1
    assert retry.lease_owner is None and retry.lease_seconds is None and retry.error == "boom"
    assert {"attempt", "lease_owner", "started_at"} <= claimed.model_fields_set
    for record in records:
        # What is stored reads back as the same record.
        assert TaskResult.from_json(record.to_json()) == record


def test_an_ascii_id_is_checked_without_a_look_up_per_character(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Keys are built from ids several times a task: a printable ASCII id is checked without
    a Unicode category look-up per character; other text still is, with the same verdicts."""
    looked_up: list[str] = []
    category = layout.unicodedata.category

    def counting(ch: str) -> str:
        looked_up.append(ch)
        return category(ch)

    monkeypatch.setattr(layout.unicodedata, "category", counting)
    assert layout.check_id("0f3c2a9e-7b1d-4e8a-9c2f-1a2b3c4d5e6f") and looked_up == []
    assert layout.check_id("a b~!") == "a b~!"
    assert layout.check_id("café") == "café" and looked_up
    for bad in ("a\x00b", "a\tb", "a\x7fb", "a\u2028b", "a\u00a0b"):
        with pytest.raises(ValueError, match="control or separator"):
            layout.check_id(bad)


async def test_sync_functions_reuse_their_threads() -> None:
    store = MemoryObjectStore("hot-path")
    idents: set[int] = set()
    async with GCSBackend("hot-path", object_store=store) as backend:
        registry = TaskRegistry()

        def work(n: int) -> int:
            idents.add(threading.get_ident())
            return n

        registry.register(work, name="jobs:work")
        for n in range(12):
            await submit_task(backend, Task(func="jobs:work", queue_name="q", args=(n,)))
        worker = Worker(backend, registry, ["q"], concurrency=2, poll_interval=0.01)
        running = asyncio.create_task(worker.run())
        try:
            await wait_until(lambda: worker.processed >= 12, "12 tasks processed", within=60)
        finally:
            worker.stop()
            await running
    assert len(idents) <= 2, len(idents)


def test_a_thread_counts_itself_idle_before_its_outcome_is_handed_over() -> None:
    # Otherwise the task awaiting the outcome may submit its next job first and find no idle
    # thread: one more thread than slots (seen on a loaded machine).
    threads = _DaemonThreads("omniq-test")
    idle_at_hand_over: list[int] = []
    handed = threading.Event()

    def job() -> Callable[[], None]:
        def hand_over() -> None:
            idle_at_hand_over.append(threads._idle)
            handed.set()

        return hand_over

    threads.submit(job)
    assert handed.wait(10)
    threads.close()
    assert idle_at_hand_over == [1]
