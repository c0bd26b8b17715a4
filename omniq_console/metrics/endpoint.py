"""Serving the collector: ``GET /metrics`` on aiohttp, fed by one running Monitor.

Used by ``omniq-console metrics`` (an endpoint of its own) and by ``omniq-console serve`` (the
same route beside the console, behind the server's token). One Monitor polls the bucket at its
interval; scrapes read its latest snapshot and never trigger a poll, so the bucket's request
count does not depend on how many scrapers there are or how often they come.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from .collector import SnapshotCollector

if TYPE_CHECKING:
    from ..monitor.monitor import Monitor
    from ..settings import BackendSettings

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"


def registry_for(collector: SnapshotCollector) -> CollectorRegistry:
    """A registry holding only ``collector`` (no process or platform metrics of this Python)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def metrics_handler(registry: CollectorRegistry) -> Handler:
    """The aiohttp handler of ``GET /metrics`` for ``registry`` (text format 0.0.4)."""

    async def handle(request: web.Request) -> web.Response:
        body = generate_latest(registry)
        response = web.Response(body=body)
        # Set whole: aiohttp's content_type setter would drop the format's version.
        response.headers["Content-Type"] = CONTENT_TYPE_PLAIN_0_0_4
        return response

    return handle


class MonitorService:
    """A backend and its Monitor running in the background of an aiohttp app.

    ``start()`` opens the backend (after the CLI's probe) and starts polling; ``stop()`` ends
    both. ``collector`` reads the monitor's latest snapshot.
    """

    def __init__(self, settings: BackendSettings) -> None:
        self._settings = settings
        self._task: asyncio.Task[None] | None = None
        self._monitor: Monitor | None = None
        self.collector = SnapshotCollector(
            lambda: None if self._monitor is None else self._monitor.latest
        )

    async def start(self, app: web.Application | None = None) -> None:
        """Start polling (an aiohttp ``on_startup`` hook: ``app`` is ignored)."""
        self._task = asyncio.create_task(self._run(), name="omniq-metrics-monitor")

    async def _run(self) -> None:
        from ..monitor.monitor import Monitor
        from ..settings import feed_options, make_backend

        settings = self._settings
        try:
            async with make_backend(settings) as backend:
                self._monitor = Monitor(
                    backend,
                    interval=settings.refresh,
                    **feed_options(settings),
                    task_rows=False,  # a scrape needs the aggregates only
                )
                await self._monitor.run()
        except Exception:
            # Polls fail into stale snapshots; this is the backend failing to open at all.
            # Scrapes then say omniq_monitor_up 0; the log says why.
            log.exception("the metrics monitor of gs://%s stopped", settings.bucket_name)
            raise

    async def stop(self, app: web.Application | None = None) -> None:
        """Stop polling and close the backend (an aiohttp ``on_cleanup`` hook)."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def add_to(self, app: web.Application) -> None:
        """Poll while ``app`` runs and answer ``GET /metrics`` in it."""
        app.router.add_get(METRICS_PATH, metrics_handler(registry_for(self.collector)))
        app.on_startup.append(self.start)
        app.on_cleanup.append(self.stop)


async def run_metrics(
    settings: BackendSettings, *, host: str, port: int, announce: Callable[[str], None]
) -> None:
    """Serve ``http://host:port/metrics`` for the bucket of ``settings`` until cancelled;
    ``announce`` is told the URL once the port is bound."""
    service = MonitorService(settings)
    app = web.Application()
    service.add_to(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        shown = f"[{host}]" if ":" in host else host
        announce(
            f"serving metrics of gs://{settings.bucket_name} on http://{shown}:{port}{METRICS_PATH}"
        )
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
