"""A customer's credit wallet as known at one instant: its grants, what each month's priced
usage asked of it, and the ledger that pays one from the other (docs/billing.md, "Credit
wallets").

    build(session, customer_id=, as_of=, until=)   → Wallet | None (no grant, no plan credits)
    with_credits(session, …, gathered, priced)     → Priced with its `credits` line
    month_wallet(session, customer_id=, now=)      → MonthWallet: what checks finish with the
                                                   live meter totals (check/credit_use.py)

Grants are the `credit_grants` rows recorded by `as_of` and, for each month a contract
is on a plan with `price.credits.monthly`, that plan's grant (`plan:<YYYY-MM>`, one a month).
Charges are one per contract and month, from the first month a grant or a contract starts to
the month of `until` (default: `as_of`'s): the month's applicable lines
(billing/credit_line.py), drawn at the month's last instant, or at `as_of` for the month it
falls in. Nothing is stored: every month since the first is gathered and priced again, as its
preview would be, so the wallet is a function of stored data and `as_of` like a preview. The
cost is one month's preview per month and contract since the first (docs/billing.md says
what that means in practice).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from allotment.billing import data
from allotment.billing.credit_balance import MonthWallet, OpenGrant
from allotment.billing.credit_line import MonthCharge, applies, credits_line, month_charge
from allotment.billing.priced import Priced
from allotment.billing.pricing import price
from allotment.billing.wallet import Charge, Grant, Ledger, draw
from allotment.contracts.models import Contract
from allotment.contracts.terms import DISCOUNTED_KINDS
from allotment.credits.models import CreditGrant
from allotment.kit.clock import isoformat
from allotment.policy.catalog import DEFAULT_CREDITS_APPLY_TO, Credits
from allotment.policy.money import minor_digits

INSTANT = timedelta(microseconds=1)
UNPAID_KINDS = frozenset({"trial"})  # a trial's months grant no plan credits


@dataclass(frozen=True)
class MonthUse:
    ref: str  # "<contract>:<YYYY-MM>"
    contract: str
    period: str
    at: datetime  # when it is drawn
    charge: MonthCharge


@dataclass(frozen=True)
class Wallet:
    as_of: datetime
    now: datetime  # the ledger's instant: `as_of`, or the end of `until`'s month
    currency: str
    minor_digits: int
    grants: tuple[Grant, ...]
    rows: Mapping[str, CreditGrant]  # the recorded grants, by id (plan grants are not rows)
    months: tuple[MonthUse, ...]
    ledger: Ledger
    credits: Credits | None = None  # the terms of the plan priced last
    kinds: Mapping[str, str] = field(default_factory=dict)  # grant id → kind


def month_start(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month(month: datetime) -> datetime:
    return month.replace(year=month.year + month.month // 12, month=month.month % 12 + 1)


def add_months(month: datetime, n: int) -> datetime:
    for _ in range(n):
        month = next_month(month)
    return month


def credits_of(gathered: data.Gathered) -> dict[str, Credits | None]:
    """Each segment's plan's credit terms, by its start as line sources write it."""
    return {isoformat(s.start): s.plan.price.credits for s in gathered.segments}


def charge_of(gathered: data.Gathered, priced: Priced) -> MonthCharge:
    terms = credits_of(gathered)
    return month_charge(
        priced.lines,
        lambda start: found.applies_to if (found := terms.get(start)) else None,
        subtotal=priced.subtotal,
        minor_digits=gathered.minor_digits,
    )


def _plan_grant(gathered: data.Gathered, month: datetime) -> Grant | None:
    for segment in gathered.segments:
        credits = segment.plan.price.credits
        if segment.kind in UNPAID_KINDS or credits is None or not credits.monthly:
            continue
        return Grant(
            id=f"plan:{month:%Y-%m}",
            amount=credits.monthly,
            granted_at=segment.start,
            expires_at=add_months(month, 1 + credits.rollover),
            kind="plan",
        )
    return None


async def grant_rows(
    session: AsyncSession, *, customer_id: int, as_of: datetime
) -> Sequence[CreditGrant]:
    query = (
        select(CreditGrant)
        .where(CreditGrant.customer_id == customer_id, CreditGrant.created_at <= as_of)
        .order_by(CreditGrant.granted_at, CreditGrant.id)
    )
    return (await session.execute(query)).scalars().all()


async def build(
    session: AsyncSession,
    *,
    customer_id: int,
    as_of: datetime,
    until: datetime | None = None,
    known: Mapping[tuple[str, datetime], tuple[data.Gathered, Priced]] | None = None,
    override: data.Proposed | None = None,
    rows: Sequence[CreditGrant] | None = None,
) -> Wallet | None:
    """The wallet as of `as_of`, its ledger taken at the end of `until`'s month (or at
    `as_of`, whichever is first). `known` holds months already gathered and priced, by
    (contract id, period start). None when the customer has no grant and no month priced
    has plan credits."""
    if rows is None:
        rows = await grant_rows(session, customer_id=customer_id, as_of=as_of)
    last = month_start(until or as_of)
    now = min(as_of, next_month(last) - INSTANT)
    contracts = (
        await session.execute(
            select(Contract.id, Contract.starts_at, Contract.ends_at)
            .where(Contract.customer_id == customer_id, Contract.created_at <= as_of)
            .order_by(Contract.starts_at)
        )
    ).all()
    starts = [row.granted_at for row in rows] + [c.starts_at for c in contracts]
    grants = [
        Grant(row.id, row.amount, row.granted_at, row.expires_at, row.kind)  # type: ignore[arg-type]
        for row in rows
    ]
    months: list[MonthUse] = []
    # The grants' currency until a month priced says the contract's. A wallet is in one
    # currency, the one the customer is billed in: a grant recorded in another (before a
    # change of contract currency) is neither drawn nor counted, nor is a month billed in
    # another (docs/billing.md, "Credit wallets").
    currency = rows[-1].currency if rows else "USD"
    billed_in: dict[str, str] = {}  # month ref → its invoice's currency
    digits, credits = minor_digits(currency), None
    month = month_start(min(starts)) if starts else next_month(last)
    while month <= last:
        end = next_month(month)
        for contract in contracts:
            if contract.starts_at >= end or (
                contract.ends_at is not None and contract.ends_at <= month
            ):
                continue  # not in force this month: nothing to gather
            found = (known or {}).get((contract.id, month))
            if found is None:
                row = await data.contract_row(session, contract.id)
                gathered = await data.gather(
                    session, contract=row, start=month, end=end, as_of=as_of, override=override
                )
                found = (gathered, price(gathered.pricing_input()))
            gathered, priced = found
            if not gathered.segments:
                continue
            currency, digits = gathered.currency, gathered.minor_digits
            credits = gathered.segments[-1].plan.price.credits
            plan = _plan_grant(gathered, month)
            if plan is not None and all(g.id != plan.id for g in grants):
                grants.append(plan)
            at = min(now, end - INSTANT)
            billed_in[f"{contract.id}:{month:%Y-%m}"] = gathered.currency
            months.append(
                MonthUse(
                    ref=f"{contract.id}:{month:%Y-%m}",
                    contract=contract.id,
                    period=f"{month:%Y-%m}",
                    at=at,
                    charge=charge_of(gathered, priced),
                )
            )
        month = end
    by_id = {row.id: row for row in rows}
    grants = [g for g in grants if g.id not in by_id or by_id[g.id].currency == currency]
    months = [m for m in months if billed_in.get(m.ref, currency) == currency]
    if not grants:
        return None
    ledger = draw(grants, [Charge(m.ref, m.at, m.charge.amount) for m in months], now)
    return Wallet(
        as_of=as_of,
        now=now,
        currency=currency,
        minor_digits=digits,
        grants=tuple(grants),
        rows={row.id: row for row in rows},
        months=tuple(months),
        ledger=ledger,
        credits=credits,
        kinds={g.id: g.kind for g in grants},
    )


async def with_credits(
    session: AsyncSession,
    *,
    customer_id: int,
    contract_id: str,
    gathered: data.Gathered,
    priced: Priced,
    override: data.Proposed | None = None,
) -> Priced:
    """`priced` with its `credits` line (billing/credit_line.py) when the customer has a
    wallet: a grant recorded by the preview's `as_of`, or plan credits in this month. Else
    `priced` as it is, at the cost of one query."""
    rows = await grant_rows(session, customer_id=customer_id, as_of=gathered.as_of)
    if not rows and not any(s.plan.price.credits for s in gathered.segments):
        return priced
    start = gathered.period_start
    wallet = await build(
        session,
        customer_id=customer_id,
        as_of=gathered.as_of,
        until=start,
        known={(contract_id, start): (gathered, priced)},
        override=override,
        rows=rows,
    )
    ref = f"{contract_id}:{start:%Y-%m}"
    month = next((m for m in wallet.months if m.ref == ref), None) if wallet else None
    if wallet is None or month is None:
        return priced
    line = credits_line(
        wallet.ledger,
        ref,
        charge=month.charge,
        kinds=wallet.kinds,
        currency=gathered.currency,
        minor_digits=gathered.minor_digits,
    )
    if line is None:
        return priced
    return Priced(
        lines=(*priced.lines, line),
        subtotal=priced.subtotal + line.amount,
        policy_versions=priced.policy_versions,
    )


async def month_wallet(
    session: AsyncSession,
    *,
    customer_id: int,
    now: datetime,
    plan_credits: bool = True,
    live_meters: frozenset[str] | None = None,
) -> MonthWallet | None:
    """The wallet as a check reads it (billing/credit_balance.py): the grants' state at the
    start of `now`'s month after every earlier month's draw, this month's grants, and the
    month's paid lines other than meters to `now`. None when the customer has no contract in
    force, or neither a grant nor plan credits (`plan_credits` False: the caller knows the
    plan has none, so no grant ends it after two queries). Costs what `build` does, plus
    this month. Only `live_meters` (None: all) are left to the check to price from its month
    totals; a paid meter whose billed quantity those totals do not give is priced here, with
    the fixed lines."""
    contract_id = (
        await session.execute(
            select(Contract.id)
            .where(
                Contract.customer_id == customer_id,
                Contract.starts_at <= now,
                (Contract.ends_at.is_(None)) | (Contract.ends_at > now),
            )
            .limit(1)
        )
    ).scalar_one_or_none()
    if contract_id is None:
        return None
    rows = await grant_rows(session, customer_id=customer_id, as_of=now)
    if not rows and not plan_credits:
        return None
    month = month_start(now)
    contract = await data.contract_row(session, contract_id)
    gathered = await data.gather(
        session, contract=contract, start=month, end=next_month(month), as_of=now
    )
    if not gathered.segments:
        return None
    terms = gathered.segments[-1]
    credits = terms.plan.price.credits
    if not rows and credits is None:
        return None
    before = month - INSTANT
    # Every earlier month's draw (build returns None when nothing was granted before).
    earlier = await build(session, customer_id=customer_id, as_of=now, until=before, rows=rows)
    grants = (
        list(earlier.grants)
        if earlier
        else [
            Grant(r.id, r.amount, r.granted_at, r.expires_at, r.kind)  # type: ignore[arg-type]
            for r in rows
        ]
    )
    plan = _plan_grant(gathered, month)
    if plan is not None and all(g.id != plan.id for g in grants):
        grants.append(plan)
    opened = []
    for grant in grants:
        if grant.granted_at > before:
            left = grant.amount
        else:
            left = earlier.ledger.remaining.get(grant.id, Decimal(0)) if earlier else grant.amount
        if left > 0 and (grant.expires_at is None or grant.expires_at > month):
            opened.append(OpenGrant(grant.id, left, grant.granted_at, grant.expires_at))
    applies_to = credits.applies_to if credits else DEFAULT_CREDITS_APPLY_TO
    live = {
        name: meter_price
        for name, meter_price in terms.plan.price.meters.items()
        if applies(f"meter:{name}", applies_to) and (live_meters is None or name in live_meters)
    }
    priced = price(gathered.pricing_input())
    # The group in force now: the last one (lines come group by group).
    last_group = priced.lines[-1].source.get("start") if priced.lines else None
    fixed = sum(
        (
            line.amount
            for line in priced.lines
            if line.amount > 0
            and not (line.code.startswith("meter:") and line.code[len("meter:") :] in live)
            and applies(line.code, applies_to)
            and line.source.get("start") == last_group
        ),
        Decimal(0),
    )
    if terms.kind in UNPAID_KINDS:
        factor = Fraction(0)
    elif terms.kind in DISCOUNTED_KINDS and terms.discount_percent is not None:
        factor = 1 - Fraction(terms.discount_percent) / 100
    else:
        factor = Fraction(1)
    return MonthWallet(
        month=month,
        currency=gathered.currency,
        minor_digits=gathered.minor_digits,
        grants=tuple(opened),
        fixed=fixed,
        factor=factor,
        meters=live,
        applies_to=applies_to,
        enforce=bool(credits and credits.enforce),
    )
