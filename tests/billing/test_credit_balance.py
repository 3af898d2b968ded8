"""billing/credit_balance.py: the wallet a check reads, by hand and as properties.

the balance is never negative
it is the ledger's balance when the month's charge is drawn at `now` from the grants as
they stood at the month's start (billing/wallet.py), whatever the grants and the use
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from allotment.billing.credit_balance import MonthWallet, OpenGrant, totals_of
from allotment.billing.wallet import Charge, Grant, draw
from allotment.policy.catalog import MeterPrice, Tier

D = Decimal
MONTH = datetime(2026, 12, 1, tzinfo=UTC)
CALLS = MeterPrice(meter="api_calls", included=100, tiers=(Tier(None, D("0.01")),))


def wallet(*grants: OpenGrant, fixed: str = "0", factor: Fraction = Fraction(1)) -> MonthWallet:
    return MonthWallet(
        month=MONTH,
        currency="USD",
        minor_digits=2,
        grants=grants,
        fixed=D(fixed),
        factor=factor,
        meters={"api_calls": CALLS},
        applies_to=("meter:*", "instances"),
        enforce=True,
    )


def test_the_balance_is_the_valid_grants_less_the_month_so_far() -> None:
    found = wallet(
        OpenGrant("cr_1", D("30.00"), MONTH - timedelta(days=40), None),
        OpenGrant("promo", D("10.00"), MONTH, MONTH + timedelta(days=10)),
        fixed="2.50",
    )
    use = totals_of({"api_calls": D(1100)})  # 1,000 billable × 0.01 = 10.00
    assert found.charge(use) == D("12.50")
    assert found.balance(use, MONTH + timedelta(days=5)) == D("27.50")
    # After the promotion expires only the top-up is left to pay the month.
    assert found.balance(use, MONTH + timedelta(days=12)) == D("17.50")
    assert found.balance(totals_of({"api_calls": D(10_000)}), MONTH) == D("0.00")


def test_a_trial_asks_nothing_and_a_discount_asks_less() -> None:
    grant = OpenGrant("g", D("5.00"), MONTH, None)
    use = totals_of({"api_calls": D(600)})  # 5.00
    assert wallet(grant, factor=Fraction(0)).balance(use, MONTH) == D("5.00")
    assert wallet(grant, factor=Fraction(3, 5)).balance(use, MONTH) == D("2.00")


grant_specs = st.lists(
    st.tuples(
        st.decimals(min_value=D("0.01"), max_value=D("100"), places=2),
        st.integers(-60, 20),
        st.none() | st.integers(1, 60),
    ),
    max_size=6,
)


@settings(max_examples=300, deadline=None, database=None)
@given(
    grant_specs,
    st.decimals(min_value=D("0"), max_value=D("100"), places=2),
    st.integers(0, 20_000),
    st.integers(0, 30),
)
def test_the_check_balance_is_the_ledger_balance(
    specs: list[tuple[Decimal, int, int | None]], fixed: Decimal, calls: int, day: int
) -> None:
    now = MONTH + timedelta(days=day, hours=3)
    grants = [
        OpenGrant(
            f"g{i}",
            left,
            MONTH + timedelta(days=start),
            None if life is None else MONTH + timedelta(days=start + life),
        )
        for i, (left, start, life) in enumerate(specs)
    ]
    found = wallet(*grants, fixed=str(fixed))
    use = totals_of({"api_calls": D(calls)})
    balance = found.balance(use, now)
    assert balance >= 0
    ledger = draw(
        [Grant(g.id, g.left, g.granted_at, g.expires_at) for g in grants],
        [Charge("month", now, found.charge(use))],
        now,
    )
    assert balance == ledger.balance
