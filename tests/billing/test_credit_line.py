"""billing/credit_line.py: what a month's lines ask of a wallet, and the `credits` line, by
hand and as properties (docs/billing.md, "Credit wallets").

the charge is the applicable lines net of their group's adjustment, rounded once
it is never below zero nor above the subtotal
the credits line is minus what the ledger drew for it; the subtotal after is never negative
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from allotment.billing.credit_line import applies, credits_line, month_charge
from allotment.billing.measure import money
from allotment.billing.priced import Line
from allotment.billing.wallet import Charge, Grant, draw

D = Decimal
START, OTHER = "2026-11-01T00:00:00.000000Z", "2026-11-16T00:00:00.000000Z"


def line(code: str, amount: str, start: str = START, unit_price: str = "1") -> Line:
    source: dict[str, Any] = {"start": start, "end": "x"}
    return Line(code, code, D(1), "u", D(unit_price), D(amount), source)


def default(_: str) -> None:
    return None


def test_patterns_match_codes_and_prefixes() -> None:
    assert applies("meter:api_calls", ["meter:*"]) and applies("burst", ["burst"])
    assert applies("instances:gpu", ["instances:*"]) and not applies("instances", ["instances:*"])
    assert not applies("base", ["meter:*", "instances", "burst"])


def test_the_default_lines_are_paid_and_fees_are_not() -> None:
    lines = [line("base", "100.00"), line("meter:api_calls", "30.00"), line("burst", "4.00")]
    charge = month_charge(lines, default, subtotal=D("134.00"), minor_digits=2)
    assert charge.amount == D("34.00") and charge.lines == ("meter:api_calls", "burst")


def test_a_discount_reduces_what_the_wallet_pays_and_a_trial_asks_nothing() -> None:
    # 20 % off the group: the wallet pays 30.00 × 0.8 = 24.00 of the calls.
    discounted = [
        line("base", "100.00"),
        line("meter:api_calls", "30.00"),
        line("discount:educational", "-26.00", unit_price="-0.2"),
    ]
    charge = month_charge(discounted, default, subtotal=D("104.00"), minor_digits=2)
    assert charge.amount == D("24.00")
    trial = [line("meter:api_calls", "30.00"), line("credit:trial", "-30.00", unit_price="-1")]
    nothing = month_charge(trial, default, subtotal=D("0.00"), minor_digits=2)
    assert nothing.amount == D("0.00") and nothing.lines == ()


def test_each_group_uses_its_own_plans_lines() -> None:
    lines = [line("base", "50.00"), line("meter:a", "10.00"), line("base", "50.00", OTHER)]
    charge = month_charge(
        lines,
        lambda start: ("base",) if start == OTHER else None,
        subtotal=D("110.00"),
        minor_digits=2,
    )
    assert charge.amount == D("60.00") and charge.lines == ("meter:a", "base")


def test_the_credits_line_shows_each_grant_and_the_balance_after() -> None:
    at = datetime(2026, 11, 30, tzinfo=UTC)
    ledger = draw(
        [
            Grant("plan:2026-11", D("50.00"), at.replace(day=1), at.replace(month=12), "plan"),
            Grant("cr_1", D("100.00"), at.replace(day=1), None, "purchased"),
        ],
        [Charge("ctr:2026-11", at, D("70.00"))],
        at,
    )
    charge = month_charge([line("meter:a", "70.00")], default, subtotal=D("70"), minor_digits=2)
    found = credits_line(
        ledger, "ctr:2026-11", charge=charge, kinds={}, currency="USD", minor_digits=2
    )
    assert found is not None
    assert (found.code, found.amount, found.quantity) == ("credits", D("-70.00"), D("70.00"))
    assert [g["amount"] for g in found.source["grants"]] == ["50.00", "20.00"]
    assert found.source["balance_after"] == "80.00" and found.source["uncovered"] == "0.00"


amounts = st.decimals(min_value=D("0"), max_value=D("1000"), places=2)
codes = st.sampled_from(["base", "seats", "burst", "instances", "meter:a", "addon:x", "minimum"])


@settings(max_examples=300, deadline=None, database=None)
@given(
    st.lists(st.tuples(codes, amounts, st.booleans()), max_size=10),
    st.sampled_from([None, "0", "-1", "-0.2", "-0.335"]),
)
def test_the_charge_stays_between_zero_and_the_subtotal(
    written: list[tuple[str, Decimal, bool]], rate: str | None
) -> None:
    lines = [line(code, str(amount), OTHER if other else START) for code, amount, other in written]
    if rate is not None:
        base = sum(
            (Fraction(ln.amount) for ln in lines if ln.source["start"] == START), Fraction(0)
        )
        adjustment = money(base * Fraction(D(rate)), 2)
        lines.append(line("discount:pilot", str(adjustment), unit_price=rate))
    subtotal = sum((ln.amount for ln in lines), D(0))
    charge = month_charge(lines, default, subtotal=subtotal, minor_digits=2)
    assert D(0) <= charge.amount <= max(D(0), subtotal)
    applicable = sum(
        (ln.amount for ln in lines if applies(ln.code, ("meter:*", "instances", "burst"))),
        D(0),
    )
    assert charge.amount <= applicable
    if rate is None:
        assert charge.amount == applicable
