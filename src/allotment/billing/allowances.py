"""Shared allowances, pure: included units a month that several meters draw on
(`price.allowances`, docs/billing.md "Shared allowances"). Called by `billing/pricing.py`
for each group, before the meter lines; no I/O.

    draw(allowances, used) → {meter: Drawn}

Each allowance starts the group with its `included` units. Its meters draw in the order the
policy lists them: a meter's billable units (its use less the included units of its own
line) are covered while the allowance lasts, one unit using `rate` allowance units, so
covered = min(billable, left / rate) and left −= covered × rate. What a meter covers is
added to its line's included units; each meter keeps its own line and price. Exact: a
covered part may be a fraction of a unit (1 unit left at rate 2 covers ½).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from allotment.billing.measure import ZERO, text
from allotment.policy.catalog import SharedAllowance


@dataclass(frozen=True)
class Drawn:
    allowance: str
    rate: Fraction
    covered: Fraction  # the meter's units the allowance covered
    left_before: Fraction  # allowance units left when the meter drew
    left_after: Fraction

    def source(self) -> dict[str, object]:
        return {
            "allowance": self.allowance,
            "rate": text(self.rate, 12),
            "covered": text(self.covered),
            "left_before": text(self.left_before),
            "left_after": text(self.left_after),
        }


def draw(
    allowances: Sequence[SharedAllowance], billable: Mapping[str, Fraction]
) -> dict[str, Drawn]:
    """What each meter drawing on an allowance covers; `billable`: each meter's use above
    its own line's included units."""
    out: dict[str, Drawn] = {}
    for allowance in allowances:
        left = Fraction(allowance.included)
        for meter, written in allowance.draw:
            rate = Fraction(written)
            covered = min(max(ZERO, billable.get(meter, ZERO)), left / rate)
            out[meter] = Drawn(allowance.name, rate, covered, left, left - covered * rate)
            left -= covered * rate
    return out
