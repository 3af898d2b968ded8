"""A credit wallet as a check reads it, pure: the wallet at the start of the current month
and what the month has asked of it apart from its metered lines, finished with the live
meter totals (docs/check.md, "credits_exhausted"; docs/billing.md, "Credit wallets").

    MonthWallet.balance(total_of, now)   the grants valid at `now`, less the month's charge:
                                         the fixed lines (instances, burst, … as last read)
                                         plus each paid meter priced from its month total,
                                         times the group's adjustment, rounded as invoices do

The month's charge is drawn at `now` from every grant valid then, so the balance is their
sum less the charge, never below zero: the same figure a preview taken at `now` shows as
the `credits` line's balance after, while the contract has one group this month.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from fractions import Fraction

from allotment.billing.measure import QUANTITY_PLACES, ZERO, money
from allotment.billing.tiers import meter_priced
from allotment.policy.catalog import MeterPrice


@dataclass(frozen=True, slots=True)
class OpenGrant:
    id: str
    left: Decimal  # unused at the start of the month (its whole amount if granted since)
    granted_at: datetime
    expires_at: datetime | None

    def valid_at(self, instant: datetime) -> bool:
        return self.granted_at <= instant and (self.expires_at is None or instant < self.expires_at)


@dataclass(frozen=True, slots=True)
class MonthWallet:
    month: datetime  # the first instant of the month it was read for
    currency: str
    minor_digits: int
    grants: tuple[OpenGrant, ...]
    fixed: Decimal  # Σ the month's paid lines other than meters, as last read (unadjusted)
    factor: Fraction  # 1 + the adjustment rate: 0 for a trial, 0.6 for a 40 % discount
    meters: Mapping[str, MeterPrice]  # the meters whose line the wallet pays
    applies_to: tuple[str, ...]
    enforce: bool

    def pays(self, meter: str) -> bool:
        return meter in self.meters

    def charge(self, total_of: Callable[[str], Decimal]) -> Decimal:
        """The month's charge to date, `total_of(meter)` giving each meter's month total."""
        applicable = Fraction(self.fixed)
        for name, price in self.meters.items():
            total = max(ZERO, Fraction(total_of(name)))
            priced = meter_priced(total, price, places=QUANTITY_PLACES)
            applicable += Fraction(money(priced.amount, self.minor_digits))
        return money(max(ZERO, applicable * self.factor), self.minor_digits)

    def available(self, now: datetime) -> Decimal:
        return sum((g.left for g in self.grants if g.valid_at(now)), Decimal(0))

    def balance(self, total_of: Callable[[str], Decimal], now: datetime) -> Decimal:
        left = Fraction(self.available(now)) - Fraction(self.charge(total_of))
        return money(max(ZERO, left), self.minor_digits)


def totals_of(months: Mapping[str, Decimal]) -> Callable[[str], Decimal]:
    return lambda meter: months.get(meter, Decimal(0))
