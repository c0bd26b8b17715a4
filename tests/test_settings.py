"""One settings model: flags beat the environment, which beats the config file; every option is
checked once, with the same message wherever it came from; no import cycle."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from omniq_console.backend import DEFAULT_REFRESH
from omniq_console.backend.config import ENVIRONMENT, BackendSettings
from omniq_console.backend.errors import AuthenticationError
from omniq_console.backend.gcs import GCSBackend, create_gcs_backend_from_config
from omniq_console.backend.memstore import MemoryObjectStore
from omniq_console.backend.objectstore import ObjectStore
from omniq_console.models import Task
from omniq_console.settings import SettingsError, load_settings, make_backend

SUBSCRIPTION = "projects/p/subscriptions/s"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees only the variables it sets itself."""
    for name in (*ENVIRONMENT, "OMNIQ_CONFIG"):
        monkeypatch.delenv(name, raising=False)


def _write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_flags_beat_environment_beat_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _write(
        tmp_path / "omniq.json",
        {
            "bucket_name": "from-file",
            "prefix": "file/",
            "project": "file-project",
            "subscription": "projects/f/subscriptions/file",
            "refresh": 5,
            "gcs_kwargs": {"block_size": 1024},
        },
    )
    from_file = load_settings(config=str(config))
    assert (from_file.bucket_name, from_file.prefix, from_file.refresh) == ("from-file", "file/", 5)
    assert from_file.config == config

    monkeypatch.setenv("OMNIQ_BUCKET", "from-env")
    monkeypatch.setenv("OMNIQ_PREFIX", "env/")
    monkeypatch.setenv("OMNIQ_SUBSCRIPTION", "projects/e/subscriptions/env")
    from_env = load_settings(config=str(config))
    assert (from_env.bucket_name, from_env.prefix, from_env.project) == (
        "from-env",
        "env/",
        "file-project",
    )
    assert from_env.subscription == "projects/e/subscriptions/env"

    from_flag = load_settings(
        bucket_name="from-flag", prefix=None, subscription=SUBSCRIPTION, config=str(config)
    )
    assert (from_flag.bucket_name, from_flag.prefix) == ("from-flag", "env/")  # None: not given
    assert from_flag.subscription == SUBSCRIPTION
    assert from_flag.backend_options()["bucket_name"] == "from-flag"
    assert from_flag.gcs_kwargs == {"block_size": 1024}


def test_config_file_named_by_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "omniq.toml"
    config.write_text(
        'bucket_name = "toml-bucket"\nprefix = "p"\naccess = "read_only"\n'
        f'subscription = "{SUBSCRIPTION}"\n'
    )
    monkeypatch.setenv("OMNIQ_CONFIG", str(config))
    settings = load_settings()
    assert (settings.bucket_name, settings.prefix, settings.read_only) == (
        "toml-bucket",
        "p/",
        True,
    )
    assert settings.subscription == SUBSCRIPTION
    assert make_backend(settings).read_only


def test_read_only_flag_forces_read_only_access(tmp_path: Path) -> None:
    config = _write(tmp_path / "c.json", {"bucket_name": "bkt", "access": "full_control"})
    assert load_settings(config=str(config)).access == "full_control"
    assert load_settings(config=str(config), read_only=True).access == "read_only"


def test_emulator_host_beats_file_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _write(tmp_path / "c.json", {"bucket_name": "bkt", "endpoint_url": "http://x:1"})
    assert load_settings(config=str(config)).endpoint_url == "http://x:1"
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "127.0.0.1:2")
    assert load_settings(config=str(config)).endpoint_url == "http://127.0.0.1:2"


def test_empty_environment_variables_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNIQ_BUCKET", "")
    monkeypatch.setenv("OMNIQ_CONFIG", "")
    with pytest.raises(SettingsError, match="--bucket NAME, set OMNIQ_BUCKET"):
        load_settings()


def test_only_the_documented_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    # The prefix names OMNIQ_PREFIX and its neighbours, not a variable for every option, and a
    # variable without the prefix (PREFIX, PROJECT) is someone else's.
    monkeypatch.setenv("OMNIQ_BUCKET", "env-bucket")
    for name, value in [
        ("OMNIQ_BUCKET_NAME", "other-bucket"),
        ("OMNIQ_REFRESH", "5"),
        ("OMNIQ_ACCESS", "read_only"),
        ("OMNIQ_TOKEN", "ya29.token"),
        ("PREFIX", "bare/"),
        ("PROJECT", "bare-project"),
    ]:
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert (settings.bucket_name, settings.prefix, settings.project) == (
        "env-bucket",
        "omniq/",
        None,
    )
    assert (settings.access, settings.token) == ("read_write", None)
    assert settings.refresh == DEFAULT_REFRESH


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json", "is not valid JSON"), ("[1, 2]", "must hold a table")],
)
def test_bad_config_file_is_clear(tmp_path: Path, content: str, message: str) -> None:
    config = tmp_path / "bad.json"
    config.write_text(content)
    with pytest.raises(SettingsError, match=message):
        load_settings(config=str(config))
    with pytest.raises(SettingsError, match="config file not found"):
        load_settings(config=str(tmp_path / "missing.toml"))
    with pytest.raises(SettingsError, match=r"cannot read config file .*: not a regular file"):
        load_settings(config=str(tmp_path))


def test_unknown_keys_in_the_file_are_named(tmp_path: Path) -> None:
    config = _write(tmp_path / "c.json", {"bucket_name": "bkt", "bucket": "typo", "refesh": 1})
    with pytest.raises(SettingsError, match=r"unknown option\(s\): bucket, refesh; known: "):
        load_settings(config=str(config))


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("bucket_name", "Bad_Bucket!", "not a valid GCS bucket name"),
        ("prefix", "a/../b", "prefix segment"),
        ("access", "admin", "access must be one of read_only, read_write, full_control"),
        ("consistency", "sha1", "consistency must be one of"),
        ("cache_timeout", -1, "cache_timeout must be 0 or more seconds"),
        ("cache_timeout", "300", "cache_timeout must be a number of seconds"),
        ("lease_seconds", 0, "lease_seconds must be more than 0 seconds"),
        ("gcs_kwargs", {"use_listings_cache": True}, "set by the backend itself"),
        ("gcs_kwargs", {"gcs_kwargs": {}}, "must not repeat backend options: gcs_kwargs"),
    ],
)
def test_each_option_is_checked_once_with_one_message(
    option: str, value: Any, message: str
) -> None:
    # The constructor, the dict factory and the flags/environment/file loader all reach the
    # same check, so they refuse a value with the same words.
    values = {"bucket_name": "ok-bucket", option: value}
    arguments = {
        "bucket_name": "ok-bucket",
        **(value if option == "gcs_kwargs" else {option: value}),
    }
    errors = []
    for build in (
        lambda: GCSBackend(**arguments),
        lambda: create_gcs_backend_from_config(values),
        lambda: load_settings(**values),
    ):
        with pytest.raises(SettingsError, match=message) as caught:
            build()
        errors.append(str(caught.value))
    assert len(set(errors)) == 1, errors


def test_console_options_are_checked_too() -> None:
    with pytest.raises(SettingsError, match="refresh must be more than 0 seconds"):
        load_settings(bucket_name="bkt", refresh=0)
    with pytest.raises(SettingsError, match="projects/PROJECT/subscriptions/NAME"):
        load_settings(bucket_name="bkt", subscription="my-sub")
    with pytest.raises(SettingsError, match="projects/PROJECT/topics/NAME"):
        load_settings(bucket_name="bkt", topic="projects/p/subscriptions/s")


def test_a_topic_comes_from_a_flag_the_environment_or_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "omniq.json"
    config.write_text(json.dumps({"bucket_name": "bkt", "topic": "projects/f/topics/file"}))
    assert load_settings(config=str(config)).topic == "projects/f/topics/file"
    monkeypatch.setenv("OMNIQ_TOPIC", "projects/e/topics/env")
    assert load_settings(config=str(config)).topic == "projects/e/topics/env"
    flagged = load_settings(config=str(config), topic="projects/p/topics/flag")
    assert flagged.topic == "projects/p/topics/flag" and flagged.subscription is None
    with pytest.raises(SettingsError, match="a subscription or a topic, not both"):
        load_settings(config=str(config), subscription=SUBSCRIPTION)


def test_the_constructor_and_the_dict_factory_read_no_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OMNIQ_BUCKET", "env-bucket")
    monkeypatch.setenv("OMNIQ_PREFIX", "env/")
    assert GCSBackend("given-bucket").prefix == "omniq/"
    with pytest.raises(SettingsError, match="bucket_name"):
        create_gcs_backend_from_config({"prefix": "p/"})
    assert load_settings().prefix == "env/"


def test_credentials_are_never_in_the_settings_repr() -> None:
    settings = BackendSettings.given({"bucket_name": "bkt", "token": "ya29.secret-token"})
    assert "secret" not in repr(settings) and "secret" not in str(settings)
    assert repr(settings).startswith("BackendSettings(")


async def test_a_missing_credentials_file_is_refused_once_at_open(
    bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nope.json"
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(missing))
    settings = load_settings(bucket_name=bucket)  # a path is not checked here...
    assert settings.token == str(missing)
    backend = make_backend(settings)
    with pytest.raises(AuthenticationError, match=r"nope\.json"):  # ...but when it is used
        async with backend:
            pass
    assert not backend.is_open


async def test_settings_open_a_working_backend(bucket: str) -> None:
    backend = make_backend(bucket_name=bucket, prefix="from-settings")
    async with backend:
        assert backend.prefix == "from-settings/"
        await backend.async_task_storage.get_queue_size("default")
    with pytest.raises(TypeError, match="not both"):
        make_backend(load_settings(bucket_name=bucket), prefix="x")


async def test_a_given_object_store_is_used_instead_of_building_one(bucket: str) -> None:
    store = ObjectStore(bucket)
    backend = GCSBackend(bucket, prefix="mine/", object_store=store)
    assert backend.store is store
    async with backend:
        await backend.async_event_storage.get_events()
        assert store.is_open
        assert store.stats.total > 0
    assert not store.is_open


def test_config_module_imports_without_the_backend_in_a_fresh_interpreter() -> None:
    code = (
        "import sys\n"
        "import omniq_console.backend.config\n"
        "assert 'omniq_console.backend.gcs' not in sys.modules, 'config imported gcs'\n"
        "import omniq_console.backend.gcs\n"
        "import omniq_console.settings\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


async def test_an_in_memory_store_runs_the_backend_without_http() -> None:
    store = MemoryObjectStore("memory-bucket")
    await store.open()
    await store.create_bucket()
    await store.close()
    backend = GCSBackend("memory-bucket", prefix="fast/", object_store=store)
    async with backend:
        task_id = await backend.async_task_storage.enqueue(Task(func="app:work"))
        assert await backend.async_task_storage.get_queue_size("default") == 1
        assert [info.key for info in await store.list("fast/tasks/")] == [
            f"fast/tasks/{task_id}.json"
        ]
    assert not store.is_open
