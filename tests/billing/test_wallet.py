"""billing/wallet.py: grants drawn down by priced usage, by hand and as properties.

a wallet never goes negative; each grant's drawn + expired + remaining = its amount
drawn + uncovered = the charges, to the cent
a charge draws only from grants valid at its instant, and is uncovered only when none of
those had anything left
the order the grants and charges are given in changes nothing
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from allotment.billing.wallet import Charge, Grant, Ledger, draw, plan_grants

PROPERTY = settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def at(days: float) -> datetime:
    return T0 + timedelta(days=days)


def test_soonest_expiry_is_drawn_first_and_the_rest_expires() -> None:
    grants = [
        Grant("never", Decimal("100.00"), at(0), None, "purchased"),
        Grant("promo", Decimal("30.00"), at(0), at(10), "granted"),
    ]
    charges = [Charge("d1", at(1), Decimal("20.00")), Charge("d12", at(12), Decimal("25.50"))]
    ledger = draw(grants, charges, now=at(15))
    assert [(d.grant, d.charge, d.amount) for d in ledger.draws] == [
        ("promo", "d1", Decimal("20.00")),
        ("never", "d12", Decimal("25.50")),  # promo expired on day 10 with 10.00 unused
    ]
    assert ledger.expired == {"promo": Decimal("10.00")}
    assert ledger.remaining == {"never": Decimal("74.50")} and ledger.balance == Decimal("74.50")
    assert ledger.uncovered == {}


def test_what_no_grant_covers_is_uncovered_and_billed() -> None:
    ledger = draw(
        [Grant("g", Decimal("10.00"), at(2), None)],
        [Charge("d1", at(1), Decimal("4.00")), Charge("d3", at(3), Decimal("15.00"))],
        now=at(4),
    )
    assert ledger.uncovered == {"d1": Decimal("4.00"), "d3": Decimal("5.00")}
    assert ledger.drawn == Decimal("10.00") and ledger.balance == 0


def test_a_grant_from_the_future_is_neither_balance_nor_expired() -> None:
    ledger = draw([Grant("later", Decimal("5"), at(9), at(20))], [], now=at(3))
    assert ledger.remaining == {} and ledger.expired == {}


@pytest.mark.parametrize(
    ("grants", "charges", "message"),
    [
        ([Grant("g", Decimal("0"), at(0), None)], [], "above zero"),
        ([Grant("g", Decimal("1"), at(2), at(1))], [], "expire after"),
        ([Grant("g", Decimal("1"), at(0), None)] * 2, [], "unique"),
        ([], [Charge("c", at(1), Decimal("-1"))], "negative"),
        ([], [Charge("c", at(9), Decimal("1"))], "after now"),
    ],
)
def test_bad_input_is_refused(grants: list[Grant], charges: list[Charge], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        draw(grants, charges, now=at(5))


def test_plan_grants_start_with_the_contract_and_roll_over() -> None:
    grants = plan_grants(Decimal("50"), 1, at(9.5), None, now=at(45))  # Nov 10 12:00 → Dec 16
    assert [(g.id, g.granted_at, g.expires_at) for g in grants] == [
        ("plan:2026-11", at(9.5), datetime(2027, 1, 1, tzinfo=UTC)),
        ("plan:2026-12", datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 2, 1, tzinfo=UTC)),
    ]
    assert plan_grants(Decimal("50"), 0, at(0), at(20), now=at(60))[-1].id == "plan:2026-11"
    assert plan_grants(Decimal("0"), 0, at(0), None, now=at(60)) == []


amounts = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("500"), places=2)


@st.composite
def wallets(draw_: st.DrawFn) -> tuple[list[Grant], list[Charge], datetime]:
    count = draw_(st.integers(0, 6))
    grants = []
    for i in range(count):
        start = draw_(st.integers(0, 40))
        life = draw_(st.none() | st.integers(1, 40))
        kind = draw_(st.sampled_from(["purchased", "granted", "plan"]))
        grants.append(
            Grant(
                f"g{i}", draw_(amounts), at(start), None if life is None else at(start + life), kind
            )
        )
    now = at(draw_(st.integers(0, 80)))
    days = draw_(st.lists(st.integers(0, 80), max_size=12))
    charges = [
        Charge(
            f"c{i}", min(at(day) + timedelta(hours=7), now), draw_(amounts | st.just(Decimal(0)))
        )
        for i, day in enumerate(days)
    ]
    return grants, charges, now


@PROPERTY
@given(wallets())
def test_a_wallet_never_goes_negative_and_every_cent_is_accounted_for(
    wallet: tuple[list[Grant], list[Charge], datetime],
) -> None:
    grants, charges, now = wallet
    ledger = draw(grants, charges, now)
    for grant in grants:
        drawn = sum((d.amount for d in ledger.draws if d.grant == grant.id), Decimal(0))
        left = ledger.remaining.get(grant.id, Decimal(0)) + ledger.expired.get(grant.id, Decimal(0))
        assert drawn >= 0 and left >= 0
        if grant.granted_at <= now:
            assert drawn + left == grant.amount
        else:
            assert drawn == 0 and left == 0
    assert all(d.amount > 0 for d in ledger.draws)
    assert ledger.balance >= 0
    total = sum((c.amount for c in charges), Decimal(0))
    assert ledger.drawn + sum(ledger.uncovered.values(), Decimal(0)) == total


@PROPERTY
@given(wallets())
def test_charges_draw_only_from_valid_grants_and_are_uncovered_only_when_those_are_empty(
    wallet: tuple[list[Grant], list[Charge], datetime],
) -> None:
    grants, charges, now = wallet
    ledger = draw(grants, charges, now)
    by_id = {g.id: g for g in grants}
    when = {c.ref: c.at for c in charges}
    for d in ledger.draws:
        assert by_id[d.grant].valid_at(when[d.charge])
    # Replaying the draws in order: an uncovered charge left every grant valid at its
    # instant empty.
    left = {g.id: g.amount for g in grants}
    paid: dict[str, Decimal] = {}
    for d in ledger.draws:
        left[d.grant] -= d.amount
        paid[d.charge] = paid.get(d.charge, Decimal(0)) + d.amount
        if (
            d.charge in ledger.uncovered
            and paid[d.charge] == _amount(charges, d.charge) - (ledger.uncovered[d.charge])
        ):
            valid = [g for g in grants if g.valid_at(when[d.charge])]
            assert all(left[g.id] == 0 for g in valid)
    for ref in ledger.uncovered:
        if ref not in paid:
            assert all(left[g.id] == 0 for g in grants if g.valid_at(when[ref]))


def _amount(charges: list[Charge], ref: str) -> Decimal:
    return next(c.amount for c in charges if c.ref == ref)


@PROPERTY
@given(wallets(), st.randoms(use_true_random=False))
def test_the_order_given_changes_nothing(
    wallet: tuple[list[Grant], list[Charge], datetime], rng: random.Random
) -> None:
    grants, charges, now = wallet
    first = draw(grants, charges, now)
    shuffled_grants, shuffled_charges = grants[:], charges[:]
    rng.shuffle(shuffled_grants)
    rng.shuffle(shuffled_charges)
    again: Ledger = draw(shuffled_grants, shuffled_charges, now)
    assert again == first
