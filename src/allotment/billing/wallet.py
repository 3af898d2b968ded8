"""Prepaid credit wallets, pure: grants drawn down by priced usage (docs/billing.md, "Credit
wallets"). No I/O, no clock reads.

    Grant    an amount of the contract's currency, valid over [granted_at, expires_at)
             (expires_at None: until used); kinds: purchased (a top-up), granted (free
             credits), plan (the plan's recurring grant, `plan_grants`)
    Charge   priced usage to pay at an instant (the caller splits a month into days, each
             day's charge the month's priced usage at its end less at its start)
    draw(grants, charges, now) → Ledger

Charges are paid in time order (then by `ref`). Each draws from the grants valid at its
instant — granted at or before it, not yet expired — soonest expiry first (a grant that
never expires last), then the oldest grant, then by id; what no grant covers is
`uncovered` (it is billed). At `now`, whatever a grant expired with is `expired`, the rest is
the balance. Exact: `Fraction` in between, `Decimal` out; no rounding happens here, since
grants and priced usage are already amounts in the minor unit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, localcontext
from fractions import Fraction
from typing import Literal

GrantKind = Literal["purchased", "granted", "plan"]

ZERO = Fraction(0)


@dataclass(frozen=True)
class Grant:
    id: str
    amount: Decimal  # > 0
    granted_at: datetime
    expires_at: datetime | None  # None: never expires
    kind: GrantKind = "granted"

    def valid_at(self, instant: datetime) -> bool:
        return self.granted_at <= instant and (self.expires_at is None or instant < self.expires_at)


@dataclass(frozen=True)
class Charge:
    ref: str  # what it pays for, e.g. "2026-11-14" (a day of the month's priced usage)
    at: datetime
    amount: Decimal  # ≥ 0


@dataclass(frozen=True)
class Draw:
    grant: str
    charge: str
    amount: Decimal  # > 0


@dataclass(frozen=True)
class Ledger:
    draws: tuple[Draw, ...]  # in the order paid
    uncovered: Mapping[str, Decimal]  # by charge ref: what no grant covered (> 0 only)
    remaining: Mapping[str, Decimal]  # by grant id: unused and still valid at `now`
    expired: Mapping[str, Decimal]  # by grant id: unused when it expired (at or before `now`)

    @property
    def balance(self) -> Decimal:
        return sum(self.remaining.values(), Decimal(0))

    @property
    def drawn(self) -> Decimal:
        return sum((d.amount for d in self.draws), Decimal(0))

    def drawn_by(self, ref: str) -> Decimal:
        return sum((d.amount for d in self.draws if d.charge == ref), Decimal(0))


def _order(grant: Grant) -> tuple[bool, datetime, datetime, str]:
    never = grant.expires_at is None
    return (never, grant.expires_at or grant.granted_at, grant.granted_at, grant.id)


def draw(grants: Iterable[Grant], charges: Iterable[Charge], now: datetime) -> Ledger:
    """Pay `charges` (none after `now`) from `grants`, as the module says. Raises ValueError on
    a negative charge, a grant of zero or less, or one that expires before it is granted."""
    ordered = sorted(grants, key=_order)
    ids = [grant.id for grant in ordered]
    if len(set(ids)) != len(ids):
        raise ValueError("grant ids must be unique")
    for grant in ordered:
        if grant.amount <= 0:
            raise ValueError(f"grant {grant.id}: the amount must be above zero")
        if grant.expires_at is not None and grant.expires_at <= grant.granted_at:
            raise ValueError(f"grant {grant.id}: it must expire after it is granted")
    left = {grant.id: Fraction(grant.amount) for grant in ordered}
    draws: list[Draw] = []
    uncovered: dict[str, Fraction] = {}
    for charge in sorted(charges, key=lambda c: (c.at, c.ref)):
        if charge.amount < 0:
            raise ValueError(f"charge {charge.ref}: the amount must not be negative")
        if charge.at > now:
            raise ValueError(f"charge {charge.ref}: it is after now")
        due = Fraction(charge.amount)
        for grant in ordered:
            if due == 0:
                break
            if left[grant.id] == 0 or not grant.valid_at(charge.at):
                continue
            paid = min(due, left[grant.id])
            left[grant.id] -= paid
            due -= paid
            draws.append(Draw(grant.id, charge.ref, _decimal(paid)))
        if due > 0:
            uncovered[charge.ref] = uncovered.get(charge.ref, ZERO) + due
    remaining: dict[str, Decimal] = {}
    expired: dict[str, Decimal] = {}
    for grant in ordered:
        if grant.granted_at > now:
            continue  # not granted yet: neither balance nor expired
        unused = left[grant.id]
        if grant.expires_at is not None and grant.expires_at <= now:
            if unused > 0:
                expired[grant.id] = _decimal(unused)
        elif unused > 0:
            remaining[grant.id] = _decimal(unused)
    return Ledger(
        draws=tuple(draws),
        uncovered={ref: _decimal(amount) for ref, amount in uncovered.items()},
        remaining=remaining,
        expired=expired,
    )


def plan_grants(
    monthly: Decimal, rollover: int, starts_at: datetime, ends_at: datetime | None, now: datetime
) -> list[Grant]:
    """A plan's recurring grant: `monthly` at the start of each calendar month (UTC) the
    contract is in force, up to `now` (its first at `starts_at`), each valid for its month and
    `rollover` months after it. Ids are `plan:<YYYY-MM>`."""
    if monthly <= 0:
        return []
    if rollover < 0:
        raise ValueError("rollover must not be negative")
    grants: list[Grant] = []
    month = starts_at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    while month <= now and (ends_at is None or month < ends_at):
        granted_at = max(month, starts_at)
        if granted_at <= now:
            grants.append(
                Grant(
                    id=f"plan:{month:%Y-%m}",
                    amount=monthly,
                    granted_at=granted_at,
                    expires_at=_add_months(month, 1 + rollover),
                    kind="plan",
                )
            )
        month = _add_months(month, 1)
    return grants


def _add_months(month: datetime, n: int) -> datetime:
    index = month.year * 12 + month.month - 1 + n
    return month.replace(year=index // 12, month=index % 12 + 1)


def _decimal(value: Fraction) -> Decimal:
    # Grants and charges are Decimals, so every sum and difference is a terminating decimal;
    # the division is exact at this precision.
    with localcontext() as context:
        context.prec = 60
        return Decimal(value.numerator) / Decimal(value.denominator)
