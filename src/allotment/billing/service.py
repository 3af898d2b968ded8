"""Invoice previews, finance's list of them, and reconciliation.

    preview(session, contract_id=, period=, now=)   → InvoiceRead (billing/pricing.py prices
                                                     what billing/data.py gathered)
    csv_lines(invoice)                              → text/csv of the lines
    list_previews(session, period=, …)              → every contract's subtotal, paginated
    reconcile(session, contract_id=, period=, now=) → what was enforced vs what is allowed

Deterministic: the same stored data and policy versions give the same lines, byte for byte;
only `computed_at` (and, for the current month, the data up to it) moves.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.billing import data, reconcile
from allotment.billing.pricing import Priced, PricingInput, price
from allotment.billing.schemas import (
    InvoiceList,
    InvoiceRead,
    InvoiceSummary,
    LineRead,
    ReconciliationRead,
)
from allotment.contracts.models import Contract
from allotment.kit.pagination import paginate
from allotment.policy.catalog import Catalog

_CSV_COLUMNS = ("code", "description", "quantity", "unit", "unit_price", "amount", "source")


def priced(gathered: data.Gathered) -> Priced:
    return price(
        PricingInput(
            period_start=gathered.period_start,
            period_end=gathered.period_end,
            currency=gathered.currency,
            minor_digits=gathered.minor_digits,
            segments=gathered.segments,
            seats=gathered.seats,
            instances=gathered.instances,
            meters=gathered.meters(),
        )
    )


async def preview(
    session: AsyncSession,
    *,
    contract_id: str,
    period: str,
    now: datetime,
    override: tuple[int, Catalog] | None = None,
) -> InvoiceRead:
    start, end = data.period(period, now)
    contract = await data.contract_row(session, contract_id)
    gathered = await data.gather(
        session, contract=contract, start=start, end=end, now=now, override=override
    )
    result = priced(gathered)
    return InvoiceRead(
        contract=contract.id,
        customer=contract.customer,
        period=period,
        currency=gathered.currency,
        lines=[
            LineRead(
                code=line.code,
                description=line.description,
                quantity=line.quantity,
                unit=line.unit,
                unit_price=line.unit_price,
                amount=line.amount,
                source=line.source,
            )
            for line in result.lines
        ],
        subtotal=result.subtotal,
        policy_versions=list(result.policy_versions),
        to_date=now < end,
        computed_at=now,
    )


def csv_lines(invoice: InvoiceRead) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(_CSV_COLUMNS)
    for line in invoice.lines:
        writer.writerow(
            [
                line.code,
                line.description,
                str(line.quantity),
                line.unit,
                str(line.unit_price),
                str(line.amount),
                orjson.dumps(line.source, option=orjson.OPT_SORT_KEYS).decode(),
            ]
        )
    return out.getvalue()


async def list_previews(
    session: AsyncSession, *, period: str, now: datetime, limit: int, cursor: str | None
) -> InvoiceList:
    """Every contract active at some instant of the period, by id, with its subtotal."""
    start, end = data.period(period, now)
    query = select(Contract).where(
        Contract.starts_at < end, (Contract.ends_at.is_(None)) | (Contract.ends_at > start)
    )
    page = await paginate(session, query, Contract.id, limit=limit, cursor=cursor)
    items = []
    for contract in page.items:
        invoice = await preview(session, contract_id=contract.id, period=period, now=now)
        items.append(
            InvoiceSummary(
                contract=invoice.contract,
                customer=invoice.customer,
                currency=invoice.currency,
                subtotal=invoice.subtotal,
            )
        )
    return InvoiceList(period=period, items=items, next_cursor=page.next_cursor)


_BURSTS = text(
    "SELECT started_at, window_ends_at, ended_at FROM seat_bursts WHERE customer_id = :c "
    "AND started_at < :to AND (ended_at IS NULL OR ended_at > :from) ORDER BY started_at"
)


async def reconcile_contract(
    session: AsyncSession, *, contract_id: str, period: str, now: datetime
) -> ReconciliationRead:
    start, end = data.period(period, now)
    contract = await data.contract_row(session, contract_id)
    gathered = await data.gather(session, contract=contract, start=start, end=end, now=now)
    bursts = (
        await session.execute(_BURSTS, {"c": contract.customer_id, "from": start, "to": end})
    ).all()
    report: dict[str, Any] = reconcile.report(gathered, bursts)
    return ReconciliationRead(
        contract=contract.id,
        customer=contract.customer,
        period=period,
        computed_at=now,
        **report,
    )
