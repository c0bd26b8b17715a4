"""The demo fleet's task functions: they succeed, fail with ValueError, KeyError, TimeoutError,
ConnectionError or OSError, run slow, or succeed only after retries, as their arguments say.

Module level, so their names (``omniq_console.demo.tasks:charge_card``) are the same in every
process that runs them.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from typing import Any

from ..runtime.worker import current_task

SUPPORTED_CURRENCIES = ("EUR", "USD", "GBP", "JPY", "CHF")
SLOW_MX = "slow-mx.example"
"""The mail domain whose server never answers (``send_email`` to it ends in TimeoutError)."""


async def charge_card(
    order_id: str, amount_cents: int, currency: str, work_ms: int
) -> dict[str, Any]:
    """Charge an order; refuses unsupported currencies and non-positive amounts (ValueError)."""
    await asyncio.sleep(work_ms / 1000)
    if currency not in SUPPORTED_CURRENCIES:
        raise ValueError(f"order {order_id}: currency {currency!r} is not supported")
    if amount_cents <= 0:
        raise ValueError(f"order {order_id}: amount must be positive, got {amount_cents}")
    return {"order_id": order_id, "charged_cents": amount_cents, "currency": currency}


async def fraud_check(order_id: str, score: int, work_ms: int) -> dict[str, Any]:
    """Score an order (always succeeds)."""
    await asyncio.sleep(work_ms / 1000)
    return {"order_id": order_id, "score": score, "flagged": score > 80}


def resize_image(image_id: str, width: int, work_ms: int) -> dict[str, Any]:
    """A CPU-ish sync task (runs in a worker thread)."""
    time.sleep(work_ms / 1000)
    return {"image_id": image_id, "width": width, "bytes": width * 731}


async def lookup_customer(customer_id: str, work_ms: int) -> dict[str, Any]:
    """KeyError for customers that do not exist (ids starting ``cus_gone``)."""
    await asyncio.sleep(work_ms / 1000)
    if customer_id.startswith("cus_gone"):
        raise KeyError(customer_id)
    return {
        "customer_id": customer_id,
        "tier": ("free", "pro", "team")[zlib.crc32(customer_id.encode()) % 3],
    }


async def fetch_exchange_rates(provider: str, outage_attempts: int, work_ms: int) -> dict[str, Any]:
    """Fails with ConnectionError on its first ``outage_attempts`` attempts, then succeeds."""
    await asyncio.sleep(work_ms / 1000)
    task = current_task()
    attempt = task.retry_count if task is not None else outage_attempts
    if attempt < outage_attempts:
        raise ConnectionError(f"{provider}: connection reset by peer (attempt {attempt + 1})")
    return {"provider": provider, "rates": len(SUPPORTED_CURRENCIES), "attempts": attempt + 1}


def send_email(to: str, template: str, work_ms: int) -> dict[str, Any]:
    """A sync task; the mail server of ``slow-mx.example`` never answers (TimeoutError)."""
    time.sleep(work_ms / 1000)
    if to.endswith("@" + SLOW_MX):
        raise TimeoutError(f"SMTP server for {SLOW_MX} did not answer within 30 s")
    return {"to": to, "template": template, "message_id": f"<{zlib.crc32(to.encode()):08x}@mail>"}


def build_report(name: str, rows: int, work_ms: int) -> dict[str, Any]:
    """A slow sync task."""
    time.sleep(work_ms / 1000)
    return {"report": name, "rows": rows}


async def export_csv(dataset: str, rows: int, work_ms: int) -> dict[str, Any]:
    """A slow async task; the ``audit-log`` export runs out of disk (OSError)."""
    await asyncio.sleep(work_ms / 1000)
    if dataset == "audit-log":
        raise OSError(28, "No space left on device", f"/exports/{dataset}.csv")
    return {"dataset": dataset, "rows": rows}


async def cleanup_sessions(max_age_minutes: int) -> int:
    """A scheduled chore."""
    await asyncio.sleep(0.05)
    return max_age_minutes * 3


async def sync_inventory(warehouse: str) -> dict[str, Any]:
    """A scheduled chore."""
    await asyncio.sleep(0.1)
    return {"warehouse": warehouse, "skus": 1200}


def send_digest(audience: str) -> str:
    """A scheduled chore (sync)."""
    time.sleep(0.05)
    return f"digest sent to {audience}"


async def backup_database(target: str) -> str:
    """A scheduled chore, paused in the demo."""
    await asyncio.sleep(0.2)
    return f"backup written to {target}"
