"""The installed command: help, clear one-line errors with exit code 2, and the JSON snapshot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from omniq_console.demo.emulator import Emulator, free_port


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
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
    for option in ("--bucket", "--prefix", "--project", "--token", "--config", "--refresh", "--read-only"):
        assert option in result.stdout
    for command in ("snapshot", "demo", "serve"):
        assert command in result.stdout
    for command in ("snapshot", "demo", "serve"):
        sub = run_cli(command, "--help")
        assert sub.returncode == 0 and f"omniq-console {command}" in sub.stdout


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "omniq-console"
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "omniq-console" in result.stdout


def test_no_bucket_is_a_clear_error() -> None:
    env = {"OMNIQ_BUCKET": "", "OMNIQ_CONFIG": ""}
    assert_one_line_error(run_cli("snapshot", env=env), "--bucket")
    assert_one_line_error(run_cli(env=env), "--bucket")


def test_bad_credentials_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "key.json"
    bad.write_text('{"type": "service_account", "private_key": "not a key"}')
    result = run_cli(
        "snapshot", "--bucket", "some-bucket", "--token", str(bad),
        env={"STORAGE_EMULATOR_HOST": ""},
    )  # fmt: skip
    assert_one_line_error(result, "credentials")
    assert "not a key" not in result.stderr


def test_missing_bucket_on_the_server(gcs_env: Emulator) -> None:
    result = run_cli("snapshot", "--bucket", "no-such-bucket")
    assert_one_line_error(result, "no-such-bucket", "does not exist")


def test_unreachable_server_is_a_clear_error() -> None:
    result = run_cli(
        "snapshot", "--bucket", "any-bucket",
        env={"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{free_port()}"},
    )  # fmt: skip
    assert_one_line_error(result, "did not answer")


def test_snapshot_prints_the_bucket_as_json(bucket: str) -> None:
    from omniq_console.backend.gcs import GCSBackend
    from omniq_console.models import Schedule, Task, TaskEvent, EventType

    with GCSBackend(bucket_name=bucket) as backend:
        for i in range(3):
            backend.task_storage.enqueue_sync(Task(func="app:send", queue_name="emails", priority=i))
        backend.schedule_storage.save_schedule_sync(
            Schedule(schedule_type="cron", func="app:report", cron_expression="0 * * * *", id="hourly")
        )
        backend.event_storage.log_event_sync(
            TaskEvent(event_type=EventType.ENQUEUED, task_id="t1", queue_name="emails", message="hi")
        )
    result = run_cli("snapshot", "--bucket", bucket)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    for key in ("taken_at", "stale", "queues", "tasks", "results", "schedules", "events", "unreadable", "requests"):
        assert key in data
    assert data["stale"] is False
    (emails,) = [q for q in data["queues"] if q["name"] == "emails"]
    assert (emails["pending"], emails["delayed"], emails["running"]) == (3, 0, 0)
    assert emails["oldest_pending_age_s"] >= 0
    assert data["tasks"]["pending"] == 3
    (hourly,) = data["schedules"]
    assert {k: hourly[k] for k in ("id", "func", "schedule_type", "status", "run_count")} == {
        "id": "hourly", "func": "app:report", "schedule_type": "cron", "status": "active", "run_count": 0,
    }  # fmt: skip
    assert hourly["next_run"] and hourly["last_run"] is None
    (event,) = data["events"]
    assert (event["event_type"], event["task_id"], event["queue_name"], event["message"]) == (
        "enqueued", "t1", "emails", "hi",
    )  # fmt: skip
    assert data["unreadable"] == []
    assert data["requests"]["total"] > 0


@pytest.mark.parametrize(
    "args",
    [
        ["snapshot", "--bucket", "b-bucket", "--prefix", "a/../b"],
        ["--bucket", "b-bucket", "--refresh", "-1"],
    ],
)
def test_bad_values_are_clear_errors(gcs_env: Emulator, args: list[str]) -> None:
    assert_one_line_error(run_cli(*args))


def test_serve_checks_the_bucket_before_serving(gcs_env: Emulator) -> None:
    result = run_cli("serve", "--bucket", "no-such-bucket", "--port", str(free_port()))
    assert_one_line_error(result, "no-such-bucket", "does not exist")
