"""One-time and yearly fees charged per bought seat or instance, and a yearly percentage of
them (maintenance), in the pricing core (docs/billing.md, "one_time:<name>" and
"addon:<name>").

PERPETUAL's site plan: a designer licence 3,000.00 once per bought seat, a server licence
12,000.00 once per bought instance, a setup fee 500.00 once; the care add-on 100.00 a year
per bought seat; maintenance 20 % a year of both licences and care.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from allotment.billing.annual import annual_dues
from allotment.billing.measure import money
from allotment.billing.priced import Priced, Segment
from allotment.billing.pricing import price
from tests.billing import by_code, pricing, segment

D = Decimal

PERPETUAL = """
currency: USD
features:
  designer: {}
plans:
  site:
    features: [designer]
    price:
      one_time: {designer_licence: "3000.00", server_licence: "12000.00", setup: "500.00"}
      one_time_per: {designer_licence: seats, server_licence: instances}
addons:
  care: {price: "100.00", interval: year, per: seats}
  maintenance:
    percent: 20
    interval: year
    of: ["one_time:designer_licence", "one_time:server_licence", "addon:care"]
"""

START = datetime(2026, 3, 15, tzinfo=UTC)


def site(seats: int | None = 25, instances: int | None = 4, policy: str = PERPETUAL) -> Segment:
    addons = ("care", "maintenance")
    until = datetime(2030, 1, 1, tzinfo=UTC)
    built = segment("site", START, until, addons=addons, policy=policy)
    dues = annual_dues(
        [(START, "site", "standard", addons)], starts_at=START, ends_at=None, until=until
    )
    return dataclasses.replace(
        built,
        plan_started=START,
        contract_start=START,
        dues=dues,
        contracted_seats=seats,
        contracted_instances=instances,
    )


def month_of(seg: Segment, year: int, month: int) -> Priced:
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return price(pricing(seg, start=start, end=end))


def test_one_time_fees_per_bought_quantity_are_charged_once_when_due() -> None:
    lines = by_code(month_of(site(), 2026, 3))
    designer, server = lines["one_time:designer_licence"], lines["one_time:server_licence"]
    assert (designer.quantity, designer.unit, designer.unit_price, designer.amount) == (
        D(25),
        "seat",
        D("3000.00"),
        D("75000.00"),
    )
    assert (server.quantity, server.unit, server.amount) == (D(4), "instance", D("48000.00"))
    assert designer.source["per"] == "seats"
    setup = lines["one_time:setup"]  # not per anything: once
    assert (setup.quantity, setup.unit, setup.amount) == (D(1), "one-time", D("500.00"))
    assert not any(code.startswith("one_time:") for code in by_code(month_of(site(), 2026, 4)))


def test_a_yearly_fee_per_seat_is_the_bought_seats_times_its_price() -> None:
    care = by_code(month_of(site(seats=7), 2026, 3))["addon:care"]
    assert (care.quantity, care.unit, care.unit_price, care.amount) == (
        D(7),
        "seat-year",
        D("100.00"),
        D("700.00"),
    )


def test_yearly_maintenance_is_its_percent_of_the_named_lines_in_the_month_they_fall_due() -> None:
    lines = by_code(month_of(site(), 2026, 3))
    named = ("one_time:designer_licence", "one_time:server_licence", "addon:care")
    base = sum(lines[code].amount for code in named)
    maintenance = lines["addon:maintenance"]
    assert base == D("125500.00")
    assert (maintenance.quantity, maintenance.unit_price, maintenance.amount) == (
        base,
        D("0.2"),
        D("25100.00"),
    )
    assert maintenance.source["lines"] == list(named)


def test_maintenance_recurs_each_contract_year_on_the_licences_list_price() -> None:
    """The licences are charged once; the second year's maintenance is still 20 % of them."""
    lines = by_code(month_of(site(), 2027, 3))
    assert "one_time:designer_licence" not in lines
    assert lines["addon:maintenance"].amount == D("25100.00")
    assert lines["addon:maintenance"].source["contract_year"] == 2
    assert "addon:maintenance" not in by_code(month_of(site(), 2026, 9))


def test_no_bought_quantity_charges_nothing_per_unit() -> None:
    lines = by_code(month_of(site(seats=None, instances=0), 2026, 3))
    assert lines["one_time:designer_licence"].amount == D("0.00")
    assert lines["one_time:server_licence"].amount == D("0.00")
    assert lines["addon:maintenance"].amount == D("0.00")
    assert lines["one_time:setup"].amount == D("500.00")


BASE_SITE = site()


@settings(max_examples=50, deadline=None)
@given(
    seats=st.integers(0, 10_000),
    instances=st.integers(0, 1_000),
    licence=st.integers(0, 10**7),  # in cents
    percent=st.integers(1, 10_000),  # in hundredths
)
def test_a_yearly_percentage_follows_its_lines_exactly(
    seats: int, instances: int, licence: int, percent: int
) -> None:
    plan = BASE_SITE.plan
    fees = {**plan.price.one_time, "designer_licence": D(licence) / 100}
    plan = dataclasses.replace(plan, price=dataclasses.replace(plan.price, one_time=fees))
    addons = tuple(
        dataclasses.replace(
            addon, pricing=dataclasses.replace(addon.pricing, unit=D(percent) / 100)
        )
        if addon.pricing is not None
        else addon
        for addon in BASE_SITE.addons
    )
    seg = dataclasses.replace(
        BASE_SITE,
        plan=plan,
        addons=addons,
        contracted_seats=seats,
        contracted_instances=instances,
    )
    lines = by_code(month_of(seg, 2026, 3))
    named = ("one_time:designer_licence", "one_time:server_licence", "addon:care")
    base = sum((Fraction(lines[c].amount) for c in named if c in lines), Fraction(0))
    expected = money(base * Fraction(percent, 10_000), 2)
    assert lines["addon:maintenance"].amount == expected
    if "one_time:designer_licence" in lines:
        assert lines["one_time:designer_licence"].amount == D(licence) / 100 * seats
    else:
        assert licence == 0
