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

import asyncio
import concurrent.futures
import io
import json
import os
import threading
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
    own errors for a key it cannot load (``diagnose`` says why in words). An
    ``ApplicationDefaultCredentials`` gives what its one search found.
    """
    scopes = [SCOPE.format(access=access)]
    if isinstance(token, ApplicationDefaultCredentials):
        # Its one search was made for its own scope; another scope needs a search of its own.
        return token.load() if token.access == access else _default(scopes)
    if token is None or token == "google_default":
        return _default(scopes)
    if isinstance(token, str) and token in PASSED_THROUGH:
        return token
    if isinstance(token, str) and os.path.isfile(token):
        token = json.loads(Path(token).read_text(encoding="utf-8"))
    if isinstance(token, Mapping):
        return _from_info(dict(token), scopes)
    return token


def _default(scopes: list[str]) -> Any:
    """Application default credentials (one search: key file, gcloud's file, metadata server)."""
    try:
        credentials, _project = google.auth.default(scopes=scopes)
    except DefaultCredentialsError:
        raise NoCredentialsError(
            "no credentials found: set GOOGLE_APPLICATION_CREDENTIALS to a key file, pass "
            "--token FILE, or run 'gcloud auth application-default login' (or set "
            "STORAGE_EMULATOR_HOST for an emulator); not connecting anonymously"
        ) from None
    return credentials


class ApplicationDefaultCredentials:
    """Application default credentials searched for once: a token (``token=``) to give every
    store of one command, so that its first check of the bucket and its stores share the one
    search's result instead of each searching again.

    On GCE the search asks the metadata server, which google-auth retries for seconds:
    ``find`` bounds the wait. A search still running when a store opens is waited for, never
    started twice; one that failed fails each store the same way.
    """

    def __init__(self, access: str) -> None:
        self.access = access
        self._lock = threading.Lock()
        self._found: concurrent.futures.Future[Any] | None = None

    def load(self) -> Any:
        """The credentials (blocking: the first caller searches, the others wait for it)."""
        found, mine = self._claim()
        if mine:
            self._search(found)
        return found.result()

    async def find(self, deadline: float) -> Any:
        """The credentials, searched for in a daemon thread (a search stuck on the network
        must not keep the process alive): ``NoCredentialsError`` when none were found,
        ``TimeoutError`` when the search took longer than ``deadline`` seconds."""
        found, mine = self._claim()
        if mine:
            threading.Thread(
                target=self._search, args=(found,), name="omniq-credentials", daemon=True
            ).start()
        # Shielded: giving up waiting (``TimeoutError``) leaves the search to its thread.
        return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(found)), deadline)

    def _claim(self) -> tuple[concurrent.futures.Future[Any], bool]:
        """The search's future, and whether the caller is the one to run it."""
        with self._lock:
            if self._found is None:
                self._found = concurrent.futures.Future()
                return self._found, True
            return self._found, False

    def _search(self, found: concurrent.futures.Future[Any]) -> None:
        found.set_running_or_notify_cancel()
        try:
            found.set_result(_default([SCOPE.format(access=self.access)]))
        except Exception as exc:  # kept for every caller, raised by ``load`` and ``find``
            found.set_exception(exc)


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
