"""``BackendSettings``: the one model of every option, validated once, wherever it came from.

One pydantic-settings model holds what opens a backend (the keys of
``create_gcs_backend_from_config``) and what the console adds (``subscription``, ``refresh``,
``actor``). It is filled in one of two ways, and validated the same way in both:

- :meth:`BackendSettings.load` (what the CLI and the notebook use): keyword arguments (flags)
  beat the environment, which beats the config file (``config=`` or ``OMNIQ_CONFIG``; JSON, or
  TOML when the name ends in ``.toml``, in the shape of :data:`CONFIG_KEYS`);
- :meth:`BackendSettings.given` (what ``GCSBackend(...)`` and ``create_gcs_backend_from_config``
  use): exactly the values passed, no environment, no file.

Every bad value is a :class:`SettingsError` (a ``ValueError``) that names the option and what
is allowed, before any network request. This module builds no backend (``backend/gcs.py``
does), so it imports nothing of it.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import (
    BeforeValidator,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    JsonConfigSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from ..checks import check_seconds
from . import DEFAULT_REFRESH
from .layout import normalize_prefix
from .lifecycle import check_lease

Access = Literal["read_only", "read_write", "full_control"]
Consistency = Literal["md5", "crc32c", "size", "none"]

DEFAULT_PREFIX = "omniq/"

CONFIG_KEYS = (
    "bucket_name",
    "prefix",
    "project",
    "token",
    "access",
    "consistency",
    "cache_timeout",
    "gcs_kwargs",
    "endpoint_url",
    "lease_seconds",
)
"""The backend's options: the keys ``create_gcs_backend_from_config`` reads."""

CONSOLE_KEYS = ("subscription", "topic", "refresh", "actor")
"""The console's options; a config file may hold them beside :data:`CONFIG_KEYS`."""

# gcsfs options the backend sets itself (freshness, async use, credentials): a second value
# through gcs_kwargs would silently change what the backend guarantees, or clash at open.
RESERVED_GCS_KWARGS = frozenset(
    {
        "asynchronous",
        "skip_instance_cache",
        "use_listings_cache",
        "listings_expiry_time",
        "loop",
        "token",
        "project",
        "access",
        "consistency",
        "endpoint_url",
    }
)

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*[a-z0-9]$")
_SUBSCRIPTION_RE = re.compile(r"^projects/[^/\s]+/subscriptions/[^/\s]+$")
_TOPIC_RE = re.compile(r"^projects/[^/\s]+/topics/[^/\s]+$")


class SettingsError(ValueError):
    """A setting is missing or wrong; the message says which and how to fix it."""


def default_actor() -> str:
    """Who the audit log says did an action: user@host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def check_bucket_name(bucket_name: object) -> str:
    """GCS's naming rules: 3-63 characters (222 with dots, 63 per dot-separated part), lower
    case letters, digits, ``-``, ``_`` and ``.``, starting and ending with a letter or digit."""
    if not isinstance(bucket_name, str) or not bucket_name.strip():
        raise ValueError("bucket_name must be a non-empty string")
    longest = 222 if "." in bucket_name else 63
    if not 3 <= len(bucket_name) <= longest or not _BUCKET_RE.match(bucket_name):
        raise ValueError(
            f"bucket_name {bucket_name!r} is not a valid GCS bucket name: 3 to 63 characters "
            "(lower-case letters, digits, '-', '_' and '.'), starting and ending with a letter "
            "or digit"
        )
    if any(len(part) > 63 or not part for part in bucket_name.split(".")):
        raise ValueError(f"bucket_name {bucket_name!r}: each dot-separated part is 1-63 characters")
    return bucket_name


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> object:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


def check_access(value: object) -> Access:
    """``value`` if it is an access mode, else ``ValueError`` listing them (the one check,
    used by the settings model and by the object stores built without it)."""
    _check_choice("access", value, get_args(Access))
    return value  # type: ignore[return-value]  # one of Access's values, checked above


def check_consistency(value: object) -> Consistency:
    """``value`` if it is a consistency mode, else ``ValueError`` listing them."""
    _check_choice("consistency", value, get_args(Consistency))
    return value  # type: ignore[return-value]  # one of Consistency's values, checked above


class _Environment(BaseSettings):
    """The environment variables :meth:`BackendSettings.load` reads: ``OMNIQ_`` and the
    option's name, or the variable Google's own tools read. An empty variable counts as unset.

    Only these options: a number or a mapping has no spelling in a variable that the checks
    would take (``"300"`` is not a number of seconds).
    """

    # pydantic-settings' default sources: nothing is passed in and neither ``env_file`` nor
    # ``secrets_dir`` is set, so the environment is all they read.
    model_config = SettingsConfigDict(env_prefix="OMNIQ_", env_ignore_empty=True, extra="ignore")

    bucket_name: str | None = Field(default=None, validation_alias="OMNIQ_BUCKET")
    prefix: str | None = None
    project: str | None = None
    subscription: str | None = None
    topic: str | None = None
    token: str | None = Field(default=None, validation_alias="GOOGLE_APPLICATION_CREDENTIALS")
    endpoint_url: str | None = Field(default=None, validation_alias="STORAGE_EMULATOR_HOST")
    config: str | None = None
    """The config file (``OMNIQ_CONFIG``)."""

    @classmethod
    def options(cls) -> dict[str, str]:
        """Each variable that sets an option, and the option (``OMNIQ_CONFIG`` sets none)."""
        prefix = cls.model_config.get("env_prefix", "")
        return {
            str(field.validation_alias or f"{prefix}{name.upper()}"): name
            for name, field in cls.model_fields.items()
            if name != "config"
        }


ENVIRONMENT = _Environment.options()
"""The environment variables :meth:`BackendSettings.load` reads, and the option each sets
(``OMNIQ_CONFIG`` names the config file). An empty variable counts as unset."""


def _config_file(
    settings_cls: type[BaseSettings], path: str | os.PathLike[str]
) -> InitSettingsSource:
    """pydantic-settings' source for a JSON (or, named ``*.toml``, TOML) config file, with
    errors naming the file (the library skips a missing file and lets a parser's error out)."""
    import tomllib  # here: only a config file needs it, not every start (~4 ms)

    file = Path(path).expanduser()
    kind = "TOML" if file.suffix == ".toml" else "JSON"
    if not file.exists():
        raise SettingsError(f"config file not found: {file}")
    if not file.is_file():  # a directory: the library would skip it as if it were missing
        raise SettingsError(f"cannot read config file {file}: not a regular file")
    try:
        if kind == "TOML":
            return TomlConfigSettingsSource(settings_cls, toml_file=file)
        return JsonConfigSettingsSource(settings_cls, json_file=file)
    except OSError as exc:
        raise SettingsError(f"cannot read config file {file}: {exc.strerror}") from None
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"config file {file} is not valid {kind}: {exc}") from None
    except (TypeError, ValueError):  # parsed, but not to a table: the merge into a dict fails
        raise SettingsError(f"config file {file} must hold a table/object of settings") from None


class BackendSettings(BaseSettings):
    """Every option of a backend and of the console watching it, validated.

    Backend options (:data:`CONFIG_KEYS`): ``bucket_name`` (required), ``prefix`` (normalised:
    ``"omniq"`` -> ``"omniq/"``, ``""`` for the bucket's root), ``project``, ``token`` (a
    service-account file, ``"anon"``, a credentials object...), ``access``, ``consistency``,
    ``cache_timeout`` (seconds, ``0`` disables the body cache), ``endpoint_url`` (an emulator),
    ``lease_seconds`` (a claim's lease; ``None``: the queue's default) and ``gcs_kwargs``
    (extra gcsfs options). Console options
    (:data:`CONSOLE_KEYS`): ``subscription`` (``projects/P/subscriptions/S``: the change feed),
    ``topic`` (``projects/P/topics/T``: the change feed through a subscription the console
    makes for itself and deletes on exit; not with ``subscription``), ``refresh`` (seconds
    between polls) and ``actor`` (the audit log's name for actions).
    ``config`` is the file the values were read from, if any.
    """

    model_config = SettingsConfigDict(extra="forbid", frozen=True, validate_default=True)

    # An option whose check is one of this module's public ``check_*`` functions names it here;
    # the others have theirs below.
    bucket_name: Annotated[str, BeforeValidator(check_bucket_name)]
    prefix: str = DEFAULT_PREFIX
    project: str | None = None
    token: Any = Field(default=None, repr=False)  # may be a raw access token
    access: Annotated[Access, BeforeValidator(check_access)] = "read_write"
    consistency: Annotated[Consistency, BeforeValidator(check_consistency)] = "md5"
    cache_timeout: float = 300.0
    endpoint_url: str | None = None
    lease_seconds: float | None = None
    gcs_kwargs: dict[str, Any] = Field(default_factory=dict)
    subscription: str | None = None
    topic: str | None = None
    refresh: float = DEFAULT_REFRESH
    actor: str = Field(default_factory=default_actor)
    config: Path | None = None

    # True in the subclass that reads only what it is given (see ``given``).
    _given_only: ClassVar[bool] = False

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Earlier sources win: flags, then the environment, then the file.
        if cls._given_only:
            return (init_settings,)
        environment = _Environment().model_dump(exclude_none=True)
        sources = [init_settings, InitSettingsSource(settings_cls, init_kwargs=environment)]
        given: Mapping[str, Any] = getattr(init_settings, "init_kwargs", {})
        path = given.get("config") or environment.get("config")
        if path:
            sources.append(_config_file(settings_cls, path))
        return tuple(sources)

    @classmethod
    def load(cls, **flags: Any) -> BackendSettings:
        """Settings from ``flags`` (``None`` means not given), then the environment, then the
        config file (``config=`` or ``OMNIQ_CONFIG``)."""
        return _validated(cls, {key: value for key, value in flags.items() if value is not None})

    @classmethod
    def given(cls, values: Mapping[str, Any]) -> BackendSettings:
        """Settings from ``values`` alone: no environment, no config file."""
        if not isinstance(values, Mapping):
            raise SettingsError(f"config must be a mapping, not {type(values).__name__}")
        return _validated(_GivenSettings, dict(values))

    # -- checks (each option has exactly one) --------------------------------------------------

    @field_validator("prefix", mode="before")
    @classmethod
    def _prefix(cls, value: object) -> str:
        if not isinstance(value, str):
            raise ValueError(f"prefix must be a string, not {type(value).__name__}")
        return normalize_prefix(value)

    @field_validator("cache_timeout", mode="before")
    @classmethod
    def _cache_timeout(cls, value: object) -> float:
        return check_seconds("cache_timeout", value, allow_zero=True)

    @field_validator("refresh", mode="before")
    @classmethod
    def _positive_seconds(cls, value: object, info: ValidationInfo) -> float | None:
        return None if value is None else check_seconds(str(info.field_name), value)

    @field_validator("lease_seconds", mode="before")
    @classmethod
    def _lease_seconds(cls, value: object) -> float | None:
        return None if value is None else check_lease(value)

    @field_validator("endpoint_url", mode="before")
    @classmethod
    def _endpoint_url(cls, value: object) -> object:
        # STORAGE_EMULATOR_HOST is often written without a scheme (127.0.0.1:4443).
        if isinstance(value, str) and value and "://" not in value:
            return f"http://{value}"
        return value

    @field_validator("gcs_kwargs", mode="before")
    @classmethod
    def _gcs_kwargs(cls, value: object) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ValueError(f"gcs_kwargs must be a mapping, not {type(value).__name__}")
        repeated = sorted(str(key) for key in value if key in CONFIG_KEYS)
        if repeated:
            raise ValueError(f"gcs_kwargs must not repeat backend options: {', '.join(repeated)}")
        clash = sorted(RESERVED_GCS_KWARGS & set(value))
        if clash:
            raise ValueError(
                f"gcsfs option(s) {', '.join(clash)} are set by the backend itself; use the "
                "backend's own arguments (token, project, access, consistency, endpoint_url)"
            )
        return dict(value)

    @field_validator("subscription", mode="before")
    @classmethod
    def _subscription(cls, value: object) -> object:
        if value is not None and not (isinstance(value, str) and _SUBSCRIPTION_RE.match(value)):
            raise ValueError(
                f"subscription must look like projects/PROJECT/subscriptions/NAME, not {value!r}"
            )
        return value

    @field_validator("topic", mode="before")
    @classmethod
    def _topic(cls, value: object) -> object:
        if value is not None and not (isinstance(value, str) and _TOPIC_RE.match(value)):
            raise ValueError(f"topic must look like projects/PROJECT/topics/NAME, not {value!r}")
        return value

    @model_validator(mode="after")
    def _one_feed(self) -> BackendSettings:
        if self.subscription is not None and self.topic is not None:
            raise ValueError(
                "give a subscription or a topic, not both (with a topic each console makes a "
                "subscription of its own)"
            )
        return self

    # -- what the settings mean -----------------------------------------------------------------

    @property
    def read_only(self) -> bool:
        """True when every write is refused (``access="read_only"``)."""
        return self.access == "read_only"

    def backend_options(self) -> dict[str, Any]:
        """The backend's options (:data:`CONFIG_KEYS`), as ``create_gcs_backend_from_config``
        takes them."""
        return {key: getattr(self, key) for key in CONFIG_KEYS}


class _GivenSettings(BackendSettings):
    """The same model and checks, filled from the given values alone."""

    # Built on first use: the CLI's console reads its settings through ``load`` and draws its
    # first frame without needing this one's validator.
    model_config = SettingsConfigDict(defer_build=True)

    _given_only: ClassVar[bool] = True

    def __repr_name__(self) -> str:
        return "BackendSettings"


def _validated(cls: type[BackendSettings], values: dict[str, Any]) -> BackendSettings:
    try:
        return cls(**values)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    """One line for a validation failure: the first bad option, in words that say the fix."""
    unknown = [str(error["loc"][0]) for error in exc.errors() if error["type"] == "extra_forbidden"]
    if unknown:
        return (
            f"unknown option(s): {', '.join(sorted(unknown))}; known: "
            f"{', '.join((*CONFIG_KEYS, *CONSOLE_KEYS))} (gcsfs options go under 'gcs_kwargs')"
        )
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    if error["type"] == "missing" and where == "bucket_name":
        return (
            "no bucket given: pass --bucket NAME, set OMNIQ_BUCKET, or put bucket_name in the "
            "config file"
        )
    message = str(error["msg"]).removeprefix("Value error, ")
    return message if where and where in message else f"{where}: {message}"
