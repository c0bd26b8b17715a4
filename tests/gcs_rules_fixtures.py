"""Fixtures that run a test against the emulator *as GCS behaves* (a pytest plugin, see conftest).

fake-gcs-server forgives what Google Cloud Storage refuses; ``faultproxy.GCSRulesProxy`` sits
in front of it and refuses the same way (its docstring has every rule). Use:

- ``gcs_rules``: a started ``GCSRulesProxy`` in front of the session emulator, with role
  ``"objectAdmin"`` (a worker's role: no ``storage.buckets.*``), and ``gcs_rules.bucket``, a
  fresh bucket created on the emulator directly (never through the proxy). Change the role
  at any time (``gcs_rules.role = "objectViewer"``); add faults as on any ``FaultProxy``
  (``gcs_rules.outage(seconds=2)``, ``gcs_rules.corrupt()``, ``gcs_rules.split_hash_headers =
  True``). Measurements: ``gcs_rules.mutations`` (name -> monotonic times),
  ``gcs_rules.mutation_counts()``, ``gcs_rules.max_mutations_per_second()``,
  ``gcs_rules.writes``, ``gcs_rules.rate_limited``, ``gcs_rules.records``.
- ``rules_backend``: an open ``GCSBackend`` (async) on that bucket through the proxy
  (``endpoint_url=``), with ``RULES_RETRY``: Google's backoff shape scaled down five times
  (0.2 s initial, doubling, 1 s cap) and a 15 s deadline. A compare-and-swap on a name
  written just before then waits about 1.3 s and meets about four 429s (measured; with the
  default policy: about 1.7 s and two 429s).
- ``rules_env``: ``STORAGE_EMULATOR_HOST`` pointed at the proxy for the test (clients built
  without ``endpoint_url`` use it), returned as a full environment for subprocesses (which
  use the default policy: 1 s initial backoff, 120 s deadline).

- ``pytest --gcs-rules``: a whole run under the model. ``storage_endpoint`` is then the URL
  of one session-wide ``GCSRulesProxy`` (``gcs_rules_session``, role ``"objectAdmin"``) in
  front of the emulator, else the emulator's own URL; a ``gcs_env`` fixture that sets
  ``STORAGE_EMULATOR_HOST`` to ``storage_endpoint`` puts every test that uses it under the
  model. The model keeps its per-name state per bucket, so tests on their own buckets do not
  interfere.

Import ``RULES_RETRY`` from here when building more clients on the same proxy.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from faultproxy import GCSRulesProxy

from omniq_console.backend.gcs import GCSBackend
from omniq_console.backend.objectstore import RetryPolicy
from omniq_console.demo.emulator import Emulator

RULES_RETRY = RetryPolicy(base_delay=0.2, max_delay=1.0, deadline=15.0, request_timeout=5.0)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--gcs-rules",
        action="store_true",
        default=False,
        help="run emulator tests through the GCS rules model (429s, roles, limits)",
    )


@pytest.fixture(scope="session")
def gcs_rules_session(emulator: Emulator) -> Iterator[GCSRulesProxy]:
    """One rules model for the whole session, in front of the session emulator."""
    with GCSRulesProxy(emulator.url, role="objectAdmin") as proxy:
        yield proxy


@pytest.fixture
def storage_endpoint(request: pytest.FixtureRequest, emulator: Emulator) -> str:
    """Where clients should go: the session's rules model under ``--gcs-rules``, else the
    emulator itself."""
    if request.config.getoption("--gcs-rules"):
        proxy: GCSRulesProxy = request.getfixturevalue("gcs_rules_session")
        return proxy.url
    return emulator.url


@pytest.fixture
def gcs_rules(emulator: Emulator) -> Iterator[GCSRulesProxy]:
    """The GCS rules model in front of the session emulator, on a fresh bucket."""
    bucket = f"rules-{uuid.uuid4().hex[:16]}"
    emulator.create_bucket(bucket)
    with GCSRulesProxy(emulator.url, role="objectAdmin", bucket=bucket) as proxy:
        yield proxy


@pytest.fixture
async def rules_backend(gcs_rules: GCSRulesProxy) -> AsyncIterator[GCSBackend]:
    """An open GCSBackend through the rules model, retrying fast (``RULES_RETRY``)."""
    assert gcs_rules.bucket is not None
    backend = GCSBackend(gcs_rules.bucket, endpoint_url=gcs_rules.url, retry=RULES_RETRY)
    async with backend:
        yield backend


@pytest.fixture
def rules_env(gcs_rules: GCSRulesProxy, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Clients in this test and its subprocesses reach the bucket through the rules model."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_rules.url)
    return dict(os.environ)
