"""Invoice previews, finance's list of them, and reconciliation.

    preview(session, contract_id=, period=, now=, as_of=)  → InvoiceRead (billing/pricing.py
                                                           prices what billing/data.py gathered;
                                                           billing/wallet_ledger.py adds what a
                                                           credit wallet paid)
    csv_lines(invoice)                                     → text/csv of the lines
    list_previews(session, period=, …)                     → every contract's subtotal, paginated
    csv_summaries(invoices)                                → text/csv of that list
    reconcile(session, contract_id=, period=, now=)        → what was enforced vs allowed;
                                                             each place enforced use passed
                                                             the terms fires, once per period,
                                                             reconciliation.discrepancy

Deterministic: a preview is a function of stored data and its `as_of` instant; the same
`as_of` gives the same lines, byte for byte, whatever arrived since (that shows in `late`).
"""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.alerts import service as alerts
from allotment.billing import data, instant, reconcile, wallet_ledger
from allotment.billing.priced import Priced
from allotment.billing.pricing import price
from allotment.billing.schemas import (
    InvoiceList,
    InvoiceRead,
    InvoiceSummary,
    LateMeterRead,
    LateRead,
    LineRead,
    ReconciliationRead,
    UnpricedRead,
)
from allotment.contracts.models import Contract
from allotment.kit.pagination import paginate

_CSV_COLUMNS = ("code", "description", "quantity", "unit", "unit_price", "amount", "source")


def priced(gathered: data.Gathered) -> Priced:
    return price(gathered.pricing_input())


async def preview(
    session: AsyncSession,
    *,
    contract_id: str,
    period: str,
    now: datetime,
    as_of: datetime | None = None,
    override: data.Proposed | None = None,
    late_before: bool = False,
) -> InvoiceRead:
    start, end = instant.period(period, now)
    taken = instant.as_of(as_of, start, now)
    contract = await data.contract_row(session, contract_id)
    gathered = await data.gather(
        session,
        contract=contract,
        start=start,
        end=end,
        as_of=taken,
        override=override,
        late_before=late_before,
    )
    result = await wallet_ledger.with_credits(
        session,
        customer_id=contract.customer_id,
        contract_id=contract.id,
        gathered=gathered,
        priced=priced(gathered),
        override=override,
    )
    late = gathered.usage.late
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
        as_of=taken,
        to_date=taken < end,
        late=LateRead(
            events=late.events,
            meters=[
                LateMeterRead(meter=name, events=found.events, units=found.quantity)
                for name, found in sorted(late.by_meter.items())
            ],
        ),
        unpriced=[
            UnpricedRead(start=start, end=stop, reason=why)
            for start, stop, why in gathered.unpriced
        ],
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


def csv_summaries(invoices: InvoiceList) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("contract", "customer", "currency", "subtotal"))
    for item in invoices.items:
        writer.writerow([item.contract, item.customer, item.currency, str(item.subtotal)])
    return out.getvalue()


async def list_previews(
    session: AsyncSession,
    *,
    period: str,
    now: datetime,
    limit: int,
    cursor: str | None,
    as_of: datetime | None = None,
) -> InvoiceList:
    """Every contract active at some instant of the period, by id, with its subtotal."""
    start, end = instant.period(period, now)
    taken = instant.as_of(as_of, start, now)
    query = select(Contract).where(
        Contract.starts_at < end,
        (Contract.ends_at.is_(None)) | (Contract.ends_at > start),
        Contract.created_at <= taken,  # as of `taken`: a contract recorded later is not listed
    )
    page = await paginate(session, query, Contract.id, limit=limit, cursor=cursor)
    items = []
    for contract in page.items:
        invoice = await preview(
            session, contract_id=contract.id, period=period, now=now, as_of=taken
        )
        items.append(
            InvoiceSummary(
                contract=invoice.contract,
                customer=invoice.customer,
                currency=invoice.currency,
                subtotal=invoice.subtotal,
            )
        )
    return InvoiceList(period=period, as_of=taken, items=items, next_cursor=page.next_cursor)


_BURSTS = text(
    "SELECT started_at, window_ends_at, ended_at FROM seat_bursts WHERE customer_id = :c "
    "AND started_at < :to AND (ended_at IS NULL OR ended_at > :from) ORDER BY started_at"
)


async def reconcile_contract(
    session: AsyncSession, *, contract_id: str, period: str, now: datetime
) -> ReconciliationRead:
    start, end = instant.period(period, now)
    contract = await data.contract_row(session, contract_id)
    gathered = await data.gather(session, contract=contract, start=start, end=end, as_of=now)
    bursts = (
        await session.execute(_BURSTS, {"c": contract.customer_id, "from": start, "to": end})
    ).all()
    report: dict[str, Any] = reconcile.report(gathered, bursts)
    for subject, facts in report.pop("passed").items():
        await alerts.fire(
            session,
            "reconciliation.discrepancy",
            {
                "customer": contract.customer,
                "contract": contract.id,
                "period": period,
                **facts,  # a meter's `period` is its own (month, day…): `month` says which
                "month": period,
                "discrepancies": report["discrepancies"],
            },
            customer_id=contract.customer_id,
            customer_key=contract.customer,
            subject=f"{contract.id}:{subject}",
            threshold="",
            period=period,
            at=now,
        )
    return ReconciliationRead(
        contract=contract.id,
        customer=contract.customer,
        period=period,
        computed_at=now,
        **report,
    )
