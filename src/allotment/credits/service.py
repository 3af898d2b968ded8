"""Credit grants and the wallet they make (docs/billing.md, "Credit wallets").

grant(session, customer_key=, data=, actor=)         → CreditGrantRead; audited, and the
                                                     customer's state version bumped
                                                     (checks read the balance)
wallet(session, customer_key=, as_of=, now=)         → WalletRead: balance, each grant's
                                                     state, every month's charge and draw
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from fractions import Fraction

from sqlalchemy.ext.asyncio import AsyncSession

from allotment import invalidation
from allotment.audit import service as audit
from allotment.billing import wallet_ledger
from allotment.billing.measure import money
from allotment.contracts import service as contracts
from allotment.credits.models import CreditGrant
from allotment.credits.schemas import (
    ChargeRead,
    CreditGrantCreate,
    CreditGrantRead,
    DrawRead,
    GrantState,
    WalletRead,
)
from allotment.customers import service as customers
from allotment.errors import ValidationFailed
from allotment.kit.clock import in_utc, isoformat, utcnow
from allotment.kit.ids import new_id
from allotment.policy import service as policies
from allotment.policy.money import decimal_places, format_amount, minor_digits


def _read(row: CreditGrant, customer: str) -> CreditGrantRead:
    return CreditGrantRead(
        id=row.id,
        customer=customer,
        kind=row.kind,  # type: ignore[arg-type]
        amount=row.amount,
        currency=row.currency,
        granted_at=row.granted_at,
        expires_at=row.expires_at,
        reason=row.reason,
        actor=row.actor,
        created_at=row.created_at,
    )


# Larger grants would take wallet sums past the 28 significant digits of Decimal's default
# context, which rounds them; no real top-up comes near this.
MAX_GRANT = Decimal(10**12)


async def grant(
    session: AsyncSession, *, customer_key: str, data: CreditGrantCreate, actor: str
) -> CreditGrantRead:
    now = utcnow()
    customer = await customers.get(session, customer_key)
    _, catalog = await policies.load_catalog(session)
    # A wallet is in the currency the customer is billed in: its contract's (in force now),
    # else the policy's (docs/billing.md, "Credit wallets").
    terms = await contracts.current_terms(session, customer_id=customer.id, at=now)
    currency = (terms.terms.currency if terms is not None else None) or catalog.currency
    digits = minor_digits(currency)
    problems = []
    if data.amount <= 0:
        problems.append({"path": "amount", "message": "must be above zero"})
    elif data.amount > MAX_GRANT:
        problems.append(
            {"path": "amount", "message": f"at most {MAX_GRANT:,} in one grant (a unit mistake?)"}
        )
    elif decimal_places(data.amount) > digits:
        problems.append(
            {
                "path": "amount",
                "message": f"'{format_amount(data.amount)}' has {decimal_places(data.amount)} "
                f"decimal places; {currency} allows at most {digits}",
            }
        )
    granted_at = in_utc(data.granted_at, path="granted_at") if data.granted_at else now
    expires_at = in_utc(data.expires_at, path="expires_at") if data.expires_at else None
    if expires_at is not None and expires_at <= granted_at:
        problems.append(
            {"path": "expires_at", "message": f"must be after granted_at ({isoformat(granted_at)})"}
        )
    if problems:
        raise ValidationFailed(
            f"The credit grant is not valid: {len(problems)} problem"
            f"{'s' if len(problems) != 1 else ''}; see `errors` for each, by path.",
            errors=problems,
        )
    row = CreditGrant(
        id=new_id("cr"),
        customer_id=customer.id,
        amount=data.amount,
        currency=currency,
        kind=data.kind,
        granted_at=granted_at,
        expires_at=expires_at,
        reason=data.reason,
        actor=actor,
        created_at=now,
    )
    session.add(row)
    await session.flush()
    read = _read(row, customer.key)
    audit.record(
        session,
        actor=actor,
        action="credits.granted",
        target_type="customer",
        target_key=customer.key,
        before=None,
        after=read.model_dump(mode="json"),
    )
    await invalidation.bump_customer(session, customer_id=customer.id, customer_key=customer.key)
    return read


async def wallet(
    session: AsyncSession, *, customer_key: str, as_of: datetime | None, now: datetime
) -> WalletRead:
    customer = await customers.get(session, customer_key)
    taken = now.replace(microsecond=0) if as_of is None else in_utc(as_of, path="query.as_of")
    if taken > now:
        raise ValidationFailed(
            f"`as_of` {isoformat(taken)} is in the future.",
            errors=[{"path": "query.as_of", "message": "in the future"}],
        )
    # Shown to the second, but read to the instant: a grant recorded earlier in this very
    # second is in the wallet.
    found = await wallet_ledger.build(
        session, customer_id=customer.id, as_of=now if as_of is None else taken
    )
    if found is None:
        _, catalog = await policies.load_catalog(session)
        terms = await contracts.current_terms(session, customer_id=customer.id, at=now)
        return WalletRead(
            customer=customer.key,
            currency=(terms.terms.currency if terms is not None else None) or catalog.currency,
            as_of=taken,
            balance=Decimal(0),
            enforce=False,
            grants=[],
            charges=[],
            draws=[],
        )
    ledger = found.ledger
    digits = found.minor_digits

    def amount(value: Decimal) -> Decimal:  # in the minor unit, as invoices show it
        return money(Fraction(value), digits)

    grants = []
    for item in found.grants:
        row = found.rows.get(item.id)
        drawn = sum((d.amount for d in ledger.draws if d.grant == item.id), Decimal(0))
        grants.append(
            GrantState(
                id=item.id,
                customer=customer.key,
                kind=item.kind,
                amount=amount(item.amount),
                currency=row.currency if row is not None else found.currency,
                granted_at=item.granted_at,
                expires_at=item.expires_at,
                reason=row.reason if row is not None else "the plan's monthly credits",
                actor=row.actor if row is not None else None,
                created_at=row.created_at if row is not None else None,
                drawn=amount(drawn),
                remaining=amount(ledger.remaining.get(item.id, Decimal(0))),
                expired=amount(ledger.expired.get(item.id, Decimal(0))),
            )
        )
    grants.sort(key=lambda g: (g.granted_at, g.id))
    return WalletRead(
        customer=customer.key,
        currency=found.currency,
        as_of=taken,
        balance=amount(ledger.balance),
        enforce=found.credits.enforce if found.credits is not None else False,
        grants=grants,
        charges=[
            ChargeRead(
                charge=m.ref,
                contract=m.contract,
                period=m.period,
                at=m.at,
                amount=m.charge.amount,
                lines=list(m.charge.lines),
                uncovered=amount(ledger.uncovered.get(m.ref, Decimal(0))),
            )
            for m in found.months
        ],
        draws=[
            DrawRead(grant=d.grant, charge=d.charge, amount=amount(d.amount)) for d in ledger.draws
        ],
    )
