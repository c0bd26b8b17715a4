"""Credentials for GCS and for the Pub/Sub change feed: one identity for both, never anonymous
by accident.

gcsfs, given no token, tries application default credentials and falls through to anonymous
access when they fail, also when they only name another project than ``project=``: every
request then fails with a 401 or 403 that talks about something else. ``resolve`` loads the
credentials itself (``google.auth``), so a missing or unusable key is an error that says so,
and anonymous access happens only when asked for (``token="anon"``, or an emulator).

Key files of every type google-auth loads are accepted: ``service_account``,
``authorized_user`` (gcloud's own application default credentials), ``external_account``
(Workload Identity Federation) and ``impersonated_service_account``. The feed's client
(gcloud-aio) takes the same file (``pubsub_service_file``).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import google.auth
from google.auth.exceptions import DefaultCredentialsError

SCOPE = "https://www.googleapis.com/auth/devstorage.{access}"
"""The storage scope a key is loaded with, per ``access`` (``read_only``, ``read_write``...)."""
PASSED_THROUGH = frozenset({"anon", "cloud", "cache", "browser"})
"""gcsfs's own methods, asked for by name: taken as they are."""
KEY_FIELDS = {
    "service_account": ("client_email", "private_key", "token_uri"),
    "authorized_user": ("client_id", "client_secret", "refresh_token"),
    "external_account": ("audience", "subject_token_type", "token_url"),
    "impersonated_service_account": ("service_account_impersonation_url", "source_credentials"),
}
"""What each key type must hold (named in errors; values are never quoted)."""


class NoCredentialsError(ValueError):
    """No credentials were given and application default credentials cannot be found."""


def resolve(token: Any, access: str) -> Any:
    """What gcsfs is given for ``token``: loaded credentials for a key file, a key's dict,
    ``None`` or ``"google_default"``; gcsfs's method names, raw access tokens and credentials
    objects as they are. Blocking (files, metadata server): call it off the event loop.

    ``NoCredentialsError`` when application default credentials cannot be found; google-auth's
    own errors for a key it cannot load (``diagnose`` says why in words).
    """
    scopes = [SCOPE.format(access=access)]
    if token is None or token == "google_default":
        try:
            credentials, _project = google.auth.default(scopes=scopes)
        except DefaultCredentialsError:
            raise NoCredentialsError(
                "no credentials found: set GOOGLE_APPLICATION_CREDENTIALS to a key file, pass "
                "--token FILE, or run 'gcloud auth application-default login' (or set "
                "STORAGE_EMULATOR_HOST for an emulator); not connecting anonymously"
            ) from None
        return credentials
    if isinstance(token, str) and token in PASSED_THROUGH:
        return token
    if isinstance(token, str) and os.path.isfile(token):
        token = json.loads(Path(token).read_text(encoding="utf-8"))
    if isinstance(token, Mapping):
        return _from_info(dict(token), scopes)
    return token


def _from_info(info: dict[str, Any], scopes: list[str]) -> Any:
    if info.get("type") == "external_account":
        # google-auth's loader would also look the audience's project up (a request to
        # Resource Manager at load, that fails offline or without permission): storage
        # needs no project. The credential kind is chosen as that loader chooses it.
        source = info.get("credential_source") or {}
        if info.get("subject_token_type") == "urn:ietf:params:aws:token-type:aws4_request":
            from google.auth import aws as kind
        elif isinstance(source, Mapping) and source.get("executable") is not None:
            from google.auth import pluggable as kind  # type: ignore[no-redef]
        else:
            from google.auth import identity_pool as kind  # type: ignore[no-redef]
        return kind.Credentials.from_info(info, default_scopes=scopes)  # type: ignore[no-untyped-call]
    credentials, _project = google.auth.load_credentials_from_dict(  # type: ignore[no-untyped-call]
        info, default_scopes=scopes
    )
    return credentials


def pubsub_service_file(token: Any) -> str | IO[str] | None:
    """What the feed's client (gcloud-aio ``service_file``) needs to use the storage's
    identity: the key file, or a key's dict as a file. None: its own default resolution
    (``GOOGLE_APPLICATION_CREDENTIALS``, gcloud's file, then the metadata server), which is
    the same as storage's application default credentials."""
    if isinstance(token, str) and os.path.isfile(token):
        return token
    if isinstance(token, Mapping):
        return io.StringIO(json.dumps(dict(token)))
    return None


def diagnose(token: Any, exc: BaseException) -> str:
    """Why ``token`` could not be loaded, naming fields and never quoting their values."""
    if isinstance(exc, NoCredentialsError):
        return str(exc)
    if isinstance(token, str) and os.path.isfile(token):
        try:
            token = json.loads(Path(token).read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            return "the file is not text (a JSON key file is expected)"
        except json.JSONDecodeError as bad:
            return f"the file is not JSON (line {bad.lineno} column {bad.colno})"
        except OSError as unreadable:
            return f"the file cannot be read ({unreadable.strerror or type(unreadable).__name__})"
    if not isinstance(token, dict):
        return f"{type(exc).__name__} while loading them"
    kind = token.get("type")
    if kind is None:
        kind = "authorized_user" if "refresh_token" in token else "service_account"
    fields = KEY_FIELDS.get(str(kind))
    if fields is None:
        known = ", ".join(KEY_FIELDS)
        return f"a key of type {str(kind)[:40]!r} is not supported (one of {known} is)"
    missing = [name for name in fields if not token.get(name)]
    if missing:
        names = ", ".join(repr(name) for name in missing)
        return f"not a usable {kind} key (missing {names})"
    if kind == "service_account":
        return "its private_key cannot be loaded (not a PEM private key)"
    return f"{type(exc).__name__} while loading them"
