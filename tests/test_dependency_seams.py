"""Where the code leans on a dependency's private API or on a behaviour it does not document:
each seam is checked here, so a new version that changes its shape fails loudly in these tests
instead of quietly at a customer's first request.

- gcsfs: ``GCSFileSystem._set_session`` (its session, built on the running loop; ``set_session``
  is only its blocking twin), the public ``base`` endpoint the upload URL is derived from, and
  ``credentials.credentials`` / ``maybe_refresh``. Pinned in pyproject.toml.
- google-auth: ``token_state`` and ``apply`` (``ObjectStore._authorize``).
- textual-serve: ``Server._make_app``, which ``web.py`` overrides to add its guard. Pinned.
"""

from __future__ import annotations

import datetime as dt
import inspect
from typing import Any

import aiohttp
import pytest
from google.auth.credentials import TokenState
from google.auth.exceptions import RefreshError
from google.oauth2.credentials import Credentials

from omniq_console import __version__
from omniq_console.backend.errors import AuthenticationError
from omniq_console.backend.objectstore import ObjectStore

# Nothing listens here: opening a store builds its session without a request.
NOWHERE = "http://127.0.0.1:9"


class _Refreshing(Credentials):
    """A user token that renews to ``renewed`` (or fails with ``error``), counting refreshes."""

    def __init__(self, token: str, expiry: dt.datetime | None, renewed: str = "", error: str = ""):
        super().__init__(token, expiry=expiry)
        self.renewed = renewed
        self.error = error
        self.refreshes = 0

    def refresh(self, request: Any) -> None:
        self.refreshes += 1
        if self.error:
            raise RefreshError(self.error)
        self.token = self.renewed
        self.expiry = _naive_utc_now() + dt.timedelta(hours=1)


def _naive_utc_now() -> dt.datetime:
    # google-auth keeps expiry as a naive UTC datetime.
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


async def _opened(token: Any) -> ObjectStore:
    store = ObjectStore("seam-bucket", token=token, endpoint_url=NOWHERE)
    await store.open()
    return store


async def test_gcsfs_builds_its_session_on_the_running_loop_and_names_its_endpoint() -> None:
    from gcsfs.core import GCSFileSystem

    assert inspect.iscoroutinefunction(GCSFileSystem._set_session)
    assert list(inspect.signature(GCSFileSystem._set_session).parameters) == ["self"]
    store = await _opened("anon")
    try:
        fs = store._need_fs()
        assert isinstance(fs.session, aiohttp.ClientSession) and not fs.session.closed
        # The upload URL is derived from this shape (``ObjectStore.write``).
        assert fs.base == f"{NOWHERE}/storage/v1/"
        assert fs.credentials.credentials is None  # anonymous
        assert callable(fs.credentials.maybe_refresh)
        session = fs.session
    finally:
        await store.close()
    assert session.closed


async def test_anonymous_requests_carry_no_authorization() -> None:
    store = await _opened("anon")
    try:
        headers = await store._authorize(store._need_fs(), {"Content-Type": "text/plain"})
    finally:
        await store.close()
    assert headers == {"User-Agent": f"omniq-console/{__version__}", "Content-Type": "text/plain"}


async def test_a_fresh_token_is_applied_without_a_refresh() -> None:
    creds = _Refreshing("fresh", expiry=_naive_utc_now() + dt.timedelta(hours=1))
    assert creds.token_state is TokenState.FRESH
    store = await _opened(creds)
    try:
        headers = await store._authorize(store._need_fs(), None)
    finally:
        await store.close()
    assert headers["authorization"] == "Bearer fresh" and creds.refreshes == 0


async def test_an_expired_token_is_refreshed_before_it_is_sent() -> None:
    creds = _Refreshing("old", expiry=_naive_utc_now() - dt.timedelta(minutes=1), renewed="new")
    assert creds.token_state is TokenState.INVALID
    store = await _opened(creds)
    try:
        headers = await store._authorize(store._need_fs(), None)
        again = await store._authorize(store._need_fs(), None)
    finally:
        await store.close()
    assert headers["authorization"] == again["authorization"] == "Bearer new"
    assert creds.refreshes == 1


async def test_a_refused_refresh_is_an_authentication_error() -> None:
    creds = _Refreshing("old", expiry=_naive_utc_now() - dt.timedelta(minutes=1), error="nope")
    store = await _opened(creds)
    try:
        with pytest.raises(AuthenticationError, match="were refused"):
            await store._authorize(store._need_fs(), None)
    finally:
        await store.close()


def test_textual_serve_builds_its_app_in_make_app() -> None:
    from textual_serve.server import Server

    # web.py overrides _make_app to put its guard in front of every route: serve() must still
    # build the app through it, and what the override calls must still be there.
    assert inspect.iscoroutinefunction(Server._make_app)
    assert list(inspect.signature(Server._make_app).parameters) == ["self"]
    assert "self._make_app()" in inspect.getsource(Server.serve)
    server = Server("true")
    for name in ("templates_path", "statics_path", "console", "command"):
        assert hasattr(server, name), name
    for name in ("handle_index", "handle_websocket", "on_startup", "on_shutdown"):
        method = getattr(Server, name)
        assert inspect.iscoroutinefunction(method), name
    assert list(inspect.signature(Server.handle_websocket).parameters) == ["self", "request"]
    assert callable(Server.initialize_logging)
