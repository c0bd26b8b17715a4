"""Prometheus metrics of a bucket, from the Monitor's snapshots.

``SnapshotCollector`` turns the latest ``Snapshot`` into metric families at scrape time;
``endpoint`` serves it (``omniq-console metrics``, and ``/metrics`` of ``omniq-console serve``).
Only this package imports ``prometheus_client``.
"""

from .collector import SnapshotCollector
from .endpoint import METRICS_PATH, MonitorService, registry_for, run_metrics

__all__ = [
    "METRICS_PATH",
    "MonitorService",
    "SnapshotCollector",
    "registry_for",
    "run_metrics",
]
