"""The ``omniq-console`` command: the console, ``snapshot``, ``demo`` and ``serve``.

Every expected failure (no bucket, a missing bucket, bad credentials, no network, no emulator
for this platform) is one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import shlex
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .backend.config import DEFAULT_REFRESH
from .checks import describe_exception
from .stopping import StopSignal

if TYPE_CHECKING:
    from .settings import BackendSettings

EXIT_USAGE = 2
PROBE_DEADLINE = 3.0
"""Seconds the CLI tries to reach the bucket before it says why it cannot (not the 2 minutes a
running backend rides out)."""
DEMO_REFRESH = 1.0
"""The demo polls every second: its emulator answers in milliseconds, and there is much to see."""

_DESCRIPTION = """\
An operator console for OmniQ task queues stored in Google Cloud Storage.

  omniq-console --bucket my-bucket        open the dashboard on a bucket
  omniq-console snapshot --bucket B       print one snapshot as JSON and exit
  omniq-console demo                      run a local emulator + simulated fleet, open the console
  omniq-console serve --bucket B          serve the console to a browser

Settings come from flags, then environment variables (OMNIQ_BUCKET, OMNIQ_PREFIX, OMNIQ_PROJECT,
OMNIQ_SUBSCRIPTION, GOOGLE_APPLICATION_CREDENTIALS, STORAGE_EMULATOR_HOST, OMNIQ_CONFIG), then the
config file (JSON or TOML: bucket_name, prefix, project, token, access, ..., subscription,
refresh, actor).
"""


def _connection_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("bucket")
    group.add_argument("--bucket", metavar="NAME", help="GCS bucket (env OMNIQ_BUCKET)")
    group.add_argument(
        "--prefix",
        metavar="P",
        help="key prefix inside the bucket (env OMNIQ_PREFIX; default omniq/)",
    )
    group.add_argument("--project", metavar="ID", help="GCP project id (env OMNIQ_PROJECT)")
    group.add_argument(
        "--token",
        metavar="FILE",
        help="service-account JSON file (env GOOGLE_APPLICATION_CREDENTIALS; default: "
        "application default credentials, or none with STORAGE_EMULATOR_HOST)",
    )
    group.add_argument(
        "--config",
        metavar="FILE",
        help="JSON or TOML file in create_gcs_backend_from_config's shape (env OMNIQ_CONFIG)",
    )


def _console_options(parser: argparse.ArgumentParser, *, refresh_default: float) -> None:
    group = parser.add_argument_group("console")
    group.add_argument(
        "--refresh",
        type=float,
        metavar="SECONDS",
        help=f"seconds between polls (default {refresh_default:g})",
    )
    group.add_argument(
        "--read-only",
        action="store_true",
        help="never write to the bucket: no actions are offered",
    )
    group.add_argument(
        "--actor", metavar="NAME", help="who the audit log names for actions (default user@host)"
    )


def _feed_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--subscription",
        metavar="projects/P/subscriptions/S",
        help="Pub/Sub subscription to the bucket's change notifications (env "
        "OMNIQ_SUBSCRIPTION): after one listing, follow changes instead of re-listing",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="omniq-console",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    _connection_options(parser)
    _console_options(parser, refresh_default=DEFAULT_REFRESH)
    _feed_option(parser)
    return parser


def _snapshot_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="omniq-console snapshot",
        description="Take one snapshot of the bucket's four stores and print it as JSON.",
    )
    _connection_options(parser)
    parser.add_argument(
        "--include-tasks",
        action="store_true",
        help="also list every task (large buckets: large output)",
    )
    parser.add_argument("--compact", action="store_true", help="one line of JSON, no indentation")
    return parser


def _demo_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="omniq-console demo",
        description="Start a local GCS emulator with a simulated OmniQ fleet and open the console "
        "on it; the emulator's address and the variables that point other commands at it "
        "(omniq-console snapshot, a notebook) are printed first. Quitting the console stops "
        "everything.",
    )
    parser.add_argument("--seed", type=int, help="make the fleet's workload reproducible")
    parser.add_argument(
        "--speed", type=float, default=1.0, help="fleet workload multiplier (default 1.0)"
    )
    parser.add_argument(
        "--no-console",
        action="store_true",
        help="run the emulator and the fleet without the console, until Ctrl+C",
    )
    _console_options(parser, refresh_default=DEMO_REFRESH)
    return parser


def _serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="omniq-console serve",
        description="Serve the console to web browsers (each browser tab runs its own console).",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    parser.add_argument(
        "--demo", action="store_true", help="serve the demo (emulator + simulated fleet)"
    )
    parser.add_argument("--seed", type=int, help="with --demo: reproducible workload")
    parser.add_argument(
        "--public-url",
        metavar="URL",
        help="address browsers use to reach the server (default http://HOST:PORT); "
        "set it with --host 0.0.0.0 or behind a proxy",
    )
    _connection_options(parser)
    _console_options(parser, refresh_default=DEFAULT_REFRESH)
    _feed_option(parser)
    return parser


def _version() -> str:
    from . import __version__

    return f"omniq-console {__version__}"


# Flags that mean the same to every command, and that serve passes on to each console.
_SHARED_FLAGS = ("prefix", "project", "token", "config", "refresh", "actor", "subscription")


def _settings(args: argparse.Namespace) -> BackendSettings:
    """The flags given, over the environment, over the config file."""
    from .settings import load_settings

    flags = {name: getattr(args, name, None) for name in _SHARED_FLAGS}
    return load_settings(
        bucket_name=args.bucket, read_only=getattr(args, "read_only", False), **flags
    )


async def probe(settings: BackendSettings) -> None:
    """Fail within about :data:`PROBE_DEADLINE` seconds, with the store's one-line reason, when
    the bucket cannot be used (missing, refused credentials, endpoint down or unresolvable)."""
    from .backend.gcs import GCSBackend
    from .backend.objectstore import RetryPolicy

    retry = RetryPolicy(base_delay=0.25, max_delay=1.0, deadline=PROBE_DEADLINE)
    async with GCSBackend.from_settings(settings, retry=retry):
        pass


async def run_console(settings: BackendSettings, *, quit_warning: str | None = None) -> None:
    """Check the bucket (quickly), then open the backend and run the dashboard until quit
    (``quit_warning``: ``q`` asks first, saying what quitting stops)."""
    from .monitor.monitor import Monitor
    from .runtime.operator import Operator
    from .settings import make_backend
    from .tui.app import build_app

    await probe(settings)
    async with make_backend(settings) as backend:
        # A big bucket's poll allocates ~150,000 objects; with 100,000 task rows alive, CPython's
        # default thresholds run full collections several times a poll, ~165 ms of stalled UI
        # each (measured). The app also freezes what exists once the first snapshot is shown.
        gc.set_threshold(20_000, 5, 1000)
        monitor = Monitor(backend, interval=settings.refresh, subscription=settings.subscription)
        operator = None if backend.read_only else Operator(backend, actor=settings.actor)
        app = build_app(
            monitor,
            operator=operator,
            bucket=settings.bucket_name,
            prefix=settings.prefix,
            read_only=backend.read_only,
            quit_warning=quit_warning,
        )
        await app.run_async()


async def _snapshot(settings: BackendSettings, include_tasks: bool) -> dict[str, Any]:
    from .monitor.monitor import take_snapshot
    from .settings import make_backend

    await probe(settings)
    async with make_backend(settings) as backend:
        snapshot = await take_snapshot(backend, include_tasks=include_tasks)
    data: dict[str, Any] = snapshot.to_json_dict(include_tasks=include_tasks)
    return data


def demo_exports(
    *,
    endpoint: str,
    bucket: str,
    prefix: str,
    subscription: str | None = None,
    pubsub_host: str | None = None,
) -> list[str]:
    """The shell lines that point ``omniq-console snapshot`` (or a notebook) at a demo."""
    values = {
        "STORAGE_EMULATOR_HOST": endpoint,
        "OMNIQ_BUCKET": bucket,
        "OMNIQ_PREFIX": prefix,
        "OMNIQ_SUBSCRIPTION": subscription,
        "PUBSUB_EMULATOR_HOST": pubsub_host,
    }
    return [f"export {name}={shlex.quote(value)}" for name, value in values.items() if value]


def _cmd_console(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    asyncio.run(run_console(_settings(args)))
    return 0


def _cmd_snapshot(argv: Sequence[str]) -> int:
    args = _snapshot_parser().parse_args(argv)
    data = asyncio.run(_snapshot(_settings(args), args.include_tasks))
    json.dump(data, sys.stdout, indent=None if args.compact else 2)
    sys.stdout.write("\n")
    return 0


DEMO_QUIT_WARNING = "Quitting stops the demo: its fleet, its emulator and the demo bucket."


def _cmd_demo(argv: Sequence[str]) -> int:
    from .backend.config import BackendSettings
    from .demo.environment import DemoEnvironment

    args = _demo_parser().parse_args(argv)
    with DemoEnvironment(seed=args.seed, speed=args.speed) as demo:
        exports = demo_exports(
            endpoint=demo.url,
            bucket=demo.bucket,
            prefix=demo.prefix,
            subscription=demo.subscription,
            pubsub_host=demo.pubsub_host,
        )
        print(f"demo: GCS emulator at {demo.url}, bucket {demo.bucket}, prefix {demo.prefix}")
        print(f"demo: {demo.feed_note}")
        print("demo: to point omniq-console snapshot (or a notebook) at it, run:")
        print("\n".join(f"  {line}" for line in exports), flush=True)
        if args.no_console:
            print("demo: running until Ctrl+C", flush=True)
            asyncio.run(_until_interrupted())
            return 0
        options = {
            "bucket_name": demo.bucket,
            "prefix": demo.prefix,
            "endpoint_url": demo.url,
            "access": "read_only" if args.read_only else "read_write",
            "refresh": DEMO_REFRESH if args.refresh is None else args.refresh,
            "actor": args.actor,
            "subscription": demo.subscription,
        }
        settings = BackendSettings.given({k: v for k, v in options.items() if v is not None})
        asyncio.run(run_console(settings, quit_warning=DEMO_QUIT_WARNING))
    return 0


async def _until_interrupted() -> None:
    """Return once SIGINT or SIGTERM arrives, so the caller stops what it started in order."""
    stop = StopSignal()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def _cmd_serve(argv: Sequence[str]) -> int:
    from .web import serve_console

    args = _serve_parser().parse_args(argv)
    console_args: list[str] = []
    for flag in _SHARED_FLAGS:
        value = getattr(args, flag)
        if value is not None:
            console_args += [f"--{flag}", str(value)]
    if args.read_only:
        console_args.append("--read-only")
    serve_options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "public_url": args.public_url,
    }
    if not args.demo:
        settings = _settings(args)
        # Each browser tab starts its own console; a bad bucket or credentials would show only
        # as a blank page there. Check once, here, and fail with a clear message instead.
        asyncio.run(probe(settings))
        serve_console(["--bucket", settings.bucket_name, *console_args], **serve_options)
        return 0
    from .demo.environment import DemoEnvironment

    with DemoEnvironment(seed=args.seed) as demo:
        serve_console(
            ["--bucket", demo.bucket, "--prefix", demo.prefix, *console_args],
            env={"STORAGE_EMULATOR_HOST": demo.url},
            **serve_options,
        )
    return 0


_COMMANDS = {"snapshot": _cmd_snapshot, "demo": _cmd_demo, "serve": _cmd_serve}


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``omniq-console`` and ``python -m omniq_console``."""
    from .backend.errors import StorageError
    from .demo.emulator import EmulatorUnavailableError

    args = list(sys.argv[1:] if argv is None else argv)
    command = _COMMANDS.get(args[0], _cmd_console) if args else _cmd_console
    if command is not _cmd_console:
        args = args[1:]
    try:
        code = command(args)
    except (StorageError, EmulatorUnavailableError, ImportError, ValueError) as exc:
        # ValueError: SettingsError, and the checks of ids and arguments.
        print(f"omniq-console: error: {describe_exception(exc, limit=1000)}", file=sys.stderr)
        code = EXIT_USAGE
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
