"""The demo fleet's workload: which task comes next, on which queue, with which arguments, and
how it will end; reproducible from a seed.

A task's outcome is decided by its arguments alone (a ``currency`` of ``"XXX"`` is refused,
``outage_attempts=2`` fails twice then succeeds), so the same seed gives the same mix whichever
worker runs what.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..runtime.registry import task_name
from .tasks import (
    SLOW_MX,
    SUPPORTED_CURRENCIES,
    build_report,
    charge_card,
    export_csv,
    fetch_exchange_rates,
    fraud_check,
    lookup_customer,
    resize_image,
    send_email,
)


@dataclass(frozen=True)
class QueueProfile:
    name: str
    priority: int
    rate: float  # tasks per second at speed 1


QUEUES: tuple[QueueProfile, ...] = (
    QueueProfile("critical", 10, 0.4),
    QueueProfile("default", 0, 1.0),
    QueueProfile("emails", 5, 0.7),
    QueueProfile("reports", 0, 0.1),
)

# (queues, concurrency) of each simulated worker.
WORKERS: tuple[tuple[tuple[str, ...], int], ...] = (
    (("critical", "default", "emails", "reports"), 4),
    (("critical", "default", "emails"), 3),
    (("reports", "default"), 2),
)

MAX_RETRIES = {"fetch_exchange_rates": 3, "send_email": 2, "charge_card": 1}
"""Retries of the functions whose planned failures depend on them (the fleet registers them so)."""


@dataclass(frozen=True)
class PlannedTask:
    """One task of the workload, decided in advance by the seeded generator."""

    gap_s: float  # wait before enqueueing it (already divided by speed)
    task_id: str | None
    queue: str
    func: str
    kwargs: dict[str, Any] = field(hash=False)
    outcome: str  # "success", "retried", or the exception type it ends with
    work_ms: int


def _work(rng: random.Random, low_ms: int, high_ms: int, speed: float) -> int:
    return max(1, int(rng.uniform(low_ms, high_ms) / speed))


def _choose(
    rng: random.Random, profile: QueueProfile, speed: float
) -> tuple[Callable[..., Any], dict[str, Any], str]:
    """A function, its keyword arguments and the outcome they lead to."""
    roll = rng.random()
    n = rng.randrange(10_000, 99_999)
    if profile.name == "critical":
        if roll < 0.55:
            bad = rng.random() < 0.15
            currency = "XXX" if bad else rng.choice(SUPPORTED_CURRENCIES)
            args = {
                "order_id": f"ord_{n}",
                "amount_cents": rng.randrange(199, 49_999),
                "currency": currency,
                "work_ms": _work(rng, 30, 200, speed),
            }
            return charge_card, args, "ValueError" if bad else "success"
        args = {
            "order_id": f"ord_{n}",
            "score": rng.randrange(0, 100),
            "work_ms": _work(rng, 20, 120, speed),
        }
        return fraud_check, args, "success"
    if profile.name == "default":
        if roll < 0.4:
            args = {
                "image_id": f"img_{n}",
                "width": rng.choice((320, 640, 1280, 1920)),
                "work_ms": _work(rng, 50, 400, speed),
            }
            return resize_image, args, "success"
        if roll < 0.7:
            gone = rng.random() < 0.2
            args = {
                "customer_id": f"cus_{'gone_' if gone else ''}{n}",
                "work_ms": _work(rng, 20, 150, speed),
            }
            return lookup_customer, args, "KeyError" if gone else "success"
        outage = rng.choices((0, 1, 2, 9), weights=(55, 20, 15, 10))[0]
        args = {
            "provider": rng.choice(("ecb", "fed", "boe")),
            "outage_attempts": outage,
            "work_ms": _work(rng, 50, 300, speed),
        }
        outcome = (
            "success"
            if outage == 0
            else ("retried" if outage <= MAX_RETRIES["fetch_exchange_rates"] else "ConnectionError")
        )
        return fetch_exchange_rates, args, outcome
    if profile.name == "emails":
        slow = roll < 0.12
        domain = SLOW_MX if slow else rng.choice(("example.com", "example.org", "mail.example"))
        args = {
            "to": f"user{n}@{domain}",
            "template": rng.choice(("welcome", "receipt", "password-reset", "weekly")),
            "work_ms": _work(rng, 40, 250, speed),
        }
        return send_email, args, "TimeoutError" if slow else "success"
    if roll < 0.6:
        args = {
            "name": rng.choice(("sales-daily", "churn", "inventory", "ledger")),
            "rows": rng.randrange(1_000, 500_000),
            "work_ms": _work(rng, 1_500, 4_000, speed),
        }
        return build_report, args, "success"
    dataset = rng.choice(("orders", "customers", "audit-log", "invoices"))
    args = {
        "dataset": dataset,
        "rows": rng.randrange(1_000, 200_000),
        "work_ms": _work(rng, 1_000, 3_000, speed),
    }
    return export_csv, args, "OSError" if dataset == "audit-log" else "success"


def workload(seed: int | None, speed: float = 1.0) -> Iterator[PlannedTask]:
    """The endless task sequence of a fleet; the same ``seed`` gives the same sequence."""
    rng = random.Random(seed)
    total = sum(q.rate for q in QUEUES) * speed
    weights = [q.rate for q in QUEUES]
    while True:
        gap = rng.expovariate(total)
        profile = rng.choices(QUEUES, weights=weights)[0]
        func, kwargs, outcome = _choose(rng, profile, speed)
        task_id = str(uuid.UUID(int=rng.getrandbits(128), version=4)) if seed is not None else None
        yield PlannedTask(
            gap, task_id, profile.name, task_name(func), kwargs, outcome, int(kwargs["work_ms"])
        )
