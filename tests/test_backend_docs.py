"""docs/gcs-backend.md is the backend's contract: every python example in it runs as written,
in order, on the emulator; its tables name what the code has; and the options, layout and
opening errors it promises are checked one by one."""

from __future__ import annotations

import ast
import asyncio
import inspect
import logging
import re
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from omniq_console.backend import errors, gcs
from omniq_console.backend.config import ENVIRONMENT
from omniq_console.backend.errors import AuthenticationError, BucketNotFoundError
from omniq_console.backend.gcs import (
    AsyncGCSEventStorage,
    AsyncGCSQueue,
    AsyncGCSResultStorage,
    AsyncGCSScheduleStorage,
    GCSBackend,
    GCSEventStorage,
    GCSQueue,
    GCSResultStorage,
    GCSScheduleStorage,
    create_gcs_backend_from_config,
)
from omniq_console.models import (
    EventType,
    ResultStatus,
    Schedule,
    ScheduleType,
    Task,
    TaskEvent,
    TaskResult,
    utcnow,
)

DOCUMENT = Path(__file__).resolve().parent.parent / "docs" / "gcs-backend.md"
_BLOCK = re.compile(r"^(?P<indent>[ ]*)```(?P<lang>\w*)\n(?P<body>.*?)^(?P=indent)```", re.M | re.S)


def _blocks(lang: str) -> list[str]:
    text = DOCUMENT.read_text()
    return [textwrap.dedent(m["body"]) for m in _BLOCK.finditer(text) if m["lang"] == lang]


def test_every_python_example_of_the_document_runs_in_order(bucket: str) -> None:
    blocks = _blocks("python")
    assert len(blocks) >= 15, "the document lost its examples"
    namespace: dict[str, Any] = {"__name__": "gcs_backend_md"}
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    with asyncio.Runner() as runner:
        for number, block in enumerate(blocks, 1):
            source = block.replace("my-omniq-bucket", bucket).replace("my-bucket", bucket)
            code = compile(source, f"gcs-backend.md example {number}", "exec", flags=flags)
            outcome = eval(code, namespace)  # a coroutine when the example awaits
            if asyncio.iscoroutine(outcome):
                runner.run(outcome)
    # What the examples left behind is what the document says they do.
    assert namespace["stored"].result == 3
    assert [r.task_id for r in namespace["results"]] == ["finished-elsewhere"]
    # The task's timeline, by time: the event logged (made before the claim), the claim's.
    events = namespace["events"]
    assert [e.event_type for e in events] == [EventType.COMPLETED, EventType.DEQUEUED]
    assert events[0].id == namespace["event"].id
    assert [s.id for s in namespace["ready"]] == [namespace["schedule"].id]
    assert namespace["claimed"] is not None
    assert namespace["in_memory"].store is namespace["store"]
    assert isinstance(namespace["result"], str)  # the integration example's task id
    assert not namespace["backend"].is_open


def test_the_documents_tables_match_the_code() -> None:
    text = DOCUMENT.read_text()
    documented_env = dict(re.findall(r"^\| `([A-Z_]+)` \| `(\w+)`", text, re.M))
    assert documented_env == ENVIRONMENT
    for name in re.findall(r"^\| `(\w+Error)` \|", text, re.M):
        assert issubclass(getattr(errors, name), errors.StorageError), name
    for name in gcs.__all__:
        assert re.search(rf"\b{name}\b", text), f"the document does not name {name}"
    assert "roles/storage.objectAdmin" in text and "roles/storage.objectViewer" in text
    assert "storage.buckets.get" in text


def _fixtures() -> tuple[Task, TaskResult, TaskEvent, Schedule]:
    task = Task(func="app:work", queue_name="default")
    # The result of another task, one never claimed: a claim creates the task's record, and
    # set() never overwrites a record it did not read.
    result = TaskResult(
        task_id="finished-elsewhere", status=ResultStatus.SUCCESS, result=3, completed_at=utcnow()
    )
    event = TaskEvent(task_id=task.id, event_type=EventType.COMPLETED)
    schedule = Schedule(
        schedule_type=ScheduleType.INTERVAL,
        func="app:tick",
        interval=timedelta(seconds=1),
        created_at=utcnow() - timedelta(seconds=5),
    )
    return task, result, event, schedule


async def test_quick_start_and_components_async(bucket: str) -> None:
    backend = GCSBackend(bucket_name=bucket, prefix="production/", project="my-gcp-project")
    task, result, event, schedule = _fixtures()
    task_id = task.id
    start_time = utcnow() - timedelta(minutes=1)
    end_time = utcnow() + timedelta(minutes=1)

    async with backend:
        task_storage = backend.async_task_storage
        result_storage = backend.async_result_storage
        event_storage = backend.async_event_storage
        schedule_storage = backend.async_schedule_storage
        assert isinstance(task_storage, AsyncGCSQueue)
        assert isinstance(result_storage, AsyncGCSResultStorage)
        assert isinstance(event_storage, AsyncGCSEventStorage)
        assert isinstance(schedule_storage, AsyncGCSScheduleStorage)

    async with backend:
        queue = backend.async_task_storage
        task_id = await queue.enqueue(task)
        size = await queue.get_queue_size("default")
        assert size == 1
        task = await queue.dequeue(["high-priority", "default"])
        assert task is not None and task.id == task_id
        assert await queue.get_queue_size("default") == 0

    async with backend:
        storage = backend.async_result_storage
        await storage.set(result)
        result = await storage.get(result.task_id)
        assert result is not None and result.result == 3
        results = await storage.list_results(status="success", limit=10)
        assert [r.task_id for r in results] == [result.task_id]
        # The dequeued task's state record: a pending result, held by this backend's worker.
        record = await storage.get(task_id)
        assert record is not None and record.status == ResultStatus.PENDING

    async with backend:
        storage = backend.async_event_storage
        await storage.log_event(event)
        events = await storage.get_events(task_id=task_id)
        # By time: the event logged (made before the claim), then the claim's (by dequeue).
        assert [e.event_type for e in events] == [EventType.COMPLETED, EventType.DEQUEUED]
        assert events[0].id == event.id
        events = await storage.get_events(
            event_type="completed", start_time=start_time, end_time=end_time
        )
        assert [e.id for e in events] == [event.id]

    async with backend:
        storage = backend.async_schedule_storage
        await storage.save_schedule(schedule)
        ready = await storage.get_ready_schedules()
        assert [s.id for s in ready] == [schedule.id]
        schedules = await storage.list_schedules(status="active")
        assert [s.id for s in schedules] == [schedule.id]

    # The layout of the document's "Storage Structure": the dequeued task keeps its entry in
    # the queue until it is final, and its state record is in results/.
    # The claim's event went out in the backend's event batch.
    keys = {info.key for info in await _listing(backend)}
    batches = {k for k in keys if k.startswith("production/events/")} - {
        f"production/events/{event.id}.json"
    }
    assert len(batches) == 1
    assert keys - batches == {
        f"production/tasks/{task_id}.json",
        f"production/queues/default/{task_id}.json",
        f"production/results/{task_id}.json",
        f"production/results/{result.task_id}.json",
        f"production/events/{event.id}.json",
        f"production/schedules/{schedule.id}.json",
    }


async def _listing(backend: GCSBackend) -> list:
    async with backend:
        return await backend.store.list(backend.prefix)


def test_quick_start_and_components_sync(bucket: str) -> None:
    backend = GCSBackend(bucket_name=bucket, prefix="production/", project="my-gcp-project")
    task, result, event, schedule = _fixtures()
    task_id = task.id

    with backend:
        task_storage = backend.task_storage
        result_storage = backend.result_storage
        event_storage = backend.event_storage
        schedule_storage = backend.schedule_storage
        assert isinstance(task_storage, GCSQueue)
        assert isinstance(result_storage, GCSResultStorage)
        assert isinstance(event_storage, GCSEventStorage)
        assert isinstance(schedule_storage, GCSScheduleStorage)

    with backend:
        queue = backend.task_storage
        task_id = queue.enqueue_sync(task)
        task = queue.dequeue_sync(["high-priority", "default"])
        assert task is not None and task.id == task_id

    with backend:
        storage = backend.result_storage
        storage.set_sync(result)
        result = storage.get_sync(result.task_id)
        assert result is not None and result.status == ResultStatus.SUCCESS

    with backend:
        storage = backend.event_storage
        storage.log_event_sync(event)
        events = storage.get_events_sync(task_id=task_id)
        assert [e.event_type for e in events] == [EventType.COMPLETED, EventType.DEQUEUED]

    with backend:
        storage = backend.schedule_storage
        storage.save_schedule_sync(schedule)
        ready = storage.get_ready_schedules_sync()
        assert [s.id for s in ready] == [schedule.id]
    assert not backend.is_open


def test_every_store_method_has_a_sync_twin() -> None:
    pairs = [
        (AsyncGCSQueue, GCSQueue),
        (AsyncGCSResultStorage, GCSResultStorage),
        (AsyncGCSEventStorage, GCSEventStorage),
        (AsyncGCSScheduleStorage, GCSScheduleStorage),
    ]
    # Every public coroutine: ``record`` is not one (it buffers at once, on the backend's loop)
    # and ``aclose`` belongs to the backend's own close.
    for async_cls, sync_cls in pairs:
        public = [
            n
            for n, value in vars(async_cls).items()
            if not n.startswith("_") and inspect.iscoroutinefunction(value) and n != "aclose"
        ]
        assert public, async_cls
        for name in public:
            twin = getattr(sync_cls, f"{name}_sync")
            assert twin.__doc__ and name in twin.__doc__


def test_sync_method_outside_with_is_a_clear_error(bucket: str) -> None:
    backend = GCSBackend(bucket)
    with pytest.raises(RuntimeError, match="with backend"):
        backend.task_storage.get_queue_size_sync("default")


def test_configuration_options_example() -> None:
    backend = GCSBackend(
        bucket_name="my-omniq-bucket",
        prefix="omniq/",  # Optional prefix for all keys
        project="my-gcp-project",  # GCP project ID
        token="/path/to/service-account.json",  # Service account JSON file
        access="read_write",  # Access mode
        consistency="md5",  # Consistency mode
        cache_timeout=300,  # Cache timeout in seconds
        # Additional gcsfs options
        block_size=5 * 1024 * 1024,  # 5MB blocks
    )
    assert (backend.bucket_name, backend.prefix, backend.project) == (
        "my-omniq-bucket",
        "omniq/",
        "my-gcp-project",
    )
    assert (backend.access, backend.consistency, backend.cache_timeout) == (
        "read_write",
        "md5",
        300,
    )
    assert backend.gcs_kwargs == {"block_size": 5 * 1024 * 1024}
    assert not backend.read_only


def test_configuration_from_dictionary_example() -> None:
    config = {
        "bucket_name": "my-omniq-bucket",
        "prefix": "production/",
        "project": "my-gcp-project",
        "token": "/path/to/service-account.json",
        "access": "read_write",
        "consistency": "md5",
        "cache_timeout": 300,
        "gcs_kwargs": {
            "block_size": 5 * 1024 * 1024,
            "cache_type": "readahead",
        },
    }

    backend = create_gcs_backend_from_config(config)
    assert backend.bucket_name == "my-omniq-bucket" and backend.prefix == "production/"
    assert backend.store.token == "/path/to/service-account.json"
    assert backend.gcs_kwargs == {"block_size": 5 * 1024 * 1024, "cache_type": "readahead"}


async def test_config_backend_works_on_the_emulator(bucket: str) -> None:
    config = {
        "bucket_name": bucket,
        "prefix": "production/",
        "access": "read_write",
        "consistency": "crc32c",
        "cache_timeout": 0,
        "gcs_kwargs": {"block_size": 5 * 1024 * 1024, "cache_type": "readahead"},
    }
    backend = create_gcs_backend_from_config(config)
    async with backend:
        assert (
            backend.store._fs is not None
            and backend.store._fs.default_block_size == 5 * 1024 * 1024
        )
        task_id = await backend.async_task_storage.enqueue(Task(func="m:f"))
        got = await backend.async_task_storage.get_task(task_id)
        assert got is not None and got.func == "m:f"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"bucket_name": "b-1", "bucket": "x"}, "unknown option.*bucket"),
        ({"prefix": "p/"}, "bucket_name"),
        ({"bucket_name": "b-1", "gcs_kwargs": ["block_size"]}, "gcs_kwargs must be a mapping"),
        ({"bucket_name": "b-1", "gcs_kwargs": {"prefix": "x/"}}, "must not repeat"),
        ({"bucket_name": "b-1", "gcs_kwargs": {"use_listings_cache": True}}, "set by the backend"),
    ],
)
def test_bad_config_is_clear(config: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_gcs_backend_from_config(config)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bucket_name": ""}, "bucket_name must be a non-empty string"),
        ({"bucket_name": "Bad_Bucket!"}, "not a valid GCS bucket name"),
        ({"bucket_name": "ok-bucket", "access": "admin"}, "access must be one of"),
        ({"bucket_name": "ok-bucket", "consistency": "sha1"}, "consistency must be one of"),
        ({"bucket_name": "ok-bucket", "cache_timeout": -1}, "cache_timeout"),
        ({"bucket_name": "ok-bucket", "cache_timeout": "300"}, "cache_timeout"),
        ({"bucket_name": "ok-bucket", "lease_seconds": 0}, "lease_seconds"),
        ({"bucket_name": "ok-bucket", "prefix": "a/../b"}, "prefix segment"),
    ],
)
def test_bad_options_fail_at_construction(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GCSBackend(**kwargs)


async def test_missing_bucket_on_open(gcs_env: object) -> None:
    backend = GCSBackend("no-such-bucket-anywhere")
    with pytest.raises(BucketNotFoundError, match="no-such-bucket-anywhere"):
        async with backend:
            pass
    assert not backend.is_open
    with pytest.raises(BucketNotFoundError), backend:
        pass


async def test_missing_service_account_file_is_clear(bucket: str) -> None:
    backend = GCSBackend(bucket, token="/no/such/service-account.json")
    with pytest.raises(AuthenticationError, match=r"service-account\.json"):
        async with backend:
            pass


def test_error_handling_example_without_gcsfs() -> None:
    # The document's first except clause: without gcsfs, opening the backend raises an
    # ImportError with the command (gcsfs is imported when a store opens, not at import).
    code = (
        "import asyncio, sys; sys.modules['gcsfs'] = None; sys.modules['gcsfs.core'] = None\n"
        "from omniq_console.backend.gcs import GCSBackend\n"
        "async def main():\n"
        "    try:\n"
        "        async with GCSBackend('any-bucket', token='anon'):\n"
        "            pass\n"
        "    except ImportError as e:\n"
        "        print(e)\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install gcsfs" in out.stdout


async def test_error_handling_and_debug_mode_examples(bucket: str) -> None:
    logging.basicConfig(level=logging.DEBUG)
    backend = GCSBackend(bucket)
    caught: list[Exception] = []
    try:
        async with backend:
            await backend.async_task_storage.get_task("../escape")
    except ImportError:
        pytest.fail("gcsfs is installed")
    except Exception as e:  # the document's catch-all, as written
        caught.append(e)
    assert len(caught) == 1 and isinstance(caught[0], ValueError)
