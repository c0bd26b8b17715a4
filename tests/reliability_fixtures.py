"""Fixtures and helpers shared by the reliability tests (import them into a test module).

- ``fault_proxy`` puts a :class:`faultproxy.FaultProxy` in front of the session's emulator;
  ``proxy_bucket`` is a fresh bucket created on the emulator directly (never through the proxy,
  so rules set by a test cannot break its setup). A test module imports the fixture functions
  (``fault_proxy_fixture``, ``proxy_bucket_fixture``) and requests them by their short names.
- ``FakeTokenServer``, ``service_account_file``, ``assert_secret_free``: throwaway credentials
  whose every secret the tests can look for.
- ``Fleet`` and ``child_main``: worker, reaper and enqueuer processes on one bucket, with an
  execution log written by the task functions themselves.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from faultproxy import FaultProxy
from waiting import wait_until

from omniq_console.backend.gcs import GCSBackend
from omniq_console.backend.objectstore import RetryPolicy
from omniq_console.demo.emulator import Emulator
from omniq_console.models import Task
from omniq_console.runtime.registry import TaskRegistry, submit_task
from omniq_console.runtime.worker import Worker, current_task
from omniq_console.stopping import StopSignal

# Short enough that a test sees every retry within a second, long enough for the emulator.
FAST_RETRY = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05, request_timeout=5.0)


@pytest.fixture(name="fault_proxy")
def fault_proxy_fixture(emulator: Emulator) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of the emulator, with no rule yet."""
    with FaultProxy(emulator.url) as proxy:
        yield proxy


@pytest.fixture(name="proxy_bucket")
def proxy_bucket_fixture(emulator: Emulator) -> str:
    """A new bucket, created on the emulator without going through the proxy."""
    name = f"rel-{uuid.uuid4().hex[:16]}"
    emulator.create_bucket(name)
    return name


# -- credentials ------------------------------------------------------------------------------


class FakeTokenServer:
    """An OAuth token endpoint on loopback: grants a recognizable access token, or refuses.

    Service-account files made by :func:`service_account_file` point their ``token_uri`` here,
    so a credentials refresh never leaves the machine.
    """

    ACCESS_TOKEN = "ya29.FAKE-ACCESS-TOKEN-d41d8cd98f00b204"

    def __init__(self, grant: bool) -> None:
        self.grant = grant
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's naming
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.requests += 1
                if server.grant:
                    status, answer = (
                        200,
                        {
                            "access_token": server.ACCESS_TOKEN,
                            "expires_in": 3600,
                            "token_type": "Bearer",
                        },
                    )
                else:
                    status, answer = (
                        400,
                        {
                            "error": "invalid_grant",
                            "error_description": "Invalid JWT Signature.",
                        },
                    )
                body = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_port}/token"

    def __enter__(self) -> FakeTokenServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@dataclass(frozen=True)
class FakeServiceAccount:
    """A throwaway service-account file and the strings that must never be shown."""

    path: Path
    private_key: str
    private_key_id: str

    @property
    def secrets(self) -> list[str]:
        """The key id, each line of the key, and the whole file (pieces are checked too)."""
        body_lines = [
            line for line in self.private_key.splitlines() if line and not line.startswith("---")
        ]
        return [self.private_key_id, *body_lines]

    @property
    def file_text(self) -> str:
        return self.path.read_text()


def service_account_file(
    directory: Path, token_uri: str, *, private_key: str | None = None
) -> FakeServiceAccount:
    """Write a service-account JSON with a fresh RSA key (or the ``private_key`` text given)."""
    if private_key is None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private_key = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
    key_id = "KEYID-" + uuid.uuid4().hex
    info = {
        "type": "service_account",
        "project_id": "omniq-test",
        "private_key_id": key_id,
        "private_key": private_key,
        "client_email": "omniq-test@omniq-test.iam.gserviceaccount.com",
        "client_id": "123456789",
        "token_uri": token_uri,
    }
    path = directory / "service-account.json"
    path.write_text(json.dumps(info))
    return FakeServiceAccount(path, private_key, key_id)


def assert_secret_free(text: str, secrets: list[str], whole: tuple[str, ...] = ()) -> None:
    """No secret, nor any 16-character piece of one, appears in ``text``; nor any of ``whole``
    (texts such as a credentials file, checked as a whole: parts of them are not secret)."""
    for secret in secrets:
        pieces = {secret} | {secret[i : i + 16] for i in range(0, max(1, len(secret) - 15), 8)}
        leaked = [p for p in pieces if len(p) >= 8 and p in text]
        assert not leaked, f"secret material leaked: {leaked[0]!r} in {text[:500]!r}"
    for item in whole:
        assert item not in text, f"a whole credentials file leaked into {text[:300]!r}"


# -- processes: workers, a reaper and an enqueuer sharing one bucket ---------------------------
#
# Child processes run ``python -c "import reliability_fixtures as f; f.child_main()"`` with
# their settings in REL_CFG (JSON). Task functions append one line per call to an execution
# log (O_APPEND, one short write: atomic), so the test can count how often each task ran and
# in which process, whatever the bucket says.

TESTS_DIR = str(Path(__file__).resolve().parent)
QUEUE = "rq"
CHILD_RETRY = RetryPolicy(attempts=6, base_delay=0.05, max_delay=0.5, request_timeout=10.0)


def _log_call(phase: str) -> None:
    task = current_task()
    assert task is not None
    line = f"{phase} {task.id} {os.getpid()} {task.retry_count} {time.time():.3f}\n".encode()
    fd = os.open(os.environ["REL_EXEC_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


async def rel_ok(i: int) -> int:
    _log_call("start")
    _log_call("end")
    return i


async def rel_slow(i: int) -> int:
    """Runs until the test lets slow tasks go (``Fleet.release_slow``): a kill lands mid-run."""
    _log_call("start")
    released = Path(os.environ["REL_RELEASE"])
    await wait_until(released.exists, "the test to let slow tasks go", within=600)
    _log_call("end")
    return i


async def rel_boom(i: int) -> int:
    _log_call("start")
    _log_call("end")
    raise ValueError(f"boom {i}")


FUNCS = {"rel:ok": rel_ok, "rel:slow": rel_slow, "rel:boom": rel_boom}


def make_registry() -> TaskRegistry:
    registry = TaskRegistry()
    for name, func in FUNCS.items():
        registry.register(func, name=name, queue=QUEUE)
    return registry


def race_tasks(n: int, *, slow_every: int = 7, boom_every: int = 4) -> list[Task]:
    """``n`` tasks with fixed ids: some slow (to be killed mid-run), some failing (one retry)."""
    tasks = []
    for i in range(n):
        if i % slow_every == 3:
            func = "rel:slow"
        elif i % boom_every == 1:
            func = "rel:boom"
        else:
            func = "rel:ok"
        tasks.append(
            Task(
                func=func,
                id=f"race-{i:03d}",
                args=(i,),
                queue_name=QUEUE,
                max_retries=1 if func == "rel:boom" else 0,
                retry_delay=timedelta(seconds=0.2),
            )
        )
    return tasks


def expected_runs(task: Task) -> int:
    """How often a task's function ends when no worker dies: once, or once per attempt."""
    return task.max_retries + 1 if task.func == "rel:boom" else 1


def _child_backend(cfg: dict[str, Any]) -> GCSBackend:
    return GCSBackend(
        cfg["bucket"],
        prefix=cfg["prefix"],
        endpoint_url=cfg["endpoint"],
        retry=CHILD_RETRY,
        lease_seconds=cfg.get("lease", 3.0),
        cache_timeout=0,
    )


def child_main() -> None:
    """Entry point of a child process: a worker, a reaper or an enqueuer (REL_CFG's role)."""
    cfg = json.loads(os.environ["REL_CFG"])
    role = cfg["role"]
    logging.basicConfig(level=logging.WARNING, format=f"{role} %(process)d %(message)s")
    holder: dict[str, Any] = {}
    stopping = StopSignal()

    def stop() -> None:
        stopping.set()
        worker = holder.get("worker")
        if worker is not None:
            worker.stop()

    async def main() -> None:
        backend = _child_backend(cfg)
        async with backend:
            if role == "worker":
                worker = Worker(
                    backend,
                    make_registry(),
                    [QUEUE],
                    concurrency=cfg.get("concurrency", 2),
                    worker_id=cfg["worker_id"],
                    lease_seconds=cfg.get("lease", 3.0),
                    poll_timeout=0.3,
                    heartbeat_interval=1.0,
                    reap_interval=cfg.get("reap_interval", 1.0),
                    shutdown_grace=5.0,
                )
                holder["worker"] = worker
                if stopping.is_set():
                    worker.stop()
                await worker.run()
            elif role == "reaper":
                reaper = Worker(backend, make_registry(), [QUEUE], worker_id=cfg["worker_id"])
                while not stopping.is_set():
                    try:
                        await reaper.reap()
                    except Exception as exc:  # keep reaping; the child's log says what failed
                        logging.warning("reap failed: %s", exc)
                    await stopping.wait(0.5)
            elif role == "enqueuer":
                tasks = [Task.model_validate(t) for t in cfg["tasks"]]
                gate = asyncio.Semaphore(8)

                async def put(task: Task) -> None:
                    async with gate:
                        await submit_task(backend, task)

                await asyncio.gather(*(put(t) for t in tasks))
            else:
                raise ValueError(f"unknown role {role!r}")

    async def supervised() -> None:
        # SIGTERM is a clean stop (the worker finishes or releases its tasks); SIGKILL is not
        # caught, which is the point of the kill tests.
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop)
        await main()

    asyncio.run(supervised())


@dataclass
class Fleet:
    """Child processes on one bucket, and the files they write (their logs, the exec log)."""

    bucket: str
    prefix: str
    endpoint: str
    directory: Path
    lease: float = 3.0
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def exec_log(self) -> Path:
        return self.directory / "exec.log"

    @property
    def _released(self) -> Path:
        return self.directory / "slow-released"

    def release_slow(self) -> None:
        """Let every ``rel:slow`` call end, now and from now on (they wait for this)."""
        self._released.touch()

    def spawn(self, name: str, role: str, **extra: Any) -> subprocess.Popen[bytes]:
        cfg = {
            "role": role,
            "bucket": self.bucket,
            "prefix": self.prefix,
            "endpoint": self.endpoint,
            "lease": self.lease,
            "worker_id": name,
            **extra,
        }
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([TESTS_DIR, os.environ.get("PYTHONPATH", "")]),
            "REL_CFG": json.dumps(cfg, default=str),
            "REL_EXEC_LOG": str(self.exec_log),
            "REL_RELEASE": str(self._released),
        }
        # The child gets its own copy of the descriptor: ours is closed right after the start.
        log = open(self.directory / f"{name}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-c", "import reliability_fixtures as f; f.child_main()"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.procs[name] = proc
        return proc

    def kill(self, name: str) -> int:
        """SIGKILL one child: no clean-up, no release, its leases simply expire."""
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        return proc.pid

    def stop_all(self, timeout: float = 20.0) -> None:
        """SIGTERM every live child (a clean stop), then SIGKILL what is left after ``timeout``."""
        live = [p for p in self.procs.values() if p.poll() is None]
        for proc in live:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in live:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def logs(self) -> str:
        """The tail of every child's output, for an assertion message."""
        parts = []
        for name in self.procs:
            text = (self.directory / f"{name}.log").read_text(errors="replace")
            parts.append(f"--- {name} ---\n{text[-3000:]}")
        return "\n".join(parts)

    def executions(self) -> list[tuple[str, str, int, int]]:
        """(phase, task id, pid, retry_count) for every call logged by a task function."""
        if not self.exec_log.exists():
            return []
        out = []
        # The last piece is empty, or a line a child is writing right now: not yet a call.
        for line in self.exec_log.read_text().split("\n")[:-1]:
            phase, task_id, pid, retry, _ = line.split()
            out.append((phase, task_id, int(pid), int(retry)))
        return out
