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
  (``endpoint_url=``), with ``RULES_RETRY``: Google's backoff shape, scaled down so a test
  sees many retries within a second or two, and a 15 s deadline. A 429 on a hot name then
  costs about one second of retries, as it would on GCS.
- ``rules_env``: ``STORAGE_EMULATOR_HOST`` pointed at the proxy for the test (clients built
  without ``endpoint_url`` use it), returned as a full environment for subprocesses (which
  use the default policy: 1 s initial backoff, 120 s deadline).

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

RULES_RETRY = RetryPolicy(base_delay=0.05, max_delay=0.5, deadline=15.0, request_timeout=5.0)


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
