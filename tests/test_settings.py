"""Settings come from flags, then environment, then the config file, with clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from omniq_console.settings import SettingsError, resolve


def test_flags_beat_environment_beat_file(tmp_path: Path) -> None:
    config = tmp_path / "omniq.json"
    config.write_text(
        json.dumps(
            {
                "bucket_name": "from-file",
                "prefix": "file/",
                "project": "file-project",
                "gcs_kwargs": {"block_size": 1024},
            }
        )
    )
    env = {"OMNIQ_BUCKET": "from-env", "OMNIQ_PREFIX": "env/"}
    assert resolve(config=str(config), environ={}).bucket == "from-file"
    from_env = resolve(config=str(config), environ=env)
    assert (from_env.bucket, from_env.prefix, from_env.project) == ("from-env", "env/", "file-project")
    from_flag = resolve(bucket="from-flag", config=str(config), environ=env)
    assert from_flag.bucket == "from-flag"
    backend_config = from_flag.backend_config()
    assert backend_config["bucket_name"] == "from-flag"
    assert backend_config["gcs_kwargs"] == {"block_size": 1024}


def test_config_file_named_by_environment(tmp_path: Path) -> None:
    config = tmp_path / "omniq.toml"
    config.write_text('bucket_name = "toml-bucket"\nprefix = "p/"\naccess = "read_only"\n')
    settings = resolve(environ={"OMNIQ_CONFIG": str(config)})
    assert (settings.bucket, settings.prefix, settings.read_only) == ("toml-bucket", "p/", True)
    assert settings.backend_config()["access"] == "read_only"


def test_read_only_flag_forces_read_only_access() -> None:
    settings = resolve(bucket="b", read_only=True, environ={})
    assert settings.backend_config()["access"] == "read_only"


def test_missing_bucket_says_how_to_fix() -> None:
    with pytest.raises(SettingsError, match="--bucket NAME or set OMNIQ_BUCKET"):
        resolve(environ={})


def test_missing_credentials_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(SettingsError, match="credentials file not found"):
        resolve(bucket="b", environ={"GOOGLE_APPLICATION_CREDENTIALS": str(missing)})


@pytest.mark.parametrize("content", ["{not json", "[1, 2]"])
def test_bad_config_file_is_clear(tmp_path: Path, content: str) -> None:
    config = tmp_path / "bad.json"
    config.write_text(content)
    with pytest.raises(SettingsError, match="config file"):
        resolve(config=str(config), environ={})


def test_emulator_host_beats_file_endpoint(tmp_path: Path) -> None:
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"bucket_name": "b", "gcs_kwargs": {"endpoint_url": "http://x:1"}}))
    assert resolve(config=str(config), environ={}).endpoint_url == "http://x:1"
    with_env = resolve(config=str(config), environ={"STORAGE_EMULATOR_HOST": "http://y:2"})
    assert with_env.endpoint_url is None
    assert "endpoint_url" not in with_env.backend_config()["gcs_kwargs"]


def test_refresh_must_be_positive() -> None:
    with pytest.raises(SettingsError, match="--refresh"):
        resolve(bucket="b", refresh=0, environ={})
