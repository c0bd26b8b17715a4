"""Where the console's connection settings come from: flags, then environment, then a file.

The order GCP users expect: a flag beats an environment variable (``OMNIQ_BUCKET``,
``OMNIQ_PREFIX``, ``OMNIQ_PROJECT``, ``GOOGLE_APPLICATION_CREDENTIALS``,
``STORAGE_EMULATOR_HOST``), which beats the config file (``--config`` or ``OMNIQ_CONFIG``; JSON
or TOML in the shape ``create_gcs_backend_from_config`` reads).
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_PREFIX = "omniq/"


class SettingsError(ValueError):
    """A setting is missing or wrong; the message says which and how to fix it."""


@dataclass(frozen=True)
class ConsoleSettings:
    """Everything needed to open a backend, plus the console's own options."""

    bucket: str
    prefix: str = DEFAULT_PREFIX
    project: str | None = None
    token: str | None = None
    endpoint_url: str | None = None
    read_only: bool = False
    refresh: float = 2.0
    actor: str = field(default_factory=lambda: default_actor())
    extra: Mapping[str, Any] = field(default_factory=dict)

    def backend_config(self) -> dict[str, Any]:
        """The dict ``create_gcs_backend_from_config`` takes."""
        config: dict[str, Any] = dict(self.extra)
        config.update(
            bucket_name=self.bucket,
            prefix=self.prefix,
            project=self.project,
            token=self.token,
            access="read_only" if self.read_only else config.get("access", "read_write"),
        )
        if self.endpoint_url:
            config["endpoint_url"] = self.endpoint_url
        return config


def default_actor() -> str:
    """Who the audit log says did an action: user@host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def load_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a JSON or TOML config file into a dict, with clear errors."""
    file = Path(path).expanduser()
    try:
        text = file.read_text()
    except FileNotFoundError:
        raise SettingsError(f"config file not found: {file}") from None
    except OSError as exc:
        raise SettingsError(f"cannot read config file {file}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text) if file.suffix == ".toml" else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"config file {file} is not valid {file.suffix[1:] or 'JSON'}: {exc}") from None
    if not isinstance(data, dict):
        raise SettingsError(f"config file {file} must hold a table/object of settings")
    return data


def resolve(
    *,
    bucket: str | None = None,
    prefix: str | None = None,
    project: str | None = None,
    token: str | None = None,
    config: str | None = None,
    read_only: bool = False,
    refresh: float | None = None,
    actor: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> ConsoleSettings:
    """Combine flags (the arguments), environment and config file into settings."""
    env = os.environ if environ is None else environ
    config_path = config or env.get("OMNIQ_CONFIG")
    file = load_config_file(config_path) if config_path else {}
    file_gcs = dict(file.pop("gcs_kwargs", None) or {})

    def pick(flag: Any, env_name: str | None, file_key: str) -> Any:
        if flag not in (None, ""):
            return flag
        if env_name and env.get(env_name):
            return env[env_name]
        return file.pop(file_key, None)

    bucket_value = pick(bucket, "OMNIQ_BUCKET", "bucket_name")
    if not bucket_value:
        raise SettingsError("no bucket given: pass --bucket NAME or set OMNIQ_BUCKET")
    prefix_value = pick(prefix, "OMNIQ_PREFIX", "prefix")
    token_value = pick(token, "GOOGLE_APPLICATION_CREDENTIALS", "token")
    if isinstance(token_value, str) and token_value.endswith(".json"):
        credentials = Path(token_value).expanduser()
        if not credentials.is_file():
            raise SettingsError(f"credentials file not found: {credentials}")
    refresh_value = float(refresh if refresh is not None else file.pop("refresh", 2.0))
    if refresh_value <= 0:
        raise SettingsError("--refresh must be a positive number of seconds")
    file_read_only = file.get("access") == "read_only"
    file_endpoint = file.pop("endpoint_url", None) or file_gcs.pop("endpoint_url", None)
    return ConsoleSettings(
        bucket=str(bucket_value),
        prefix=DEFAULT_PREFIX if prefix_value is None else str(prefix_value),
        project=pick(project, "OMNIQ_PROJECT", "project"),
        token=token_value,
        # STORAGE_EMULATOR_HOST (read by the backend itself) beats the file's endpoint.
        endpoint_url=None if env.get("STORAGE_EMULATOR_HOST") else file_endpoint,
        read_only=read_only or file_read_only,
        refresh=refresh_value,
        actor=actor or default_actor(),
        extra={**file, "gcs_kwargs": file_gcs},
    )
