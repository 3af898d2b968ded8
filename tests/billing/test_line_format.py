"""How a line shows its unit_price (docs/billing.md, "Lines"): a price with at least the
currency's minor digits, a factor of an amount exactly."""

from __future__ import annotations

from allotment.billing.pricing import price
from tests.billing import by_code, pricing, segment

POLICY = """
currency: USD
features:
  api: {}
plans:
  team:
    features: [api]
    price: {base: "22", instance_hour: "0.0125", minimum: "30"}
"""


def test_a_price_shows_the_minor_digits_and_a_factor_shows_itself() -> None:
    educational = segment("team", policy=POLICY, kind="educational", discount="10")
    lines = by_code(price(pricing(educational)))
    assert str(lines["base"].unit_price) == "22.00"
    assert str(lines["instances"].unit_price) == "0.0125"
    assert str(lines["minimum"].unit_price) == "1"
    assert str(lines["discount:educational"].unit_price) == "-0.1"


def test_a_zero_price_shows_0_00() -> None:
    free = POLICY.replace('base: "22"', 'base: "0"')
    lines = by_code(price(pricing(segment("team", policy=free))))
    assert str(lines["base"].unit_price) == "0.00"
