"""The ``omniq-console`` command: the console, ``snapshot``, ``demo`` and ``serve``.

Every expected failure (no bucket, a missing bucket, bad credentials, no network, no emulator
for this platform) is one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import shlex
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .backend import DEFAULT_REFRESH
from .checks import describe_exception
from .stopping import StopSignal

if TYPE_CHECKING:
    from .settings import BackendSettings
    from .tui.app import ConsoleApp

EXIT_USAGE = 2
PROBE_DEADLINE = 0.5
"""Seconds the CLI retries its first request to the bucket before it says why it cannot (not
the 2 minutes a running backend rides out): with the imports, an error shows within 3 s."""
PROBE_REQUEST_TIMEOUT = 2.0
"""The first request's own time limit: a one-object listing, where a running backend waits
30 s for a big page."""
CREDENTIALS_DEADLINE = 2.0
"""Seconds the search for application default credentials may take (on GCE it asks the
metadata server): left to itself, gcsfs retries that server for about 15 s."""
METRICS_PORT = 9464
"""``omniq-console metrics`` listens here by default: the OpenTelemetry Prometheus exporter's
port, free of the usual ones."""
DEMO_REFRESH = 1.0
"""The demo polls every second: its emulator answers in milliseconds, and there is much to see."""

_DESCRIPTION = """\
An operator console for OmniQ task queues stored in Google Cloud Storage.

  omniq-console --bucket my-bucket        open the dashboard on a bucket
  omniq-console snapshot --bucket B       print one snapshot as JSON and exit
  omniq-console demo                      run a local emulator + simulated fleet, open the console
  omniq-console serve --bucket B          serve the console to a browser
  omniq-console metrics --bucket B        serve Prometheus metrics of the bucket

Settings come from flags, then environment variables (OMNIQ_BUCKET, OMNIQ_PREFIX, OMNIQ_PROJECT,
OMNIQ_SUBSCRIPTION, OMNIQ_TOPIC, GOOGLE_APPLICATION_CREDENTIALS, STORAGE_EMULATOR_HOST,
OMNIQ_CONFIG), then the config file (JSON or TOML: bucket_name, prefix, project, token, access,
..., subscription, topic, refresh, actor).
"""


ParserPart = Callable[[argparse.ArgumentParser], None]
"""Adds some flags to a command's parser (:func:`_command_parser`)."""


def _command_parser(
    command: str | None, description: str, *parts: ParserPart, **options: Any
) -> argparse.ArgumentParser:
    """The parser of ``omniq-console [command]``: each of ``parts`` adds its flags, in the
    order the usage line lists them; ``options`` go to ``ArgumentParser``."""
    prog = "omniq-console" if command is None else f"omniq-console {command}"
    parser = argparse.ArgumentParser(prog=prog, description=description, **options)
    for part in parts:
        part(parser)
    return parser


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


def _add_refresh(parser: argparse._ActionsContainer, default: float) -> None:
    parser.add_argument(
        "--refresh",
        type=float,
        metavar="SECONDS",
        help=f"seconds between polls (default {default:g})",
    )


def _refresh_option(default: float) -> ParserPart:
    """``--refresh`` alone (the metrics: no console, so no actions and no actor)."""
    return lambda parser: _add_refresh(parser, default)


def _console_options(refresh_default: float) -> ParserPart:
    """The console's group: ``--refresh`` (default ``refresh_default``), ``--read-only``,
    ``--actor``."""

    def add(parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("console")
        _add_refresh(group, refresh_default)
        group.add_argument(
            "--read-only",
            action="store_true",
            help="never write to the bucket: no actions are offered",
        )
        group.add_argument(
            "--actor",
            metavar="NAME",
            help="who the audit log names for actions (default user@host)",
        )

    return add


def _feed_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--subscription",
        metavar="projects/P/subscriptions/S",
        help="Pub/Sub subscription to the bucket's change notifications (env "
        "OMNIQ_SUBSCRIPTION): after one listing, follow changes instead of re-listing",
    )
    parser.add_argument(
        "--topic",
        metavar="projects/P/topics/T",
        help="Pub/Sub topic of the bucket's notifications (env OMNIQ_TOPIC): as --subscription, "
        "through a subscription of this console's own, made at start and deleted on exit",
    )


_WATCHING = (_connection_options, _console_options(DEFAULT_REFRESH), _feed_option)
"""What the console and ``serve`` (which starts consoles) take: the bucket, the console's
options, the change feed."""


def _listen_options(port: int) -> ParserPart:
    """``--host`` (default 127.0.0.1) and ``--port`` (default ``port``): a server's address."""

    def add(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
        )
        parser.add_argument(
            "--port", type=int, default=port, help=f"port to listen on (default {port})"
        )

    return add


def _version_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action="version", version=_version())


def _parser() -> argparse.ArgumentParser:
    return _command_parser(
        None,
        _DESCRIPTION,
        _version_option,
        *_WATCHING,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _snapshot_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--include-tasks",
        action="store_true",
        help="also list every task (large buckets: large output)",
    )
    parser.add_argument("--compact", action="store_true", help="one line of JSON, no indentation")


def _snapshot_parser() -> argparse.ArgumentParser:
    return _command_parser(
        "snapshot",
        "Take one snapshot of the bucket's four stores and print it as JSON.",
        _connection_options,
        _snapshot_options,
    )


def _demo_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, help="make the fleet's workload reproducible")
    parser.add_argument(
        "--speed", type=float, default=1.0, help="fleet workload multiplier (default 1.0)"
    )
    parser.add_argument(
        "--no-console",
        action="store_true",
        help="run the emulator and the fleet without the console, until Ctrl+C",
    )


def _demo_parser() -> argparse.ArgumentParser:
    return _command_parser(
        "demo",
        "Start a local GCS emulator with a simulated OmniQ fleet and open the console on it; "
        "the emulator's address and the variables that point other commands at it "
        "(omniq-console snapshot, a notebook) are printed first. Quitting the console stops "
        "everything.",
        _demo_options,
        _console_options(DEMO_REFRESH),
    )


def _serve_options(parser: argparse.ArgumentParser) -> None:
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
    parser.add_argument(
        "--metrics",
        action="store_true",
        help="also answer GET /metrics for Prometheus (the server's token as a bearer token; "
        "this process then polls the bucket too, read-only)",
    )


def _serve_parser() -> argparse.ArgumentParser:
    return _command_parser(
        "serve",
        "Serve the console to web browsers (each browser tab runs its own console).",
        _listen_options(8000),
        _serve_options,
        *_WATCHING,
    )


def _metrics_parser() -> argparse.ArgumentParser:
    parser = _command_parser(
        "metrics",
        "Serve the bucket's figures (queues, workers, schedules, the monitoring's own "
        "requests, storage) for Prometheus at http://HOST:PORT/metrics. One monitor polls the "
        "bucket read-only at --refresh; scrapes read its latest snapshot and send nothing to "
        "the bucket.",
        _listen_options(METRICS_PORT),
        _connection_options,
        _refresh_option(DEFAULT_REFRESH),
        _feed_option,
    )
    parser.set_defaults(read_only=True)
    return parser


def _version() -> str:
    from . import __version__

    return f"omniq-console {__version__}"


# Flags that mean the same to every command, and that serve passes on to each console.
_SHARED_FLAGS = (
    "prefix", "project", "token", "config", "refresh", "actor", "subscription", "topic",
)  # fmt: skip


def _settings(args: argparse.Namespace) -> BackendSettings:
    """The flags given, over the environment, over the config file; application default
    credentials searched for once for all of a command's stores."""
    from .settings import load_settings

    flags = {name: getattr(args, name, None) for name in _SHARED_FLAGS}
    settings = load_settings(
        bucket_name=args.bucket, read_only=getattr(args, "read_only", False), **flags
    )
    return _with_default_credentials(settings)


async def probe(settings: BackendSettings) -> None:
    """Fail within about :data:`PROBE_DEADLINE` seconds, with the store's one-line reason, when
    the bucket cannot be used (missing, refused credentials, endpoint down or unresolvable)."""
    await _find_default_credentials(settings)
    from .backend.gcs import GCSBackend
    from .backend.storeapi import RetryPolicy

    retry = RetryPolicy(
        base_delay=0.1,
        max_delay=0.5,
        deadline=PROBE_DEADLINE,
        request_timeout=PROBE_REQUEST_TIMEOUT,
    )
    async with GCSBackend.from_settings(settings, retry=retry):
        pass


def _with_default_credentials(settings: BackendSettings) -> BackendSettings:
    """``settings`` whose stores share one search for application default credentials
    (``credentials.ApplicationDefaultCredentials``) when no key file and no emulator is
    given; else ``settings`` as they are."""
    if settings.token is not None or settings.endpoint_url is not None:
        return settings
    from .backend.credentials import ApplicationDefaultCredentials

    return settings.model_copy(update={"token": ApplicationDefaultCredentials(settings.access)})


async def _find_default_credentials(settings: BackendSettings) -> None:
    """Fail within :data:`CREDENTIALS_DEADLINE` when the settings ask for application default
    credentials and none can be found: gcsfs would try the GCE metadata server for about
    15 s, then go on anonymously and fail on the first request. What is found is kept in the
    token, for the stores that open next."""
    from .backend.credentials import ApplicationDefaultCredentials, NoCredentialsError

    token = settings.token
    if not isinstance(token, ApplicationDefaultCredentials):
        return
    try:
        await token.find(CREDENTIALS_DEADLINE)
        return
    except NoCredentialsError:
        why = "none were found"
    except TimeoutError:
        why = f"none were found within {CREDENTIALS_DEADLINE:g} s"
    except Exception:
        return  # anything else is the store's to report, in its own words
    from .backend.errors import AuthenticationError

    raise AuthenticationError(
        f"no GCS credentials ({why}): give a key file (--token or "
        "GOOGLE_APPLICATION_CREDENTIALS), run 'gcloud auth application-default login', or "
        "point STORAGE_EMULATOR_HOST at an emulator"
    )


GC_THRESHOLDS = (20_000, 5, 10)
"""The console's collector thresholds (CPython's are 700, 10, 10).

A big bucket's poll allocates ~150,000 objects; with 100,000 task rows alive, the default
first threshold runs full collections several times a poll, ~165 ms of stalled UI each
(measured): 20,000 makes young collections rarer. The last one stays at CPython's 10: a full
collection still comes every 60 young ones, and CPython itself skips it until a quarter of
the long-lived objects are new, so its cost stays proportional to what was allocated. At
1,000 (as it was) a full collection came once in ~6,000 young ones, hours apart, and every
cycle of objects that outlived two young collections (Textual messages, tasks, poll
results) was never freed: the console's memory grew for as long as it ran. The app also
freezes what exists once the first snapshot is shown (``freeze_long_lived_objects``)."""


def tune_gc() -> None:
    """Set ``GC_THRESHOLDS`` for this process (the console owns it while it runs)."""
    gc.set_threshold(*GC_THRESHOLDS)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection until :func:`run_console` drew its first frame (it turns
    the collector back on then), nor after the block however it ends.

    Why: reading the settings, importing the console and laying out its first frame allocate
    hundreds of thousands of objects that all live on, and no cycle worth a pass; the passes
    they trigger were ~3% of the instructions to the first frame (callgrind: 83 of 2,600
    million). Reference counting still frees what is dropped meanwhile."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def run_console(settings: BackendSettings, *, quit_warning: str | None = None) -> None:
    """Draw the dashboard at once, then load and check the backend (quickly), then poll until
    quit. A bucket that cannot be used ends the dashboard and raises the store's error (the
    caller prints its one line). ``quit_warning``: ``q`` asks first, saying what quitting
    stops."""
    from .monitor.thread import monitor_thread
    from .settings import feed_options, make_backend
    from .tui.app import build_app

    tune_gc()
    # Polls run on a thread of their own with a backend of their own (an HTTP session belongs
    # to its loop), so keys never wait on a poll. It starts once the bucket answered, and
    # loads the poller there.
    monitor = monitor_thread(
        lambda: make_backend(settings),
        autostart=False,
        interval=settings.refresh,
        **feed_options(settings),
    )
    app = build_app(
        monitor,
        bucket=settings.bucket_name,
        prefix=settings.prefix,
        read_only=settings.read_only,
        quit_warning=quit_warning,
    )
    shown = asyncio.create_task(app.run_async())
    try:
        # The backend (gcsfs, aiohttp, google-auth) and the operator are loaded once the first
        # frame is on screen: about half of the start-up's imports, off the way to it.
        await _first_frame(app, shown)
        gc.enable()  # paused for the start (collector_paused), the frame is drawn
        # The operator's backend, on this loop (the console's: actions run here).
        backend = make_backend(settings)
        if not backend.read_only:
            from .runtime.operator import Operator

            app.connect_operator(Operator(backend, actor=settings.actor))
        await probe(settings)
        await backend.aopen()
    except BaseException:
        app.exit(return_code=EXIT_USAGE)
        await shown
        raise
    try:
        monitor.start()
        await shown
    finally:
        await monitor.aclose()
        await backend.aclose()


async def _first_frame(app: ConsoleApp, shown: asyncio.Task[None]) -> None:
    """Return once ``app`` drew its first frame, or ended (``shown``) without one."""
    drawn = asyncio.create_task(app.first_frame())
    try:
        await asyncio.wait({drawn, shown}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        drawn.cancel()


async def _snapshot(settings: BackendSettings, include_tasks: bool) -> dict[str, Any]:
    await probe(settings)
    # Imported once the bucket answered: a failing command does not load the monitor.
    from .monitor.monitor import take_snapshot
    from .settings import make_backend

    async with make_backend(settings) as backend:
        snapshot = await take_snapshot(backend, include_tasks=include_tasks)
    data: dict[str, Any] = snapshot.to_json_dict(include_tasks=include_tasks)
    return data


def demo_exports(
    *,
    endpoint: str,
    bucket: str,
    prefix: str,
    topic: str | None = None,
    pubsub_host: str | None = None,
) -> list[str]:
    """The shell lines that point ``omniq-console snapshot`` (or a notebook) at a demo. The
    feed is given as its topic: each console makes a subscription of its own."""
    values = {
        "STORAGE_EMULATOR_HOST": endpoint,
        "OMNIQ_BUCKET": bucket,
        "OMNIQ_PREFIX": prefix,
        "OMNIQ_TOPIC": topic,
        "PUBSUB_EMULATOR_HOST": pubsub_host,
    }
    return [f"export {name}={shlex.quote(value)}" for name, value in values.items() if value]


def _cmd_console(argv: Sequence[str]) -> int:
    args = _parser().parse_args(argv)
    with collector_paused():
        asyncio.run(run_console(_settings(args)))
    return 0


def _cmd_snapshot(argv: Sequence[str]) -> int:
    args = _snapshot_parser().parse_args(argv)
    data = asyncio.run(_snapshot(_settings(args), args.include_tasks))
    json.dump(data, sys.stdout, indent=None if args.compact else 2)
    sys.stdout.write("\n")
    sys.stdout.flush()  # here, where a closed pipe is handled, not at interpreter exit
    return 0


def _cmd_metrics(argv: Sequence[str]) -> int:
    args = _metrics_parser().parse_args(argv)
    asyncio.run(_serve_metrics(_settings(args), args.host, args.port))
    return 0


async def _serve_metrics(settings: BackendSettings, host: str, port: int) -> None:
    from .metrics import run_metrics

    await probe(settings)
    server = asyncio.create_task(
        run_metrics(settings, host=host, port=port, announce=lambda line: print(line, flush=True))
    )
    interrupted = asyncio.create_task(_until_interrupted())
    await asyncio.wait({server, interrupted}, return_when=asyncio.FIRST_COMPLETED)
    server.cancel()
    interrupted.cancel()
    error, _ = await asyncio.gather(server, interrupted, return_exceptions=True)
    if isinstance(error, OSError):
        # aiohttp's message repeats the address; the system's words say it once.
        reason = os.strerror(error.errno).lower() if error.errno else str(error)
        raise ValueError(f"cannot listen on {host}:{port}: {reason}") from None
    if isinstance(error, Exception):
        raise error


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
            topic=demo.topic,
            pubsub_host=demo.pubsub_host,
        )
        print(f"demo: GCS emulator at {demo.url}, bucket {demo.bucket}, prefix {demo.prefix}")
        print(f"demo: {demo.feed_note}")
        print("demo: to point omniq-console snapshot (or a notebook) at it, run:")
        print("\n".join(f"  {line}" for line in exports))
        sourced = demo.write_exports(exports)
        print(f"demo: or, while it runs, in another shell: . {sourced}", flush=True)
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
            "topic": demo.topic,
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
        if args.metrics:
            serve_options["metrics"] = settings.model_copy(update={"access": "read_only"})
        serve_console(["--bucket", settings.bucket_name, *console_args], **serve_options)
        return 0
    from .backend.config import BackendSettings
    from .demo.environment import DemoEnvironment

    with DemoEnvironment(seed=args.seed) as demo:
        if args.metrics:
            serve_options["metrics"] = BackendSettings.given(
                {
                    "bucket_name": demo.bucket,
                    "prefix": demo.prefix,
                    "endpoint_url": demo.url,
                    "access": "read_only",
                }
            )
        serve_console(
            ["--bucket", demo.bucket, "--prefix", demo.prefix, *console_args],
            env={"STORAGE_EMULATOR_HOST": demo.url},
            **serve_options,
        )
    return 0


_COMMANDS = {
    "snapshot": _cmd_snapshot,
    "demo": _cmd_demo,
    "serve": _cmd_serve,
    "metrics": _cmd_metrics,
}


def _expected(exc: Exception) -> bool:
    """Whether ``exc`` is a failure the user can fix (one line, exit 2), not a bug."""
    # Imported here, once something failed: --help and a good run need neither module.
    from .backend.errors import StorageError
    from .demo.emulator import EmulatorUnavailableError

    # ValueError: SettingsError, and the checks of ids and arguments.
    return isinstance(exc, StorageError | EmulatorUnavailableError | ImportError | ValueError)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``omniq-console`` and ``python -m omniq_console``."""
    args = list(sys.argv[1:] if argv is None else argv)
    command = _COMMANDS.get(args[0], _cmd_console) if args else _cmd_console
    if command is not _cmd_console:
        args = args[1:]
    try:
        code = command(args)
    except BrokenPipeError:
        # The reader went away (`omniq-console snapshot | head`): nothing more to say to it.
        # Point stdout at /dev/null so the interpreter's last flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 1
    except Exception as exc:
        if not _expected(exc):
            raise
        print(f"omniq-console: error: {describe_exception(exc, limit=1000)}", file=sys.stderr)
        code = EXIT_USAGE
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
