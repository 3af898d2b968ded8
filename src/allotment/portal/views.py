"""What each portal page shows, gathered through the services the API answers with (the
Checker's entitlements, usage reads, seats, instances, invoice previews), so a page's
numbers are the API's.

    overview(session, checker, customer, now)     contract, days left, the month so far
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from allotment.billing import service as billing
from allotment.billing.schemas import InvoiceRead
from allotment.check.service import Checker
from allotment.check.snapshot import StoreUnavailable
from allotment.errors import ServiceUnavailable
from allotment.policy.catalog import Catalog


async def entitlements(
    checker: Checker, customer: str, now: datetime
) -> tuple[dict[str, Any], Catalog | None]:
    """The entitlements document GET /v1/customers/{key}/entitlements answers, and the
    catalog it was decided with."""
    try:
        document, snapshot = await checker.entitlements_of(customer, now)
    except StoreUnavailable as exc:
        raise ServiceUnavailable("The store is unavailable and nothing is cached.") from exc
    return document, snapshot.catalog


def period_of(now: datetime) -> str:
    return now.strftime("%Y-%m")


async def invoice(
    session: AsyncSession, document: dict[str, Any], now: datetime
) -> InvoiceRead | None:
    """This month's invoice preview of the contract in force, to date."""
    contract = document.get("contract")
    if contract is None:
        return None
    return await billing.preview(
        session, contract_id=contract["id"], period=period_of(now), now=now
    )


def countdown(contract: dict[str, Any] | None, now: datetime) -> dict[str, Any] | None:
    """The contract's end: a trial's end or the renewal, with whole days left (rounded up,
    so the last day shows 1)."""
    if contract is None or contract.get("ends_at") is None:
        return None
    ends_at = datetime.fromisoformat(contract["ends_at"].replace("Z", "+00:00"))
    seconds = (ends_at - now).total_seconds()
    return {
        "what": "Trial ends" if contract["kind"] == "trial" else "Renews",
        "at": ends_at,
        "days_left": max(0, math.ceil(seconds / 86400)),
        "past": seconds <= 0,
    }


async def overview(
    session: AsyncSession, checker: Checker, customer: str, now: datetime
) -> dict[str, Any]:
    document, _ = await entitlements(checker, customer, now)
    contract = document["contract"]
    allowed = sum(1 for f in document["features"] if f["allowed"])
    return {
        "title": "Overview",
        "contract": contract,
        "countdown": countdown(contract, now),
        "invoice": await invoice(session, document, now),
        "features_allowed": allowed,
        "features_total": len(document["features"]),
        "limits": document["limits"],
        "now": now,
    }
