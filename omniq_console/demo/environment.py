"""The demo's moving parts: an emulator, a bucket, and a simulated fleet in its own process.

When the Cloud SDK's Pub/Sub emulator is installed, the demo also starts it and has the GCS
emulator publish a notification of every object change to a topic (``topic``); each console
watching the demo by changes makes a subscription of its own to it (a shared subscription
would split the changes between its clients), see docs/architecture.md, "Layers". Without it
the console lists the bucket on every poll, and ``feed_note`` says so.

``write_exports`` puts the shell lines that point another console, ``snapshot`` or a notebook
at the demo in a file of a fixed name (``EXPORTS_FILE``), readable while the demo's dashboard
covers the terminal, and removed when the demo stops.

The fleet runs in a child process so the console is a plain client of the bucket, exactly as
in production (and so the fleet's work never competes with the console's event loop). Leaving
the ``with`` block stops the fleet and the emulator; the fleet also exits by itself when its
parent disappears, so even a killed console leaves no process behind.

Run as ``python -m omniq_console.demo.environment --endpoint URL --bucket B ...`` it is the
fleet process itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from ..childproc import ChildProcess
from .emulator import Emulator, EmulatorUnavailableError, PubSubEmulator, Service

DEMO_BUCKET = "omniq-demo"
DEMO_PREFIX = "omniq/"
DEMO_TOPIC = "omniq-demo-changes"
FLEET_STOP_GRACE_S = 8.0
"""How long the fleet gets after SIGTERM before its process group is killed."""
EXPORTS_FILE = Path(tempfile.gettempdir()) / f"omniq-demo-{os.getuid()}.env"
"""Where ``write_exports`` puts the demo's export lines (``source`` it in another shell)."""


@dataclass(eq=False, kw_only=True)
class DemoEnvironment(Service):
    """Start an emulator with a bucket and (optionally) a fleet process working on it."""

    seed: int | None = None
    speed: float = 1.0
    fleet: bool = True
    """Start a fleet process on the bucket."""
    bucket: str = DEMO_BUCKET
    prefix: str = DEMO_PREFIX
    feed: bool = True
    """Use the Pub/Sub emulator when it is installed (see ``feed_note``)."""

    def __post_init__(self) -> None:
        self.pubsub: PubSubEmulator | None = None
        self.topic: str | None = None
        """``projects/P/topics/T`` receiving the demo bucket's changes, when the feed runs."""
        self._exports: Path | None = None
        self.feed_note = "changes: listing (the change feed is off)"
        self._saved_pubsub_host: str | None = None
        self.emulator = Emulator(tied_to_parent=True)
        self._fleet_process: ChildProcess | None = None
        self._logdir = tempfile.TemporaryDirectory(prefix="omniq-demo-")

    @property
    def url(self) -> str:
        return self.emulator.url

    @property
    def fleet_log(self) -> Path:
        """Where the fleet process writes its output (the console owns the terminal)."""
        return Path(self._logdir.name) / "fleet.log"

    @property
    def pubsub_host(self) -> str | None:
        """What ``PUBSUB_EMULATOR_HOST`` must say for a client of the demo's feed."""
        return self.pubsub.host_port if self.pubsub is not None else None

    def _start_feed(self) -> None:
        pubsub = PubSubEmulator(project="omniq-demo")
        try:
            pubsub.start(tied_to_parent=True)
            self.topic = pubsub.create_topic(DEMO_TOPIC)
        except EmulatorUnavailableError as exc:
            pubsub.stop()
            self.feed_note = f"changes: listing (no change feed: {exc})"
            return
        self.pubsub = pubsub
        self.emulator = Emulator(tied_to_parent=True, pubsub=pubsub, topic=DEMO_TOPIC)
        # The console's Pub/Sub client finds the emulator here, as with a real deployment's
        # PUBSUB_EMULATOR_HOST; restored on stop.
        self._saved_pubsub_host = os.environ.get("PUBSUB_EMULATOR_HOST")
        os.environ["PUBSUB_EMULATOR_HOST"] = pubsub.host_port
        self.feed_note = (
            f"changes: Pub/Sub ({self.topic} on {pubsub.url}; each console subscribes itself)"
        )

    def write_exports(self, lines: list[str]) -> Path:
        """Write ``lines`` to ``EXPORTS_FILE`` (owner-only); removed by ``stop()``."""
        EXPORTS_FILE.unlink(missing_ok=True)
        fd = os.open(EXPORTS_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write("# omniq-console demo: source this file to point a client at it\n")
            out.writelines(f"{line}\n" for line in lines)
        self._exports = EXPORTS_FILE
        return EXPORTS_FILE

    def start(self) -> Self:
        if self.feed:
            self._start_feed()
        self.emulator.start()
        self.emulator.create_bucket(self.bucket)
        if self.fleet:
            args = [
                sys.executable, "-m", "omniq_console.demo.environment",
                "--endpoint", self.url,
                "--bucket", self.bucket,
                "--prefix", self.prefix,
                "--speed", str(self.speed),
                "--parent", str(os.getpid()),
            ]  # fmt: skip
            if self.seed is not None:
                args += ["--seed", str(self.seed)]
            # Its own session: Ctrl-C reaches the console, which stops the fleet in order.
            self._fleet_process = ChildProcess(
                args,
                name="the demo fleet",
                output=self.fleet_log,
                tied_to_parent=True,
                stop_grace=FLEET_STOP_GRACE_S,
            ).start()
        return self

    def stop(self) -> None:
        fleet, self._fleet_process = self._fleet_process, None
        if fleet is not None:
            fleet.stop()
        self.emulator.stop()
        if self.pubsub is not None:
            self.pubsub.stop()
            self.pubsub = None
            if self._saved_pubsub_host is None:
                os.environ.pop("PUBSUB_EMULATOR_HOST", None)
            else:
                os.environ["PUBSUB_EMULATOR_HOST"] = self._saved_pubsub_host
        self._logdir.cleanup()
        exports, self._exports = self._exports, None
        if exports is not None:
            exports.unlink(missing_ok=True)


FLEET_RETRY_DEADLINE_S = 5.0
FLEET_STOP_S = 10.0
"""How long the fleet gets to stop cleanly once its console is gone."""


async def _run_fleet(args: argparse.Namespace) -> None:
    from ..backend.gcs import GCSBackend
    from ..backend.storeapi import RetryPolicy
    from .fleet import Fleet

    # The emulator is local and dies with the console: a production-length retry deadline
    # (120 s) would keep an orphaned fleet retrying its last writes for two minutes.
    backend = GCSBackend(
        bucket_name=args.bucket,
        prefix=args.prefix,
        endpoint_url=args.endpoint,
        retry=RetryPolicy(base_delay=0.2, max_delay=1.0, deadline=FLEET_RETRY_DEADLINE_S),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def watch_parent() -> None:
        # Orphaned (the console was killed): stop rather than run forever.
        while os.getppid() == args.parent:  # noqa: ASYNC110 - no event says the parent died
            await asyncio.sleep(1)
        stop.set()

    async with backend:
        fleet = Fleet(backend, seed=args.seed, speed=args.speed)
        await fleet.seed_history()
        runner = asyncio.create_task(fleet.run())
        watcher = asyncio.create_task(watch_parent())
        await stop.wait()
        # Sync tasks still in their threads, or storage gone: the demo is over regardless.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(fleet.stop(), FLEET_STOP_S)
        watcher.cancel()
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the simulated OmniQ fleet on a bucket.")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--prefix", default=DEMO_PREFIX)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--parent", type=int, default=os.getppid())
    asyncio.run(_run_fleet(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
