"""The installed command: help, clear one-line errors with exit code 2, and the JSON snapshot."""

from __future__ import annotations

import gc
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from terminal import run_in_terminal

from omniq_console.cli import PROBE_DEADLINE, PROBE_REQUEST_TIMEOUT, demo_exports, main
from omniq_console.demo.emulator import Emulator, free_port


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "omniq_console", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("omniq-console: error: ")
    for word in words:
        assert word in lines[0]


def test_help_explains_every_option() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for option in (
        *("--bucket", "--prefix", "--project", "--token", "--config", "--refresh"),
        *("--read-only", "--subscription", "OMNIQ_SUBSCRIPTION"),
    ):
        assert option in result.stdout
    for command in ("snapshot", "demo", "serve", "metrics"):
        assert command in result.stdout
    for command in ("snapshot", "demo", "serve", "metrics"):
        sub = run_cli(command, "--help")
        assert sub.returncode == 0 and f"omniq-console {command}" in sub.stdout


def test_help_states_each_commands_real_refresh_default() -> None:
    assert "seconds between polls (default 2)" in run_cli("--help").stdout
    demo = run_cli("demo", "--help").stdout
    assert "seconds between polls (default 1)" in demo
    assert "--no-console" in demo


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "omniq-console"
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "omniq-console" in result.stdout


def test_no_bucket_is_a_clear_error() -> None:
    env = {"OMNIQ_BUCKET": "", "OMNIQ_CONFIG": ""}
    assert_one_line_error(run_cli("snapshot", env=env), "--bucket")
    assert_one_line_error(run_cli(env=env), "--bucket")


def test_a_console_that_cannot_start_leaves_the_collector_on(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The console pauses the cyclic garbage collector until its first frame: a caller in the
    # same process (a test, a notebook) has it back however the start ends.
    monkeypatch.setenv("OMNIQ_BUCKET", "")
    monkeypatch.setenv("OMNIQ_CONFIG", "")
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 2
    assert "--bucket" in capsys.readouterr().err
    assert gc.isenabled()


def test_bad_credentials_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "key.json"
    bad.write_text('{"type": "service_account", "private_key": "not a key"}')
    result = run_cli(
        *("snapshot", "--bucket", "some-bucket", "--token", str(bad)),
        env={"STORAGE_EMULATOR_HOST": ""},
    )
    assert_one_line_error(result, "credentials")
    assert "not a key" not in result.stderr


def test_missing_bucket_on_the_server(gcs_env: Emulator) -> None:
    result = run_cli("snapshot", "--bucket", "no-such-bucket")
    assert_one_line_error(result, "no-such-bucket", "does not exist")


@pytest.mark.parametrize(
    ("endpoint", "words"),
    [
        (f"http://127.0.0.1:{free_port()}", ("did not answer", "connection refused")),
        # Refused by the host-name codec before any request: no DNS lookup leaves the machine.
        ("http://bad..host:1", ()),
    ],
    ids=["closed-port", "bad-host"],  # the port differs per xdist worker: ids must not
)
def test_an_unreachable_endpoint_fails_at_once(endpoint: str, words: tuple[str, ...]) -> None:
    # What the command says about its own retries, not the wall clock of a loaded machine
    # (start-up included): benchmarks/errors.py times it.
    result = run_cli("snapshot", "--bucket", "any-bucket", env={"STORAGE_EMULATOR_HOST": endpoint})
    assert_one_line_error(result, *words)
    assert "ssl:default" not in result.stderr
    retried = re.search(r"after (\d+) attempts in ([\d.]+) s", result.stderr)
    if words:
        assert retried is not None, result.stderr
        # The probe's policy: no retry starts past its deadline; the last attempt may take
        # up to its request time-out.
        assert float(retried.group(2)) <= PROBE_DEADLINE + PROBE_REQUEST_TIMEOUT
    else:
        assert retried is None, "a host name that cannot exist is not retried"


def test_no_credentials_is_a_clear_error_at_once(tmp_path: Path) -> None:
    env = {
        "STORAGE_EMULATOR_HOST": "",
        "GOOGLE_APPLICATION_CREDENTIALS": "",
        "HOME": str(tmp_path),
        "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"),
        # Not on GCE (google-auth's switch): the metadata server is not asked.
        "NO_GCE_CHECK": "true",
    }
    result = run_cli("snapshot", "--bucket", "some-bucket", env=env)
    assert_one_line_error(result, "no GCS credentials", "GOOGLE_APPLICATION_CREDENTIALS")


def test_snapshot_into_a_closed_pipe_exits_quietly(bucket: str) -> None:
    # `omniq-console snapshot | head`: the reader leaves before the JSON is written.
    proc = subprocess.Popen(
        [sys.executable, "-m", "omniq_console", "snapshot", "--bucket", bucket],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    stderr = proc.stderr.read()
    assert proc.wait(timeout=60) == 1
    assert stderr == ""


def test_snapshot_prints_the_bucket_as_json(bucket: str) -> None:
    from omniq_console.backend.gcs import GCSBackend
    from omniq_console.models import EventType, Schedule, Task, TaskEvent

    with GCSBackend(bucket_name=bucket) as backend:
        for i in range(3):
            task = Task(func="app:send", queue_name="emails", priority=i)
            backend.task_storage.enqueue_sync(task)
        hourly = Schedule(
            schedule_type="cron", func="app:report", cron_expression="0 * * * *", id="hourly"
        )
        backend.schedule_storage.save_schedule_sync(hourly)
        backend.event_storage.log_event_sync(
            TaskEvent(
                event_type=EventType.ENQUEUED, task_id="t1", queue_name="emails", message="hi"
            )
        )
    result = run_cli("snapshot", "--bucket", bucket)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    for key in (
        *("taken_at", "stale", "queues", "tasks", "results", "schedules", "events"),
        *("unreadable", "requests"),
    ):
        assert key in data
    assert data["stale"] is False
    (emails,) = [q for q in data["queues"] if q["name"] == "emails"]
    assert (emails["pending"], emails["delayed"], emails["running"]) == (3, 0, 0)
    assert emails["oldest_pending_age_s"] >= 0
    assert data["tasks"]["pending"] == 3
    (hourly,) = data["schedules"]
    assert {k: hourly[k] for k in ("id", "func", "schedule_type", "status", "run_count")} == {
        "id": "hourly",
        "func": "app:report",
        "schedule_type": "cron",
        "status": "active",
        "run_count": 0,
    }
    assert hourly["next_run"] and hourly["last_run"] is None
    (event,) = data["events"]
    fields = ("event_type", "task_id", "queue_name", "message")
    assert tuple(event[k] for k in fields) == ("enqueued", "t1", "emails", "hi")
    assert data["unreadable"] == []
    assert data["requests"]["total"] > 0


def test_snapshot_reports_a_bad_object_without_a_traceback(bucket: str) -> None:
    from omniq_console.backend.gcs import GCSBackend
    from omniq_console.models import Task

    with GCSBackend(bucket_name=bucket) as backend:
        backend.task_storage.enqueue_sync(Task(func="app:ok", queue_name="emails"))
        broken = backend.store.write(f"{backend.layout.schedules}broken.json", b"{not json")
        backend.bridge.run(broken)
    result = run_cli("snapshot", "--bucket", bucket)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    data = json.loads(result.stdout)
    assert any("broken" in json.dumps(entry) for entry in data["unreadable"]), data["unreadable"]
    assert data["tasks"]["pending"] == 1


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["snapshot", "--bucket", "b-bucket", "--prefix", "a/../b"], ("prefix segment",)),
        (["--bucket", "b-bucket", "--refresh", "-1"], ("refresh must be more than 0",)),
        (["--bucket", "b-bucket", "--subscription", "feed"], ("projects/PROJECT/subscriptions",)),
        (["snapshot", "--bucket", "Bad!Name"], ("not a valid GCS bucket name",)),
    ],
)
def test_bad_values_are_clear_errors(
    gcs_env: Emulator, args: list[str], words: tuple[str, ...]
) -> None:
    assert_one_line_error(run_cli(*args), *words)


def test_bad_config_file_is_one_line(tmp_path: Path, gcs_env: Emulator) -> None:
    config = tmp_path / "omniq.toml"
    config.write_text('bucket_name = "b-bucket"\nbukcet = "typo"\n')
    result = run_cli("snapshot", "--config", str(config))
    assert_one_line_error(result, "unknown option(s): bukcet")


def test_demo_exports_name_every_variable_a_client_needs() -> None:
    plain = demo_exports(endpoint="http://127.0.0.1:4443", bucket="omniq-demo", prefix="omniq/")
    assert plain == [
        "export STORAGE_EMULATOR_HOST=http://127.0.0.1:4443",
        "export OMNIQ_BUCKET=omniq-demo",
        "export OMNIQ_PREFIX=omniq/",
    ]
    fed = demo_exports(
        endpoint="http://127.0.0.1:4443",
        bucket="omniq-demo",
        prefix="omniq/",
        topic="projects/demo/topics/changes",
        pubsub_host="127.0.0.1:8085",
    )
    assert fed[3:] == [
        "export OMNIQ_TOPIC=projects/demo/topics/changes",
        "export PUBSUB_EMULATOR_HOST=127.0.0.1:8085",
    ]


def test_serve_checks_the_bucket_before_serving(gcs_env: Emulator) -> None:
    result = run_cli("serve", "--bucket", "no-such-bucket", "--port", str(free_port()))
    assert_one_line_error(result, "no-such-bucket", "does not exist")


def test_the_console_draws_before_the_bucket_answers_and_exits_with_its_error() -> None:
    # The first frame does not wait for gcsfs, credentials and the first request; a bucket
    # that cannot be used then ends the dashboard with the store's one line and exit 2.
    screen, code = run_in_terminal(
        [sys.executable, "-m", "omniq_console", "--bucket", "any-bucket", "--read-only"]
    )
    text = re.sub(rb"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b[@-_]", b"", screen).decode(
        "utf-8", "replace"
    )
    assert code == 2, text[-2000:]
    assert "Overview" in text, "the dashboard was not drawn while the bucket was checked"
    # After the dashboard leaves the alternate screen: the one line, and nothing after it.
    said = text[text.rindex("omniq-console: error: ") :].strip()
    assert said.count("\n") == 0 and said.endswith("connection refused"), said


@pytest.mark.parametrize(
    ("module", "not_loaded"),
    [
        # --help and a bad setting: argparse and the settings' words only.
        ("omniq_console.cli", ("pydantic", "gcsfs", "aiohttp", "textual", "prometheus_client")),
        # Listing mode: gcsfs comes when a store opens, the Pub/Sub client with a feed.
        ("omniq_console.monitor.monitor", ("gcsfs", "gcloud", "prometheus_client", "textual")),
        # What the views and the metrics read: no poller, no HTTP stack, no rich tables.
        ("omniq_console.monitor.snapshot", ("aiohttp", "gcsfs", "omniq_console.monitor.tables")),
    ],
)
def test_importing_loads_only_what_is_used(module: str, not_loaded: tuple[str, ...]) -> None:
    code = f"import sys, {module}; print(sorted(m for m in {not_loaded!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"{module} loads {done.stdout.strip()}"


def test_the_monitor_package_still_offers_every_name() -> None:
    import omniq_console.monitor as monitor

    for name in monitor.__all__:
        assert getattr(monitor, name) is not None
    with pytest.raises(AttributeError):
        _ = monitor.NoSuchName
