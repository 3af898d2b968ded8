"""A line before its group stamps it: what the pricing modules beside `pricing.py` return.

`pricing._Pricer` turns each `Draft` into a `Line`: it rounds the amount once (half-even, to
the minor unit), shows the quantity to `places`, adds the group's revisions, versions, plan
and interval to `source`, and leaves the line out when quantity and unit price are both zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

from allotment.billing.measure import QUANTITY_PLACES


@dataclass(frozen=True)
class Draft:
    code: str
    description: str
    quantity: Fraction
    unit: str
    unit_price: Decimal
    amount: Fraction  # exact
    source: dict[str, Any]  # JSON types only
    places: int = QUANTITY_PLACES  # the decimals the quantity is shown to
