"""Shared fixtures: one real GCS emulator (fake-gcs-server) for the session, a fresh bucket per
test; and the slow tier, marked here in one place.

Under pytest-xdist (``-n``) each worker is its own session: it starts its own emulators on
free ports, and every test makes its own bucket, so tests do not depend on their worker.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator, Iterator

# Cache the bytecode of the package and of the assertion-rewritten test modules (in the
# git-ignored __pycache__/) even under PYTHONDONTWRITEBYTECODE=1, as set on this machine kind:
# without it every run, and every xdist worker of it, compiles them again, about 5 s of CPU
# per process (the fast tier at -n 4 starts five). Set before the package is imported.
sys.dont_write_bytecode = False

import pytest  # noqa: E402

from omniq_console.backend.gcs import GCSBackend  # noqa: E402
from omniq_console.demo.emulator import Emulator  # noqa: E402

# Fixture modules owned by their suites: the GCS rules model and the Pub/Sub emulator.
pytest_plugins = ["gcs_rules_fixtures", "pubsub_fixtures"]

# The slow tier: tests that take seconds each (whole-app Pilot runs, subprocesses, real
# kernels, a browser, outages, chaos). `pytest -m "not slow"` is the fast tier a developer runs
# on every change; `pytest` (and .ci/run) runs both. Kept here, not in each module, so that
# moving a test between tiers touches one list: a whole module by file name, or one test by
# its node id without parameters.
SLOW_MODULES = frozenset(
    {
        "test_browser.py",
        "test_chaos.py",
        "test_cli.py",  # the command line in a subprocess, one interpreter start per test
        "test_demo.py",
        "test_notebook_kernel.py",
        # An 80-step fleet on the emulator, then the whole console at three sizes (14 s of
        # CPU): end to end. The fast tier keeps the oracle (test_oracle.py) and the views.
        "test_oracle_screen.py",
        "test_tui_action_guards.py",
        "test_tui_actions.py",
        "test_tui_actions_emulator.py",
        "test_tui_bulk.py",
        "test_tui_console.py",
        "test_tui_literal.py",
        "test_tui_navigation.py",
        "test_tui_queue_emulator.py",
        "test_tui_snapshots.py",
        "test_tui_tasks.py",
        "test_tui_views.py",
        "test_web_security.py",
    }
)
SLOW_TESTS = frozenset(
    {
        "tests/test_backend_claims.py::test_processes_claim_each_task_exactly_once",
        "tests/test_backend_queue.py::test_a_fast_task_mutates_no_name_twice_a_second_under_the_rules",
        "tests/test_monitor_tables.py::test_importing_and_rendering_never_loads_textual",
        "tests/test_notebook.py::test_console_serves_with_its_token_and_close_leaves_no_process",
        "tests/test_notebook.py::test_console_of_a_missing_bucket_raises_the_servers_message",
        "tests/test_objectstore.py::test_listing_pages_past_one_thousand",
        "tests/test_operator.py::test_retry_task",
        "tests/test_operator.py::test_bulk_retry_touches_exactly_what_was_seen",
        "tests/test_properties.py::test_index_metadata_is_always_header_safe",
        "tests/test_properties.py::test_every_walk_of_the_state_machine_keeps_its_invariants",
        "tests/test_properties.py::test_task_round_trips",
        "tests/test_properties.py::test_task_index_from_listing_matches_body",
        "tests/test_properties.py::test_other_indexes_from_listing_match_bodies",
        "tests/test_properties.py::test_event_ids_sort_by_time",
        "tests/test_properties.py::test_check_id_refuses_any_id_with_a_dangerous_part",
        "tests/test_properties.py::test_schedule_round_trips_through_its_life",
        "tests/test_properties.py::test_check_id_accepts_exactly_safe_ids",
        "tests/test_reliability_badinput.py::test_fuzzed_objects_under_every_prefix_stop_nothing",
        "tests/test_reliability_badinput.py::test_overflowing_dates_everywhere_stop_no_worker_and_no_scheduler",
        "tests/test_reliability_credentials.py::test_snapshot_command_fails_in_one_secret_free_line",
        "tests/test_runtime_omniq.py::test_run_worker_sync_second_signal_cancels_what_the_first_waits_for",
        "tests/test_runtime_worker.py::test_graceful_stop_keeps_a_sync_tasks_lease_until_its_thread_ends",
        "tests/test_runtime_worker.py::test_stop_mid_task_releases_an_async_task_to_its_queue",
        "tests/test_settings.py::test_config_module_imports_without_the_backend_in_a_fresh_interpreter",
        "tests/test_tui_units.py::test_long_lived_objects_are_frozen_once_and_never_when_headless",
        "tests/test_fleet.py::test_fleet_runs_a_realistic_reproducible_workload",
        "tests/test_fleet.py::test_cancelling_the_fleet_releases_what_its_workers_hold",
        "tests/test_gcs_limits.py::test_a_worker_survives_a_30_second_outage_without_failing_or_losing_a_task",
        "tests/test_reliability_protocol.py::test_a_stalled_worker_cannot_land_its_outcome_after_losing_its_lease",
        "tests/test_reliability_protocol.py::test_reapers_with_skewed_clocks_never_steal_a_live_lease",
        "tests/test_reliability_protocol.py::test_a_retry_is_claimed_again_within_a_claim_cycle",
        "tests/test_reliability_races.py::test_processes_racing_lose_nothing_and_duplicate_only_after_a_kill",
        "tests/test_reliability_runtime_faults.py::test_workers_on_flaky_storage_lose_nothing_and_run_nothing_twice",
        "tests/test_runtime_worker.py::test_killed_worker_task_is_run_again_by_another_worker",
        "tests/test_runtime_worker.py::test_run_worker_sync_stops_cleanly_on_sigterm",
        "tests/test_runtime_worker.py::test_task_succeeds_after_retries",
        "tests/test_runtime_worker.py::test_failing_task_retries_with_backoff_then_fails_with_traceback",
    }
)


# Fixtures that make a test slow wherever it is: the Pub/Sub emulator is a JVM that takes
# 5-11 s to start (once per session, or per xdist worker).
SLOW_FIXTURES = frozenset({"pubsub_emulator"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the slow tier (see ``SLOW_MODULES``, ``SLOW_TESTS`` and ``SLOW_FIXTURES``)."""
    slow = pytest.mark.slow
    for item in items:
        if (
            item.path.name in SLOW_MODULES
            or item.nodeid.split("[")[0] in SLOW_TESTS
            or not SLOW_FIXTURES.isdisjoint(getattr(item, "fixturenames", ()))
        ):
            item.add_marker(slow)


@pytest.fixture(scope="session")
def emulator() -> Iterator[Emulator]:
    with Emulator() as emu:
        yield emu


@pytest.fixture
def gcs_env(
    emulator: Emulator, storage_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> Emulator:
    """Point every client created in the test (and its subprocesses) at the emulator, or at
    the GCS rules model in front of it under ``pytest --gcs-rules``."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", storage_endpoint)
    return emulator


@pytest.fixture
def bucket(gcs_env: Emulator) -> str:
    """A new, empty bucket on the emulator, so tests never see each other's objects."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    gcs_env.create_bucket(name)
    return name


@pytest.fixture
async def backend(bucket: str) -> AsyncIterator[GCSBackend]:
    """An open GCSBackend (async) on the test's fresh bucket, with the default options."""
    async with GCSBackend(bucket) as opened:
        yield opened
